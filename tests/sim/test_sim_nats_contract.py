"""The shared NATS JetStream contract on the simulator's NATS model (virtual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.sim.nats.client import SimNatsBroker
from mqlab.brokers.sim.world import SimWorld
from tests.contract.nats_contract import NatsContract

pytestmark = pytest.mark.sim


class TestSimNats(NatsContract):
    """The contract against :class:`SimNatsBroker`."""

    @pytest.fixture
    async def broker(self) -> AsyncIterator[SimNatsBroker]:
        world = SimWorld(seed=0)
        async with SimNatsBroker(world=world) as adapter:
            yield adapter
        await world.aclose()
        assert world.errors == []
