"""Hidden check of the postgres-idempotent-consumer exercise.

Twelve payments are delivered to the learner's ``handle(db, payment)`` the way a broker
delivers at least once: some twice in a row (a duplicate delivery), some again later (an ack
that was lost), and twice the consumer crashes: once between the dedup insert and the
business write (in whichever order the learner makes them, and whether they share a
transaction or not), once after ``handle`` returned and before the ack. After a crash the
delivery comes again to a consumer that starts from nothing: on ``sim`` the learner's module
is loaded afresh (the in-memory database stands for the server and keeps its rows); on the
lab the process is SIGKILLed and the grader starts a new one, which finds only what
PostgreSQL committed.

The database the learner gets is the pattern library's business database (PostgreSQL on the
lab, memory on ``sim``) behind a thin watcher: it reaches the crash points and, after each
COMMIT, reports every business write the transaction made as an ``EffectApplied``, so the
history holds the committed truth. ``nothing-lost`` and ``no-double-effect`` judge it.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from mqlab.grader.context import GradingContext, learner_function
from mqlab.observe.events import Acked, Delivered, EffectApplied, Produced
from mqlab.patterns import postgres
from mqlab.patterns.database import (
    BalanceChange,
    BusinessDatabase,
    MemoryDatabase,
    OutboxBatch,
    OutboxMessage,
    OutboxRow,
    PartitionKey,
    PostgresDatabase,
    Posting,
    Transaction,
)
from mqlab.patterns.harness import Crashed, CrashHook

QUEUE = "payments"
CONSUMER = "payment-consumer"
ACCOUNTS = ("acct-alice", "acct-bob", "acct-carol")
PAYMENTS = 12
DUPLICATED = 3
REDELIVERED = 3
BETWEEN = "between_dedup_and_write"
BEFORE_ACK = "before_ack"


@dataclass(frozen=True, slots=True)
class Payment:
    """One message: credit ``amount`` to ``account``; ``message_id`` is the dedup key."""

    message_id: str
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a payment: ``why`` is ``first``, ``duplicate`` or ``redelivery``."""

    payment: Payment
    why: str


