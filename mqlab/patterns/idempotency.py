"""Idempotency stores: how a consumer recognises a message it already processed.

Three stores, one small interface (:class:`DedupStore`): in memory (the simulator, and to show
why it is not enough: it forgets on restart), Redis (``SET key 1 NX EX ttl``) and PostgreSQL
(``INSERT ... ON CONFLICT DO NOTHING`` in the same transaction as the business write).

About the cheat sheet's Redis template: ``is_duplicate()`` sets the key *before* the work is
done. If the consumer crashes after the SET and before finishing, the redelivered message is
reported as a duplicate and skipped: the message is lost. The safe orders are either "do the
work and record the key atomically" (the database transaction) or "check, do the work, then
record" (a crash in between repeats the work, which is at-least-once, never lost). The stores
here offer ``seen`` and ``remember`` separately so the caller chooses the order deliberately.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class DedupStore(ABC):
    """Remembers processed message keys."""

    @abstractmethod
    async def seen(self, key: str) -> bool:
        """Whether ``key`` was remembered before (does not record it)."""

    @abstractmethod
    async def remember(self, key: str) -> bool:
        """Record ``key``; returns False if it was already there (someone else won)."""

    async def close(self) -> None:
        """Release connections."""
        return None


class MemoryDedupStore(DedupStore):
    """A set in memory: correct inside one process, forgotten by a restart."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    async def seen(self, key: str) -> bool:
        return key in self.keys

    async def remember(self, key: str) -> bool:
        if key in self.keys:
            return False
        self.keys.add(key)
        return True


class RedisDedupStore(DedupStore):
    """``SET dedup:<key> 1 NX EX ttl`` on Redis: survives consumer restarts, expires by TTL.

    Args:
        url: Redis URL (the lab's: ``Endpoints.local().redis_url``).
        prefix: key prefix, so a run's keys can be deleted together.
        ttl: seconds a key lives; a redelivery after that is no longer recognised, so the TTL
            must outlive the longest redelivery delay (retention, DLQ replays).
    """

    def __init__(self, url: str, prefix: str, ttl: int = 86_400) -> None:
        import redis.asyncio as redis_asyncio

        self._redis: Any = redis_asyncio.from_url(url, socket_connect_timeout=3, socket_timeout=5)
        self.prefix = prefix
        self.ttl = ttl

    async def seen(self, key: str) -> bool:
        return bool(await self._redis.exists(f"{self.prefix}:{key}"))

    async def remember(self, key: str) -> bool:
        stored = await self._redis.set(f"{self.prefix}:{key}", "1", nx=True, ex=self.ttl)
        return stored is not None

    async def clear(self) -> None:
        """Delete every key under this store's prefix."""
        async for name in self._redis.scan_iter(match=f"{self.prefix}:*"):
            await self._redis.delete(name)

    async def close(self) -> None:
        await self._redis.aclose()
