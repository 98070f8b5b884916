"""The Kafka contract suite on the simulator: the same tests the lab's cluster passes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.world import SimWorld
from tests.contract.kafka_contract import KafkaContract


class TestSimKafkaContract(KafkaContract):
    """:class:`KafkaContract` against :class:`SimKafkaBroker`."""

    @pytest.fixture
    async def broker(self, world: SimWorld) -> AsyncIterator[SimKafkaBroker]:
        async with SimKafkaBroker(world=world) as adapter:
            yield adapter
