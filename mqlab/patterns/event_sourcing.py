"""Event sourcing: state as the sum of its events, stores with optimistic concurrency,
snapshots and projections rebuilt by replay.

An aggregate's state is never stored; its events are. Loading an aggregate replays its events
through the same ``apply`` that recorded them; a command appends new events *only if nobody
else appended since the aggregate was loaded* (optimistic concurrency: the append names the
version it expects); projections (read models) are folds of the events and can be thrown
away and rebuilt by replaying the store.

What the cheat sheet's template gets wrong, and this module does right:

* Its ``DomainEvent`` has six fields but ``create()`` builds one with two (``event_type`` and
  ``data``): a ``TypeError``. Here :meth:`Aggregate.record` fills all six: a fresh event id, the
  aggregate id, the type, the *next version* (the template never writes the version into the
  event, so nothing downstream could order events or detect a conflict), a timestamp from an
  injectable clock, and the data.
* It dispatches with ``getattr(self, f"_on_{to_snake(event_type)}")``, and ``to_snake`` is
  defined nowhere. Here each aggregate has an explicit ``HANDLERS`` table from event type to
  method; an event type missing from it is an :class:`UnknownEventType` error naming the type,
  never an ``AttributeError`` from a mistyped method name.
* Its ``load_from_events`` calls the handlers directly and bumps ``_version`` itself, so loading
  and recording can drift apart. Here both go through :meth:`Aggregate.apply`, which also
  checks that versions follow each other without a gap.

The stores (one interface, :class:`EventStore`; this module holds the memory one, each other
store is a module of its own):

* :class:`MemoryEventStore`: the simulator.
* :class:`~mqlab.patterns.event_store_postgres.PostgresEventStore`: ``UNIQUE (aggregate_id,
  version)`` is the guarantee: two writers can never both store version 4 of one aggregate.
* :class:`~mqlab.patterns.event_store_nats.NatsEventStore`: one subject per aggregate; the
  append is a publish with ``Nats-Expected-Last-Subject-Sequence``, so JetStream itself
  refuses it if another event landed on that subject since the aggregate was read.
* :class:`~mqlab.patterns.event_log_kafka.KafkaEventLog`: Kafka as the log projections
  replay, *without* optimistic concurrency (its docstring says why); a projection replaying
  it detects a conflict only after both writes were accepted.

Observations: :class:`~mqlab.observe.events.EventAppended`, ``VersionConflict``,
``SnapshotTaken``, ``AggregateLoaded``, ``ProjectionUpdated``, ``ProjectionRebuilt``.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from mqlab.observe.events import (
    AggregateLoaded,
    EventAppended,
    ProjectionRebuilt,
    ProjectionUpdated,
    SnapshotTaken,
    VersionConflict,
)
from mqlab.patterns.harness import Reporter


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Something that happened to one aggregate.

    Attributes:
        event_id: unique id (what consumers of the events deduplicate on).
        aggregate_id: the aggregate it belongs to.
        event_type: past tense, e.g. ``OrderCreated``.
        version: the aggregate's version *after* this event (1 for the first event).
        timestamp: seconds since the epoch (virtual seconds on the simulator).
        data: the event's payload (JSON-compatible values).
    """

    event_id: str
    aggregate_id: str
    event_type: str
    version: int
    timestamp: float
    data: Mapping[str, Any]

    def to_json(self) -> str:
        """The event as a JSON object (what every store writes)."""
        return json.dumps(
            {
                "event_id": self.event_id,
                "aggregate_id": self.aggregate_id,
                "event_type": self.event_type,
                "version": self.version,
                "timestamp": self.timestamp,
                "data": dict(self.data),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DomainEvent:
        """Read an event written by :meth:`to_json`.

        Raises:
            ValueError: not such an event.
        """
        try:
            raw = json.loads(text)
            return cls(
                event_id=str(raw["event_id"]),
                aggregate_id=str(raw["aggregate_id"]),
                event_type=str(raw["event_type"]),
                version=int(raw["version"]),
                timestamp=float(raw["timestamp"]),
                data=dict(raw["data"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a domain event: {error}") from None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with its ``position`` in the store's global order (from 1): what a projection
    remembers as its progress."""

    position: int
    event: DomainEvent


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state at ``version``, so a load replays only the events after it."""

    aggregate_id: str
    version: int
    state: Mapping[str, Any]


class VersionConflictError(Exception):
    """An append expected ``expected`` but the aggregate is at ``actual``: reload and retry
    the command (or tell the user someone else changed it)."""

    def __init__(self, aggregate_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{aggregate_id}: expected version {expected}, the store has version {actual}"
        )
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual


class UnknownEventType(Exception):
    """An aggregate was given an event type its ``HANDLERS`` table does not have."""


class CommandRejected(Exception):
    """A command is not allowed in the aggregate's current state (paying a cancelled order)."""


class OutOfOrderEvent(Exception):
    """An event does not follow the aggregate's current version (a gap or a repeat)."""


# --- aggregates ---------------------------------------------------------------------------

Handler = Callable[[Any, DomainEvent], None]
"""A handler: ``method(self, event)``, changes state and nothing else (no I/O, no checks: the
event already happened)."""


def new_event_id() -> str:
    """A random event id (the simulator passes its own, seeded, id source instead)."""
    return uuid.uuid4().hex


class Aggregate:
    """Base of event-sourced aggregates.

    A subclass defines command methods that check the state and call :meth:`record`, handler
    methods that change the state, and ``HANDLERS``, the explicit table from event type to
    handler. :meth:`apply` is the only way state changes, for new events and for events
    loaded from a store alike.

    Args:
        aggregate_id: the aggregate's id.
        clock: where event timestamps come from (the simulator passes its virtual clock).
        new_id: where event ids come from (the simulator passes a seeded id source).
    """

    HANDLERS: ClassVar[Mapping[str, Handler]] = {}

    def __init__(
        self,
        aggregate_id: str,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_event_id,
    ) -> None:
        self.aggregate_id = aggregate_id
        self.version = 0
        self.pending: list[DomainEvent] = []
        self._clock = clock
        self._new_id = new_id

    def record(self, event_type: str, data: Mapping[str, Any]) -> DomainEvent:
        """Create the next event (all six fields), apply it and keep it for the next save."""
        event = DomainEvent(
            event_id=self._new_id(),
            aggregate_id=self.aggregate_id,
            event_type=event_type,
            version=self.version + 1,
            timestamp=self._clock(),
            data=dict(data),
        )
        self.apply(event)
        self.pending.append(event)
        return event

    def apply(self, event: DomainEvent) -> None:
        """Change the state by one event: the single path for new and loaded events.

        Raises:
            UnknownEventType: the type is not in ``HANDLERS``.
            OutOfOrderEvent: the event is for another aggregate or its version is not the
                next one.
        """
        if event.aggregate_id != self.aggregate_id:
            raise OutOfOrderEvent(
                f"{self.aggregate_id}: event {event.event_id} belongs to {event.aggregate_id}"
            )
        if event.version != self.version + 1:
            raise OutOfOrderEvent(
                f"{self.aggregate_id}: event {event.event_type} has version {event.version}, "
                f"expected {self.version + 1}"
            )
        handler = self.HANDLERS.get(event.event_type)
        if handler is None:
            known = ", ".join(sorted(self.HANDLERS)) or "none"
            raise UnknownEventType(
                f"{type(self).__name__} has no handler for {event.event_type!r} (known: {known})"
            )
        handler(self, event)
        self.version = event.version

    @classmethod
    def load_from_events(
        cls,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        *,
        snapshot: Snapshot | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_event_id,
    ) -> Self:
        """Rebuild an aggregate: its snapshot's state (if any), then ``events`` through
        :meth:`apply`."""
        aggregate = cls(aggregate_id, clock=clock, new_id=new_id)
        if snapshot is not None:
            aggregate.restore_state(snapshot.state)
            aggregate.version = snapshot.version
        for event in events:
            aggregate.apply(event)
        return aggregate

    def snapshot_state(self) -> dict[str, Any]:
        """The state as JSON-compatible values (override to allow snapshots)."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Set the state from :meth:`snapshot_state`'s output (override with it)."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")


A = TypeVar("A", bound=Aggregate)


# --- stores -------------------------------------------------------------------------------


class EventSource(ABC):
    """Anything projections can replay: the events in one global order."""

    name: str

    @abstractmethod
    async def read_all(self, after_position: int = 0) -> list[StoredEvent]:
        """Every event after ``after_position``, in position order."""


class EventStore(EventSource):
    """An event store with optimistic concurrency.

    Attributes:
        name: what observations call it (``postgres``, ``nats``, ``memory``).
    """

    async def setup(self) -> None:
        """Connect and create what the store needs (idempotent)."""
        return None

    async def close(self) -> None:
        """Release connections (the events stay)."""
        return None

    @abstractmethod
    async def append(
        self, aggregate_id: str, events: Sequence[DomainEvent], expected_version: int
    ) -> int:
        """Append ``events`` (versions ``expected_version + 1`` ... in order) atomically,
        only if the aggregate is at ``expected_version``.

        Returns:
            The aggregate's new version.

        Raises:
            VersionConflictError: the aggregate is at another version.
            ValueError: the events are not the next consecutive versions of that aggregate.
        """

    @abstractmethod
    async def load(self, aggregate_id: str, after_version: int = 0) -> list[DomainEvent]:
        """The aggregate's events with a version above ``after_version``, in order."""

    @abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (a newer one replaces it; an older one is ignored)."""

    @abstractmethod
    async def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        """The aggregate's latest snapshot, if any."""


def report_appended(reporter: Reporter, events: Sequence[DomainEvent], store: str) -> None:
    """Emit ``EventAppended`` for each of ``events``, which ``store`` has just accepted."""
    for event in events:
        reporter.emit(
            EventAppended,
            aggregate_id=event.aggregate_id,
            event_type=event.event_type,
            version=event.version,
            event_id=event.event_id,
            store=store,
        )


def check_batch(aggregate_id: str, events: Sequence[DomainEvent], expected_version: int) -> None:
    """Refuse a batch that is not the next consecutive versions of ``aggregate_id``.

    Raises:
        ValueError: empty, another aggregate's event, or versions that do not follow
            ``expected_version`` one by one.
    """
    if not events:
        raise ValueError(f"{aggregate_id}: nothing to append")
    for offset, event in enumerate(events, start=1):
        if event.aggregate_id != aggregate_id:
            raise ValueError(f"{aggregate_id}: event {event.event_id} is {event.aggregate_id}'s")
        if event.version != expected_version + offset:
            raise ValueError(
                f"{aggregate_id}: event {event.event_type} has version {event.version}, "
                f"expected {expected_version + offset}"
            )


class MemoryEventStore(EventStore):
    """Events in lists (the simulator). Appends are atomic because nothing awaits between
    the version check and the write."""

    def __init__(self, *, name: str = "memory") -> None:
        self.name = name
        self._log: list[StoredEvent] = []
        self._streams: dict[str, list[DomainEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}

    async def append(
        self, aggregate_id: str, events: Sequence[DomainEvent], expected_version: int
    ) -> int:
        stream = self._streams.setdefault(aggregate_id, [])
        actual = len(stream)
        if actual != expected_version:
            raise VersionConflictError(aggregate_id, expected_version, actual)
        check_batch(aggregate_id, events, expected_version)
        for event in events:
            stream.append(event)
            self._log.append(StoredEvent(len(self._log) + 1, event))
        return len(stream)

    async def load(self, aggregate_id: str, after_version: int = 0) -> list[DomainEvent]:
        return [e for e in self._streams.get(aggregate_id, []) if e.version > after_version]

    async def read_all(self, after_position: int = 0) -> list[StoredEvent]:
        return self._log[after_position:]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        current = self._snapshots.get(snapshot.aggregate_id)
        if current is None or current.version < snapshot.version:
            self._snapshots[snapshot.aggregate_id] = snapshot

    async def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        return self._snapshots.get(aggregate_id)


# --- repository: load, save, snapshots ----------------------------------------------------


class Repository(Generic[A]):
    """Loads and saves one aggregate type through an :class:`EventStore`.

    Args:
        store: the event store.
        aggregate_type: the :class:`Aggregate` subclass.
        snapshot_every: take a snapshot whenever a save crosses a multiple of this many
            versions (None: never).
        reporter: where observations go (source: the store's name when omitted).
        clock: event timestamps of loaded aggregates' new events.
        new_id: event ids of loaded aggregates' new events.
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_type: type[A],
        *,
        snapshot_every: int | None = None,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_event_id,
    ) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        self.store = store
        self.aggregate_type = aggregate_type
        self.snapshot_every = snapshot_every
        self.reporter = reporter if reporter is not None else Reporter(source=store.name)
        self.clock = clock
        self.new_id = new_id

    def new(self, aggregate_id: str) -> A:
        """A fresh aggregate (version 0) with this repository's clock and id source."""
        return self.aggregate_type(aggregate_id, clock=self.clock, new_id=self.new_id)

    async def load(self, aggregate_id: str) -> A:
        """The aggregate from its latest snapshot (if any) and the events after it (a new,
        empty aggregate at version 0 if it has none)."""
        snapshot = await self.store.load_snapshot(aggregate_id) if self.snapshot_every else None
        events = await self.store.load(aggregate_id, snapshot.version if snapshot else 0)
        aggregate = self.aggregate_type.load_from_events(
            aggregate_id, events, snapshot=snapshot, clock=self.clock, new_id=self.new_id
        )
        self.reporter.emit(
            AggregateLoaded,
            aggregate_id=aggregate_id,
            version=aggregate.version,
            events_replayed=len(events),
            snapshot_version=snapshot.version if snapshot else None,
            store=self.store.name,
        )
        return aggregate

    async def save(self, aggregate: A) -> int:
        """Append the aggregate's pending events at the version it was loaded at.

        Returns:
            The new version.

        Raises:
            VersionConflictError: someone else appended first (reported as VersionConflict).
        """
        pending = list(aggregate.pending)
        if not pending:
            return aggregate.version
        expected = pending[0].version - 1
        try:
            version = await self.store.append(aggregate.aggregate_id, pending, expected)
        except VersionConflictError as conflict:
            self.reporter.emit(
                VersionConflict,
                aggregate_id=aggregate.aggregate_id,
                expected_version=conflict.expected,
                actual_version=conflict.actual,
                store=self.store.name,
            )
            raise
        aggregate.pending.clear()
        report_appended(self.reporter, pending, self.store.name)
        every = self.snapshot_every
        if every is not None and version // every > expected // every:
            await self.store.save_snapshot(
                Snapshot(aggregate.aggregate_id, aggregate.version, aggregate.snapshot_state())
            )
            self.reporter.emit(
                SnapshotTaken,
                aggregate_id=aggregate.aggregate_id,
                version=aggregate.version,
                store=self.store.name,
            )
        return version

    async def update(
        self, aggregate_id: str, command: Callable[[A], None], *, retries: int = 0
    ) -> A:
        """Load, run ``command`` on the aggregate, save; on a version conflict reload and run
        the command again, up to ``retries`` times (the command must decide on the state it
        is given: that is what makes the retry correct).

        Raises:
            VersionConflictError: still conflicting after ``retries`` retries.
            CommandRejected: the command refused (on the latest state).
        """
        for attempt in range(retries + 1):
            aggregate = await self.load(aggregate_id)
            command(aggregate)
            try:
                await self.save(aggregate)
            except VersionConflictError:
                if attempt == retries:
                    raise
                continue
            return aggregate
        raise AssertionError("not reached")


# --- projections --------------------------------------------------------------------------


class Projection:
    """A read model folded from events; throw it away and :func:`rebuild` it at will.

    A subclass sets ``name``, its state (in :meth:`reset`) and ``HANDLERS`` (event type ->
    handler; types not in it are skipped: a projection cares about some events only).
    :meth:`apply` skips events it has already seen (position) and reports events whose
    version does not follow the aggregate's last one (two writers in a log without optimistic
    concurrency) instead of folding them in.
    """

    name: ClassVar[str] = "projection"
    HANDLERS: ClassVar[Mapping[str, Handler]] = {}

    def __init__(self, *, reporter: Reporter | None = None) -> None:
        self.reporter = reporter if reporter is not None else Reporter(source="projection")
        self.position = 0
        self.versions: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the state (subclasses extend this to clear their own)."""
        self.position = 0
        self.versions = {}

    def apply(self, stored: StoredEvent) -> bool:
        """Fold one event in; returns whether it changed the projection."""
        if stored.position <= self.position:
            return False
        self.position = stored.position
        event = stored.event
        last = self.versions.get(event.aggregate_id, 0)
        if event.version != last + 1:
            self.reporter.emit(
                VersionConflict,
                aggregate_id=event.aggregate_id,
                expected_version=last + 1,
                actual_version=event.version,
                store=self.reporter.source,
                detected="replay",
            )
            return False
        self.versions[event.aggregate_id] = event.version
        handler = self.HANDLERS.get(event.event_type)
        if handler is None:
            return False
        handler(self, event)
        self.reporter.emit(
            ProjectionUpdated,
            projection=self.name,
            aggregate_id=event.aggregate_id,
            event_type=event.event_type,
            version=event.version,
            position=stored.position,
        )
        return True


async def catch_up(projection: Projection, source: EventSource) -> int:
    """Apply every event of ``source`` after the projection's position; returns how many
    events were read."""
    events = await source.read_all(projection.position)
    for stored in events:
        projection.apply(stored)
    return len(events)


async def rebuild(projection: Projection, source: EventSource) -> int:
    """Reset the projection and replay ``source`` from the start; returns the events read."""
    projection.reset()
    count = await catch_up(projection, source)
    projection.reporter.emit(
        ProjectionRebuilt, projection=projection.name, events=count, position=projection.position
    )
    return count


# --- the course's example domain: orders --------------------------------------------------


@dataclass
class OrderLine:
    """One line of an order."""

    sku: str
    quantity: int
    price: int


class Order(Aggregate):
    """An order: created, items added, paid or cancelled (the example aggregate)."""

    def __init__(
        self,
        aggregate_id: str,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_event_id,
    ) -> None:
        super().__init__(aggregate_id, clock=clock, new_id=new_id)
        self.status = "new"
        self.customer = ""
        self.lines: list[OrderLine] = []
        self.paid = 0

    @property
    def total(self) -> int:
        """What the order costs."""
        return sum(line.quantity * line.price for line in self.lines)

    # commands: check the state, then record what happened

    def create(self, customer: str) -> None:
        """Open the order for ``customer``."""
        if self.version:
            raise CommandRejected(f"{self.aggregate_id} exists already")
        self.record("OrderCreated", {"customer": customer})

    def add_item(self, sku: str, quantity: int, price: int) -> None:
        """Add a line (only while the order is pending)."""
        self._require("pending")
        if quantity < 1:
            raise CommandRejected("quantity must be at least 1")
        self.record("ItemAdded", {"sku": sku, "quantity": quantity, "price": price})

    def pay(self, amount: int) -> None:
        """Pay the whole total (only while pending, only the exact total)."""
        self._require("pending")
        if amount != self.total:
            raise CommandRejected(f"{self.aggregate_id}: the total is {self.total}, not {amount}")
        self.record("OrderPaid", {"amount": amount})

    def cancel(self, reason: str) -> None:
        """Cancel (not once paid)."""
        self._require("pending")
        self.record("OrderCancelled", {"reason": reason})

    def _require(self, status: str) -> None:
        if self.status != status:
            raise CommandRejected(f"{self.aggregate_id} is {self.status}, not {status}")

    # handlers: state changes only

    def _created(self, event: DomainEvent) -> None:
        self.status = "pending"
        self.customer = str(event.data["customer"])

    def _item_added(self, event: DomainEvent) -> None:
        data = event.data
        self.lines.append(OrderLine(str(data["sku"]), int(data["quantity"]), int(data["price"])))

    def _paid(self, event: DomainEvent) -> None:
        self.status = "paid"
        self.paid = int(event.data["amount"])

    def _cancelled(self, event: DomainEvent) -> None:
        self.status = "cancelled"

    HANDLERS: ClassVar[Mapping[str, Handler]] = {
        "OrderCreated": _created,
        "ItemAdded": _item_added,
        "OrderPaid": _paid,
        "OrderCancelled": _cancelled,
    }

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "customer": self.customer,
            "lines": [[line.sku, line.quantity, line.price] for line in self.lines],
            "paid": self.paid,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.status = str(state["status"])
        self.customer = str(state["customer"])
        self.lines = [OrderLine(str(s), int(q), int(p)) for s, q, p in state["lines"]]
        self.paid = int(state["paid"])


class OrdersByStatus(Projection):
    """How many orders are in each status and the revenue paid (the example projection)."""

    name: ClassVar[str] = "orders-by-status"

    def reset(self) -> None:
        super().reset()
        self.status_of: dict[str, str] = {}
        self.revenue = 0

    def counts(self) -> dict[str, int]:
        """Status -> number of orders."""
        counts: dict[str, int] = {}
        for status in self.status_of.values():
            counts[status] = counts.get(status, 0) + 1
        return dict(sorted(counts.items()))

    def _created(self, event: DomainEvent) -> None:
        self.status_of[event.aggregate_id] = "pending"

    def _paid(self, event: DomainEvent) -> None:
        self.status_of[event.aggregate_id] = "paid"
        self.revenue += int(event.data["amount"])

    def _cancelled(self, event: DomainEvent) -> None:
        self.status_of[event.aggregate_id] = "cancelled"

    HANDLERS: ClassVar[Mapping[str, Handler]] = {
        "OrderCreated": _created,
        "OrderPaid": _paid,
        "OrderCancelled": _cancelled,
    }