@dataclass(frozen=True, slots=True)
class PlannedCrash:
    """Crash at ``point`` during delivery number ``index``."""

    index: int
    point: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The deliveries and the crashes of one run (all from the seed)."""

    payments: tuple[Payment, ...]
    deliveries: tuple[Delivery, ...]
    crashes: tuple[PlannedCrash, ...]


def _plan(rng: random.Random) -> Plan:
    payments = tuple(
        Payment(f"pay-{n:02d}", rng.choice(ACCOUNTS), rng.randint(1, 10) * 5)
        for n in range(1, PAYMENTS + 1)
    )
    duplicated = set(rng.sample(payments, DUPLICATED))
    deliveries: list[Delivery] = []
    for payment in payments:
        deliveries.append(Delivery(payment, "first"))
        if payment in duplicated:
            deliveries.append(Delivery(payment, "duplicate"))
    for payment in rng.sample([p for p in payments if p not in duplicated], REDELIVERED):
        first = next(i for i, d in enumerate(deliveries) if d.payment == payment)
        position = rng.randint(min(first + 2, len(deliveries)), len(deliveries))
        deliveries.insert(position, Delivery(payment, "redelivery"))
    firsts = [i for i, d in enumerate(deliveries) if d.why == "first"]
    between, before_ack = rng.sample(firsts, 2)
    crashes = sorted(
        (PlannedCrash(between, BETWEEN), PlannedCrash(before_ack, BEFORE_ACK)),
        key=lambda c: c.index,
    )
    return Plan(payments, tuple(deliveries), tuple(crashes))


@dataclass
class Watch:
    """What the watcher knows about the delivery in progress."""

    ctx: GradingContext
    payment: Payment | None = None
    crash: CrashHook | None = None
    """The crash armed for this delivery (None: no crash here)."""
    crash_point: str = ""
    writes: set[str] = field(default_factory=set)
    """Which of ``claim`` and ``write`` the learner has made for this delivery."""

    def start(self, payment: Payment, crash: PlannedCrash | None) -> None:
        self.payment = payment
        self.writes = set()
        self.crash_point = crash.point if crash else ""
        self.crash = self.ctx.crash_hook(crash.point, detail=payment.message_id) if crash else None

    async def reach(self, point: str) -> None:
        if self.crash is not None and point == self.crash_point and self.payment is not None:
            crash, self.crash = self.crash, None
            await crash(point, self.payment.message_id)

    async def before(self, write: str) -> None:
        """Before a claim or a business write: the second of the two is the moment between
        the dedup insert and the business write, whatever their order."""
        other = "write" if write == "claim" else "claim"
        if other in self.writes:
            await self.reach(BETWEEN)
        self.writes.add(write)


class WatchedTransaction(Transaction):
    """The learner's transaction: the library's, plus crash points and a list of writes."""

    def __init__(self, inner: Transaction, watch: Watch) -> None:
        self._inner = inner
        self._watch = watch
        self.changes: list[tuple[str, str, BalanceChange]] = []

    async def claim(self, consumer: str, key: str) -> bool:
        await self._watch.before("claim")
        return await self._inner.claim(consumer, key)

    async def credit(self, account: str, amount: int, *, message_id: str) -> BalanceChange:
        await self._watch.before("write")
        change = await self._inner.credit(account, amount, message_id=message_id)
        self.changes.append((account, f"credit {amount}", change))
        return change

    async def set_balance(self, account: str, value: int, *, message_id: str) -> BalanceChange:
        await self._watch.before("write")
        change = await self._inner.set_balance(account, value, message_id=message_id)
        self.changes.append((account, f"set {value}", change))
        return change

    async def balance(self, account: str) -> int:
        return await self._inner.balance(account)

    async def advance_offset(
        self, group: str, topic: str, partition: int, *, start: int, end: int
    ) -> bool:
        return await self._inner.advance_offset(group, topic, partition, start=start, end=end)

    async def add_to_outbox(self, message: OutboxMessage) -> int:
        return await self._inner.add_to_outbox(message)


class WatchedDatabase(BusinessDatabase):
    """The learner's database: reports each committed business write as an effect."""

    def __init__(self, inner: BusinessDatabase, watch: Watch) -> None:
        self._inner = inner
        self._watch = watch
        self.name = inner.name
        self.namespace = inner.namespace

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._inner.transaction() as inner:
            watched = WatchedTransaction(inner, self._watch)
            yield watched
        # Only reached when the block committed: these writes are durable now.
        payment = self._watch.payment
        for account, operation, change in watched.changes:
            self._watch.ctx.emit(
                EffectApplied,
                entity=account,
                operation=operation,
                before=change.before,
                after=change.after,
                message_id=payment.message_id if payment else "",
                idempotent=False,
            )

    def outbox_batch(self, limit: int = 100) -> AbstractAsyncContextManager[OutboxBatch]:
        return self._inner.outbox_batch(limit)

    async def balance(self, account: str) -> int:
        return await self._inner.balance(account)

    async def postings(self, account: str | None = None) -> list[Posting]:
        return await self._inner.postings(account)

    async def is_claimed(self, consumer: str, key: str) -> bool:
        return await self._inner.is_claimed(consumer, key)

    async def stored_offsets(
        self, group: str, partitions: Iterable[PartitionKey]
    ) -> dict[PartitionKey, int]:
        return await self._inner.stored_offsets(group, partitions)

    async def outbox(self) -> list[OutboxRow]:
        return await self._inner.outbox()


