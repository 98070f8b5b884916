"""Redis dedup with a TTL (mqlab exercise: redis-dedup-ttl). See TASK.md."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def handle(
    redis: Any, message: Any, process: Callable[[Any], Awaitable[None]], *, ttl: int
) -> str:
    """Handle one delivery of ``message``: ``await process(message)`` once per message."""
    # TODO: every delivery is processed, duplicates and redeliveries included. Remember what
    # was processed in Redis, under dedup:<message_id>, for ttl seconds.
    await process(message)
    return "applied"
