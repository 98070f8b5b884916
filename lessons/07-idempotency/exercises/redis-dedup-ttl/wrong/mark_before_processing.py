"""Wrong on purpose: the cheat sheet's is_duplicate(): SET NX EX before the work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def handle(
    redis: Any, message: Any, process: Callable[[Any], Awaitable[None]], *, ttl: int
) -> str:
    if await redis.set(f"dedup:{message.message_id}", "1", nx=True, ex=ttl) is None:
        return "duplicate"
    await process(message)
    return "applied"
