"""WatchedDatabase as the learner holds it: effects reported from the grader with the
library's vocabulary, and a lifetime that stays the check's."""

from __future__ import annotations

import pytest

from mqlab.grader.context import GRADER_SOURCE, GradingContext
from mqlab.grader.database import WatchedDatabase, business_database
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import EffectApplied, Observation
from mqlab.patterns.database import MemoryDatabase

pytestmark = pytest.mark.sim


class _CountingDatabase(MemoryDatabase):
    """A memory database that counts the lifetime calls that reach it."""

    def __init__(self) -> None:
        super().__init__(name="memory")
        self.lifetime_calls: list[str] = []

    async def setup(self) -> None:
        self.lifetime_calls.append("setup")

    async def close(self) -> None:
        self.lifetime_calls.append("close")

    async def drop(self) -> None:
        self.lifetime_calls.append("drop")


def _context() -> tuple[GradingContext, list[Observation]]:
    bus = ObservationBus()
    seen: list[Observation] = []
    bus.subscribe(seen.append)
    ctx = GradingContext(
        bus=bus,
        seed=0,
        simulated=True,
        phase=1,
        namespace="test-database",
        endpoints=Endpoints.local(),
    )
    return ctx, seen


async def test_committed_writes_are_reported_by_the_grader() -> None:
    ctx, seen = _context()
    db = WatchedDatabase(MemoryDatabase(), ctx)
    async with db.transaction() as tx:
        await tx.credit("acct", 5, message_id="m1")
        await tx.set_balance("other", 7, message_id="m2")
    effects = [o for o in seen if isinstance(o, EffectApplied)]
    assert [(e.broker, e.entity, e.operation, e.idempotent) for e in effects] == [
        (GRADER_SOURCE, "acct", "INCREMENT balance BY 5", False),
        (GRADER_SOURCE, "other", "SET balance = 7", True),
    ]


async def test_the_learner_cannot_close_or_drop_the_checks_database() -> None:
    ctx, _ = _context()
    inner = _CountingDatabase()
    async with WatchedDatabase(inner, ctx) as db:
        await db.drop()
    assert inner.lifetime_calls == []


async def test_business_database_is_in_memory_on_sim() -> None:
    ctx, _ = _context()
    database = await business_database(ctx)
    assert isinstance(database, MemoryDatabase)
    assert database.name == "memory"
