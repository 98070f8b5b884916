"""The shared RabbitMQ contract on the simulator's RabbitMQ model (virtual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.sim.rabbitmq.client import SimRabbitMQBroker
from mqlab.brokers.sim.world import SimWorld
from tests.contract.rabbitmq_contract import RabbitMQContract

pytestmark = pytest.mark.sim


class TestSimRabbitMQ(RabbitMQContract):
    """The contract against :class:`SimRabbitMQBroker`."""

    @pytest.fixture
    async def broker(self) -> AsyncIterator[SimRabbitMQBroker]:
        world = SimWorld(seed=0)
        async with SimRabbitMQBroker(world=world) as adapter:
            yield adapter
        await world.aclose()
        assert world.errors == []
