"""Crash tests against the lab's PostgreSQL and Redis: the saga log and the idempotent
consumers survive a SIGKILL at every step boundary.

For each pattern, a first run in this process records every boundary it passes. Then, per
boundary, a fresh namespace is prepared, a child process (``crash_child.py``) runs the pattern
and kills itself with SIGKILL exactly there, and the pattern runs again in this process (the
restart). The checks: the child really died by SIGKILL, nothing was lost, and no effect was
applied twice, except where a pattern is documented to repeat one (a dedup store outside the
work's transaction) or to lose one (the teaching variants, which these tests show failing).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mqlab.lab.endpoints import Endpoints
from mqlab.patterns.database import PostgresDatabase
from mqlab.patterns.harness import Boundary, BoundaryRecorder
from mqlab.patterns.idempotency import RedisDedupStore
from mqlab.patterns.order_saga import orders_account, stock_account, wallet_account
from mqlab.patterns.postgres import drop_namespace
from mqlab.patterns.saga_log_postgres import PostgresSagaLog
from tests.patterns.crash_child import MESSAGES, ORDER, STOCK, WALLET, Spec, prepare, run

REPO = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 60.0


def spec(endpoints: Endpoints, pattern: str, variant: str = "") -> Spec:
    return Spec(
        pattern=pattern,
        dsn=endpoints.postgres_dsn,
        redis_url=endpoints.redis_url,
        namespace=f"mq-{secrets.token_hex(3)}",
        variant=variant,
    )


async def cleanup(spec: Spec) -> None:
    await drop_namespace(spec.dsn, spec.namespace)
    store = RedisDedupStore(spec.redis_url, spec.namespace)
    await store.clear()
    await store.close()


async def boundaries_of(spec: Spec) -> list[Boundary]:
    """Every boundary one uninterrupted run passes (run here, against the real services)."""
    recorder = BoundaryRecorder()
    await prepare(spec)
    try:
        await run(spec, recorder)
    finally:
        await cleanup(spec)
    return recorder.boundaries


async def kill_at(spec: Spec, boundary: Boundary) -> None:
    """Run the child with SIGKILL at ``boundary`` and check that it died exactly so."""
    crashing = Spec(
        **{**spec.__dict__, "crash": (boundary.point, boundary.detail, boundary.occurrence)}
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.patterns.crash_child",
        crashing.to_json(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(CHILD_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode == -signal.SIGKILL, (
        f"{boundary}: the child exited with {process.returncode}, not SIGKILL: "
        f"{out.decode()} {err.decode()[-2000:]}"
    )


async def postings(spec: Spec) -> Counter[str]:
    db = PostgresDatabase(spec.dsn, spec.namespace)
    try:
        return Counter(p.message_id for p in await db.postings("acct"))
    finally:
        await db.close()


# --- the saga log -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("variant", ["happy", "failing", "flaky-compensation"])
async def test_the_saga_survives_a_sigkill_at_every_boundary(
    endpoints: Endpoints, variant: str
) -> None:
    every = await boundaries_of(spec(endpoints, "saga", variant))
    assert len(every) >= 10
    for boundary in every:
        case = spec(endpoints, "saga", variant)
        await prepare(case)
        try:
            await kill_at(case, boundary)
            status = await run(case, BoundaryRecorder())  # the restart: recover, then run
            db = PostgresDatabase(case.dsn, case.namespace)
            state = (
                await db.balance(stock_account(ORDER.sku)),
                await db.balance(wallet_account(ORDER.customer)),
                await db.balance(orders_account(ORDER.customer)),
            )
            applied = Counter((p.account, p.message_id) for p in await db.postings())
            await db.close()
            log = PostgresSagaLog(case.dsn, case.namespace)
            record = await log.load("s1")
            await log.close()
        finally:
            await cleanup(case)
        assert record is not None, boundary
        assert status == record.status, boundary
        if variant == "happy":
            assert status == "completed", boundary
            assert state == (STOCK - ORDER.quantity, WALLET - ORDER.amount, 1), boundary
        else:
            assert status == "compensated", boundary
            assert state == (STOCK, WALLET, 0), boundary
        assert all(count == 1 for count in applied.values()), (boundary, applied)


# --- idempotent consumers -------------------------------------------------------------------


async def crash_everywhere(endpoints: Endpoints, pattern: str) -> dict[str, Counter[str]]:
    """Kill the consumer at each boundary, restart it; the postings per boundary."""
    every = await boundaries_of(spec(endpoints, pattern))
    assert every, pattern
    results: dict[str, Counter[str]] = {}
    for boundary in every:
        case = spec(endpoints, pattern)
        await prepare(case)
        try:
            await kill_at(case, boundary)
            assert await run(case, BoundaryRecorder()) == "drained", boundary
            results[str(boundary)] = await postings(case)
        finally:
            await cleanup(case)
    return results


EXACTLY_ONCE = Counter(dict.fromkeys(MESSAGES, 1))


@pytest.mark.postgres
@pytest.mark.redis
async def test_the_one_transaction_consumer_applies_each_message_once_whatever_the_kill(
    endpoints: Endpoints,
) -> None:
    results = await crash_everywhere(endpoints, "one-transaction")
    assert len(results) == 5 * len(MESSAGES)
    for boundary, applied in results.items():
        assert applied == EXACTLY_ONCE, boundary


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("pattern", ["redis-check-process-record", "redis-processing-marker"])
async def test_a_redis_dedup_consumer_never_loses_and_repeats_only_a_kill_after_the_work(
    endpoints: Endpoints, pattern: str
) -> None:
    results = await crash_everywhere(endpoints, pattern)
    for boundary, applied in results.items():
        point, message = boundary.split(":")[0], boundary.split(":")[1].split()[0]
        expected = Counter(EXACTLY_ONCE)
        if point == "after_work":
            expected[message] = 2  # the work committed, the key never made it to Redis
        assert applied == expected, boundary


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize(
    ("pattern", "losing_point"),
    [("separate-transactions", "between_transactions"), ("redis-mark-first", "after_record")],
)
async def test_the_teaching_variants_lose_a_message_on_the_kill_they_exist_to_show(
    endpoints: Endpoints, pattern: str, losing_point: str
) -> None:
    results = await crash_everywhere(endpoints, pattern)
    lost = {b: a for b, a in results.items() if a != EXACTLY_ONCE}
    assert lost, "the bug did not show"
    for boundary, applied in lost.items():
        message = boundary.split(":")[1].split()[0]
        assert boundary.startswith(losing_point), boundary
        assert applied == Counter({m: 1 for m in MESSAGES if m != message}), boundary