def _restarted(learner: ModuleType) -> ModuleType:
    """The learner's module loaded again from its file: a consumer that starts from nothing."""
    spec = importlib.util.spec_from_file_location(learner.__name__, learner.__file__ or "")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {learner.__file__} again")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _database(ctx: GradingContext) -> BusinessDatabase:
    if ctx.simulated:
        return MemoryDatabase(name="memory")
    database = PostgresDatabase(ctx.postgres_dsn, ctx.namespace)
    await database.setup()
    return database


class Cursor:
    """What the broker remembers between consumer lives: the next delivery to make (every
    delivery before it was acknowledged). In the lab's PostgreSQL on a real run, so that it
    survives the consumer's SIGKILL; in memory on ``sim``."""

    def __init__(self, ctx: GradingContext) -> None:
        self._ctx = ctx
        self._next = 0
        self._connection: psycopg.AsyncConnection[Any] | None = None

    def _table(self) -> sql.Identifier:
        return postgres.table(self._ctx.namespace, "grader_deliveries")

    async def read(self) -> int:
        if self._ctx.simulated:
            return self._next
        self._connection = await postgres.connect(self._ctx.postgres_dsn)
        create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (queue text PRIMARY KEY, next_delivery integer)"
        ).format(self._table())
        await postgres.create_tables(self._connection, self._ctx.namespace, [create])
        cursor = await self._connection.execute(
            sql.SQL("SELECT next_delivery FROM {} WHERE queue = %s").format(self._table()),
            (QUEUE,),
        )
        row = await cursor.fetchone()
        self._next = int(row[0]) if row else 0
        return self._next

    async def advance(self, to: int) -> None:
        self._next = to
        if self._connection is not None:
            await self._connection.execute(
                sql.SQL(
                    "INSERT INTO {} (queue, next_delivery) VALUES (%s, %s) "
                    "ON CONFLICT (queue) DO UPDATE SET next_delivery = EXCLUDED.next_delivery"
                ).format(self._table()),
                (QUEUE, to),
            )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    plan = _plan(ctx.rng)
    cursor = Cursor(ctx)
    index = await cursor.read()
    # A later phase starts where the previous consumer died: the crash planned at this
    # delivery has happened, the ones after it are still to come.
    resumed = ctx.phase > 1
    pending = [c for c in plan.crashes if c.index > index or (c.index == index and not resumed)]
    if not resumed:
        for position, payment in enumerate(plan.payments):
            ctx.emit(Produced, destination=QUEUE, message_id=payment.message_id, position=position)
    database = await _database(ctx)
    watch = Watch(ctx)
    db = WatchedDatabase(database, watch)
    handle = learner_function(learner, "handle")
    try:
        while index < len(plan.deliveries):
            delivery = plan.deliveries[index]
            payment = delivery.payment
            watch.start(payment, next((c for c in pending if c.index == index), None))
            # After a crash the redelivery is the crash's doing: the crash is the fault.
            if delivery.why == "duplicate" and not resumed:
                ctx.fault("duplicate-delivery", payment.message_id)
            elif delivery.why == "redelivery" and not resumed:
                ctx.fault("redelivery", payment.message_id, reason="the ack was lost")
            ctx.emit(
                Delivered,
                destination=QUEUE,
                message_id=payment.message_id,
                consumer=CONSUMER,
                redelivered=resumed or delivery.why != "first",
            )
            try:
                await handle(db, payment)
                await watch.reach(BEFORE_ACK)
            except Crashed:
                # sim: the consumer is gone; a new one gets the same delivery again.
                pending = [c for c in pending if c.index > index]
                resumed = True
                handle = learner_function(_restarted(learner), "handle")
                continue
            ctx.emit(Acked, destination=QUEUE, message_id=payment.message_id, consumer=CONSUMER)
            resumed = False
            index += 1
            await cursor.advance(index)
    finally:
        await database.close()
        await cursor.close()


async def cleanup(ctx: GradingContext) -> None:
    """Drop the run's schema (tables and rows) from the lab's PostgreSQL."""
    await postgres.drop_namespace(ctx.postgres_dsn, ctx.namespace)
