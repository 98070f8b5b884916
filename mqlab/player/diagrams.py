"""Diagrams drawn from a live broker: set up a small scene, ``inspect()`` it, draw it.

For ``kafka-cluster`` the scene is the cheat sheet's: topic ``orders`` with four partitions on
three replicas (min.insync.replicas 2), twelve keyed records from an idempotent acks=all
producer, and a two-member consumer group ``billing`` of which one member has committed. On the
simulator this costs a few milliseconds of virtual time and is the same for the same seed; on
the lab it takes a few seconds (the group has to settle) and shows the real cluster, including
a broker that is down. The scene lives in a fresh namespace that the adapter deletes when it
closes. When the lab's Kafka cannot be reached, the built-in example is drawn and the note says
why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mqlab.course.diagrams import DIAGRAM_NAMES, EXAMPLE_KAFKA_SNAPSHOT, kafka_cluster_lines
from mqlab.player.runs import LearnerBroker

if TYPE_CHECKING:
    from mqlab.brokers.kafka.api import KafkaAPI, KafkaSnapshot

SCENE_TIMEOUT = 45.0
"""Seconds the lab gets to build the scene (topic, producer, a group that settles)."""
PRODUCER_CAPTION = "acks=all, key=order id, idempotence on (the scene's producer)"
EXAMPLE_CAPTION = "acks=all, key=order id, idempotence on"


@dataclass(frozen=True, slots=True)
class DiagramView:
    """A diagram ready to print: its lines and where its data came from."""

    name: str
    lines: tuple[str, ...]
    source: Literal["simulator", "lab", "example"]
    note: str
    """One line for the reader: what they are looking at."""


async def kafka_scene(broker: KafkaAPI, *, settle_timeout: float = 30.0) -> KafkaSnapshot:
    """Build the cheat sheet's scene on ``broker`` (connected here) and return its snapshot.

    The adapter is closed at the end, which deletes the scene's topic and group.
    """
    async with broker:
        topic = broker.qualify("orders")
        await broker.create_topic(
            topic, partitions=4, replication_factor=3, config={"min.insync.replicas": "2"}
        )
        producer = await broker.producer(acks="all", idempotent=True, name="producer")
        try:
            for number in range(12):
                await producer.send(topic, b"order", key=f"order-{number}".encode())
            await producer.flush()
        finally:
            await producer.close()
        group = broker.qualify("billing")
        members = [
            await broker.consumer([topic], group_id=group, name=f"consumer-{n}") for n in (0, 1)
        ]
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + settle_timeout
            while loop.time() < deadline:
                await asyncio.gather(
                    *(member.poll(max_records=50, timeout=0.5) for member in members)
                )
                if group_settled([member.assignment() for member in members], partitions=4):
                    break
            await members[0].commit()
            return await broker.inspect()
        finally:
            for member in members:
                await member.close()


def group_settled(assignments: Sequence[AbstractSet[object]], *, partitions: int) -> bool:
    """Whether every member owns partitions, none owned twice, all of them owned: the members
    are in one generation. During the rebalance the member that was alone still reports all
    four (aiokafka keeps the old assignment until the new one arrives) while the newcomer
    already has its share: the union is whole then too, but a commit from the first member
    can fail (its generation is over) and the group is described mid-rebalance."""
    owned = [partition for assignment in assignments for partition in assignment]
    return all(assignments) and len(owned) == len(set(owned)) == partitions


def _simulated_snapshot(seed: int) -> tuple[KafkaSnapshot, str]:
    from mqlab.brokers.sim.clock import run_virtual
    from mqlab.brokers.sim.kafka.client import SimKafkaBroker
    from mqlab.brokers.sim.world import SimWorld

    broker = SimKafkaBroker(world=SimWorld(seed=seed))
    snapshot = run_virtual(kafka_scene(broker))
    return snapshot, broker.namespace


def _lab_snapshot(timeout: float) -> tuple[KafkaSnapshot, str]:
    from mqlab.brokers.kafka.api import KafkaAPI
    from mqlab.brokers.registry import get_broker_class

    broker = get_broker_class("kafka")()
    if not isinstance(broker, KafkaAPI):
        raise TypeError("the registry's kafka adapter does not implement KafkaAPI")

    async def scene() -> KafkaSnapshot:
        return await asyncio.wait_for(kafka_scene(broker), timeout)

    return asyncio.run(scene()), broker.namespace


def draw_diagram(
    name: str, broker: LearnerBroker, *, seed: int = 0, timeout: float = SCENE_TIMEOUT
) -> DiagramView:
    """Diagram ``name`` from the learner's broker (see the module docstring).

    Raises:
        KeyError: not a known diagram (lessons are validated, so only a caller's typo).
    """
    if name not in DIAGRAM_NAMES:
        raise KeyError(name)
    if broker.simulated:
        snapshot, namespace = _simulated_snapshot(seed)
        return _view(name, snapshot, namespace, "simulator", "drawn from the simulator's cluster")
    from mqlab.brokers.base import BrokerError

    try:
        snapshot, namespace = _lab_snapshot(timeout)
    except (BrokerError, TimeoutError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        lines = kafka_cluster_lines(EXAMPLE_KAFKA_SNAPSHOT, producer=EXAMPLE_CAPTION)
        return DiagramView(
            name, tuple(lines), "example", f"an example: the lab's Kafka did not answer ({reason})"
        )
    return _view(name, snapshot, namespace, "lab", "drawn live from the lab's Kafka cluster")


def _view(
    name: str,
    snapshot: KafkaSnapshot,
    namespace: str,
    source: Literal["simulator", "lab"],
    note: str,
) -> DiagramView:
    prefix = f"{namespace}-"
    lines = kafka_cluster_lines(
        snapshot,
        display_name=lambda text: text.removeprefix(prefix),
        producer=PRODUCER_CAPTION,
    )
    return DiagramView(name, tuple(lines), source, note)


def example_diagram(name: str) -> DiagramView:
    """The built-in example, without touching any broker (for text output and tests)."""
    if name not in DIAGRAM_NAMES:
        raise KeyError(name)
    lines = kafka_cluster_lines(EXAMPLE_KAFKA_SNAPSHOT, producer=EXAMPLE_CAPTION)
    return DiagramView(name, tuple(lines), "example", "an example snapshot (no broker asked)")
