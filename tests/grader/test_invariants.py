"""The grader's invariants on small hand-written histories: each fails on a wrong one, with a
counter-example that names the operation and the fault, and holds on a right one."""

from __future__ import annotations

import pytest

from mqlab.grader.invariants import judge
from mqlab.observe.events import (
    CompensationSucceeded,
    DeadLettered,
    Delivered,
    EffectApplied,
    FaultInjected,
    Observation,
    Processed,
    Produced,
    RetryAttempted,
    RetryGaveUp,
    SagaEnded,
    SagaStarted,
    SagaStepFailed,
    SagaStepSucceeded,
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


def test_a_double_effect_names_who_received_the_message_and_when() -> None:
    """A message applied twice was received twice: the counterexample says by whom and when
    (an SQS visibility timeout that ran out mid-work shows as a second consumer's delivery)."""

    def received(at: float, consumer: str, count: int) -> Delivered:
        return Delivered(
            at=at,
            broker="sqs",
            destination="orders.fifo",
            message_id="ord-2/paid",
            consumer=consumer,
            delivery_count=count,
            redelivered=count > 1,
        )

    def shipped(at: float, before: int) -> EffectApplied:
        return EffectApplied(
            at=at,
            broker="grader",
            entity="ord-2",
            operation="ship step paid",
            before=before,
            after=before + 1,
            message_id="ord-2/paid",
            idempotent=False,
        )

    history: list[Observation] = [
        received(1.0, "consumer-a", 1),
        received(3.25, "consumer-b", 2),
        shipped(4.5, 1),
        shipped(6.75, 2),
    ]
    finding = judge("no-double-effect", history, {})
    assert not finding.holds
    assert finding.counterexample == (
        "ord-2/paid applied 2 times to ord-2 (1->2, 2->3); received by consumer-a at 1.00s "
        "(delivery 1), consumer-b at 3.25s (delivery 2); no fault had been injected yet",
    )


def test_without_a_fault_naming_the_message_the_last_fault_is_named() -> None:
    history: list[Observation] = [
        Produced(at=0.0, broker="grader", destination="payments", message_id="pay-1"),
        FaultInjected(at=1.0, broker="grader", fault="kill", target="broker-1"),
    ]
    finding = judge("nothing-lost", history, {})
    assert finding.counterexample[-1] == "after the fault: kill broker-1"


# --- broker exercises: nothing-lost's fault and parking, parked-after-attempts --------------


def _sent(message_id: str, at: float = 0.0, destination: str = "mq-1-orders") -> Produced:
    return Produced(at=at, broker="kafka", destination=destination, message_id=message_id)


def _delivered(message_id: str, at: float, destination: str = "mq-1-orders") -> Delivered:
    return Delivered(
        at=at, broker="rabbitmq", destination=destination, message_id=message_id, consumer="c"
    )


def _crash(at: float, point: str, detail: str) -> FaultInjected:
    return FaultInjected(
        at=at,
        broker="grader",
        fault="crash",
        target="learner",
        params=(("point", point), ("detail", detail)),
    )


def test_a_lost_message_is_explained_by_the_crash_that_took_it_from_its_consumer() -> None:
    # pay-2 was polled with pay-3 and auto-committed; the member died working on pay-3, and
    # a rebalance came later: the crash is what lost pay-2, not the rebalance.
    history: list[Observation] = [
        _sent("pay-2"),
        _sent("pay-3"),
        _delivered("pay-2", 1.0),
        _delivered("pay-3", 1.0),
        _crash(2.0, "after_receive", "pay-3"),
        _delivered("pay-3", 5.0),
        Processed(at=5.1, broker="grader", message_id="pay-3", consumer="member-2"),
        FaultInjected(at=6.0, broker="grader", fault="rebalance", target="payments"),
    ]
    finding = judge("nothing-lost", history, {})
    assert not finding.holds
    assert finding.counterexample == (
        "pay-2: acknowledged, never processed",
        "after the fault: crash learner point=after_receive detail=pay-3",
    )


def test_the_restart_of_a_killed_broker_is_no_fault_that_explains_a_loss() -> None:
    history: list[Observation] = [
        _sent("order-1/paid"),
        FaultInjected(at=1.0, broker="lab", fault="pause", target="kafka-broker-2"),
        FaultInjected(at=2.0, broker="lab", fault="kill", target="kafka-broker-2"),
        FaultInjected(at=3.0, broker="lab", fault="restart", target="kafka-broker-2"),
    ]
    finding = judge("nothing-lost", history, {})
    assert finding.counterexample[-1] == "after the fault: kill kafka-broker-2"


def test_the_fault_stays_in_the_counterexample_however_many_were_lost() -> None:
    history: list[Observation] = [_sent(f"m{n}") for n in range(6)]
    history.append(FaultInjected(at=1.0, broker="lab", fault="kill", target="kafka-broker-1"))
    finding = judge("nothing-lost", history, {})
    assert finding.counterexample == (
        "m0: acknowledged, never processed",
        "m1: acknowledged, never processed",
        "m2: acknowledged, never processed",
        "... and 3 more",
        "after the fault: kill kafka-broker-1",
    )


def _dead_lettered(message_id: str, at: float, target: str) -> DeadLettered:
    return DeadLettered(
        at=at,
        broker="rabbitmq",
        source="mq-1-orders",
        target=target,
        message_id=message_id,
        reason="rejected",
    )


def test_nothing_lost_counts_only_the_parking_place_when_told_where_it_is() -> None:
    # m1 was rejected into the retry queue and never came back: that is a loss, not a park.
    history: list[Observation] = [
        _sent("m1"),
        _sent("m2"),
        _delivered("m1", 1.0),
        _dead_lettered("m1", 1.1, "mq-1-orders.retry"),
        _delivered("m2", 1.0),
        _dead_lettered("m2", 1.2, "mq-1-orders.parked"),
    ]
    assert judge("nothing-lost", history, {}).holds  # any dead-lettering counts by default
    finding = judge("nothing-lost", history, {"dead_letter_to": "orders.parked"})
    assert not finding.holds
    assert finding.counterexample[0] == "m1: acknowledged, never processed"
    history.append(_dead_lettered("m1", 3.0, "mq-1-orders.parked"))
    assert judge("nothing-lost", history, {"dead_letter_to": "orders.parked"}).holds
    with pytest.raises(ValueError, match="dead_letter_to"):
        judge("nothing-lost", history, {"dead_letter_to": 3})


PARKING = {"attempts": 4, "parking": "orders.parked"}


def _attempts(message_id: str, count: int, start: float = 0.0) -> list[Observation]:
    return [_delivered(message_id, start + 0.5 * n) for n in range(count)]


def test_parked_after_attempts_holds_when_poison_is_parked_on_its_last_attempt() -> None:
    history: list[Observation] = [
        *_attempts("poison-1", 4),
        _dead_lettered("poison-1", 1.6, "mq-1-orders.parked"),
        *_attempts("flaky-2", 3),  # succeeded at its third: never parked, within the limit
        # The check reads the parking queue back: that delivery is no attempt.
        _delivered("poison-1", 9.0, destination="mq-1-orders.parked"),
    ]
    finding = judge("parked-after-attempts", history, PARKING)
    assert finding.holds
    assert finding.proven == (
        "1 failing messages parked after exactly 4 attempts, no message delivered more than 4 times"
    )


def test_parked_after_attempts_fails_for_a_poison_message_that_goes_round_for_ever() -> None:
    history: list[Observation] = [
        FaultInjected(at=0.0, broker="grader", fault="poison", target="poison-1"),
        *_attempts("poison-1", 9),
    ]
    finding = judge("parked-after-attempts", history, PARKING)
    assert not finding.holds
    assert finding.counterexample == (
        "poison-1 was delivered 9 times, 4.00s from first to last, and never parked "
        "(limit 4 attempts); the fault: poison poison-1",
    )


def test_parked_after_attempts_fails_for_a_transient_failure_parked_at_once() -> None:
    history: list[Observation] = [
        FaultInjected(
            at=0.0, broker="grader", fault="transient", target="flaky-2", params=(("fails", "2"),)
        ),
        *_attempts("flaky-2", 1),
        _dead_lettered("flaky-2", 0.1, "mq-1-orders.parked"),
    ]
    finding = judge("parked-after-attempts", history, PARKING)
    assert not finding.holds
    assert finding.counterexample == (
        "flaky-2 was parked after 1 delivery, not 4; the fault: transient flaky-2 fails=2",
    )


def test_parked_after_attempts_without_anything_parked_tested_nothing() -> None:
    finding = judge("parked-after-attempts", _attempts("m1", 2), PARKING)
    assert not finding.holds
    assert finding.problem == "no message was parked: nothing was tested"
    with pytest.raises(ValueError, match="parking"):
        judge("parked-after-attempts", [], {"attempts": 4})


def test_a_half_done_saga_is_explained_by_the_fault_that_named_it() -> None:
    history: list[Observation] = [
        SagaStarted(
            at=0.0, broker="grader", saga_id="order-1", saga="place-order", steps=("a", "b")
        ),
        SagaStarted(
            at=0.0, broker="grader", saga_id="order-2", saga="place-order", steps=("a", "b")
        ),
        FaultInjected(
            at=0.5, broker="grader", fault="step-slow", target="order-1", params=(("step", "b"),)
        ),
        SagaStepSucceeded(at=1.0, broker="grader", saga_id="order-1", step="a"),
        SagaStepFailed(at=2.0, broker="grader", saga_id="order-1", step="b", error="timeout"),
        CompensationSucceeded(
            at=3.0, broker="grader", saga_id="order-1", step="a", compensation_id="order-1/a/undo"
        ),
        SagaEnded(at=3.0, broker="grader", saga_id="order-1", outcome="compensated"),
        FaultInjected(at=3.5, broker="grader", fault="crash", target="learner"),
        SagaStepSucceeded(at=4.0, broker="grader", saga_id="order-2", step="a"),
    ]
    finding = judge("sagas-resolved", history, {})
    assert not finding.holds
    assert finding.counterexample == (
        "saga order-1: compensated, but b still applied; after the fault: step-slow order-1 step=b",
        "saga order-2: never finished (steps applied: ['a'])",
    )
