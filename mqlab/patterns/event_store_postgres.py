"""The event store in PostgreSQL: the guarantee is a unique constraint.

Kept apart from :mod:`mqlab.patterns.event_sourcing` (the model: events, aggregates, the
store interface, repositories and projections) so that the model reads without SQL, and so
that each store's way of refusing a stale append sits in a module of its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from mqlab.patterns import postgres
from mqlab.patterns.event_sourcing import (
    DomainEvent,
    EventStore,
    Snapshot,
    StoredEvent,
    VersionConflictError,
    check_batch,
)


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

    def _schema(self) -> list[sql.Composed]:
        return [
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
        ]

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
        rows = await self._fetch(
            sql.SQL(
                "SELECT event_id, aggregate_id, event_type, version, ts, data FROM {} "
                "WHERE aggregate_id = %s AND version > %s ORDER BY version"
            ).format(self._table("events")),
            (aggregate_id, after_version),
        )
        return [self._event(row) for row in rows]

    async def read_all(self, after_position: int = 0) -> list[StoredEvent]:
        rows = await self._fetch(
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
        rows = await self._fetch(
            sql.SQL("SELECT version, state FROM {} WHERE aggregate_id = %s").format(
                self._table("snapshots")
            ),
            (aggregate_id,),
        )
        return Snapshot(aggregate_id, int(rows[0][0]), dict(rows[0][1])) if rows else None
