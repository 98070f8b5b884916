"""The patterns' PostgreSQL stores against the lab's server: the business database and its
transactions under concurrency, the saga log, the event store's optimistic concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mqlab.brokers.base import BrokerUnavailable
from mqlab.lab.endpoints import Endpoints
from mqlab.patterns import postgres
from mqlab.patterns.database import OutboxMessage, PostgresDatabase, Transaction
from mqlab.patterns.event_sourcing import (
    DomainEvent,
    Order,
    OrdersByStatus,
    Repository,
    VersionConflictError,
    rebuild,
)
from mqlab.patterns.event_store_postgres import PostgresEventStore
from mqlab.patterns.harness import Crashed, crash_at
from mqlab.patterns.idempotency import (
    process_in_one_transaction,
    process_in_separate_transactions,
)
from mqlab.patterns.order_saga import Order as SagaOrder
from mqlab.patterns.order_saga import OrderFaults, OrderSaga, wallet_account
from mqlab.patterns.saga import SagaOrchestrator
from mqlab.patterns.saga_log_postgres import PostgresSagaLog
from tests.waiting import eventually

pytestmark = pytest.mark.postgres

STEP_TIMEOUT = 30.0
"""Each saga step's timeout here: a bound, not a fault. No step of these sagas hangs, and one
that timed out would change the saga's path (compensate early, never reach the planned crash);
OrderSaga's default of 2 s is shorter than a transaction can take on a loaded machine."""


async def credit(tx: Transaction) -> None:
    await tx.credit("acct", 10, message_id="m1")


async def waiting_for_a_lock(dsn: str, namespace: str) -> int:
    """How many sessions wait for a lock right now (a transaction blocked by another)."""
    connection = await postgres.connect(dsn)
    try:
        cursor = await connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s",
            (f"%{namespace}%",),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0
    finally:
        await connection.close()


async def test_an_unreachable_server_is_one_line() -> None:
    db = PostgresDatabase("postgresql://mqlab@127.0.0.1:1/mqlab", "mq-x")
    with pytest.raises(BrokerUnavailable, match=r"postgres is not reachable at 127\.0\.0\.1:1"):
        await db.setup()


async def test_commit_and_rollback(endpoints: Endpoints, postgres_namespace: str) -> None:
    async with PostgresDatabase(endpoints.postgres_dsn, postgres_namespace) as db:

        async def credit_then(failure: BaseException | None, message_id: str) -> None:
            async with db.transaction() as tx:
                await tx.credit("a", 5, message_id=message_id)
                if failure is not None:
                    raise failure

        await credit_then(None, "m1")
        with pytest.raises(ValueError, match="no"):
            await credit_then(ValueError("no"), "m2")
        with pytest.raises(Crashed):
            await credit_then(Crashed("before_commit", "m3"), "m3")
        assert await db.balance("a") == 5
        assert [p.message_id for p in await db.postings()] == ["m1"]


