"""The pattern programs' own pieces: the reporting database, the failing inventory service
(in memory and on the lab's PostgreSQL, classified the same way), deliveries, parameters.

The programs as a whole run in the scenario library tests (every pattern scenario on the
simulator and on its real target, the ledgers compared)."""

from __future__ import annotations

import random

import pytest

from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import EffectApplied
from mqlab.patterns.database import MemoryDatabase, ReportingDatabase
from mqlab.patterns.harness import Crashed, Reporter
from mqlab.patterns.programs import ProgramContext, find_program
from mqlab.patterns.programs.idempotency import deliveries
from mqlab.patterns.programs.retries import MemoryInventory, PostgresInventory
from mqlab.patterns.retry import ErrorClass, classify_error

VIRTUAL_TIME = True


def _effects(recorder: Recorder) -> list[EffectApplied]:
    return [o for o in recorder.observations if isinstance(o, EffectApplied)]


@pytest.mark.sim
async def test_only_committed_writes_are_reported(reporter: Reporter, recorder: Recorder) -> None:
    db = ReportingDatabase(MemoryDatabase(), reporter)
    async with db.transaction() as tx:
        await tx.credit("acct", 10, message_id="m1")
        await tx.set_balance("other", 7, message_id="m1")

    async def crash_before_commit() -> None:
        async with db.transaction() as tx:
            await tx.credit("acct", 5, message_id="m2")
            raise Crashed("before_commit", "m2")

    with pytest.raises(Crashed):
        await crash_before_commit()
    effects = _effects(recorder)
    assert [(e.entity, e.operation, e.before, e.after, e.idempotent) for e in effects] == [
        ("acct", "INCREMENT balance BY 10", 0, 10, False),
        ("other", "SET balance = 7", 0, 7, True),
    ]
    assert await db.balance("acct") == 10  # the rolled-back credit never happened


@pytest.mark.sim
async def test_the_inner_database_writes_without_reporting(
    reporter: Reporter, recorder: Recorder
) -> None:
    db = ReportingDatabase(MemoryDatabase(), reporter)
    async with db.inner.transaction() as tx:
        await tx.set_balance("acct", 100, message_id="opening")
    assert _effects(recorder) == []
    assert await db.balance("acct") == 100


@pytest.mark.sim
async def test_the_memory_service_fails_as_postgresql_would() -> None:
    service = MemoryInventory(stock=3, outage_calls=1)
    with pytest.raises(Exception, match="could not obtain lock") as outage:
        await service.reserve(1)
    assert classify_error(outage.value) is ErrorClass.TRANSIENT
    with pytest.raises(Exception, match="check constraint") as too_many:
        await service.reserve(4)
    assert classify_error(too_many.value) is ErrorClass.PERMANENT
    await service.reserve(3)
    assert service.stock == 0


@pytest.mark.postgres
async def test_the_lab_service_raises_real_errors_classified_the_same_way(
    endpoints: Endpoints, postgres_namespace: str
) -> None:
    service = PostgresInventory(endpoints.postgres_dsn, postgres_namespace, 3, outage_calls=2)
    await service.setup()
    try:
        failures = []
        for _ in range(2):
            with pytest.raises(Exception, match="could not obtain lock") as locked:
                await service.reserve(1)
            failures.append((getattr(locked.value, "sqlstate", None), classify_error(locked.value)))
        assert failures == [("55P03", ErrorClass.TRANSIENT)] * 2
        await service.reserve(1)  # the outage ended after its second refusal
        with pytest.raises(Exception, match="check constraint") as too_many:
            await service.reserve(5)
        assert getattr(too_many.value, "sqlstate", None) == "23514"
        assert classify_error(too_many.value) is ErrorClass.PERMANENT
    finally:
        await service.close()


def _context(**params: object) -> ProgramContext:
    return ProgramContext(
        reporter=Reporter(ObservationBus(), "test"),
        params=dict(params),  # type: ignore[arg-type]
        simulated=True,
        seed=0,
        namespace="mq-test",
        endpoints=Endpoints.local(),
        rng=random.Random(0),
    )


@pytest.mark.sim
def test_deliveries_are_message_numbers_from_one() -> None:
    assert deliveries(_context(deliveries=[1, 3, 1])) == ["m-1", "m-3", "m-1"]
    for wrong in (0, True, "2"):
        with pytest.raises(ValueError, match="message numbers from 1"):
            deliveries(_context(deliveries=[1, wrong]))


@pytest.mark.sim
def test_a_null_passes_a_parameter_with_choices_and_a_wrong_text_does_not() -> None:
    loop = find_program("kafka-consumer-loop")
    assert loop.problems({"downstream": None}, None) == []
    assert loop.problems({"downstream": "read_dirty"}, None) == [
        "kafka-consumer-loop.downstream: 'read_dirty' is not one of read_committed, "
        "read_uncommitted"
    ]
