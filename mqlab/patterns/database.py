"""The business database the patterns write to: PostgreSQL on the lab, in memory on ``sim``.

Idempotency, "offsets stored with the data" and the transactional outbox all rest on one
idea: the business write and the bookkeeping that protects it (the processed key, the
consumer's offset, the event to publish) commit in *one* database transaction, so a crash
leaves either both or neither. To show that on real PostgreSQL and on the simulator with the
same pattern code, the patterns talk to a small :class:`BusinessDatabase`:

* a bank-style business model: ``accounts`` (a balance per account) and ``postings`` (one row
  per business write, with the message that caused it, so "applied twice" is visible as two
  postings of one message);
* ``processed``: idempotency keys per consumer, primary key ``(consumer, key)``;
* ``consumer_offsets``: the next offset per group and partition, for consumers that keep their
  position in the database instead of in Kafka;
* ``outbox``: events waiting to be published by the relay.

Everything that must be atomic happens inside ``async with db.transaction() as tx:``. Leaving
the block normally commits; an exception (or a :class:`~mqlab.patterns.harness.Crashed`, or the
process dying) commits nothing. :class:`PostgresDatabase` spells out the SQL (that is the lesson
material); :class:`MemoryDatabase` keeps the same tables in dicts, stages a transaction's writes
and applies them at commit, one transaction at a time.

The memory database models the database *server*: a consumer that crashes on the simulator
loses its own state, but the rows it committed stay, exactly as they would in PostgreSQL.

:class:`ReportingDatabase` wraps either one and reports every business write whose
transaction committed as an :class:`~mqlab.observe.events.EffectApplied`: what a scenario's
ledger counts as effects, and as effects applied twice. It also has the crash points at the
database's boundaries (after a business write, after the COMMIT of an effect or of a stored
offset), so a scenario or a graded exercise can kill a consumer exactly there.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql

from mqlab.observe.events import EffectApplied
from mqlab.patterns import postgres
from mqlab.patterns.harness import CrashHook, Reporter, no_crash
from mqlab.patterns.postgres import table


@dataclass(frozen=True, slots=True)
class BalanceChange:
    """What a business write did to one account."""

    before: int
    after: int


@dataclass(frozen=True, slots=True)
class Posting:
    """One business write as the ``postings`` table keeps it.

    ``operation`` is ``credit`` (a relative change by ``amount``) or ``set`` (the balance was
    set to ``amount``).
    """

    account: str
    amount: int
    operation: str
    message_id: str


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event to publish: ``destination`` is a topic, queue or subject in the broker's own
    terms, ``message_id`` the id consumers deduplicate on."""

    message_id: str
    destination: str
    payload: bytes
    key: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An outbox row: the message and its row id (the relay publishes in row order)."""

    outbox_id: int
    message: OutboxMessage
    relayed: bool = False


PartitionKey = tuple[str, int]
"""``(topic, partition)``: this module stays free of any broker's types."""


class Transaction(ABC):
    """The writes the patterns make inside one database transaction."""

    @abstractmethod
    async def claim(self, consumer: str, key: str) -> bool:
        """Insert ``(consumer, key)`` into ``processed`` unless it is there.

        Returns:
            True if this transaction inserted it (new work), False if it was already there
            (a duplicate). On PostgreSQL the row count of ``INSERT ... ON CONFLICT DO
            NOTHING`` decides; a concurrent transaction claiming the same key waits for this
            one and then gets 0.
        """

    @abstractmethod
    async def credit(self, account: str, amount: int, *, message_id: str) -> BalanceChange:
        """Add ``amount`` to ``account`` (a relative write: not idempotent) and post it."""

    @abstractmethod
    async def set_balance(self, account: str, value: int, *, message_id: str) -> BalanceChange:
        """Set ``account`` to ``value`` (an absolute write: naturally idempotent) and post it."""

    @abstractmethod
    async def balance(self, account: str) -> int:
        """The balance as this transaction sees it (0 for an unknown account)."""

    @abstractmethod
    async def advance_offset(
        self, group: str, topic: str, partition: int, *, start: int, end: int
    ) -> bool:
        """Move ``group``'s stored offset on a partition from ``start`` to ``end`` (the next
        offset to read), only if it is at ``start`` (or nothing is stored yet).

        Returns:
            False when the database has another offset: someone else (the member that owned
            the partition meanwhile, a zombie) got there first, and this record must not be
            processed from here.
        """

    @abstractmethod
    async def add_to_outbox(self, message: OutboxMessage) -> int:
        """Queue ``message`` for the relay; returns its row id."""


