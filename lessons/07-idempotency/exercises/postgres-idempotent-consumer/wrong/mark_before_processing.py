"""Wrong on purpose: the key is marked (and committed) before the payment is processed."""

from __future__ import annotations

from typing import Any

from mqlab.patterns.database import BusinessDatabase

CONSUMER = "payments"


async def handle(db: BusinessDatabase, payment: Any) -> None:
    async with db.transaction() as tx:
        new = await tx.claim(CONSUMER, payment.message_id)
    if not new:
        return
    async with db.transaction() as tx:
        await tx.credit(payment.account, payment.amount, message_id=payment.message_id)
