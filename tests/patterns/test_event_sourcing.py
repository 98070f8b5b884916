"""Event sourcing on the in-memory store and on the simulator's Kafka (virtual time):
events with all six fields, one apply path, the handler table, optimistic concurrency,
snapshots, projections rebuilt by replay, and conflicts Kafka can only show afterwards."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import (
    AggregateLoaded,
    EventAppended,
    Observation,
    ProjectionRebuilt,
    SnapshotTaken,
    VersionConflict,
)
from mqlab.patterns.event_log_kafka import KafkaEventLog
from mqlab.patterns.event_sourcing import (
    Aggregate,
    CommandRejected,
    DomainEvent,
    MemoryEventStore,
    Order,
    OrdersByStatus,
    OutOfOrderEvent,
    Repository,
    Snapshot,
    StoredEvent,
    UnknownEventType,
    VersionConflictError,
    catch_up,
    rebuild,
)
from mqlab.patterns.harness import Reporter

VIRTUAL_TIME = True


def ids() -> itertools.count[int]:
    return itertools.count(1)


def fixed_ids(prefix: str = "e") -> object:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def repository(store: MemoryEventStore, reporter: Reporter, **kwargs: object) -> Repository[Order]:
    return Repository(
        store,
        Order,
        reporter=reporter,
        clock=lambda: 1000.0,
        new_id=fixed_ids(),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def an_order(aggregate_id: str = "o1") -> Order:
    order = Order(aggregate_id, clock=lambda: 1000.0, new_id=fixed_ids())  # type: ignore[arg-type]
    order.create("alice")
    order.add_item("sku1", 2, 10)
    return order


def test_recorded_events_have_all_six_fields_and_consecutive_versions() -> None:
    order = an_order()
    first, second = order.pending
    assert first == DomainEvent("e1", "o1", "OrderCreated", 1, 1000.0, {"customer": "alice"})
    assert (second.event_type, second.version, second.event_id) == ("ItemAdded", 2, "e2")
    assert order.version == 2
    assert DomainEvent.from_json(second.to_json()) == second


def test_loading_goes_through_the_same_apply_as_recording() -> None:
    recorded = an_order()
    recorded.pay(20)
    loaded = Order.load_from_events("o1", recorded.pending)
    assert (loaded.status, loaded.total, loaded.paid, loaded.version) == ("paid", 20, 20, 3)
    assert loaded.pending == []


def test_apply_refuses_gaps_repeats_and_strangers() -> None:
    events = an_order().pending
    with pytest.raises(OutOfOrderEvent, match="version 2, expected 1"):
        Order.load_from_events("o1", events[1:])
    with pytest.raises(OutOfOrderEvent, match="belongs to o1"):
        Order.load_from_events("o2", events)
    with pytest.raises(OutOfOrderEvent):
        Order.load_from_events("o1", [events[0], events[0]])


def test_an_event_type_without_a_handler_is_named() -> None:
    event = DomainEvent("e1", "o1", "OrderShipped", 1, 0.0, {})
    with pytest.raises(UnknownEventType, match=r"'OrderShipped'.*known: ItemAdded, OrderCancelled"):
        Order.load_from_events("o1", [event])


def test_a_subclass_without_handlers_says_so() -> None:
    class Empty(Aggregate):
        pass

    with pytest.raises(UnknownEventType, match="known: none"):
        Empty("x").record("Happened", {})


def test_commands_check_the_state() -> None:
    order = an_order()
    with pytest.raises(CommandRejected, match="the total is 20, not 5"):
        order.pay(5)
    order.cancel("changed my mind")
    with pytest.raises(CommandRejected, match="cancelled, not pending"):
        order.add_item("sku2", 1, 1)
    with pytest.raises(CommandRejected, match="exists already"):
        order.create("bob")


async def test_save_then_load(reporter: Reporter, recorder: Recorder) -> None:
    store = MemoryEventStore()
    repo = repository(store, reporter)
    order = an_order()
    assert await repo.save(order) == 2
    assert order.pending == []
    loaded = await repo.load("o1")
    assert (loaded.version, loaded.total, loaded.customer) == (2, 20, "alice")
    appended = recorder.of_kind(EventAppended)
    assert [(o.version, o.event_type) for o in appended] == [(1, "OrderCreated"), (2, "ItemAdded")]  # type: ignore[attr-defined]


async def test_two_writers_one_conflict(reporter: Reporter, recorder: Recorder) -> None:
    store = MemoryEventStore()
    repo = repository(store, reporter)
    await repo.save(an_order())
    first, second = await repo.load("o1"), await repo.load("o1")
    first.pay(20)
    second.cancel("too slow")
    await repo.save(first)
    with pytest.raises(VersionConflictError, match="expected version 2, the store has version 3"):
        await repo.save(second)
    [conflict] = recorder.of_kind(VersionConflict)
    assert (conflict.expected_version, conflict.actual_version, conflict.detected) == (
        2,
        3,
        "append",
    )  # type: ignore[attr-defined]
    assert (await repo.load("o1")).status == "paid"


async def test_two_concurrent_writers_on_the_loop(reporter: Reporter) -> None:
    store = MemoryEventStore()
    repo = repository(store, reporter)
    await repo.save(an_order())
    loaded = await asyncio.gather(repo.load("o1"), repo.load("o1"))
    loaded[0].pay(20)
    loaded[1].add_item("sku2", 1, 5)
    results = await asyncio.gather(*(repo.save(o) for o in loaded), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["VersionConflictError", "int"]


async def test_update_retries_on_the_new_state(reporter: Reporter) -> None:
    store = MemoryEventStore()
    repo = repository(store, reporter)
    await repo.save(an_order())
    stale = await repo.load("o1")
    await repo.update("o1", lambda order: order.add_item("sku2", 1, 5))
    stale.add_item("sku3", 1, 1)
    with pytest.raises(VersionConflictError):
        await repo.save(stale)
    # update() reloads and runs the command again on what is stored now.
    order = await repo.update("o1", lambda order: order.pay(order.total), retries=1)
    assert (order.status, order.paid) == ("paid", 25)


async def test_a_stale_or_future_expected_version_is_a_conflict() -> None:
    store = MemoryEventStore()
    events = an_order().pending
    await store.append("o1", events, 0)
    late = DomainEvent("x", "o1", "OrderPaid", 4, 0.0, {"amount": 1})
    with pytest.raises(VersionConflictError):
        await store.append("o1", [late], 3)
    with pytest.raises(ValueError, match="expected 3"):
        await store.append("o1", [late], 2)


async def test_snapshots_shorten_the_replay(reporter: Reporter, recorder: Recorder) -> None:
    store = MemoryEventStore()
    repo = repository(store, reporter, snapshot_every=2)
    order = an_order()
    await repo.save(order)  # versions 1-2: crosses 2
    order.add_item("sku2", 1, 5)
    await repo.save(order)  # version 3: no snapshot
    assert [o.version for o in recorder.of_kind(SnapshotTaken)] == [2]  # type: ignore[attr-defined]
    loaded = await repo.load("o1")
    assert (loaded.version, loaded.total) == (3, 25)
    last = recorder.of_kind(AggregateLoaded)[-1]
    assert (last.snapshot_version, last.events_replayed) == (2, 1)  # type: ignore[attr-defined]
    # A snapshot is a cache: the events alone give the same aggregate.
    replayed = Order.load_from_events("o1", await store.load("o1"))
    assert replayed.snapshot_state() == loaded.snapshot_state()


async def test_an_older_snapshot_never_replaces_a_newer_one() -> None:
    store = MemoryEventStore()
    await store.save_snapshot(Snapshot("o1", 4, {"status": "x"}))
    await store.save_snapshot(Snapshot("o1", 2, {"status": "y"}))
    snapshot = await store.load_snapshot("o1")
    assert snapshot is not None
    assert snapshot.version == 4


async def filled_store(reporter: Reporter) -> MemoryEventStore:
    store = MemoryEventStore()
    repo = repository(store, reporter)
    for number, ending in enumerate(["pay", "cancel", "open", "pay"], start=1):
        order = an_order(f"o{number}")
        if ending == "pay":
            order.pay(20)
        elif ending == "cancel":
            order.cancel("no")
        await repo.save(order)
    return store


async def test_a_projection_rebuilt_by_replay_equals_the_one_kept_up_to_date(
    reporter: Reporter, recorder: Recorder
) -> None:
    store = await filled_store(reporter)
    live = OrdersByStatus(reporter=reporter)
    await catch_up(live, store)
    assert live.counts() == {"cancelled": 1, "paid": 2, "pending": 1}
    assert live.revenue == 40
    fresh = OrdersByStatus(reporter=reporter)
    assert await rebuild(fresh, store) == 11
    assert (fresh.counts(), fresh.revenue, fresh.position) == (live.counts(), 40, 11)
    [rebuilt] = recorder.of_kind(ProjectionRebuilt)
    assert rebuilt.events == 11  # type: ignore[attr-defined]
    # Catching up again reads nothing new and changes nothing.
    assert await catch_up(live, store) == 0
    assert live.revenue == 40


async def test_a_projection_ignores_what_it_already_applied(reporter: Reporter) -> None:
    store = await filled_store(reporter)
    projection = OrdersByStatus(reporter=reporter)
    events = await store.read_all()
    for stored in events + events:
        projection.apply(stored)
    assert projection.revenue == 40


async def test_a_replay_reports_two_events_claiming_one_version(
    reporter: Reporter, recorder: Recorder
) -> None:
    created = DomainEvent("e1", "o1", "OrderCreated", 1, 0.0, {"customer": "a"})
    paid = DomainEvent("e2", "o1", "OrderPaid", 2, 0.0, {"amount": 0})
    cancelled = DomainEvent("e3", "o1", "OrderCancelled", 2, 0.0, {"reason": "x"})
    projection = OrdersByStatus(reporter=reporter)
    for position, event in enumerate([created, paid, cancelled], start=1):
        projection.apply(StoredEvent(position, event))
    assert projection.counts() == {"paid": 1}
    [conflict] = recorder.of_kind(VersionConflict)
    assert (conflict.detected, conflict.actual_version) == ("replay", 2)  # type: ignore[attr-defined]


# --- Kafka as the replay log (simulator) ------------------------------------------------------


async def test_kafka_accepts_both_writers_and_the_replay_finds_the_clash(
    sim_kafka: SimKafkaBroker, bus: ObservationBus
) -> None:
    recorder = Recorder()
    sim_kafka.bus.subscribe(recorder)
    log = KafkaEventLog(sim_kafka, "orders")
    await log.setup()
    try:
        order = an_order()
        await log.publish(order.pending)
        # Two writers both loaded version 2; Kafka has no conditional append.
        first = Order.load_from_events("o1", order.pending, new_id=fixed_ids("a"))  # type: ignore[arg-type]
        second = Order.load_from_events("o1", order.pending, new_id=fixed_ids("b"))  # type: ignore[arg-type]
        first.pay(20)
        second.cancel("no")
        await log.publish(first.pending)
        await log.publish(second.pending)
        replayed = await log.read_all()
        assert [s.position for s in replayed] == [1, 2, 3, 4]
        assert [s.event.version for s in replayed] == [1, 2, 3, 3]
        projection = OrdersByStatus(reporter=Reporter(sim_kafka.bus, sim_kafka.name))
        await rebuild(projection, log)
        assert projection.counts() == {"paid": 1}
        [conflict] = recorder.of_kind(VersionConflict)
        assert conflict.detected == "replay"  # type: ignore[attr-defined]
        # Resuming from a position reads only what came after it.
        assert [s.position for s in await log.read_all(3)] == [4]
    finally:
        await log.close()


async def test_an_empty_kafka_log_replays_nothing(sim_kafka: SimKafkaBroker) -> None:
    log = KafkaEventLog(sim_kafka, "empty")
    await log.setup()
    try:
        assert await log.read_all() == []
    finally:
        await log.close()


async def test_event_sourcing_observations_round_trip(
    reporter: Reporter, recorder: Recorder
) -> None:
    store = MemoryEventStore()
    repo = repository(store, reporter, snapshot_every=1)
    await repo.save(an_order())
    await repo.load("o1")
    await rebuild(OrdersByStatus(reporter=reporter), store)
    for observation in recorder.observations:
        assert Observation.from_dict(observation.to_dict()) == observation
