"""Hidden check of the postgres-idempotent-consumer exercise.

Twelve payments are delivered to the learner's ``handle(db, payment)`` the way a broker
delivers at least once: some twice in a row (a duplicate delivery), some again later (an ack
that was lost), and twice the consumer crashes: once right after the credit, inside its
transaction (for a consumer that committed the dedup key in a transaction of its own, that
is between the key and the credit), once right after the credit's COMMIT, before the ack.
After a crash the delivery comes again to a consumer that starts from nothing: on ``sim``
the learner's module is loaded afresh (the in-memory database stands for the server and
keeps its rows); on the lab the process is SIGKILLed and the grader starts a new one, which
finds only what PostgreSQL committed.

The database the learner gets is the pattern library's business database (PostgreSQL on the
lab, memory on ``sim``) behind the grader's watcher (:mod:`mqlab.grader.database`): it
reaches the crash points and reports each business write as an ``EffectApplied`` once its
transaction has committed, so the history holds the committed truth. ``nothing-lost`` and
``no-double-effect`` judge it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from mqlab.grader.context import GradingContext, learner_function
from mqlab.grader.database import WatchedDatabase, business_database
from mqlab.grader.loops import fresh_module
from mqlab.observe.events import Acked, Delivered, Produced
from mqlab.patterns import postgres
from mqlab.patterns.harness import Crashed, no_crash

QUEUE = "payments"
CONSUMER = "payment-consumer"
ACCOUNTS = ("acct-alice", "acct-bob", "acct-carol")
PAYMENTS = 12
GAP = 0.05
"""Seconds between two deliveries (so that the history orders them in time, too)."""
DUPLICATED = 3
REDELIVERED = 3
AFTER_WRITE = "after_business_write"
"""Inside the transaction, right after the credit: its COMMIT has not happened."""
AFTER_COMMIT = "after_effect_commit"
"""Right after the COMMIT of the credit, before the ack."""


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
    after_write, after_commit = rng.sample(firsts, 2)
    crashes = sorted(
        (PlannedCrash(after_write, AFTER_WRITE), PlannedCrash(after_commit, AFTER_COMMIT)),
        key=lambda c: c.index,
    )
    return Plan(payments, tuple(deliveries), tuple(crashes))


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
    database = await business_database(ctx)
    db = WatchedDatabase(database, ctx)
    handle = learner_function(learner, "handle")
    try:
        while index < len(plan.deliveries):
            delivery = plan.deliveries[index]
            payment = delivery.payment
            await asyncio.sleep(GAP)
            armed = next((c for c in pending if c.index == index), None)
            db.crash = ctx.crash_hook(armed.point) if armed else no_crash
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
            except Crashed:
                # sim: the consumer is gone; a new one gets the same delivery again.
                pending = [c for c in pending if c.index > index]
                resumed = True
                handle = learner_function(fresh_module(learner), "handle")
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
