"""The harness on the simulator (virtual time), its workload checks and its payload stamp."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqlab.bench.harness import (
    IDLE_TIMEOUT,
    SQS_VISIBILITY_TIMEOUT,
    _Flow,
    read_stamp,
    run_bench_sync,
    stamp,
)
from mqlab.bench.workload import (
    MAX_MESSAGES,
    MIN_SIZE,
    TARGETS,
    BenchInputError,
    Workload,
    parse_targets,
    percentile,
)
from mqlab.brokers.base import BrokerError

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("target", TARGETS)
def test_every_message_is_sent_received_and_timed(target: str) -> None:
    seen: list[tuple[int, int]] = []
    result = run_bench_sync(
        target,  # type: ignore[arg-type]
        Workload(messages=300, size=64, in_flight=32),
        simulated=True,
        progress=lambda sent, received: seen.append((sent, received)),
    )
    assert (result.sent, result.received) == (300, 300)
    if target != "sqs":  # the simulated standard queue repeats 1% of receives on purpose
        assert result.duplicates == 0
    assert result.broker.startswith("sim:")
    assert result.ack_latency.samples == 300
    assert result.end_to_end.samples == 300
    assert seen[-1] == (300, 300)
    assert result.to_json_dict()["received"] == 300
    settings = dict(result.settings)
    for shown in ("acks", "batching", "persistence", "message size", "in flight", "consumer"):
        assert settings.get(shown), f"{target}: no {shown!r} among the settings"
    assert settings["message size"] == "64 B"
    if target in ("kafka", "rabbitmq", "nats"):
        assert "4 publish" in settings["in flight"] or "4 send_many" in settings["in flight"]
        assert "window of 8" in settings["in flight"]


def test_the_window_splits_in_flight_over_the_pipelined_calls() -> None:
    assert (Workload(in_flight=256).pipelines, Workload(in_flight=256).window) == (4, 64)
    assert (Workload(in_flight=2).pipelines, Workload(in_flight=2).window) == (2, 1)
    spans = [Workload(messages=10).unit_span(4, index) for index in range(4)]
    assert [list(span) for span in spans] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_the_in_flight_bound_is_kept() -> None:
    """With one send in flight on simulated Kafka (10 ms per acks=all round trip), sends take
    turns: 20 messages need at least 20 round trips of virtual time."""
    one = run_bench_sync("kafka", Workload(messages=20, in_flight=1), simulated=True)
    many = run_bench_sync("kafka", Workload(messages=20, in_flight=20), simulated=True)
    assert one.produce_seconds >= 20 * 0.009
    assert many.produce_seconds < one.produce_seconds / 5


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        ({"messages": 0}, "--messages"),
        ({"size": 10}, "--size"),
        ({"in_flight": 0}, "--in-flight"),
    ],
)
def test_bad_workloads_say_which_option(workload: dict[str, int], message: str) -> None:
    with pytest.raises(BenchInputError, match=message):
        Workload(**workload)


def test_targets() -> None:
    assert parse_targets([]) == list(TARGETS)
    assert parse_targets(["NATS", "kafka", "fifo"]) == ["kafka", "sqs-fifo", "nats"]
    with pytest.raises(BenchInputError, match="did you mean 'kafka'"):
        parse_targets(["kafak"])


def test_stamp_round_trip_and_foreign_payloads() -> None:
    payload = stamp(40, 12345.678901, 9_999_999)
    assert len(payload) == 40
    for form in (payload, payload.encode()):
        sent_at, number = read_stamp(form)
        assert (sent_at, number) == (pytest.approx(12345.678901), 9_999_999)
    assert len(stamp(MIN_SIZE, 9_999_999_999.999999, MAX_MESSAGES - 1)) == MIN_SIZE
    for foreign in (b"hello world", b"12.5:no number:", b"12.5:"):
        with pytest.raises(BrokerError, match="without the harness's stamp"):
            read_stamp(foreign)


async def test_a_message_received_again_is_a_duplicate_not_a_second_receipt() -> None:
    """SQS delivers at least once: a repeat must not make a run look complete before every
    message arrived, nor add a latency sample or give back a backlog credit."""
    progress: list[tuple[int, int]] = []
    flow = _Flow(Workload(messages=3, size=40), 10, lambda sent, got: progress.append((sent, got)))
    await flow.backlog.take(3)
    flow.arrived([stamp(40, 0.0, 0), stamp(40, 0.0, 1), stamp(40, 0.0, 0)])
    assert (flow.received, flow.duplicates, len(flow.end_to_end_seconds)) == (2, 1, 2)
    assert flow.backlog._available == 9
    flow.arrived([stamp(40, 0.0, 1).encode(), stamp(40, 0.0, 2).encode()])
    assert (flow.received, flow.duplicates) == (3, 2)
    assert progress[-1] == (0, 3)
    with pytest.raises(BrokerError, match="number 3 is not in the workload"):
        flow.arrived([stamp(40, 0.0, 3)])


def test_percentile_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


async def test_when_one_side_fails_the_other_is_cancelled_before_the_error_goes_on() -> None:
    import asyncio

    from mqlab.bench.harness import _all_or_none

    finished: list[str] = []

    async def waits_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            finished.append("waiter")

    async def fails() -> None:
        await asyncio.sleep(0)
        raise BrokerError("the consumer gave up")

    with pytest.raises(BrokerError, match="gave up"):
        await _all_or_none([waits_forever(), fails()])
    assert finished == ["waiter"]


SLOW_ANSWER = 5.0
"""How late a busy server answers near the end, and how long the client then waits (its read
timeout) before it asks again: the lost answer hides its messages from well after the last
receipt, as in the fresh-clone run that saw 399 of 400."""


def test_an_sqs_receive_whose_answer_was_lost_is_waited_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ReceiveMessage that the server answered but the client never read (it gave up on a
    slow server and asked again) hides its messages for the visibility timeout. When that
    happens to the last messages, they must come back before the harness stops waiting."""
    from mqlab.brokers.sim.sqs.client import SimSqsBroker

    answered = SimSqsBroker.receive
    seen: set[int] = set()  # message numbers handed to the harness (SQS may repeat one)
    lost: list[int] = []

    async def losing_one_answer_near_the_end(
        self: SimSqsBroker, queue: str, **options: Any
    ) -> list[Any]:
        if len(seen) >= 390 and not lost:
            await asyncio.sleep(SLOW_ANSWER)  # near the end the server is slow to answer
        messages = await answered(self, queue, **options)
        numbers = {read_stamp(message.body)[1] for message in messages}
        if messages and not lost and len(seen | numbers) == 400:  # the last ones
            lost.extend(numbers - seen)
            await asyncio.sleep(SLOW_ANSWER)  # the client gave up on the answer before it came
            return []  # in flight on the server, never seen by the harness
        seen.update(numbers)
        return messages

    monkeypatch.setattr(SimSqsBroker, "receive", losing_one_answer_near_the_end)
    result = run_bench_sync("sqs", Workload(messages=400, size=40, in_flight=10), simulated=True)
    assert lost  # an answer with the last messages was lost, and still all of them arrived
    assert (result.sent, result.received) == (400, 400)
    assert SQS_VISIBILITY_TIMEOUT < IDLE_TIMEOUT
