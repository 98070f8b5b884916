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

The stores (one interface, :class:`EventStore`):

* :class:`MemoryEventStore`: the simulator.
* :class:`PostgresEventStore`: ``UNIQUE (aggregate_id, version)`` is the guarantee: two
  writers can never both store version 4 of one aggregate.
* :class:`NatsEventStore`: one subject per aggregate; the append is a publish with
  ``Nats-Expected-Last-Subject-Sequence``, so JetStream itself refuses it if another event
  landed on that subject since the aggregate was read.
* :class:`KafkaEventLog`: Kafka as the log projections replay, *without* optimistic
  concurrency (its docstring says why); a projection replaying it detects a conflict only
  after both writes were accepted.

Observations: :class:`~mqlab.observe.events.EventAppended`, ``VersionConflict``,
``SnapshotTaken``, ``AggregateLoaded``, ``ProjectionUpdated``, ``ProjectionRebuilt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

import psycopg
from psycopg import sql

from mqlab.observe.events import (
    AggregateLoaded,
    EventAppended,
    ProjectionRebuilt,
    ProjectionUpdated,
    SnapshotTaken,
    VersionConflict,
)
from mqlab.patterns import postgres
from mqlab.patterns.harness import Reporter

if TYPE_CHECKING:
    from mqlab.brokers.kafka.api import KafkaAPI, KafkaProducer


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


class PostgresEventStore(postgres.PostgresClient, EventStore):
    """Events in PostgreSQL: ``events`` with ``UNIQUE (aggregate_id, version)``, and
    ``snapshots``, in the namespace's schema.

    The unique constraint is the guarantee: whatever happens, no two events of one aggregate
    share a version, so of two writers that both loaded version 3 exactly one stores version
    4 and the other gets a unique violation, reported as :class:`VersionConflictError`.
    The version check before the insert only makes that answer quick and exact.

    Appends also take a transaction-scoped advisory lock for the namespace: ``position`` is a
    ``bigserial``, and without the lock two concurrent transactions could commit positions out
    of order (5 commits after 6), so a projection that had read up to 6 would never see 5.
    One writer at a time is the price; a lab does not notice it.

    Args: those of :class:`~mqlab.patterns.postgres.PostgresClient`.
    """

    async def setup(self) -> None:
        connection = await self._connect()
        await postgres.create_tables(
            connection,
            self.namespace,
            [
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (position bigserial PRIMARY KEY, "
                    "event_id text NOT NULL UNIQUE, aggregate_id text NOT NULL, "
                    "version integer NOT NULL, event_type text NOT NULL, "
                    "ts double precision NOT NULL, data jsonb NOT NULL, "
                    "UNIQUE (aggregate_id, version))"
                ).format(self._table("events")),
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (aggregate_id text PRIMARY KEY, "
                    "version integer NOT NULL, state jsonb NOT NULL)"
                ).format(self._table("snapshots")),
            ],
        )

    async def _current_version(
        self, connection: psycopg.AsyncConnection[Any], aggregate_id: str
    ) -> int:
        cursor = await connection.execute(
            sql.SQL("SELECT COALESCE(MAX(version), 0) FROM {} WHERE aggregate_id = %s").format(
                self._table("events")
            ),
            (aggregate_id,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def append(
        self, aggregate_id: str, events: Sequence[DomainEvent], expected_version: int
    ) -> int:
        check_batch(aggregate_id, events, expected_version)
        connection = await self._connect()
        async with self._lock:
            try:
                async with connection.transaction():
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.namespace}/events",)
                    )
                    actual = await self._current_version(connection, aggregate_id)
                    if actual != expected_version:
                        raise VersionConflictError(aggregate_id, expected_version, actual)
                    for event in events:
                        await connection.execute(
                            sql.SQL(
                                "INSERT INTO {} (event_id, aggregate_id, version, event_type, "
                                "ts, data) VALUES (%s, %s, %s, %s, %s, %s)"
                            ).format(self._table("events")),
                            (
                                event.event_id,
                                event.aggregate_id,
                                event.version,
                                event.event_type,
                                event.timestamp,
                                json.dumps(dict(event.data)),
                            ),
                        )
            except psycopg.errors.UniqueViolation:
                # Someone stored this version first (a writer that does not take the lock).
                actual = await self._current_version(connection, aggregate_id)
                raise VersionConflictError(aggregate_id, expected_version, actual) from None
        return events[-1].version

    async def _select(self, query: sql.Composed, params: tuple[Any, ...]) -> list[Any]:
        connection = await self._connect()
        async with self._lock:
            cursor = await connection.execute(query, params)
            rows: list[Any] = await cursor.fetchall()
            return rows

    @staticmethod
    def _event(row: Any) -> DomainEvent:
        return DomainEvent(
            event_id=row[0],
            aggregate_id=row[1],
            event_type=row[2],
            version=int(row[3]),
            timestamp=float(row[4]),
            data=dict(row[5]),
        )

    async def load(self, aggregate_id: str, after_version: int = 0) -> list[DomainEvent]:
        rows = await self._select(
            sql.SQL(
                "SELECT event_id, aggregate_id, event_type, version, ts, data FROM {} "
                "WHERE aggregate_id = %s AND version > %s ORDER BY version"
            ).format(self._table("events")),
            (aggregate_id, after_version),
        )
        return [self._event(row) for row in rows]

    async def read_all(self, after_position: int = 0) -> list[StoredEvent]:
        rows = await self._select(
            sql.SQL(
                "SELECT event_id, aggregate_id, event_type, version, ts, data, position FROM {} "
                "WHERE position > %s ORDER BY position"
            ).format(self._table("events")),
            (after_position,),
        )
        return [StoredEvent(int(row[6]), self._event(row)) for row in rows]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        connection = await self._connect()
        async with self._lock:
            await connection.execute(
                sql.SQL(
                    "INSERT INTO {t} AS s (aggregate_id, version, state) VALUES (%s, %s, %s) "
                    "ON CONFLICT (aggregate_id) DO UPDATE SET version = EXCLUDED.version, "
                    "state = EXCLUDED.state WHERE s.version < EXCLUDED.version"
                ).format(t=self._table("snapshots")),
                (snapshot.aggregate_id, snapshot.version, json.dumps(dict(snapshot.state))),
            )

    async def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        rows = await self._select(
            sql.SQL("SELECT version, state FROM {} WHERE aggregate_id = %s").format(
                self._table("snapshots")
            ),
            (aggregate_id,),
        )
        return Snapshot(aggregate_id, int(rows[0][0]), dict(rows[0][1])) if rows else None