class OutboxBatch(ABC):
    """Unrelayed outbox rows, held by one relay until the batch ends."""

    rows: list[OutboxRow]

    @abstractmethod
    async def mark_relayed(self, outbox_id: int) -> None:
        """Mark a row relayed; it becomes final when the batch ends without an error."""


class BusinessDatabase(ABC):
    """The database of :mod:`mqlab.patterns.database`: see the module docstring.

    Attributes:
        name: what observations call this store (``postgres``, ``memory`` ...).
        namespace: the run's namespace (the PostgreSQL schema).
    """

    name: str
    namespace: str

    async def __aenter__(self) -> Self:
        await self.setup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def setup(self) -> None:
        """Connect and create the tables if needed (idempotent)."""
        return None

    async def close(self) -> None:
        """Release the connection (the rows stay)."""
        return None

    async def drop(self) -> None:
        """Delete this database's tables and rows."""
        return None

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with db.transaction() as tx:`` commits at the end of the block, or nothing
        if the block raises."""

    @abstractmethod
    def outbox_batch(self, limit: int = 100) -> AbstractAsyncContextManager[OutboxBatch]:
        """Up to ``limit`` unrelayed rows in row order, held until the block ends (another
        relay skips them); the rows marked relayed become final only if the block ends
        normally."""

    @abstractmethod
    async def balance(self, account: str) -> int:
        """The committed balance of ``account`` (0 when unknown)."""

    @abstractmethod
    async def postings(self, account: str | None = None) -> list[Posting]:
        """Every committed posting (of ``account``), in the order they were made."""

    @abstractmethod
    async def is_claimed(self, consumer: str, key: str) -> bool:
        """Whether ``(consumer, key)`` is committed in ``processed``."""

    @abstractmethod
    async def stored_offsets(
        self, group: str, partitions: Iterable[PartitionKey]
    ) -> dict[PartitionKey, int]:
        """The committed offsets of ``group`` for those partitions that have one."""

    @abstractmethod
    async def outbox(self) -> list[OutboxRow]:
        """Every outbox row in row order, relayed or not."""


# --- PostgreSQL ---------------------------------------------------------------------------


_TABLES = ("accounts", "postings", "processed", "consumer_offsets", "outbox")


class _PostgresTransaction(Transaction):
    """The SQL of each write, inside the caller's open transaction."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], namespace: str) -> None:
        self._connection = connection
        self._namespace = namespace

    def _table(self, name: str) -> sql.Identifier:
        return table(self._namespace, name)

    async def claim(self, consumer: str, key: str) -> bool:
        cursor = await self._connection.execute(
            sql.SQL("INSERT INTO {} (consumer, key) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
                self._table("processed")
            ),
            (consumer, key),
        )
        # 1 row: this transaction recorded the key, the work is new. 0 rows: it was there.
        return cursor.rowcount == 1

    async def credit(self, account: str, amount: int, *, message_id: str) -> BalanceChange:
        cursor = await self._connection.execute(
            sql.SQL(
                "INSERT INTO {accounts} AS a (account, balance) VALUES (%s, %s) "
                "ON CONFLICT (account) DO UPDATE SET balance = a.balance + EXCLUDED.balance "
                "RETURNING balance"
            ).format(accounts=self._table("accounts")),
            (account, amount),
        )
        row = await cursor.fetchone()
        after = int(row[0]) if row else amount
        await self._post(account, amount, "credit", message_id)
        return BalanceChange(before=after - amount, after=after)

    async def set_balance(self, account: str, value: int, *, message_id: str) -> BalanceChange:
        before = await self._locked_balance(account)
        await self._connection.execute(
            sql.SQL(
                "INSERT INTO {} (account, balance) VALUES (%s, %s) "
                "ON CONFLICT (account) DO UPDATE SET balance = EXCLUDED.balance"
            ).format(self._table("accounts")),
            (account, value),
        )
        await self._post(account, value, "set", message_id)
        return BalanceChange(before=before, after=value)

    async def _locked_balance(self, account: str) -> int:
        cursor = await self._connection.execute(
            sql.SQL("SELECT balance FROM {} WHERE account = %s FOR UPDATE").format(
                self._table("accounts")
            ),
            (account,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _post(self, account: str, amount: int, operation: str, message_id: str) -> None:
        await self._connection.execute(
            sql.SQL(
                "INSERT INTO {} (account, amount, operation, message_id) VALUES (%s, %s, %s, %s)"
            ).format(self._table("postings")),
            (account, amount, operation, message_id),
        )

    async def balance(self, account: str) -> int:
        cursor = await self._connection.execute(
            sql.SQL("SELECT balance FROM {} WHERE account = %s").format(self._table("accounts")),
            (account,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def advance_offset(
        self, group: str, topic: str, partition: int, *, start: int, end: int
    ) -> bool:
        # A compare-and-set: the update happens only where the stored offset is ``start``.
        # The row stays locked until COMMIT, so a second transaction for the same partition
        # waits, then finds ``end`` stored and gets 0 rows.
        cursor = await self._connection.execute(
            sql.SQL(
                "INSERT INTO {t} AS o (group_id, topic, partition, next_offset) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (group_id, topic, partition) DO UPDATE "
                "SET next_offset = EXCLUDED.next_offset WHERE o.next_offset = %s"
            ).format(t=self._table("consumer_offsets")),
            (group, topic, partition, end, start),
        )
        return cursor.rowcount == 1

    async def add_to_outbox(self, message: OutboxMessage) -> int:
        cursor = await self._connection.execute(
            sql.SQL(
                "INSERT INTO {} (message_id, destination, message_key, payload) "
                "VALUES (%s, %s, %s, %s) RETURNING outbox_id"
            ).format(self._table("outbox")),
            (message.message_id, message.destination, message.key, message.payload),
        )
        row = await cursor.fetchone()
        assert row is not None  # RETURNING always answers for an inserted row
        return int(row[0])


class _PostgresOutboxBatch(OutboxBatch):
    def __init__(
        self, connection: psycopg.AsyncConnection[Any], namespace: str, rows: list[OutboxRow]
    ) -> None:
        self._connection = connection
        self._namespace = namespace
        self.rows = rows

    async def mark_relayed(self, outbox_id: int) -> None:
        await self._connection.execute(
            sql.SQL("UPDATE {} SET relayed_at = now() WHERE outbox_id = %s").format(
                table(self._namespace, "outbox")
            ),
            (outbox_id,),
        )


class PostgresDatabase(postgres.PostgresClient, BusinessDatabase):
    """The business database in PostgreSQL, in the schema named after ``namespace``.

    Args: those of :class:`~mqlab.patterns.postgres.PostgresClient` (one connection, one
    transaction at a time).
    """

    def _schema(self) -> list[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (account text PRIMARY KEY, balance bigint NOT NULL)"
            ).format(self._table("accounts")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (posting_id bigserial PRIMARY KEY, account text NOT "
                "NULL, amount bigint NOT NULL, operation text NOT NULL, message_id text NOT NULL, "
                "posted_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._table("postings")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (consumer text NOT NULL, key text NOT NULL, "
                "processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, key))"
            ).format(self._table("processed")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (group_id text NOT NULL, topic text NOT NULL, "
                "partition integer NOT NULL, next_offset bigint NOT NULL, "
                "PRIMARY KEY (group_id, topic, partition))"
            ).format(self._table("consumer_offsets")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (outbox_id bigserial PRIMARY KEY, message_id text "
                "NOT NULL UNIQUE, destination text NOT NULL, message_key text, payload bytea NOT "
                "NULL, created_at timestamptz NOT NULL DEFAULT now(), relayed_at timestamptz)"
            ).format(self._table("outbox")),
        ]

    async def drop(self) -> None:
        connection = await self._connect()
        async with self._lock:
            for name in _TABLES:
                await connection.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(table(self.namespace, name))
                )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._transaction() as connection:
            yield _PostgresTransaction(connection, self.namespace)

    @asynccontextmanager
    async def outbox_batch(self, limit: int = 100) -> AsyncIterator[OutboxBatch]:
        async with self._transaction() as connection:
            # FOR UPDATE SKIP LOCKED: a second relay takes the rows after these instead of
            # waiting for them (or publishing them too).
            cursor = await connection.execute(
                sql.SQL(
                    "SELECT outbox_id, message_id, destination, message_key, payload FROM {} "
                    "WHERE relayed_at IS NULL ORDER BY outbox_id LIMIT %s FOR UPDATE SKIP LOCKED"
                ).format(table(self.namespace, "outbox")),
                (limit,),
            )
            rows = [
                OutboxRow(int(row[0]), OutboxMessage(row[1], row[2], bytes(row[4]), row[3]))
                for row in await cursor.fetchall()
            ]
            yield _PostgresOutboxBatch(connection, self.namespace, rows)

    async def balance(self, account: str) -> int:
        rows = await self._fetch(
            sql.SQL("SELECT balance FROM {} WHERE account = %s").format(
                table(self.namespace, "accounts")
            ),
            (account,),
        )
        return int(rows[0][0]) if rows else 0

    async def postings(self, account: str | None = None) -> list[Posting]:
        query = sql.SQL(
            "SELECT account, amount, operation, message_id FROM {} "
            "WHERE %s::text IS NULL OR account = %s ORDER BY posting_id"
        ).format(table(self.namespace, "postings"))
        rows = await self._fetch(query, (account, account))
        return [Posting(row[0], int(row[1]), row[2], row[3]) for row in rows]

    async def is_claimed(self, consumer: str, key: str) -> bool:
        rows = await self._fetch(
            sql.SQL("SELECT 1 FROM {} WHERE consumer = %s AND key = %s").format(
                table(self.namespace, "processed")
            ),
            (consumer, key),
        )
        return bool(rows)

    async def stored_offsets(
        self, group: str, partitions: Iterable[PartitionKey]
    ) -> dict[PartitionKey, int]:
        wanted = set(partitions)
        rows = await self._fetch(
            sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE group_id = %s").format(
                table(self.namespace, "consumer_offsets")
            ),
            (group,),
        )
        stored = {(row[0], int(row[1])): int(row[2]) for row in rows}
        return {tp: offset for tp, offset in stored.items() if tp in wanted}

    async def outbox(self) -> list[OutboxRow]:
        rows = await self._fetch(
            sql.SQL(
                "SELECT outbox_id, message_id, destination, message_key, payload, "
                "relayed_at IS NOT NULL FROM {} ORDER BY outbox_id"
            ).format(table(self.namespace, "outbox"))
        )
        return [
            OutboxRow(
                int(row[0]), OutboxMessage(row[1], row[2], bytes(row[4]), row[3]), bool(row[5])
            )
            for row in rows
        ]


# --- in memory (the simulator) -------------------------------------------------------------


@dataclass
class _Tables:
    balances: dict[str, int] = field(default_factory=dict)
    postings: list[Posting] = field(default_factory=list)
    processed: set[tuple[str, str]] = field(default_factory=set)
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    outbox: dict[int, OutboxRow] = field(default_factory=dict)


class _MemoryTransaction(Transaction):
    """Writes staged over the committed tables; :meth:`commit` applies them in one go."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._database = database
        self._staged = _Tables()

    @property
    def _committed(self) -> _Tables:
        return self._database.tables

    async def claim(self, consumer: str, key: str) -> bool:
        entry = (consumer, key)
        if entry in self._committed.processed or entry in self._staged.processed:
            return False
        self._staged.processed.add(entry)
        return True

    async def balance(self, account: str) -> int:
        if account in self._staged.balances:
            return self._staged.balances[account]
        return self._committed.balances.get(account, 0)

    async def credit(self, account: str, amount: int, *, message_id: str) -> BalanceChange:
        before = await self.balance(account)
        self._staged.balances[account] = before + amount
        self._staged.postings.append(Posting(account, amount, "credit", message_id))
        return BalanceChange(before, before + amount)

    async def set_balance(self, account: str, value: int, *, message_id: str) -> BalanceChange:
        before = await self.balance(account)
        self._staged.balances[account] = value
        self._staged.postings.append(Posting(account, value, "set", message_id))
        return BalanceChange(before, value)

    async def advance_offset(
        self, group: str, topic: str, partition: int, *, start: int, end: int
    ) -> bool:
        entry = (group, topic, partition)
        stored = self._staged.offsets.get(entry, self._committed.offsets.get(entry))
        if stored is not None and stored != start:
            return False
        self._staged.offsets[entry] = end
        return True

    async def add_to_outbox(self, message: OutboxMessage) -> int:
        if any(r.message.message_id == message.message_id for r in self._committed.outbox.values()):
            raise ValueError(f"outbox: message id {message.message_id!r} is already queued")
        outbox_id = self._database.next_outbox_id()
        self._staged.outbox[outbox_id] = OutboxRow(outbox_id, message)
        return outbox_id

    def commit(self) -> None:
        committed = self._committed
        committed.balances.update(self._staged.balances)
        committed.postings.extend(self._staged.postings)
        committed.processed.update(self._staged.processed)
        committed.offsets.update(self._staged.offsets)
        committed.outbox.update(self._staged.outbox)


class _MemoryOutboxBatch(OutboxBatch):
    def __init__(self, rows: list[OutboxRow]) -> None:
        self.rows = rows
        self.marked: list[int] = []

    async def mark_relayed(self, outbox_id: int) -> None:
        self.marked.append(outbox_id)


class MemoryDatabase(BusinessDatabase):
    """The same tables in memory, for the simulator: transactions run one at a time (as if
    serializable) and commit atomically at the end of their block.

    Args:
        name: what observations call it (``memory``, or ``sim:postgres`` in a simulated run
            that stands for the lab's PostgreSQL).
        namespace: kept for symmetry with :class:`PostgresDatabase`.
    """

    def __init__(self, *, name: str = "memory", namespace: str = "memory") -> None:
        self.name = name
        self.namespace = namespace
        self.tables = _Tables()
        self._lock = asyncio.Lock()
        self._outbox_ids = 0
        self._held_rows: set[int] = set()

    def next_outbox_id(self) -> int:
        """The next outbox row id (like a bigserial: never reused, even after a rollback)."""
        self._outbox_ids += 1
        return self._outbox_ids

    async def drop(self) -> None:
        self.tables = _Tables()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            transaction = _MemoryTransaction(self)
            yield transaction
            transaction.commit()  # not reached when the block raised: nothing is applied

    @asynccontextmanager
    async def outbox_batch(self, limit: int = 100) -> AsyncIterator[OutboxBatch]:
        rows = [
            row
            for outbox_id, row in sorted(self.tables.outbox.items())
            if not row.relayed and outbox_id not in self._held_rows
        ][:limit]
        held = {row.outbox_id for row in rows}
        self._held_rows |= held
        batch = _MemoryOutboxBatch(rows)
        try:
            yield batch
            for outbox_id in batch.marked:
                self.tables.outbox[outbox_id] = OutboxRow(
                    outbox_id, self.tables.outbox[outbox_id].message, relayed=True
                )
        finally:
            self._held_rows -= held

    async def balance(self, account: str) -> int:
        return self.tables.balances.get(account, 0)

    async def postings(self, account: str | None = None) -> list[Posting]:
        return [p for p in self.tables.postings if account is None or p.account == account]

    async def is_claimed(self, consumer: str, key: str) -> bool:
        return (consumer, key) in self.tables.processed

    async def stored_offsets(
        self, group: str, partitions: Iterable[PartitionKey]
    ) -> dict[PartitionKey, int]:
        result: dict[PartitionKey, int] = {}
        for topic, partition in partitions:
            offset = self.tables.offsets.get((group, topic, partition))
            if offset is not None:
                result[(topic, partition)] = offset
        return result

    async def outbox(self) -> list[OutboxRow]:
        return [row for _, row in sorted(self.tables.outbox.items())]


# --- committed effects, reported -------------------------------------------------------------


RecordAt = Callable[[str, int, int], str]
"""``(topic, partition, offset) -> message id`` of the record at that offset."""


def offset_text(topic: str, partition: int, offset: int) -> str:
    """``topic:partition@offset``: how a stored offset is named when nobody knows its record."""
    return f"{topic}:{partition}@{offset}"


@dataclass(frozen=True, slots=True)
class _BusinessWrite:
    account: str
    operation: str
    change: BalanceChange
    message_id: str
    idempotent: bool


class _RecordingTransaction(Transaction):
    """A transaction that passes every write on, lists the business writes and the offset
    moves it made, and reaches ``after_business_write`` after each business write."""

    def __init__(self, inner: Transaction, crash: CrashHook) -> None:
        self._inner = inner
        self._crash = crash
        self.writes: list[_BusinessWrite] = []
        self.offsets: list[tuple[str, int, int]] = []
        """``(topic, partition, next offset)`` for each stored offset this transaction moved."""

    async def claim(self, consumer: str, key: str) -> bool:
        return await self._inner.claim(consumer, key)

    async def credit(self, account: str, amount: int, *, message_id: str) -> BalanceChange:
        change = await self._inner.credit(account, amount, message_id=message_id)
        operation = f"INCREMENT balance BY {amount}"
        self.writes.append(_BusinessWrite(account, operation, change, message_id, False))
        await self._crash("after_business_write", message_id)
        return change

    async def set_balance(self, account: str, value: int, *, message_id: str) -> BalanceChange:
        change = await self._inner.set_balance(account, value, message_id=message_id)
        operation = f"SET balance = {value}"
        self.writes.append(_BusinessWrite(account, operation, change, message_id, True))
        await self._crash("after_business_write", message_id)
        return change

    async def balance(self, account: str) -> int:
        return await self._inner.balance(account)

    async def advance_offset(
        self, group: str, topic: str, partition: int, *, start: int, end: int
    ) -> bool:
        moved = await self._inner.advance_offset(group, topic, partition, start=start, end=end)
        if moved:
            self.offsets.append((topic, partition, end))
        return moved

    async def add_to_outbox(self, message: OutboxMessage) -> int:
        return await self._inner.add_to_outbox(message)


class ReportingDatabase(BusinessDatabase):
    """``inner`` with every *committed* business write reported as an
    :class:`~mqlab.observe.events.EffectApplied` (the message id, the account, before and
    after), so a run's ledger can count effects and effects applied twice.

    Only a write whose transaction committed is reported: a credit made inside a transaction
    that then rolled back (an exception, a crash, a SIGKILL before COMMIT) never happened, and
    reporting it would make a correct consumer look as if it had applied a message twice. The
    report is made right after the commit, before anything else is awaited, so a crash hook
    that fires after the commit finds the effect already reported, as the database has it.

    Crash points, awaited on ``crash`` (an attribute: a driver may swap it between two
    transactions) with the message id as detail:

    * ``after_business_write``: inside the transaction, after a credit or a balance set (the
      COMMIT has not happened);
    * ``after_effect_commit``: after the COMMIT of a transaction with a business write (the
      first write's message id);
    * ``after_offset_commit``: after the COMMIT of a transaction that moved a stored consumer
      offset, once per offset moved; the detail names the record at that offset through
      ``record_at``.

    A transaction that does both reaches both, effect first.

    Args:
        inner: the database that does the work (memory or PostgreSQL).
        reporter: where the observations go.
        crash: the crash hook (none by default).
        record_at: names the record at a stored offset (the one before the new position), for
            the ``after_offset_commit`` detail; :func:`offset_text` when omitted.
    """

    def __init__(
        self,
        inner: BusinessDatabase,
        reporter: Reporter,
        crash: CrashHook = no_crash,
        record_at: RecordAt = offset_text,
    ) -> None:
        self.inner = inner
        self.reporter = reporter
        self.crash = crash
        self.record_at = record_at
        self.name = inner.name
        self.namespace = inner.namespace

    async def setup(self) -> None:
        await self.inner.setup()

    async def close(self) -> None:
        await self.inner.close()

    async def drop(self) -> None:
        await self.inner.drop()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.inner.transaction() as inner:
            recording = _RecordingTransaction(inner, self.crash)
            yield recording
        # Reached only when the block committed: these writes are in the database now.
        for write in recording.writes:
            self.reporter.emit(
                EffectApplied,
                entity=write.account,
                operation=write.operation,
                before=write.change.before,
                after=write.change.after,
                message_id=write.message_id,
                idempotent=write.idempotent,
            )
        if recording.writes:
            await self.crash("after_effect_commit", recording.writes[0].message_id)
        for topic, partition, end in recording.offsets:
            await self.crash("after_offset_commit", self.record_at(topic, partition, end - 1))

    def outbox_batch(self, limit: int = 100) -> AbstractAsyncContextManager[OutboxBatch]:
        return self.inner.outbox_batch(limit)

    async def balance(self, account: str) -> int:
        return await self.inner.balance(account)

    async def postings(self, account: str | None = None) -> list[Posting]:
        return await self.inner.postings(account)

    async def is_claimed(self, consumer: str, key: str) -> bool:
        return await self.inner.is_claimed(consumer, key)

    async def stored_offsets(
        self, group: str, partitions: Iterable[PartitionKey]
    ) -> dict[PartitionKey, int]:
        return await self.inner.stored_offsets(group, partitions)

    async def outbox(self) -> list[OutboxRow]:
        return await self.inner.outbox()