async def test_the_row_count_decides_and_the_second_claimer_waits(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    """Two consumers with the same message at once: the second INSERT waits for the first
    transaction and then finds the key; the effect happens once."""
    dsn = endpoints.postgres_dsn
    async with (
        PostgresDatabase(dsn, postgres_namespace) as first,
        PostgresDatabase(dsn, postgres_namespace) as second,
    ):
        inside, release = asyncio.Event(), asyncio.Event()

        async def slow_credit(tx: Transaction) -> None:
            await tx.credit("acct", 10, message_id="m1")
            inside.set()
            await release.wait()

        one = asyncio.create_task(process_in_one_transaction(first, "c", "m1", slow_credit))
        await inside.wait()
        two = asyncio.create_task(process_in_one_transaction(second, "c", "m1", credit))
        await eventually(
            lambda: waiting_for_a_lock(dsn, postgres_namespace),
            10.0,
            "the second INSERT to wait for the first transaction's row lock",
        )
        release.set()
        assert (await one, await two) == ("applied", "duplicate")
        assert await first.balance("acct") == 10


async def test_separate_transactions_lose_the_message_on_real_postgres(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    async with PostgresDatabase(endpoints.postgres_dsn, postgres_namespace) as db:
        with pytest.raises(Crashed):
            await process_in_separate_transactions(
                db, "c", "m1", credit, crash=crash_at("between_transactions")
            )
        assert await process_in_separate_transactions(db, "c", "m1", credit) == "duplicate"
        assert await db.postings() == []


async def test_advance_offset_refuses_a_stale_position_across_connections(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    dsn = endpoints.postgres_dsn
    async with (
        PostgresDatabase(dsn, postgres_namespace) as a,
        PostgresDatabase(dsn, postgres_namespace) as b,
    ):
        async with a.transaction() as tx:
            assert await tx.advance_offset("g", "t", 0, start=0, end=1)
        async with b.transaction() as tx:
            assert not await tx.advance_offset("g", "t", 0, start=0, end=1)
            assert await tx.advance_offset("g", "t", 0, start=1, end=2)
        assert await a.stored_offsets("g", [("t", 0)]) == {("t", 0): 2}


async def test_two_relays_skip_each_others_rows(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    dsn = endpoints.postgres_dsn
    async with (
        PostgresDatabase(dsn, postgres_namespace) as a,
        PostgresDatabase(dsn, postgres_namespace) as b,
    ):
        for number in range(1, 5):
            async with a.transaction() as tx:
                await tx.add_to_outbox(OutboxMessage(f"e{number}", "t", b"x", key="k"))
        async with a.outbox_batch(2) as first:
            async with b.outbox_batch(10) as second:
                assert [r.message.message_id for r in first.rows] == ["e1", "e2"]
                assert [r.message.message_id for r in second.rows] == ["e3", "e4"]
                await second.mark_relayed(second.rows[0].outbox_id)
            await first.mark_relayed(first.rows[0].outbox_id)
        assert [(r.message.message_id, r.relayed) for r in await a.outbox()] == [
            ("e1", True),
            ("e2", False),
            ("e3", True),
            ("e4", False),
        ]
        assert (await a.outbox())[0].message == OutboxMessage("e1", "t", b"x", key="k")


async def test_the_saga_on_the_postgres_log(endpoints: Endpoints, postgres_namespace: str) -> None:
    dsn = endpoints.postgres_dsn
    order = SagaOrder("o1", "alice", "sku1", 1, 30)
    async with PostgresDatabase(dsn, postgres_namespace) as db:
        log = PostgresSagaLog(dsn, postgres_namespace)
        await log.setup()
        try:
            saga = OrderSaga(db, faults=OrderFaults(reject="confirm_order"), timeout=STEP_TIMEOUT)
            await saga.open_accounts(order, stock=5, wallet=100)
            orchestrator = SagaOrchestrator(log, [saga.definition])
            with pytest.raises(Crashed):
                await SagaOrchestrator(
                    log, [saga.definition], crash=crash_at("action_done", detail="charge_payment")
                ).run("place-order", "s1", order.as_data())
            record = await log.load("s1")
            assert record is not None
            assert (record.status, record.step_state("charge_payment")) == ("running", "in_doubt")
            [result] = await orchestrator.recover()
            assert result.status == "compensated"
            assert await db.balance(wallet_account("alice")) == 100
            record = await log.load("s1")
            assert record is not None
            kinds = [e.kind for e in record.entries]
            assert kinds[:4] == ["saga_started", "step_started", "step_succeeded", "step_started"]
            assert "recovered" in kinds
            assert kinds[-1] == "ended"
            compensations = [
                e.compensation_id for e in record.entries if e.kind == "compensation_succeeded"
            ]
            assert compensations == [
                "s1/charge_payment/compensation",
                "s1/reserve_stock/compensation",
            ]
            assert await log.with_status("running", "compensating") == []
            applied = Counter((p.account, p.message_id) for p in await db.postings())
            assert set(applied.values()) == {1}
        finally:
            await log.close()


async def test_the_saga_log_refuses_a_second_start(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    log = PostgresSagaLog(endpoints.postgres_dsn, postgres_namespace)
    await log.setup()
    try:
        assert await log.create("s1", "t", {"a": 1}) is None
        existing = await log.create("s1", "t", {"a": 2})
        assert existing is not None
        assert existing.data == {"a": 1}
    finally:
        await log.close()


def an_order(aggregate_id: str) -> Order:
    order = Order(aggregate_id)
    order.create("alice")
    order.add_item("sku1", 2, 10)
    return order


async def test_the_event_store_round_trip_and_projection(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    store = PostgresEventStore(endpoints.postgres_dsn, postgres_namespace)
    await store.setup()
    try:
        repo = Repository(store, Order, snapshot_every=2)
        await repo.save(an_order("o1"))
        await repo.update("o1", lambda order: order.pay(20))
        await repo.save(an_order("o2"))
        loaded = await repo.load("o1")
        assert (loaded.status, loaded.version) == ("paid", 3)
        snapshot = await store.load_snapshot("o1")
        assert snapshot is not None
        assert snapshot.version == 2
        projection = OrdersByStatus()
        assert await rebuild(projection, store) == 5
        assert (projection.counts(), projection.revenue) == ({"paid": 1, "pending": 1}, 20)
        assert [s.position for s in await store.read_all(3)] == [4, 5]
    finally:
        await store.close()


async def test_two_concurrent_writers_one_version_conflict(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    dsn = endpoints.postgres_dsn
    stores = [PostgresEventStore(dsn, postgres_namespace) for _ in range(2)]
    for store in stores:
        await store.setup()
    try:
        await Repository(stores[0], Order).save(an_order("o1"))
        repos = [Repository(store, Order) for store in stores]
        first, second = [await repo.load("o1") for repo in repos]
        first.pay(20)
        second.cancel("no")
        results = await asyncio.gather(
            repos[0].save(first), repos[1].save(second), return_exceptions=True
        )
        conflicts = [r for r in results if isinstance(r, VersionConflictError)]
        assert len(conflicts) == 1
        assert (conflicts[0].expected, conflicts[0].actual) == (2, 3)
        assert len(await stores[0].load("o1")) == 3
    finally:
        for store in stores:
            await store.close()


async def test_the_unique_constraint_refuses_a_second_version_whoever_writes_it(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    """Even a writer that bypasses the store (plain SQL) cannot store version 1 twice."""
    store = PostgresEventStore(endpoints.postgres_dsn, postgres_namespace)
    await store.setup()
    try:
        await store.append(
            "o1", [DomainEvent("e1", "o1", "OrderCreated", 1, 0.0, {"customer": "a"})], 0
        )
        connection: Any = await postgres.connect(endpoints.postgres_dsn)
        try:
            with pytest.raises(psycopg.errors.UniqueViolation):
                await connection.execute(
                    sql.SQL(
                        "INSERT INTO {} (event_id, aggregate_id, version, event_type, ts, data) "
                        "VALUES ('e2', 'o1', 1, 'OrderCreated', 0, '{{}}')"
                    ).format(postgres.table(postgres_namespace, "events"))
                )
        finally:
            await connection.close()
    finally:
        await store.close()
