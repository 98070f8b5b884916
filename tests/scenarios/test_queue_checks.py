"""The depth checks the queue systems (RabbitMQ, SQS) share: held, not held, not available."""

from __future__ import annotations

import pytest

from mqlab.course.scenario import Check
from mqlab.scenarios.drivers.base import (
    CheckNotSupported,
    CheckResult,
    queue_depth_check,
    still_queued,
)
from mqlab.scenarios.library import find
from mqlab.scenarios.session import run_scenario

pytestmark = pytest.mark.sim

DEPTHS = {"orders": 3, "orders-dlq": 1}


async def _depth_of(queue: str) -> int:
    return DEPTHS[queue]


async def _check(check: Check, *, dead_letter_queue: str | None = "orders-dlq") -> CheckResult:
    return await queue_depth_check(
        check,
        _depth_of,
        channel="orders",
        queue="orders",
        dead_letter_queue=dead_letter_queue,
        dead_letter_words=("parked", "parking queue"),
        system_title="RabbitMQ",
    )


async def test_a_depth_check_holds_on_the_queues_depth_and_fails_on_another() -> None:
    assert await _check(Check(depth=3)) == CheckResult(
        True, "3 messages in orders", "queue holds 3"
    )
    assert not (await _check(Check(depth=2))).holds


async def test_a_dead_letter_check_reads_the_dead_letter_queue_in_the_systems_words() -> None:
    assert await _check(Check(dead_letter_depth=1)) == CheckResult(
        True, "1 messages parked", "parking queue holds 1"
    )
    assert not (await _check(Check(dead_letter_depth=3))).holds


async def test_a_dead_letter_check_without_dead_letter_settings_is_refused() -> None:
    with pytest.raises(CheckNotSupported, match="no dead_letter settings"):
        await _check(Check(dead_letter_depth=1), dead_letter_queue=None)


async def test_a_kafka_check_is_refused_naming_the_system() -> None:
    with pytest.raises(CheckNotSupported, match="not available on RabbitMQ"):
        await _check(Check(isr_size=3))


def test_the_end_of_run_agreement_holds_only_when_the_broker_holds_the_unsettled() -> None:
    assert still_queued(3, 3, settled="deleted") == CheckResult(
        True, "broker holds 3", "3 messages still queued (produced, never deleted or dead-lettered)"
    )
    assert not still_queued(2, 3, settled="acked").holds


@pytest.mark.parametrize(("stale_reads", "agrees"), [(3, True), (10_000, False)])
def test_the_end_of_run_agreement_waits_out_rabbitmqs_lagging_unacked_count(
    monkeypatch: pytest.MonkeyPatch, stale_reads: int, agrees: bool
) -> None:
    """The management API's unacked count lags the acks: a count that still shows the last
    ack's message for a few reads must not fail the run, and one that never catches up (a
    message really left in the queue) still must."""
    from mqlab.scenarios.drivers.rabbitmq import RabbitMQDriver

    true_depth = RabbitMQDriver._depth
    reads: list[str] = []

    async def lagging(driver: RabbitMQDriver, queue: str) -> int:
        reads.append(queue)
        return await true_depth(driver, queue) + (1 if len(reads) <= stale_reads else 0)

    monkeypatch.setattr(RabbitMQDriver, "_depth", lagging)
    result = run_scenario(find("network-partition-consumer"), "sim:rabbitmq")
    assert [check.holds for check in result.agreement] == [agrees]
    assert result.passed is agrees
    if agrees:
        assert len(reads) == stale_reads + 1
    else:
        assert "broker holds 1" in result.agreement[0].observed
