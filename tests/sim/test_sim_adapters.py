"""What every simulated adapter shares (:class:`~mqlab.brokers.sim.adapter.SimBroker`): the
typed snapshot read without a request, and the world as the adapter's faults."""

from __future__ import annotations

import asyncio

import pytest

from mqlab.brokers.base import Snapshot
from mqlab.brokers.kafka.api import KafkaAPI, KafkaSnapshot
from mqlab.brokers.nats.api import NatsAPI, NatsSnapshot
from mqlab.brokers.rabbitmq.api import RabbitMQAPI, RabbitSnapshot
from mqlab.brokers.registry import SYSTEM_NAMES, BrokerRef, create_broker
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.brokers.sqs.api import SqsAPI, SqsSnapshot

SNAPSHOTS: dict[str, type[Snapshot]] = {
    "kafka": KafkaSnapshot,
    "rabbitmq": RabbitSnapshot,
    "sqs": SqsSnapshot,
    "nats": NatsSnapshot,
}

NODE = {"kafka": "kafka-broker-1", "rabbitmq": "rabbitmq", "sqs": "sqs", "nats": "nats"}


async def make_one_resource(broker: SimBroker) -> None:
    """Something of this namespace for the snapshot to show."""
    if isinstance(broker, KafkaAPI):
        await broker.create_topic(broker.qualify("t"), partitions=2, replication_factor=3)
    elif isinstance(broker, RabbitMQAPI):
        await broker.declare_queue("q")
    elif isinstance(broker, SqsAPI):
        await broker.create_queue("q")
    elif isinstance(broker, NatsAPI):
        await broker.add_stream("s", ["s.>"])


@pytest.mark.parametrize("system", SYSTEM_NAMES)
async def test_peek_is_inspect_without_a_request(system: str, world: SimWorld) -> None:
    adapter = BrokerRef.of(system, simulated=True).adapter_class()
    assert issubclass(adapter, SimBroker)
    broker = adapter(world=world)
    assert broker.peek() is None  # not connected yet
    async with broker:
        await make_one_resource(broker)
        inspected = await broker.inspect()
        assert isinstance(inspected, SNAPSHOTS[system])
        assert inspected.system == system
        loop = asyncio.get_running_loop()
        # A paused node answers no request, yet the snapshot is there at once.
        await world.pause(NODE[system])
        before = loop.time()
        peeked = broker.peek()
        assert loop.time() == before
        assert peeked == inspected
        await world.resume(NODE[system])


@pytest.mark.parametrize("system", SYSTEM_NAMES)
def test_a_simulated_adapters_faults_are_its_world(system: str) -> None:
    broker = create_broker(BrokerRef.of(system, simulated=True), seed=5)
    assert isinstance(broker, SimBroker)
    assert broker.faults is broker.world
    assert broker.world.seed == 5
