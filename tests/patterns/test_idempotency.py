"""Idempotency on the in-memory stores (virtual time): each order's crash behaviour, TTL
expiry letting a late redelivery through, the database transaction, natural idempotency."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import (
    DedupHit,
    DedupMiss,
    DedupRecorded,
    EffectApplied,
)
from mqlab.patterns.database import MemoryDatabase, Transaction
from mqlab.patterns.harness import BoundaryRecorder, Crashed, Reporter, crash_at
from mqlab.patterns.idempotency import (
    BalanceModel,
    IncrementBalance,
    MemoryDedupStore,
    Outcome,
    SetBalance,
    apply_operation,
    check_process_record,
    claim_process_done,
    mark_then_process,
    process_in_one_transaction,
    process_in_separate_transactions,
)

VIRTUAL_TIME = True

Deliver = Callable[..., Awaitable[Outcome]]


def kinds(recorder: Recorder) -> list[str]:
    return [o.kind for o in recorder.observations]


# --- the store itself ----------------------------------------------------------------------


async def test_the_original_two_calls_still_work_without_arguments() -> None:
    store = MemoryDedupStore()
    assert not await store.seen("m1")
    assert await store.remember("m1")
    assert await store.seen("m1")
    assert not await store.remember("m1")
    assert store.keys == {"m1"}


async def test_a_key_expires_on_the_virtual_clock() -> None:
    store = MemoryDedupStore(ttl=60.0)
    await store.remember("m1")
    await asyncio.sleep(59.9)
    assert await store.seen("m1")
    await asyncio.sleep(0.2)
    found = await store.lookup("m1")
    assert found.state is None
    assert found.expired
    assert store.keys == set()


async def test_the_loop_clock_is_virtual_here() -> None:
    loop = asyncio.get_running_loop()
    before = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - before == pytest.approx(3600)


async def test_a_claim_blocks_until_done_or_expiry_and_release_lets_a_retry_in() -> None:
    store = MemoryDedupStore(ttl=100.0)
    assert await store.claim("m1", 5.0) == "claimed"
    assert await store.claim("m1", 5.0) == "processing"
    await store.release("m1")
    assert await store.claim("m1", 5.0) == "claimed"
    await store.mark_done("m1")
    assert await store.claim("m1", 5.0) == "done"
    await store.release("m1")  # a done key is never released
    assert (await store.lookup("m1")).state == "done"


# --- the orders with a dedup store -----------------------------------------------------------


class Effects:
    """A side effect outside the dedup store (a counter per message)."""

    def __init__(self) -> None:
        self.applied: Counter[str] = Counter()

    def work(self, key: str) -> Callable[[], Awaitable[None]]:
        async def apply() -> None:
            self.applied[key] += 1

        return apply


async def deliver_until_settled(
    deliver: Callable[[Callable[[str, str], Awaitable[None]]], Awaitable[Outcome]],
    boundary: str,
) -> bool:
    """Deliver once with a crash at ``boundary``, then redeliver without; True if it crashed."""
    crashed = False
    try:
        await deliver(crash_at(boundary))
    except Crashed:
        crashed = True
    await deliver(crash_at("never"))
    return crashed


@pytest.mark.parametrize(
    ("boundary", "applied"),
    [("after_check", 1), ("after_work", 2), ("after_record", 1)],
)
async def test_check_process_record_never_loses_and_duplicates_only_after_the_work(
    boundary: str, applied: int
) -> None:
    store, effects = MemoryDedupStore(ttl=600.0), Effects()

    async def deliver(crash: Callable[[str, str], Awaitable[None]]) -> Outcome:
        return await check_process_record(store, "m1", effects.work("m1"), crash=crash)

    assert await deliver_until_settled(deliver, boundary)
    assert effects.applied["m1"] == applied


@pytest.mark.parametrize(("boundary", "applied"), [("after_record", 0), ("after_work", 1)])
async def test_the_cheat_sheet_order_loses_the_message_when_it_crashes_after_marking(
    boundary: str, applied: int
) -> None:
    store, effects = MemoryDedupStore(ttl=600.0), Effects()

    async def deliver(crash: Callable[[str, str], Awaitable[None]]) -> Outcome:
        return await mark_then_process(store, "m1", effects.work("m1"), crash=crash)

    assert await deliver_until_settled(deliver, boundary)
    assert effects.applied["m1"] == applied


async def test_the_cheat_sheet_order_also_loses_a_message_whose_work_failed() -> None:
    store, effects = MemoryDedupStore(), Effects()

    async def failing() -> None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        await mark_then_process(store, "m1", failing)
    assert await mark_then_process(store, "m1", effects.work("m1")) == "duplicate"
    assert effects.applied["m1"] == 0


async def test_a_processing_marker_stops_a_concurrent_second_delivery() -> None:
    store, effects = MemoryDedupStore(ttl=600.0), Effects()
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        await finish.wait()
        effects.applied["m1"] += 1

    first = asyncio.create_task(claim_process_done(store, "m1", slow, processing_ttl=30.0))
    await started.wait()
    second = await claim_process_done(store, "m1", effects.work("m1"), processing_ttl=30.0)
    finish.set()
    assert (await first, second) == ("applied", "in_progress")
    assert await claim_process_done(store, "m1", effects.work("m1"), processing_ttl=30) == (
        "duplicate"
    )
    assert effects.applied["m1"] == 1


async def test_check_process_record_lets_the_concurrent_delivery_work_twice() -> None:
    """The window the processing marker closes."""
    store, effects = MemoryDedupStore(), Effects()
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        await finish.wait()
        effects.applied["m1"] += 1

    first = asyncio.create_task(check_process_record(store, "m1", slow))
    await started.wait()
    second = await check_process_record(store, "m1", effects.work("m1"))
    finish.set()
    assert (await first, second) == ("applied", "applied")
    assert effects.applied["m1"] == 2


async def test_a_crash_under_the_marker_blocks_redelivery_until_it_expires() -> None:
    store, effects = MemoryDedupStore(ttl=600.0), Effects()
    with pytest.raises(Crashed):
        await claim_process_done(
            store, "m1", effects.work("m1"), processing_ttl=30.0, crash=crash_at("after_claim")
        )
    assert await claim_process_done(store, "m1", effects.work("m1"), processing_ttl=30.0) == (
        "in_progress"
    )
    await asyncio.sleep(30.0)
    assert await claim_process_done(store, "m1", effects.work("m1"), processing_ttl=30.0) == (
        "applied"
    )
    assert effects.applied["m1"] == 1


async def test_a_failed_work_releases_the_marker_at_once() -> None:
    store, effects = MemoryDedupStore(), Effects()

    async def failing() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await claim_process_done(store, "m1", failing, processing_ttl=30.0)
    assert await claim_process_done(store, "m1", effects.work("m1"), processing_ttl=30.0) == (
        "applied"
    )


async def test_a_redelivery_after_the_ttl_is_processed_again(
    bus: ObservationBus, recorder: Recorder
) -> None:
    """The lesson of the TTL: it must outlive the longest redelivery delay."""
    store, effects = MemoryDedupStore(ttl=10.0), Effects()
    reporter = Reporter(bus, "memory")
    assert await check_process_record(store, "m1", effects.work("m1"), reporter=reporter) == (
        "applied"
    )
    await asyncio.sleep(5.0)
    assert await check_process_record(store, "m1", effects.work("m1"), reporter=reporter) == (
        "duplicate"
    )
    await asyncio.sleep(6.0)
    assert await check_process_record(store, "m1", effects.work("m1"), reporter=reporter) == (
        "applied"
    )
    assert effects.applied["m1"] == 2
    misses = [o for o in recorder.observations if isinstance(o, DedupMiss)]
    assert [m.expired for m in misses] == [False, True]
    assert kinds(recorder) == [
        "dedup_miss",
        "dedup_recorded",
        "dedup_hit",
        "dedup_miss",
        "dedup_recorded",
    ]


# --- the database transaction ------------------------------------------------------------


def credit(message_id: str) -> Callable[[Transaction], Awaitable[None]]:
    async def work(tx: Transaction) -> None:
        await tx.credit("acct", 10, message_id=message_id)

    return work


async def boundaries_of_one_delivery(deliver: Callable[..., Awaitable[Outcome]]) -> list[str]:
    recorder = BoundaryRecorder()
    await deliver(recorder)
    return [b.point for b in recorder.boundaries]


@pytest.mark.parametrize("boundary", ["after_claim", "before_commit", "after_commit"])
async def test_one_transaction_applies_exactly_once_whatever_the_crash(boundary: str) -> None:
    db = MemoryDatabase()

    async def deliver(crash: Callable[[str, str], Awaitable[None]]) -> Outcome:
        return await process_in_one_transaction(db, "c", "m1", credit("m1"), crash=crash)

    assert await deliver_until_settled(deliver, boundary)
    assert await db.balance("acct") == 10
    assert [p.message_id for p in await db.postings()] == ["m1"]
    assert await db.is_claimed("c", "m1")


async def test_every_boundary_of_the_transaction_is_covered_above() -> None:
    db = MemoryDatabase()
    points = await boundaries_of_one_delivery(
        lambda crash: process_in_one_transaction(db, "c", "m1", credit("m1"), crash=crash)
    )
    assert points == ["after_claim", "before_commit", "after_commit"]


async def test_one_transaction_skips_a_duplicate_without_writing() -> None:
    db = MemoryDatabase()
    first = await process_in_one_transaction(db, "c", "m1", credit("m1"))
    second = await process_in_one_transaction(db, "c", "m1", credit("m1"))
    assert (first, second) == ("applied", "duplicate")
    assert await db.balance("acct") == 10
    # The key is per consumer: another consumer (group) processes it for itself.
    assert await process_in_one_transaction(db, "other", "m1", credit("m1")) == "applied"


@pytest.mark.parametrize(
    ("order", "applied", "claimed"),
    [("dedup_first", 0, True), ("work_first", 2, True)],
)
async def test_separate_transactions_lose_or_duplicate_on_a_crash_between_them(
    order: str, applied: int, claimed: bool
) -> None:
    db = MemoryDatabase()

    async def deliver(crash: Callable[[str, str], Awaitable[None]]) -> Outcome:
        return await process_in_separate_transactions(
            db,
            "c",
            "m1",
            credit("m1"),
            order=order,  # type: ignore[arg-type]
            crash=crash,
        )

    assert await deliver_until_settled(deliver, "between_transactions")
    assert len(await db.postings()) == applied
    assert await db.is_claimed("c", "m1") == claimed


async def test_separate_transactions_without_a_crash_look_fine() -> None:
    """Why the bug survives code review: without a crash both variants work."""
    for order in ("dedup_first", "work_first"):
        db = MemoryDatabase()
        for _ in range(2):
            await process_in_separate_transactions(db, "c", "m1", credit("m1"), order=order)  # type: ignore[arg-type]
        assert len(await db.postings()) == 1


# --- natural idempotency -------------------------------------------------------------------


async def test_set_twice_is_the_same_increment_twice_is_not(
    reporter: Reporter, recorder: Recorder
) -> None:
    absolute = BalanceModel("acct", 100, reporter=reporter)
    relative = BalanceModel("acct", 100, reporter=reporter)
    for _ in range(2):  # a redelivery
        absolute.apply(SetBalance(150), "m1")
        relative.apply(IncrementBalance(50), "m2")
    assert (absolute.balance, relative.balance) == (150, 200)
    effects = [o for o in recorder.observations if isinstance(o, EffectApplied)]
    assert [(e.operation, e.before, e.after, e.idempotent) for e in effects] == [
        ("SET balance = 150", 100, 150, True),
        ("INCREMENT balance BY 50", 100, 150, False),
        ("SET balance = 150", 150, 150, True),
        ("INCREMENT balance BY 50", 150, 200, False),
    ]


async def test_natural_idempotency_in_the_database() -> None:
    db = MemoryDatabase()
    for _ in range(2):
        await apply_operation(db, "a", SetBalance(500), "m1")
        await apply_operation(db, "b", IncrementBalance(50), "m2")
    assert (await db.balance("a"), await db.balance("b")) == (500, 100)


async def test_observations_name_the_store_and_key(recorder: Recorder, bus: ObservationBus) -> None:
    store = MemoryDedupStore(ttl=5.0, name="sim:redis")
    reporter = Reporter(bus, "sim:redis")
    await check_process_record(store, "g:m1", Effects().work("m1"), reporter=reporter)
    await check_process_record(store, "g:m1", Effects().work("m1"), reporter=reporter)
    hit = next(o for o in recorder.observations if isinstance(o, DedupHit))
    recorded = next(o for o in recorder.observations if isinstance(o, DedupRecorded))
    assert (hit.key, hit.store, hit.broker) == ("g:m1", "sim:redis", "sim:redis")
    assert recorded.ttl == 5.0
