"""The shared SQS contract on the simulator's SQS model (virtual time).

The contract expects exact outcomes (one receive, one message; nothing left after a delete),
which is how the lab's server behaves. The simulator's standard queues duplicate and reorder
now and then like AWS does, so these tests turn that off; ``test_sim_sqs.py`` covers it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.sim.sqs.client import SimSqsBroker
from mqlab.brokers.sim.world import SimWorld
from tests.contract.sqs_contract import SqsContract

pytestmark = pytest.mark.sim


class TestSimSqs(SqsContract):
    """The contract against :class:`SimSqsBroker`."""

    @pytest.fixture
    async def broker(self) -> AsyncIterator[SimSqsBroker]:
        world = SimWorld(seed=0)
        async with SimSqsBroker(world=world, duplicate_rate=0.0, reorder_rate=0.0) as adapter:
            yield adapter
        await world.aclose()
        assert world.errors == []
