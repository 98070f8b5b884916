"""Event-sourcing programs: orders rebuilt from their events, and two writers racing.

The course's example aggregate (:class:`~mqlab.patterns.event_sourcing.Order`) and projection
(:class:`~mqlab.patterns.event_sourcing.OrdersByStatus`) on the run's event store: PostgreSQL
on the lab (``UNIQUE (aggregate_id, version)``), NATS JetStream in a scenario with a NATS broker
(``Nats-Expected-Last-Subject-Sequence``), Kafka as a log without optimistic concurrency, and
the in-memory store on the simulator.

* ``order-events``: places orders (created, items added, then paid, cancelled or left pending)
  with a live projection kept up to date, then throws a new projection at the store and
  replays it (it must match the live one), and loads an order from its snapshot plus the events
  after it (it must match a full replay). A mismatch is an error of the run.
* ``concurrent-writers`` (and ``-nats``, ``-kafka``): writer A and writer B load the same
  order at the same version; A pays, B cancels; both save. A store with optimistic
  concurrency refuses B (a version conflict); with ``retry`` B reloads, and its command is
  decided again on the new state (a paid order cannot be cancelled). Kafka accepts both:
  only a projection replaying the log sees two events claiming one version.

Event ids come from the step's seeded random source and timestamps from the run's clock, so a
simulated run is the same for the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mqlab.observe.events import Note
from mqlab.patterns.event_sourcing import (
    CommandRejected,
    DomainEvent,
    EventSource,
    EventStore,
    MemoryEventStore,
    Order,
    OrdersByStatus,
    Repository,
    VersionConflictError,
    catch_up,
    rebuild,
    report_appended,
)
from mqlab.patterns.harness import loop_clock
from mqlab.patterns.programs import Param, ProgramContext, program


def _sources(ctx: ProgramContext) -> tuple[Callable[[], float], Callable[[], str]]:
    """The clock and the event-id source of this step's aggregates."""
    clock = loop_clock if ctx.simulated else time.time
    rng = ctx.rng

    def new_id() -> str:
        return f"{rng.getrandbits(64):016x}"

    return clock, new_id


def _repository(
    ctx: ProgramContext, store: EventStore, snapshot_every: int | None
) -> Repository[Order]:
    clock, new_id = _sources(ctx)
    return Repository(
        store,
        Order,
        snapshot_every=snapshot_every,
        reporter=ctx.reporter,
        clock=clock,
        new_id=new_id,
    )


def _describe(projection: OrdersByStatus) -> str:
    counts = ", ".join(f"{status} {count}" for status, count in projection.counts().items())
    return f"{counts or 'no orders'}; revenue {projection.revenue}"


@program(
    "order-events",
    "Place orders as events, keep a projection, then rebuild it and an order by replay",
    params={
        "orders": Param((int,), 3, "How many orders (order-1 ...: paid, cancelled, pending ...)."),
        "snapshot_every": Param(
            (int, type(None)), 3, "Snapshot an order each time it crosses this many versions."
        ),
    },
    services=("postgres",),
)
async def order_events(ctx: ProgramContext) -> None:
    """Write, project, rebuild, compare."""
    store = await ctx.event_store()
    every = ctx.params["snapshot_every"]
    repository = _repository(ctx, store, every if isinstance(every, int) else None)
    live = OrdersByStatus(reporter=ctx.reporter)
    await catch_up(live, store)
    orders = [f"order-{number}" for number in range(1, ctx.int_param("orders") + 1)]
    for number, order_id in enumerate(orders, start=1):
        order = repository.new(order_id)
        order.create("ada")
        order.add_item("lamp", 1, 30)
        order.add_item("bulb", 2, 5)
        await repository.save(order)
        await catch_up(live, store)
        if number % 3 == 1:
            await repository.update(order_id, lambda o: o.pay(o.total))
        elif number % 3 == 2:
            await repository.update(order_id, lambda o: o.cancel("changed their mind"))
        await catch_up(live, store)
    ctx.reporter.emit(Note, text=f"live projection: {_describe(live)}")
    rebuilt = OrdersByStatus(reporter=ctx.reporter)
    await rebuild(rebuilt, store)
    if (rebuilt.counts(), rebuilt.revenue) != (live.counts(), live.revenue):
        raise RuntimeError(
            f"the rebuilt projection ({_describe(rebuilt)}) differs from the live one "
            f"({_describe(live)})"
        )
    ctx.reporter.emit(Note, text=f"rebuilt from the events: {_describe(rebuilt)} (the same)")
    for order_id in orders:
        from_snapshot = await repository.load(order_id)
        replayed = Order.load_from_events(order_id, await store.load(order_id))
        if from_snapshot.snapshot_state() != replayed.snapshot_state():
            raise RuntimeError(f"{order_id}: snapshot + later events differ from a full replay")
    ctx.reporter.emit(
        Note, text="every order loaded from its snapshot equals its full replay of events"
    )


_RETRY = Param((bool,), False, "Writer B reloads after the conflict and decides its command again.")


