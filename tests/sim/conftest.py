"""Simulator tests run on virtual time.

Every async test under ``tests/sim`` runs on :class:`~mqlab.brokers.sim.clock.VirtualTimeLoop`
(through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook), so a test that waits out a
60 s session timeout takes milliseconds and runs the same way every time.
``test_sim_core.py`` checks that the loop really is virtual, so a pytest-asyncio without the
hook fails loudly instead of silently running on wall-clock time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from mqlab.brokers.sim.clock import VirtualTimeLoop
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.observe.bus import Recorder


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], VirtualTimeLoop]]:
    """Run every async test in this directory on a fresh virtual-time loop."""
    return {"virtual": VirtualTimeLoop}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here is a simulator test (marker ``sim``)."""
    for item in items:
        if "tests/sim/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.sim)


@pytest.fixture
async def world() -> AsyncIterator[SimWorld]:
    """A fresh world (seed 0). After the test its background tasks are stopped and any
    exception one of them raised fails the test: a model bug must not pass silently."""
    sim_world = SimWorld(seed=0)
    yield sim_world
    await sim_world.aclose()
    assert sim_world.errors == [], f"background tasks failed: {sim_world.errors!r}"


@pytest.fixture
def recorder(world: SimWorld) -> Recorder:
    """Every observation of the world, in order."""
    observations = Recorder()
    world.bus.subscribe(observations)
    return observations


@pytest.fixture
async def kafka(world: SimWorld) -> AsyncIterator[SimKafkaBroker]:
    """A connected simulated Kafka adapter (3 brokers and a controller, the lab's configs)."""
    async with SimKafkaBroker(world=world) as adapter:
        yield adapter
