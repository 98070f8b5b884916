"""Wrong on purpose: the key is recorded after the work, and never looked at."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def handle(
    redis: Any, message: Any, process: Callable[[Any], Awaitable[None]], *, ttl: int
) -> str:
    await process(message)
    await redis.set(f"dedup:{message.message_id}", "done", ex=ttl)
    return "applied"