async def _race(
    ctx: ProgramContext, store_a: EventStore, store_b: EventStore, *, retry: bool
) -> None:
    """Seed the order, load it twice, let A pay and B cancel, and report what the store did."""
    order_id = "order-1"
    writer_a = _repository(ctx, store_a, None)
    writer_b = _repository(ctx, store_b, None)
    order = writer_a.new(order_id)
    order.create("ada")
    order.add_item("lamp", 1, 30)
    await writer_a.save(order)
    seen_by_a = await writer_a.load(order_id)
    seen_by_b = await writer_b.load(order_id)
    seen_by_a.pay(seen_by_a.total)
    seen_by_b.cancel("changed their mind")
    await writer_a.save(seen_by_a)
    try:
        await writer_b.save(seen_by_b)
        ctx.reporter.emit(Note, text="writer B's cancel was stored too: paid AND cancelled")
    except VersionConflictError:
        if retry:
            try:
                await writer_b.update(order_id, lambda o: o.cancel("changed their mind"))
            except CommandRejected as rejected:
                ctx.reporter.emit(Note, text=f"writer B reloaded and decided again: {rejected}")
        else:
            ctx.reporter.emit(Note, text="writer B's cancel was refused: reload and decide again")
    projection = OrdersByStatus(reporter=ctx.reporter)
    await rebuild(projection, store_a)
    ctx.reporter.emit(Note, text=f"orders by status: {_describe(projection)}")


@program(
    "concurrent-writers",
    "Two writers append to one order at the same version (PostgreSQL's unique version)",
    params={"retry": _RETRY},
    services=("postgres",),
)
async def concurrent_writers(ctx: ProgramContext) -> None:
    """The race on the run's event store; writer B has a connection of its own on the lab."""
    from mqlab.patterns.event_store_postgres import PostgresEventStore

    store_a = await ctx.event_store()
    if ctx.simulated:
        await _race(ctx, store_a, store_a, retry=bool(ctx.params["retry"]))
        return
    store_b = PostgresEventStore(ctx.endpoints.postgres_dsn, ctx.namespace)
    await store_b.setup()
    try:
        await _race(ctx, store_a, store_b, retry=bool(ctx.params["retry"]))
    finally:
        await store_b.close()


def _require(ctx: ProgramContext, system: str, program_id: str) -> None:
    if getattr(ctx.broker, "system", None) != system:
        raise ValueError(f"{program_id} runs in a scenario with brokers: [{system}, sim]")


@program(
    "concurrent-writers-nats",
    "Two writers append to one order at the same version (JetStream's expected sequence)",
    params={"retry": _RETRY},
)
async def concurrent_writers_nats(ctx: ProgramContext) -> None:
    """The race on a NATS JetStream event store (memory on the simulator)."""
    _require(ctx, "nats", "concurrent-writers-nats")
    ctx.reporter = ctx.reporter.with_source(getattr(ctx.broker, "name", "nats"))
    if ctx.simulated:
        store = MemoryEventStore(name=ctx.store_name("nats"))
        await _race(ctx, store, store, retry=bool(ctx.params["retry"]))
        return
    from mqlab.patterns.event_store_nats import NatsEventStore

    url, namespace = ctx.endpoints.nats_url, ctx.namespace
    store_a = NatsEventStore(url, namespace)
    store_b = NatsEventStore(url, namespace)
    try:
        await store_a.setup()
        await store_b.setup()
        await _race(ctx, store_a, store_b, retry=bool(ctx.params["retry"]))
    finally:
        await store_a.drop()
        await store_a.close()
        await store_b.close()


@program(
    "concurrent-writers-kafka",
    "Two writers publish to one order's events on Kafka, which has no conditional append",
)
async def concurrent_writers_kafka(ctx: ProgramContext) -> None:
    """Both writers read the log, decide, and publish; a projection replays the log."""
    from mqlab.brokers.kafka.api import KafkaAPI
    from mqlab.patterns.event_log_kafka import KafkaEventLog

    _require(ctx, "kafka", "concurrent-writers-kafka")
    assert isinstance(ctx.broker, KafkaAPI)
    ctx.reporter = ctx.reporter.with_source(ctx.broker.name)
    log = KafkaEventLog(ctx.broker, f"{ctx.channel}-events")
    await log.setup()
    clock, new_id = _sources(ctx)
    order_id = "order-1"

    async def publish(order: Order) -> None:
        events = list(order.pending)
        await log.publish(events)
        order.pending.clear()
        report_appended(ctx.reporter, events, log.name)

    async def load(source: EventSource) -> Order:
        events: list[DomainEvent] = [
            stored.event
            for stored in await source.read_all()
            if stored.event.aggregate_id == order_id
        ]
        return Order.load_from_events(order_id, events, clock=clock, new_id=new_id)

    try:
        order = Order(order_id, clock=clock, new_id=new_id)
        order.create("ada")
        order.add_item("lamp", 1, 30)
        await publish(order)
        seen_by_a, seen_by_b = await load(log), await load(log)
        seen_by_a.pay(seen_by_a.total)
        seen_by_b.cancel("changed their mind")
        await publish(seen_by_a)
        await publish(seen_by_b)
        ctx.reporter.emit(Note, text="Kafka acknowledged both writers' version 3")
        projection = OrdersByStatus(reporter=ctx.reporter)
        await rebuild(projection, log)
        ctx.reporter.emit(Note, text=f"orders by status: {_describe(projection)}")
    finally:
        await log.close()
