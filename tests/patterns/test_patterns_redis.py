"""The Redis dedup store against the lab's Redis: TTLs that Redis enforces itself (a late
redelivery gets through), the processing marker, and cleanup by prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mqlab.lab.endpoints import Endpoints
from mqlab.patterns.idempotency import RedisDedupStore, check_process_record, claim_process_done
from tests.waiting import eventually

pytestmark = pytest.mark.redis

SHORT_TTL = 3.0
"""Seconds a key that the test then waits to see expire lives. Until then the test asserts
that it is still there, so the TTL must outlast the few Redis round trips in between on a
loaded machine (the 0.3 s these tests used could run out between two calls while the machine
kept this process off the CPU, and the key was "applied" or "claimed" a second time)."""
EXPIRY_BOUND = 30.0
"""A bound against hanging while waiting for Redis to drop a key by itself."""


@pytest.fixture
async def store(endpoints: Endpoints, namespace: str) -> AsyncIterator[RedisDedupStore]:
    dedup = RedisDedupStore(endpoints.redis_url, namespace, ttl=600.0)
    yield dedup
    await dedup.clear()
    await dedup.close()


class Work:
    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1


async def test_remember_and_seen(store: RedisDedupStore) -> None:
    assert not await store.seen("m1")
    assert await store.remember("m1")
    assert not await store.remember("m1")
    assert await store.seen("m1")
    ttl = await store.ttl_left("m1")
    assert ttl is not None
    assert 590 < ttl <= 600


async def test_a_late_redelivery_gets_through_after_the_ttl(
    endpoints: Endpoints, namespace: str
) -> None:
    store = RedisDedupStore(endpoints.redis_url, namespace, ttl=SHORT_TTL)
    work = Work()
    try:
        assert await check_process_record(store, "m1", work) == "applied"
        assert await check_process_record(store, "m1", work) == "duplicate"
        # Redis drops the key by itself once the TTL is over (no one deletes it).
        await eventually(
            lambda: store.seen("m1"),
            EXPIRY_BOUND,
            "the key to expire",
            accept=lambda seen: not seen,
        )
        assert await check_process_record(store, "m1", work) == "applied"
        assert work.runs == 2
    finally:
        await store.clear()
        await store.close()


async def test_the_processing_marker_in_redis(store: RedisDedupStore) -> None:
    assert await store.claim("m1", SHORT_TTL) == "claimed"
    assert await store.claim("m1", SHORT_TTL) == "processing"
    assert (await store.lookup("m1")).state == "processing"
    # A crashed worker's marker expires; the redelivery can claim it then.
    await eventually(
        lambda: store.claim("m1", 30.0),
        EXPIRY_BOUND,
        "the marker to expire",
        accept=lambda c: c == "claimed",
    )
    await store.mark_done("m1")
    assert await store.claim("m1", 30.0) == "done"
    await store.release("m1")  # only a processing marker is released
    assert (await store.lookup("m1")).state == "done"


async def test_a_failing_work_releases_the_marker(store: RedisDedupStore) -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await claim_process_done(store, "m1", failing, processing_ttl=30.0)
    work = Work()
    assert await claim_process_done(store, "m1", work, processing_ttl=30.0) == "applied"
    assert await claim_process_done(store, "m1", work, processing_ttl=30.0) == "duplicate"
    assert work.runs == 1


async def test_clear_removes_only_this_prefix(endpoints: Endpoints, namespace: str) -> None:
    mine = RedisDedupStore(endpoints.redis_url, namespace)
    other = RedisDedupStore(endpoints.redis_url, namespace + "-other")
    try:
        await mine.remember("m1")
        await other.remember("m1")
        await mine.clear()
        assert not await mine.seen("m1")
        assert await other.seen("m1")
    finally:
        await other.clear()
        await mine.close()
        await other.close()
