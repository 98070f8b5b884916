"""Redis dedup with a TTL: the reference solution (check, process, record)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def handle(
    redis: Any, message: Any, process: Callable[[Any], Awaitable[None]], *, ttl: int
) -> str:
    """Check, process, then record. A crash before the record repeats the work on the
    redelivery (at-least-once); it never loses the message, which recording first would."""
    key = f"dedup:{message.message_id}"
    if await redis.exists(key):
        return "duplicate"
    await process(message)
    await redis.set(key, "done", ex=ttl)  # SET dedup:<id> done EX <ttl>
    return "applied"
