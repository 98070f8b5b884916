"""An idempotent payment consumer on PostgreSQL (mqlab exercise:
postgres-idempotent-consumer). See TASK.md."""

from __future__ import annotations

from typing import Any

from mqlab.patterns.database import BusinessDatabase

CONSUMER = "payments"
"""Your consumer's name in the dedup table (``processed`` is keyed by consumer and key)."""


async def handle(db: BusinessDatabase, payment: Any) -> None:
    """Apply one delivery of ``payment``: credit ``payment.amount`` to ``payment.account``.

    Every payment comes at least once, and some come twice: the effect must happen once.
    """
    # TODO: every delivery credits the account again, duplicates and redeliveries included.
    async with db.transaction() as tx:
        await tx.credit(payment.account, payment.amount, message_id=payment.message_id)
