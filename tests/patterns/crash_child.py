"""The process the crash tests kill: runs one pattern against the lab's PostgreSQL and Redis.

``python -m tests.patterns.crash_child '<json spec>'`` runs the pattern named in the spec with
a crash hook that sends SIGKILL to this very process at the spec's boundary (or with no crash
at all). The parent test first runs the same pattern in its own process with a
:class:`~mqlab.patterns.harness.BoundaryRecorder` to learn every boundary, then starts this
child once per boundary, waits for the kill, runs the pattern again without a crash (the
restart) and checks that nothing was lost and nothing applied twice.

The consumers read a tiny durable queue (``inbox``: a row per message and an ``acked`` flag)
in the same schema, so a message that was not acked before the kill is delivered again after
the restart, exactly as a broker would redeliver it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from mqlab.patterns import postgres
from mqlab.patterns.database import PostgresDatabase, Transaction
from mqlab.patterns.harness import CrashHook, crash_at, no_crash
from mqlab.patterns.idempotency import (
    RedisDedupStore,
    check_process_record,
    claim_process_done,
    mark_then_process,
    process_in_one_transaction,
    process_in_separate_transactions,
)
from mqlab.patterns.order_saga import Order, OrderFaults, OrderSaga
from mqlab.patterns.retry import Backoff, Strategy
from mqlab.patterns.saga import CompensationRetry, SagaOrchestrator
from mqlab.patterns.saga_log_postgres import PostgresSagaLog

MESSAGES = ("m1", "m2", "m3")
ORDER = Order("o1", "alice", "sku1", quantity=2, amount=30)
STOCK, WALLET = 5, 100
SAGA_FAULTS = {
    "happy": OrderFaults(),
    "failing": OrderFaults(fail_after="confirm_order"),
    "flaky-compensation": OrderFaults(
        reject="confirm_order", compensation_failures={"charge_payment": 1}
    ),
}
PROCESSING_TTL = 0.5
"""Seconds a Redis processing marker lives: a crash under it delays the redelivery by this."""
STEP_TIMEOUT = 30.0
"""Each saga step's timeout: a bound, not a fault (no step here hangs). A step that timed out
on a loaded machine would send the saga down another path than the one whose boundaries the
first run recorded; the 5 s this was could be outlasted by the transactions of one step."""
DRAIN_SECONDS = 60.0
"""A bound on one consumer run over the inbox (each pass opens several connections, slow on
a loaded machine; a processing marker left by the kill holds its message back 0.5 s)."""


@dataclass(frozen=True)
class Spec:
    """What to run: ``pattern``, the services, the namespace, and where to crash."""

    pattern: str
    dsn: str
    redis_url: str
    namespace: str
    crash: tuple[str, str, int] | None = None
    variant: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Spec:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("crash") is not None:
            raw["crash"] = tuple(raw["crash"])
        return cls(**raw)

    def hook(self) -> CrashHook:
        if self.crash is None:
            return no_crash
        point, detail, occurrence = self.crash
        return crash_at(point, detail=detail, occurrence=occurrence, kill=True)


# --- set-up and the durable queue ---------------------------------------------------------


async def prepare(spec: Spec) -> None:
    """Create the tables (business database, saga log, inbox) and the opening state."""
    db = PostgresDatabase(spec.dsn, spec.namespace)
    await db.setup()
    if spec.pattern == "saga":
        log = PostgresSagaLog(spec.dsn, spec.namespace)
        await log.setup()
        await log.close()
        await OrderSaga(db).open_accounts(ORDER, stock=STOCK, wallet=WALLET)
    else:
        connection = await postgres.connect(spec.dsn)
        try:
            inbox = postgres.table(spec.namespace, "inbox")
            await connection.execute(
                sql.SQL(
                    "CREATE TABLE {} (seq integer PRIMARY KEY, message_id text NOT NULL, "
                    "acked boolean NOT NULL DEFAULT false)"
                ).format(inbox)
            )
            for seq, message_id in enumerate(MESSAGES, start=1):
                await connection.execute(
                    sql.SQL("INSERT INTO {} (seq, message_id) VALUES (%s, %s)").format(inbox),
                    (seq, message_id),
                )
        finally:
            await connection.close()
    await db.close()


async def unacked(spec: Spec) -> list[str]:
    connection = await postgres.connect(spec.dsn)
    try:
        cursor = await connection.execute(
            sql.SQL("SELECT message_id FROM {} WHERE NOT acked ORDER BY seq").format(
                postgres.table(spec.namespace, "inbox")
            )
        )
        return [row[0] for row in await cursor.fetchall()]
    finally:
        await connection.close()


async def ack(spec: Spec, message_id: str) -> None:
    connection = await postgres.connect(spec.dsn)
    try:
        await connection.execute(
            sql.SQL("UPDATE {} SET acked = true WHERE message_id = %s").format(
                postgres.table(spec.namespace, "inbox")
            ),
            (message_id,),
        )
    finally:
        await connection.close()


# --- the patterns -------------------------------------------------------------------------


async def run_saga(spec: Spec, crash: CrashHook) -> str:
    """What a saga process does when it starts: recover what the log has, then run."""
    db = PostgresDatabase(spec.dsn, spec.namespace)
    log = PostgresSagaLog(spec.dsn, spec.namespace)
    saga = OrderSaga(db, faults=SAGA_FAULTS[spec.variant or "happy"], timeout=STEP_TIMEOUT)
    orchestrator = SagaOrchestrator(
        log,
        [saga.definition],
        crash=crash,
        compensation_retry=CompensationRetry(3, Backoff(Strategy.EXPONENTIAL, base=0.01, cap=0.05)),
    )
    try:
        await orchestrator.recover()
        result = await orchestrator.run("place-order", "s1", ORDER.as_data())
        return result.status
    finally:
        await log.close()
        await db.close()


async def run_consumer(spec: Spec, crash: CrashHook) -> str:
    """Consume the inbox until every message is acked: process (the pattern), then ack."""
    db = PostgresDatabase(spec.dsn, spec.namespace)
    store = RedisDedupStore(spec.redis_url, spec.namespace, ttl=600.0)

    async def credit_in(tx: Transaction, message_id: str) -> None:
        await tx.credit("acct", 1, message_id=message_id)

    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while pending := await unacked(spec):
            if loop.time() > deadline:
                return "gave up"
            for message_id in pending:

                async def tx_work(tx: Transaction, message_id: str = message_id) -> None:
                    await credit_in(tx, message_id)

                async def work(message_id: str = message_id) -> None:
                    async with db.transaction() as tx:
                        await credit_in(tx, message_id)

                match spec.pattern:
                    case "one-transaction":
                        outcome = await process_in_one_transaction(
                            db, "consumer", message_id, tx_work, crash=crash
                        )
                    case "separate-transactions":
                        outcome = await process_in_separate_transactions(
                            db, "consumer", message_id, tx_work, crash=crash
                        )
                    case "redis-check-process-record":
                        outcome = await check_process_record(store, message_id, work, crash=crash)
                    case "redis-processing-marker":
                        outcome = await claim_process_done(
                            store, message_id, work, processing_ttl=PROCESSING_TTL, crash=crash
                        )
                    case "redis-mark-first":
                        outcome = await mark_then_process(store, message_id, work, crash=crash)
                    case _:
                        raise SystemExit(f"unknown pattern {spec.pattern}")
                if outcome == "in_progress":
                    continue  # like a nak: it comes back on the next pass
                await crash("before_ack", message_id)
                await ack(spec, message_id)
                await crash("after_ack", message_id)
            if await unacked(spec):
                await asyncio.sleep(0.1)  # the redelivery delay of this little queue
        return "drained"
    finally:
        await store.close()
        await db.close()


async def run(spec: Spec, crash: CrashHook) -> str:
    """Run the spec's pattern with ``crash`` as its hook."""
    if spec.pattern == "saga":
        return await run_saga(spec, crash)
    return await run_consumer(spec, crash)


def main(argv: list[str]) -> int:
    spec = Spec.from_json(argv[1])
    print(asyncio.run(run(spec, spec.hook())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
