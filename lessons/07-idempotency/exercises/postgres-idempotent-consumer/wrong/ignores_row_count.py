"""Wrong on purpose: the dedup insert is made, and its row count never read."""

from __future__ import annotations

from typing import Any

from mqlab.patterns.database import BusinessDatabase

CONSUMER = "payments"


async def handle(db: BusinessDatabase, payment: Any) -> None:
    async with db.transaction() as tx:
        await tx.claim(CONSUMER, payment.message_id)  # INSERT ... ON CONFLICT DO NOTHING
        await tx.credit(payment.account, payment.amount, message_id=payment.message_id)
