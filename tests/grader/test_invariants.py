"""The grader's invariants on small hand-written histories: each fails on a wrong one, with a
counter-example that names the operation and the fault, and holds on a right one."""

from __future__ import annotations

import pytest

from mqlab.grader.invariants import judge
from mqlab.observe.events import FaultInjected, Observation, RetryAttempted, RetryGaveUp

pytestmark = pytest.mark.sim


# --- within-deadline -----------------------------------------------------------------------


def _call(operation: str, ended: float, duration: float, error: str = "") -> RetryAttempted:
    return RetryAttempted(
        at=ended,
        broker="grader",
        message_id=operation,
        call=1,
        outcome="failed" if error else "succeeded",
        duration=duration,
        error=error,
    )


def test_within_deadline_fails_when_a_give_up_comes_after_the_deadline() -> None:
    history: list[Observation] = [
        FaultInjected(
            at=0.0, broker="grader", fault="slow-failures", target="op-2", params=(("each", "2.9"),)
        ),
        _call("op-1", ended=0.1, duration=0.1),
        _call("op-2", ended=3.0, duration=2.9, error="ServiceError: 503 unavailable"),
        _call("op-2", ended=6.2, duration=2.9, error="ServiceError: 503 unavailable"),
        _call("op-2", ended=9.5, duration=2.9, error="ServiceError: 503 unavailable"),
        RetryGaveUp(
            at=12.4, broker="grader", message_id="op-2", reason="learner", calls=3, elapsed=12.3
        ),
    ]
    finding = judge("within-deadline", history, {"seconds": 10})
    assert not finding.holds
    assert finding.problem == "1 operations ran past their 10s deadline"
    (line,) = finding.counterexample
    assert line.startswith("op-2: gave up 12.30s after its first call (deadline 10s)")
    assert "+0.00s for 2.90s (ServiceError)" in line
    assert line.endswith("the fault: slow-failures op-2 each=2.9")


def test_within_deadline_counts_a_call_that_runs_past_the_deadline() -> None:
    history: list[Observation] = [
        _call("op-1", ended=2.0, duration=2.0, error="TimeoutError"),
        _call("op-1", ended=14.0, duration=11.5, error=""),
    ]
    finding = judge("within-deadline", history, {"seconds": 10})
    assert not finding.holds
    assert finding.counterexample[0].startswith("op-1: last call ended 14.00s after")


def test_within_deadline_holds_when_every_operation_ends_in_time() -> None:
    history: list[Observation] = [
        _call("op-1", ended=3.0, duration=3.0, error="TimeoutError"),
        _call("op-1", ended=9.9, duration=3.0, error="TimeoutError"),
        RetryGaveUp(
            at=10.0, broker="grader", message_id="op-1", reason="learner", calls=2, elapsed=10.0
        ),
        _call("op-2", ended=0.5, duration=0.5),
    ]
    finding = judge("within-deadline", history, {"seconds": 10})
    assert finding.holds, finding
    assert finding.proven == "2 operations, the longest took 10.00s (deadline 10s)"


def test_within_deadline_without_calls_tested_nothing() -> None:
    finding = judge("within-deadline", [], {"seconds": 10})
    assert not finding.holds
    assert "nothing was tested" in finding.problem


def test_within_deadline_needs_its_deadline() -> None:
    with pytest.raises(ValueError, match="'seconds'"):
        judge("within-deadline", [_call("op-1", ended=1.0, duration=1.0)], {})
