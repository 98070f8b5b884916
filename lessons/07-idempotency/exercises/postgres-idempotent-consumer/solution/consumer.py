"""An idempotent payment consumer on PostgreSQL: the reference solution."""

from __future__ import annotations

from typing import Any

from mqlab.patterns.database import BusinessDatabase

CONSUMER = "payments"


async def handle(db: BusinessDatabase, payment: Any) -> None:
    """The dedup insert and the credit in one transaction; the insert's row count decides.

    A crash before COMMIT leaves neither the key nor the credit (the redelivery does the
    work); a crash after it leaves both (the redelivery finds the key and changes nothing).
    """
    async with db.transaction() as tx:  # BEGIN ... COMMIT
        if not await tx.claim(CONSUMER, payment.message_id):
            return  # 0 rows: this payment was applied before; the transaction writes nothing
        await tx.credit(payment.account, payment.amount, message_id=payment.message_id)
