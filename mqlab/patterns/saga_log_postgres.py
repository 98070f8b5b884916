"""The saga log in PostgreSQL: each transition committed before the orchestrator acts on it.

Kept apart from :mod:`mqlab.patterns.saga` (the steps, the log's interface, the log in memory
and the orchestrator) so that the orchestrator's rules read without SQL, as the event stores
sit apart from :mod:`mqlab.patterns.event_sourcing`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from mqlab.patterns import postgres
from mqlab.patterns.saga import LogEntry, SagaLog, SagaRecord, SagaStatus


class PostgresSagaLog(postgres.PostgresClient, SagaLog):
    """The log in PostgreSQL: ``sagas`` (one row per saga id: type, status, start data) and
    ``saga_log`` (the entries, primary key ``(saga_id, seq)``), in the namespace's schema.

    Each append is its own committed transaction: the record is durable before the
    orchestrator acts on it, which is the whole point of the log. The saga row is locked for
    the append, so two orchestrators writing to one saga take turns (and the primary key
    would refuse a second entry with the same ``seq``).

    Args: those of :class:`~mqlab.patterns.postgres.PostgresClient`.
    """

    def _schema(self) -> list[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (saga_id text PRIMARY KEY, saga text NOT NULL, "
                "status text NOT NULL, data jsonb NOT NULL, "
                "created_at timestamptz NOT NULL DEFAULT now(), "
                "updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._table("sagas")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (saga_id text NOT NULL REFERENCES {}, "
                "seq integer NOT NULL, kind text NOT NULL, step text NOT NULL, "
                "attempt integer NOT NULL, compensation_id text NOT NULL, "
                "error text NOT NULL, may_have_applied boolean NOT NULL, "
                "results jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (saga_id, seq))"
            ).format(self._table("saga_log"), self._table("sagas")),
        ]

    async def create(self, saga_id: str, saga: str, data: Mapping[str, Any]) -> SagaRecord | None:
        async with self._transaction() as connection:
            cursor = await connection.execute(
                sql.SQL(
                    "INSERT INTO {} (saga_id, saga, status, data) VALUES (%s, %s, 'running', "
                    "%s) ON CONFLICT (saga_id) DO NOTHING"
                ).format(self._table("sagas")),
                (saga_id, saga, json.dumps(dict(data))),
            )
            if cursor.rowcount == 1:
                await self._insert_entry(connection, saga_id, LogEntry(seq=1, kind="saga_started"))
                return None
        return await self.load(saga_id)

    async def _insert_entry(
        self, connection: psycopg.AsyncConnection[Any], saga_id: str, entry: LogEntry
    ) -> None:
        await connection.execute(
            sql.SQL(
                "INSERT INTO {} (saga_id, seq, kind, step, attempt, compensation_id, error, "
                "may_have_applied, results) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self._table("saga_log")),
            (
                saga_id,
                entry.seq,
                entry.kind,
                entry.step,
                entry.attempt,
                entry.compensation_id,
                entry.error,
                entry.may_have_applied,
                json.dumps(dict(entry.results)),
            ),
        )

    async def _append(self, saga_id: str, entry: LogEntry, status: SagaStatus | None) -> None:
        async with self._transaction() as connection:
            await connection.execute(
                sql.SQL("SELECT 1 FROM {} WHERE saga_id = %s FOR UPDATE").format(
                    self._table("sagas")
                ),
                (saga_id,),
            )
            cursor = await connection.execute(
                sql.SQL("SELECT COALESCE(MAX(seq), 0) + 1 FROM {} WHERE saga_id = %s").format(
                    self._table("saga_log")
                ),
                (saga_id,),
            )
            row = await cursor.fetchone()
            seq = int(row[0]) if row else 1
            await self._insert_entry(connection, saga_id, replace(entry, seq=seq))
            if status is not None:
                await connection.execute(
                    sql.SQL(
                        "UPDATE {} SET status = %s, updated_at = now() WHERE saga_id = %s"
                    ).format(self._table("sagas")),
                    (status, saga_id),
                )

    async def load(self, saga_id: str) -> SagaRecord | None:
        records = await self._records(sql.SQL("saga_id = %s"), (saga_id,))
        return records[0] if records else None

    async def with_status(self, *statuses: SagaStatus) -> list[SagaRecord]:
        return await self._records(sql.SQL("status = ANY(%s)"), (list(statuses),))

    async def _records(self, where: sql.Composable, params: tuple[Any, ...]) -> list[SagaRecord]:
        connection = await self._connect()
        async with self._lock:
            cursor = await connection.execute(
                sql.SQL(
                    "SELECT saga_id, saga, status, data FROM {} WHERE {} ORDER BY created_at, "
                    "saga_id"
                ).format(self._table("sagas"), where),
                params,
            )
            sagas = await cursor.fetchall()
            records = []
            for saga_id, saga, status, data in sagas:
                cursor = await connection.execute(
                    sql.SQL(
                        "SELECT seq, kind, step, attempt, compensation_id, error, "
                        "may_have_applied, results FROM {} WHERE saga_id = %s ORDER BY seq"
                    ).format(self._table("saga_log")),
                    (saga_id,),
                )
                entries = tuple(
                    LogEntry(
                        seq=int(row[0]),
                        kind=row[1],
                        step=row[2],
                        attempt=int(row[3]),
                        compensation_id=row[4],
                        error=row[5],
                        may_have_applied=bool(row[6]),
                        results=dict(row[7]),
                    )
                    for row in await cursor.fetchall()
                )
                records.append(SagaRecord(saga_id, saga, status, dict(data), entries))
            return records
