"""The harness and the native tools on the lab's brokers (small workloads).

Throughput numbers are printed (``-s`` shows them), never asserted: what is asserted is that
every message went through and was timed, and that each native tool ran and was parsed.
"""

from __future__ import annotations

import asyncio

import pytest

from mqlab.bench.harness import run_bench_sync
from mqlab.bench.native import NATIVE_TOOLS, run_native
from mqlab.bench.workload import Workload
from mqlab.brokers.sqs.api import BatchEntry, SqsRequestRefused
from mqlab.lab.paths import lab_paths
from mqlab.lab.perftools import status
from tests.conftest import brokers_required

SMALL = Workload(messages=400, size=100, in_flight=64)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("sqs", marks=pytest.mark.sqs),
        pytest.param("sqs-fifo", marks=pytest.mark.sqs),
        pytest.param("nats", marks=pytest.mark.nats),
    ],
)
def test_the_harness_on_the_lab(target: str) -> None:
    result = run_bench_sync(target, SMALL)  # type: ignore[arg-type]
    print(
        f"{target}: produce {result.produce_rate or 0:,.0f} msg/s, end-to-end "
        f"{result.end_to_end_rate or 0:,.0f} msg/s, e2e p50 {result.end_to_end.p50_ms:.1f} ms "
        f"p99 {result.end_to_end.p99_ms:.1f} ms, {result.duplicates} duplicates"
    )
    # Distinct messages: a repeat (SQS delivers at least once; a send retried under load is
    # stored twice by moto) is counted apart and shown, not failed on.
    assert (result.sent, result.received) == (SMALL.messages, SMALL.messages)
    assert result.end_to_end.samples == SMALL.messages
    assert result.produce_rate is not None
    assert result.broker == ("sqs" if target.startswith("sqs") else target)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ],
)
def test_the_native_tool_on_the_lab(target: str) -> None:
    tool = next(t for t in status(lab_paths()) if t.system == target)
    if not tool.ready:
        message = f"{tool.tool} is not installed (run: {tool.fix})"
        if brokers_required():
            pytest.fail(message)
        pytest.skip(message)
    result = asyncio.run(run_native(target, SMALL))  # type: ignore[arg-type]
    print(
        f"{target}: {result.tool} {result.produce_rate:,.0f} msg/s, consume {result.consume_rate}"
    )
    assert result.tool == NATIVE_TOOLS[target]  # type: ignore[index]
    assert result.produce_rate > 0


@pytest.mark.sqs
async def test_send_batch_is_one_request_of_up_to_ten_on_the_lab() -> None:
    from mqlab.brokers.sqs.client import SqsBroker

    async with SqsBroker() as broker:
        await broker.create_queue("batch")
        await broker.create_queue("batch.fifo")
        sent = await broker.send_batch("batch", [BatchEntry(f"m{i}") for i in range(10)])
        assert len({r.sqs_message_id for r in sent}) == 10
        assert (await broker.queue_info("batch")).visible == 10
        fifo = [BatchEntry("x", group_id="g", dedup_id=f"d{i}") for i in range(3)]
        assert all(r.sequence_number for r in await broker.send_batch("batch.fifo", fifo))
        with pytest.raises(SqsRequestRefused, match="1 to 10"):
            await broker.send_batch("batch", [BatchEntry("y")] * 11)
        with pytest.raises(SqsRequestRefused, match="refused"):
            await broker.send_batch("batch.fifo", [BatchEntry("no group")])
