"""Shared set-up of the pattern tests.

A test module that sets ``VIRTUAL_TIME = True`` runs its async tests on the simulator's
virtual-time loop (so a saga's 2 s timeout or a compensation's backoff costs no wall time),
except tests that carry a real-service marker: a real socket must be waited for in real time,
and on the virtual loop a client's own timeout timer would fire "at once". Modules without the
flag (the retry and contention tests, which drive the loop themselves) are left alone.

The fixtures give each test its own namespace on the real services and remove everything in
it afterwards (PostgreSQL schema, Redis keys, NATS streams).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from mqlab.brokers.sim.clock import VirtualTimeLoop
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.patterns.harness import Reporter
from mqlab.patterns.postgres import drop_namespace

REAL_SERVICE_MARKERS = frozenset(
    {"kafka", "rabbitmq", "sqs", "nats", "redis", "postgres", "toxiproxy"}
)


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Virtual time for opted-in simulator tests, a normal loop for everything else."""
    module = getattr(item, "module", None)
    real = any(marker.name in REAL_SERVICE_MARKERS for marker in item.iter_markers())
    if getattr(module, "VIRTUAL_TIME", False) and not real:
        return {"virtual": VirtualTimeLoop}
    return {"asyncio": asyncio.new_event_loop}


def new_namespace() -> str:
    """A namespace for one test (what the brokers' adapters use too)."""
    return f"mq-{secrets.token_hex(3)}"


@pytest.fixture
def namespace() -> str:
    """A fresh namespace for this test."""
    return new_namespace()


@pytest.fixture
def bus() -> ObservationBus:
    """A bus on the running loop's clock (virtual in simulator tests)."""
    return ObservationBus(clock=lambda: asyncio.get_running_loop().time())


@pytest.fixture
def recorder(bus: ObservationBus) -> Recorder:
    """Every observation emitted on ``bus``."""
    observations = Recorder()
    bus.subscribe(observations)
    return observations


@pytest.fixture
def reporter(bus: ObservationBus) -> Reporter:
    """A reporter on ``bus`` (source ``test``)."""
    return Reporter(bus, "test")


@pytest.fixture
async def postgres_namespace(endpoints: Endpoints, namespace: str) -> AsyncIterator[str]:
    """A namespace whose PostgreSQL schema is dropped after the test."""
    yield namespace
    await drop_namespace(endpoints.postgres_dsn, namespace)


@pytest.fixture
async def world() -> AsyncIterator[SimWorld]:
    """A simulated world (seed 0); a background task that failed fails the test."""
    sim_world = SimWorld(seed=0)
    yield sim_world
    await sim_world.aclose()
    assert sim_world.errors == [], f"background tasks failed: {sim_world.errors!r}"


@pytest.fixture
async def sim_kafka(world: SimWorld) -> AsyncIterator[SimKafkaBroker]:
    """A connected simulated Kafka adapter on ``world``."""
    async with SimKafkaBroker(world=world) as adapter:
        yield adapter
