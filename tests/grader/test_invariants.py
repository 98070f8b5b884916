"""The grader's invariants on small hand-written histories: each fails on a wrong one, with a
counter-example that names the operation and the fault, and holds on a right one."""

from __future__ import annotations

import pytest

from mqlab.grader.invariants import judge
from mqlab.observe.events import (
    EffectApplied,
    FaultInjected,
    Observation,
    Produced,
    RetryAttempted,
    RetryGaveUp,
)

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


# --- the fault a counter-example names ----------------------------------------------------


def test_a_lost_message_is_explained_by_the_fault_that_named_it_not_the_last_one() -> None:
    history: list[Observation] = [
        Produced(at=0.0, broker="grader", destination="payments", message_id="pay-1"),
        Produced(at=0.0, broker="grader", destination="payments", message_id="pay-2"),
        FaultInjected(
            at=1.0,
            broker="grader",
            fault="crash",
            target="learner",
            params=(("point", "between_dedup_and_write"), ("detail", "pay-1")),
        ),
        EffectApplied(
            at=2.0,
            broker="grader",
            entity="acct",
            operation="credit 5",
            before=0,
            after=5,
            message_id="pay-2",
            idempotent=False,
        ),
        FaultInjected(at=3.0, broker="grader", fault="duplicate-delivery", target="pay-2"),
    ]
    finding = judge("nothing-lost", history, {})
    assert not finding.holds
    assert finding.counterexample[-1] == (
        "after the fault: crash learner point=between_dedup_and_write detail=pay-1"
    )


def test_a_double_effect_is_explained_by_the_fault_that_named_its_message() -> None:
    def credit(at: float, message_id: str, before: int) -> EffectApplied:
        return EffectApplied(
            at=at,
            broker="grader",
            entity="acct",
            operation="credit 5",
            before=before,
            after=before + 5,
            message_id=message_id,
            idempotent=False,
        )

    history: list[Observation] = [
        credit(1.0, "pay-1", 0),
        FaultInjected(at=1.5, broker="grader", fault="duplicate-delivery", target="pay-1"),
        FaultInjected(at=1.6, broker="grader", fault="redelivery", target="pay-9"),
        credit(2.0, "pay-1", 5),
    ]
    finding = judge("no-double-effect", history, {})
    assert not finding.holds
    assert finding.counterexample == (
        "pay-1 applied 2 times to acct (0->5, 5->10); after the fault: duplicate-delivery pay-1",
    )


def test_without_a_fault_naming_the_message_the_last_fault_is_named() -> None:
    history: list[Observation] = [
        Produced(at=0.0, broker="grader", destination="payments", message_id="pay-1"),
        FaultInjected(at=1.0, broker="grader", fault="kill", target="broker-1"),
    ]
    finding = judge("nothing-lost", history, {})
    assert finding.counterexample[-1] == "after the fault: kill broker-1"
