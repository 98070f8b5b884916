"""Wrong on purpose: check, process, record, but the key never expires."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def handle(
    redis: Any, message: Any, process: Callable[[Any], Awaitable[None]], *, ttl: int
) -> str:
    key = f"dedup:{message.message_id}"
    if await redis.exists(key):
        return "duplicate"
    await process(message)
    await redis.set(key, "done")
    return "applied"
