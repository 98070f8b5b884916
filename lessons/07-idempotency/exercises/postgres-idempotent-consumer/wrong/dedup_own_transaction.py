"""Wrong on purpose: the dedup key in a transaction of its own, after the business write."""

from __future__ import annotations

from typing import Any

from mqlab.patterns.database import BusinessDatabase

CONSUMER = "payments"


async def handle(db: BusinessDatabase, payment: Any) -> None:
    if await db.is_claimed(CONSUMER, payment.message_id):
        return
    async with db.transaction() as tx:
        await tx.credit(payment.account, payment.amount, message_id=payment.message_id)
    async with db.transaction() as tx:
        await tx.claim(CONSUMER, payment.message_id)
