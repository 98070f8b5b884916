"""The contention experiment against a real row in the lab's PostgreSQL.

The same clients as on the simulator (:func:`mqlab.patterns.contention.run_trial`), in real
time: each has its own connection in autocommit mode, so each statement is its own
transaction and the clients really race. A read is ``SELECT version``; a write is

    UPDATE <table> SET version = version + 1, writers = array_append(writers, <client>)
     WHERE id = 1 AND version = <the version this client read>

and PostgreSQL's row count decides: 1 means this client won, 0 means someone else wrote first
(a version conflict, retried with the strategy's delay). Recording the writer in the same
statement keeps the record exact: the test checks that every client wrote exactly once.

The network delay of the model is added on top of the (sub-millisecond) loopback round trip,
half before and half after each statement, so the numbers are comparable with ``sim``.

The table is named per run (``mqlab_retries_<random>``) and dropped when the row is closed,
whatever happened, so runs never see each other's rows and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self, Unpack

from mqlab.brokers.base import BrokerUnavailable
from mqlab.patterns.contention import (
    ExperimentOptions,
    StrategySummary,
    TrialResult,
    experiment_settings,
    run_trial,
    summarize,
    trial_rng,
)
from mqlab.patterns.retry import Strategy, describe_error

TABLE_PREFIX = "mqlab_retries_"
MAX_CLIENTS = 50
"""Each client holds a connection; the lab's server allows 100 and other runs need some."""


def _address(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"


class PostgresRow:
    """The shared row in a fresh table, with one connection per client.

    Use as an async context manager: entering connects and creates the table, leaving drops it
    and closes the connections.

    Args:
        dsn: the database (the lab's: ``Endpoints.local().postgres_dsn``).
        clients: how many connections to open (the largest client count to run).
        connect_timeout: seconds before an unreachable server is reported.

    Raises:
        ValueError: fewer than one or more than :data:`MAX_CLIENTS` clients.
    """

    def __init__(self, dsn: str, clients: int, *, connect_timeout: float = 3.0) -> None:
        if not 1 <= clients <= MAX_CLIENTS:
            raise ValueError(f"postgres runs take 1 to {MAX_CLIENTS} clients (got {clients})")
        self.dsn = dsn
        self.clients = clients
        self.connect_timeout = connect_timeout
        self.table = f"{TABLE_PREFIX}{secrets.token_hex(4)}"
        self.address = _address(dsn)
        self._connections: list[Any] = []

    def _unavailable(self, error: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable("postgres", self.address, describe_error(error))

    async def __aenter__(self) -> Self:
        import psycopg

        async def connect() -> Any:
            return await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
            )

        try:
            for _ in range(self.clients):
                self._connections.append(await connect())
            await self._connections[0].execute(
                self._sql(
                    "CREATE TABLE {table} (id int PRIMARY KEY, version int NOT NULL, "
                    "writers int[] NOT NULL)"
                )
            )
            await self.reset()
        except psycopg.OperationalError as error:
            await self._close()
            raise self._unavailable(error) from None
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    def _sql(self, text: str) -> Any:
        from psycopg import sql

        return sql.SQL(text).format(table=sql.Identifier(self.table))

    async def _close(self) -> None:
        import psycopg

        # Drop on a fresh connection if need be: the clients' ones may be the broken part.
        try:
            if self._connections and not self._connections[0].closed:
                await self._connections[0].execute(self._sql("DROP TABLE IF EXISTS {table}"))
            else:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=3
                ) as connection:
                    await connection.execute(self._sql("DROP TABLE IF EXISTS {table}"))
        except psycopg.Error:
            pass  # the server is gone: so is any chance to drop the table now
        finally:
            connections, self._connections = self._connections, []
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

    async def reset(self) -> None:
        """Put the row back to version 0 with no writers (before each trial)."""
        await self._connections[0].execute(
            self._sql(
                "INSERT INTO {table} (id, version, writers) VALUES (1, 0, '{{}}') "
                "ON CONFLICT (id) DO UPDATE SET version = 0, writers = '{{}}'"
            )
        )

    async def read(self, client: int) -> int:
        """``SELECT version`` on the client's own connection."""
        import psycopg

        try:
            cursor = await self._connections[client].execute(
                self._sql("SELECT version FROM {table} WHERE id = 1")
            )
            row = await cursor.fetchone()
        except psycopg.OperationalError as error:
            raise self._unavailable(error) from None
        if row is None:
            raise RuntimeError(f"the row of {self.table} is missing")
        version: int = row[0]
        return version

    async def write(self, client: int, seen: int) -> bool:
        """The conditional ``UPDATE``; True when PostgreSQL says it changed the row."""
        import psycopg

        try:
            cursor = await self._connections[client].execute(
                self._sql(
                    "UPDATE {table} SET version = version + 1, "
                    "writers = array_append(writers, %s) WHERE id = 1 AND version = %s"
                ),
                (client, seen),
            )
        except psycopg.OperationalError as error:
            raise self._unavailable(error) from None
        rowcount: int = cursor.rowcount
        return rowcount == 1

    async def writers(self) -> list[int]:
        """The clients whose writes changed the row since the last reset, in order."""
        cursor = await self._connections[0].execute(
            self._sql("SELECT writers FROM {table} WHERE id = 1")
        )
        row = await cursor.fetchone()
        return list(row[0]) if row is not None else []


async def table_exists(dsn: str, table: str) -> bool:
    """Whether ``table`` exists (the cleanup test asks)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=3) as connection:
        cursor = await connection.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        row = await cursor.fetchone()
        return bool(row and row[0])


async def run_postgres(
    strategies: Iterable[Strategy],
    client_counts: Iterable[int],
    *,
    dsn: str,
    **options: Unpack[ExperimentOptions],
) -> list[StrategySummary]:
    """The experiment on a real row, in real time: ``options["runs"]`` trials per strategy
    and client count (the options of :func:`~mqlab.patterns.contention.simulate`), on one
    table that is reset before each trial.

    Raises:
        ValueError: bad settings, fewer than one run, more than :data:`MAX_CLIENTS` clients.
        BrokerUnavailable: PostgreSQL could not be reached (names ``mqlab lab up postgres``).
    """
    chosen = tuple(strategies)
    trial_settings = experiment_settings(client_counts, options)
    summaries: list[StrategySummary] = []
    async with PostgresRow(dsn, max(settings.clients for settings in trial_settings)) as row:
        for settings in trial_settings:
            for strategy in chosen:
                results: list[TrialResult] = []
                for run in range(options["runs"]):
                    await row.reset()
                    rng = trial_rng(options["seed"], strategy, settings.clients, run)
                    results.append(await run_trial(row, strategy, settings, rng))
                summaries.append(summarize(results))
    return summaries