_SUBJECT_TOKEN_FORBIDDEN = frozenset(" .*>\t\r\n")

_EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a failed ``Nats-Expected-Last-*`` check."""
_NO_MESSAGE_FOUND = 10037


class NatsEventStore(EventStore):
    """Events in NATS JetStream: stream ``<namespace>-events`` with one subject per aggregate
    (``<namespace>.events.<aggregate id>``) and one message per event.

    The append reads the aggregate's last message (its stream sequence and version) and
    publishes with ``Nats-Expected-Last-Subject-Sequence`` set to that sequence (0 for a new
    aggregate). If any event landed on the subject in between, JetStream refuses the publish
    ("wrong last sequence"), which is the conflict, decided by the server. Several events go
    out as one atomic batch (``Nats-Batch-Id`` ... ``Nats-Batch-Commit``, nats-server 2.12 or
    later, as the lab has): all of them or none.

    Snapshots live in a second stream that keeps the last message per subject.

    Aggregate ids become subject tokens, so they must not contain dots, spaces, ``*`` or
    ``>``.

    Args:
        url: the server (the lab's: ``Endpoints.local().nats_url``).
        namespace: prefix of the streams and subjects.
    """

    def __init__(self, url: str, namespace: str, *, name: str = "nats") -> None:
        self.url = url
        self.namespace = namespace
        self.name = name
        self.stream = f"{namespace}-events"
        self.snapshot_stream = f"{namespace}-snapshots"
        self._nc: Any = None
        self._js: Any = None

    def _subject(self, aggregate_id: str) -> str:
        if not aggregate_id or _SUBJECT_TOKEN_FORBIDDEN & set(aggregate_id):
            raise ValueError(
                f"aggregate id {aggregate_id!r} cannot be a NATS subject token "
                "(no dots, spaces, '*' or '>')"
            )
        return f"{self.namespace}.events.{aggregate_id}"

    async def setup(self) -> None:
        from nats.js.api import StreamConfig

        if self._nc is None:
            self._nc = await self._connect()
            self._js = self._nc.jetstream()
        await self._js.add_stream(
            StreamConfig(
                name=self.stream, subjects=[f"{self.namespace}.events.>"], allow_atomic=True
            )
        )
        await self._js.add_stream(
            StreamConfig(
                name=self.snapshot_stream,
                subjects=[f"{self.namespace}.snapshots.>"],
                max_msgs_per_subject=1,
            )
        )

    async def _connect(self) -> Any:
        """A nats-py client, or :class:`BrokerUnavailable` within a few seconds.

        The port is probed first: nats-py on its own keeps retrying a refused connection
        without a bound and prints each failure.
        """
        from urllib.parse import urlsplit

        import nats

        from mqlab.brokers.base import BrokerUnavailable

        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        address = f"{host}:{port}"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=3.0)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        except (OSError, TimeoutError) as error:
            raise BrokerUnavailable("nats", address, str(error) or "no answer") from None

        async def quiet(error: Exception) -> None:
            """nats-py's default error callback prints a traceback; the caller gets the error."""

        try:
            return await asyncio.wait_for(
                nats.connect(self.url, allow_reconnect=False, connect_timeout=3, error_cb=quiet),
                timeout=5.0,
            )
        except (OSError, TimeoutError, nats.errors.Error) as error:
            raise BrokerUnavailable("nats", address, str(error) or "no answer") from None

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = self._js = None

    async def drop(self) -> None:
        """Delete both streams (and every event in them)."""
        from nats.js.errors import NotFoundError

        for stream in (self.stream, self.snapshot_stream):
            with contextlib.suppress(NotFoundError):
                await self._js.delete_stream(stream)

    async def _last(self, subject: str) -> tuple[int, int]:
        """(stream sequence, version) of the subject's last event; (0, 0) when none."""
        from nats.js.errors import NotFoundError

        try:
            message = await self._js.get_last_msg(self.stream, subject)
        except NotFoundError:
            return 0, 0
        return int(message.seq), DomainEvent.from_json(message.data).version

    async def append(
        self, aggregate_id: str, events: Sequence[DomainEvent], expected_version: int
    ) -> int:
        from nats.js.errors import APIError

        subject = self._subject(aggregate_id)
        check_batch(aggregate_id, events, expected_version)
        sequence, actual = await self._last(subject)
        if actual != expected_version:
            raise VersionConflictError(aggregate_id, expected_version, actual)
        try:
            await self._publish_batch(subject, events, sequence)
        except APIError as error:
            if error.err_code != _WRONG_LAST_SEQUENCE:
                raise
            _, actual = await self._last(subject)
            raise VersionConflictError(aggregate_id, expected_version, actual) from None
        return events[-1].version

    async def _publish_batch(
        self, subject: str, events: Sequence[DomainEvent], last_sequence: int
    ) -> None:
        expected = {_EXPECTED_LAST_SUBJECT_SEQUENCE: str(last_sequence)}
        if len(events) == 1:
            await self._js.publish(subject, events[0].to_json().encode(), headers=expected)
            return
        batch_id = events[0].event_id
        for number, event in enumerate(events, start=1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number == 1:
                headers.update(expected)  # the check is made once, for the whole batch
            if number < len(events):
                # Parts of an atomic batch are plain publishes: the server keeps them aside
                # and answers only the commit, with the fate of the whole batch.
                await self._nc.publish(subject, event.to_json().encode(), headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                await self._js.publish(subject, event.to_json().encode(), headers=headers)

    async def _messages(self, subject: str, first_sequence: int) -> list[tuple[int, bytes]]:
        """(sequence, data) of every message on ``subject`` (wildcards allowed) from
        ``first_sequence`` on, one direct get per message."""
        from nats.js.errors import NotFoundError

        found: list[tuple[int, bytes]] = []
        sequence = max(1, first_sequence)
        while True:
            try:
                message = await self._js.get_msg(
                    self.stream, seq=sequence, subject=subject, next=True
                )
            except NotFoundError:
                return found
            found.append((int(message.seq), bytes(message.data)))
            sequence = int(message.seq) + 1

    async def load(self, aggregate_id: str, after_version: int = 0) -> list[DomainEvent]:
        events = [
            DomainEvent.from_json(data)
            for _, data in await self._messages(self._subject(aggregate_id), 1)
        ]
        return [e for e in events if e.version > after_version]

    async def read_all(self, after_position: int = 0) -> list[StoredEvent]:
        return [
            StoredEvent(sequence, DomainEvent.from_json(data))
            for sequence, data in await self._messages(
                f"{self.namespace}.events.>", after_position + 1
            )
        ]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        current = await self.load_snapshot(snapshot.aggregate_id)
        if current is not None and current.version >= snapshot.version:
            return
        payload = json.dumps(
            {"version": snapshot.version, "state": dict(snapshot.state)}, sort_keys=True
        )
        self._subject(snapshot.aggregate_id)  # the same rule for the id
        await self._js.publish(
            f"{self.namespace}.snapshots.{snapshot.aggregate_id}", payload.encode()
        )

    async def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        from nats.js.errors import NotFoundError

        self._subject(aggregate_id)
        try:
            message = await self._js.get_last_msg(
                self.snapshot_stream, f"{self.namespace}.snapshots.{aggregate_id}"
            )
        except NotFoundError:
            return None
        raw = json.loads(message.data)
        return Snapshot(aggregate_id, int(raw["version"]), dict(raw["state"]))


class KafkaEventLog(EventSource):
    """Kafka as the event log that projections replay, on the real cluster or ``sim:kafka``.

    Why this is not an :class:`EventStore`: Kafka has no conditional append. A produce
    request cannot say "only if this partition ends at offset N" or "only if this key's last
    record has version 3", so two writers that both loaded version 3 both append a version 4
    and Kafka acknowledges both. The idempotent producer only drops *one producer's own*
    retries, and transactions make several writes atomic, not conditional. Optimistic
    concurrency therefore has to come from elsewhere: a store that has it (PostgreSQL here,
    with Kafka fed from it through an outbox), or a single writer per aggregate (commands
    partitioned by aggregate id and handled by the one consumer that owns the partition). A
    reader of the log can only *detect* the clash after the fact: :meth:`Projection.apply`
    reports two events claiming one version as a ``VersionConflict`` with ``detected=
    "replay"``.

    The topic has one partition by default, so ``position`` (offset + 1) is a global order and
    a projection can resume from it; with more partitions only a full replay is possible
    (order then holds per aggregate: the key is the aggregate id).

    Args:
        kafka: a connected Kafka adapter (real or simulated).
        topic: the logical topic name (qualified with the adapter's namespace).
        partitions: the topic's partitions.
        replication_factor: the topic's replication factor (3, the lab's brokers: the
            producer uses acks=all and the lab's topics need 2 in-sync replicas).
    """

    def __init__(
        self,
        kafka: KafkaAPI,
        topic: str = "events",
        *,
        partitions: int = 1,
        replication_factor: int = 3,
        name: str | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = kafka.qualify(topic)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.name = name or kafka.name
        self._producer: KafkaProducer | None = None
        self._replays = 0

    async def setup(self) -> None:
        """Create the topic and an idempotent producer (acks=all)."""
        await self.kafka.create_topic(
            self.topic, partitions=self.partitions, replication_factor=self.replication_factor
        )
        self._producer = await self.kafka.producer(acks="all", idempotent=True)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.close()
            self._producer = None

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        """Append ``events`` (keyed by aggregate id), with no version check at all."""
        if self._producer is None:
            raise RuntimeError("KafkaEventLog.setup() was not called")
        for event in events:
            await self._producer.send(
                self.topic,
                event.to_json().encode(),
                key=event.aggregate_id.encode(),
                message_id=event.event_id,
            )

    async def read_all(
        self, after_position: int = 0, *, timeout: float = 30.0
    ) -> list[StoredEvent]:
        """Replay the topic from the beginning with a fresh consumer group (nothing is
        committed), up to each partition's high watermark at the start of the replay.

        Raises:
            ValueError: ``after_position`` on a topic with several partitions.
            TimeoutError: the replay did not reach the end within ``timeout`` seconds.
        """
        from mqlab.brokers.kafka.api import TopicPartition

        if after_position and self.partitions > 1:
            raise ValueError("positions are global only on a one-partition topic")
        info = await self.kafka.describe_topic(self.topic)
        ends = {TopicPartition(self.topic, p.partition): p.high_watermark for p in info.partitions}
        if all(end == 0 for end in ends.values()):
            return []
        self._replays += 1
        consumer = await self.kafka.consumer(
            [self.topic], group_id=self.kafka.qualify(f"replay-{self._replays}")
        )
        found: list[tuple[int, int, DomainEvent]] = []
        try:
            async with asyncio.timeout(timeout):
                while len(consumer.assignment()) < len(ends):
                    # Joining the group happens inside poll; what arrives meanwhile comes
                    # again after the seek below.
                    await consumer.poll(timeout=0.5)
                for tp in sorted(ends):
                    await consumer.seek(tp, after_position if self.partitions == 1 else 0)
                while True:
                    positions = {tp: await consumer.position(tp) for tp in ends}
                    if all(positions[tp] >= end for tp, end in ends.items()):
                        break
                    found += _decoded(await consumer.poll(timeout=0.5))
        finally:
            await consumer.close()
        found = [f for f in found if f[1] < ends[TopicPartition(self.topic, f[0])]]
        found.sort(key=lambda item: (item[0], item[1]))
        if self.partitions == 1:
            return [StoredEvent(offset + 1, event) for _, offset, event in found]
        return [StoredEvent(index, item[2]) for index, item in enumerate(found, start=1)]


def _decoded(records: Sequence[Any]) -> list[tuple[int, int, DomainEvent]]:
    return [(r.partition, r.offset, DomainEvent.from_json(r.value)) for r in records]


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
        for event in pending:
            self.reporter.emit(
                EventAppended,
                aggregate_id=event.aggregate_id,
                event_type=event.event_type,
                version=event.version,
                event_id=event.event_id,
                store=self.store.name,
            )
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
