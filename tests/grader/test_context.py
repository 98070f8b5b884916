"""GradingContext.crash_hook: which pass crashes, what the history says about it, and how a
crash happens on the simulator (raised in-process) and on a real broker (announced, then
SIGKILL)."""

from __future__ import annotations

import asyncio

import pytest

from mqlab.grader.context import GradingContext
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import FaultInjected, Observation
from mqlab.patterns import harness
from mqlab.patterns.harness import Crashed

pytestmark = pytest.mark.sim


def _context(*, simulated: bool) -> tuple[GradingContext, list[Observation]]:
    bus = ObservationBus()
    seen: list[Observation] = []
    bus.subscribe(seen.append)
    ctx = GradingContext(
        bus=bus,
        seed=0,
        simulated=simulated,
        phase=1,
        namespace="test-context",
        endpoints=Endpoints.local(),
    )
    return ctx, seen


def _crash_faults(seen: list[Observation]) -> list[dict[str, str]]:
    return [dict(o.params) for o in seen if isinstance(o, FaultInjected) and o.fault == "crash"]


def test_sim_crash_is_recorded_and_raised_at_the_chosen_pass_only() -> None:
    ctx, seen = _context(simulated=True)
    hook = ctx.crash_hook("after_commit", detail="m2", occurrence=2)

    async def passes() -> None:
        await hook("after_commit", "m1")  # another detail: not counted
        await hook("before_commit", "m2")  # another point: not counted
        await hook("after_commit", "m2")  # first matching pass: no crash yet
        assert _crash_faults(seen) == []
        await hook("after_commit", "m2")

    with pytest.raises(Crashed) as crashed:
        asyncio.run(passes())
    assert (crashed.value.point, crashed.value.detail) == ("after_commit", "m2")
    assert _crash_faults(seen) == [{"point": "after_commit", "detail": "m2"}]


def test_real_crash_is_recorded_and_announced_before_the_kill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx, seen = _context(simulated=False)
    order: list[str] = []
    ctx.announce_crash = lambda point: order.append(f"announce {point}")

    class Killed(Exception):
        pass

    def fake_kill() -> None:
        order.append("kill")
        raise Killed

    monkeypatch.setattr(harness, "kill_self", fake_kill)
    hook = ctx.crash_hook("after_effect_commit")

    async def reach() -> None:
        await hook("after_effect_commit", "pay-01")

    with pytest.raises(Killed):
        asyncio.run(reach())
    assert order == ["announce after_effect_commit", "kill"]
    assert _crash_faults(seen) == [{"point": "after_effect_commit", "detail": "pay-01"}]


def test_occurrence_counts_from_one() -> None:
    ctx, _ = _context(simulated=True)
    with pytest.raises(ValueError, match="counts from 1"):
        ctx.crash_hook("after_commit", occurrence=0)
