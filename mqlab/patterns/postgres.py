"""PostgreSQL plumbing shared by the patterns: connections, one schema per namespace.

Every pattern that keeps state in PostgreSQL (the business database with its dedup, offset and
outbox tables, the saga log, the event store) puts its tables in a schema named after the
run's namespace (``mq-3f2a9c``), so concurrent runs never see each other's rows and
:func:`drop_namespace` removes everything a run created with one ``DROP SCHEMA ... CASCADE``.

Connections are psycopg 3 async connections in autocommit mode: a transaction is always
explicit (``async with connection.transaction():``), which is what the lessons are about.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from mqlab.brokers.base import BrokerUnavailable

CONNECT_TIMEOUT = 5
"""Seconds to wait for the server before a store gives up with :class:`BrokerUnavailable`."""


def address(dsn: str) -> str:
    """``host:port`` of a DSN (for error messages)."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection to ``dsn``.

    Raises:
        BrokerUnavailable: the server did not accept the connection (the message names the
            address and ``mqlab lab up postgres``).
    """
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        )
    except psycopg.OperationalError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise BrokerUnavailable("postgres", address(dsn), detail) from None


def table(namespace: str, name: str) -> sql.Identifier:
    """The qualified name of table ``name`` in ``namespace``'s schema."""
    return sql.Identifier(namespace, name)


async def ensure_schema(connection: psycopg.AsyncConnection[Any], namespace: str) -> None:
    """Create ``namespace``'s schema if it is missing.

    Two processes creating the same schema at once can both pass ``IF NOT EXISTS`` and one
    then fails on the catalog's unique index; a transaction-scoped advisory lock on the
    namespace makes them take turns.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (namespace,))
        await connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(namespace))
        )


async def create_tables(
    connection: psycopg.AsyncConnection[Any], namespace: str, statements: list[sql.Composed]
) -> None:
    """Run ``CREATE TABLE IF NOT EXISTS`` statements for ``namespace`` under the same lock
    as :func:`ensure_schema` (concurrent creators would otherwise race on the catalog)."""
    await ensure_schema(connection, namespace)
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (namespace,))
        for statement in statements:
            await connection.execute(statement)


async def drop_namespace(dsn: str, namespace: str) -> None:
    """Drop ``namespace``'s schema and every table in it (no error if it is gone)."""
    connection = await connect(dsn)
    try:
        await connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(namespace))
        )
    finally:
        await connection.close()


class PostgresClient(ABC):
    """The connection of one PostgreSQL-backed store (business database, saga log, event
    store): opened on first use, used by one operation at a time (``_lock``), in the schema
    of ``namespace``, whose tables the store's :meth:`_schema` lists and :meth:`setup`
    creates.

    Two concurrent writers in one process need two stores, as two processes would: a
    connection runs one transaction at a time.

    Args:
        dsn: the server (the lab's: ``Endpoints.local().postgres_dsn``).
        namespace: the schema the store's tables live in (the run's namespace).
        name: what observations call the store.
    """

    def __init__(self, dsn: str, namespace: str, *, name: str = "postgres") -> None:
        self.dsn = dsn
        self.namespace = namespace
        self.name = name
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    def _table(self, name: str) -> sql.Identifier:
        return table(self.namespace, name)

    @abstractmethod
    def _schema(self) -> list[sql.Composed]:
        """The store's ``CREATE TABLE IF NOT EXISTS`` statements, in the namespace's schema."""

    async def setup(self) -> None:
        """Connect and create the store's tables if they are missing (idempotent)."""
        await create_tables(await self._connect(), self.namespace, self._schema())

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = await connect(self.dsn)
        return self._connection

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection inside BEGIN ... COMMIT (ROLLBACK if the block raises), held by
        this block alone until it ends."""
        connection = await self._connect()
        async with self._lock, connection.transaction():
            yield connection

    async def _fetch(self, query: sql.Composed, params: tuple[Any, ...] = ()) -> list[Any]:
        """Every row ``query`` answers (a read on its own, outside any open transaction)."""
        connection = await self._connect()
        async with self._lock:
            cursor = await connection.execute(query, params)
            rows: list[Any] = await cursor.fetchall()
            return rows

    async def close(self) -> None:
        """Close the connection (the rows stay); the next use opens a new one."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
