"""SQS's send_batch on the simulator (the interface's default: one send per entry)."""

from __future__ import annotations

import pytest

from mqlab.brokers.registry import create_broker
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sqs.api import BatchEntry, SqsAPI, SqsRequestRefused

pytestmark = pytest.mark.sim


def test_send_batch_on_the_simulator() -> None:
    async def scenario() -> None:
        broker = create_broker("sim:sqs")
        assert isinstance(broker, SqsAPI)
        async with broker:
            await broker.create_queue("batch.fifo")
            entries = [BatchEntry(f"m{i}", group_id="g", dedup_id=f"d{i % 2}") for i in range(4)]
            results = await broker.send_batch("batch.fifo", entries)
            assert len(results) == 4
            received = await broker.receive("batch.fifo", max_messages=10)
            assert [m.body for m in received] == ["m0", "m1"]  # the dedup window dropped two
            with pytest.raises(SqsRequestRefused, match="1 to 10"):
                await broker.send_batch("batch.fifo", [])

    run_virtual(scenario())
