"""The simulator's Kafka: :class:`SimKafkaBroker` implements :class:`KafkaAPI` on a simulated
KRaft cluster (:mod:`mqlab.brokers.sim.kafka.server`) in virtual time.

It models what the course teaches rather than handing messages around: partitions with
replicas, leaders and an ISR; acks 0/1/all against min.insync.replicas; leader election after
broker failures (clean, or unclean with visible data loss); the Java client's partitioner
(murmur2 for keys, sticky for null keys); idempotent and transactional producers; consumer
groups with range / round-robin assignment, generations, heartbeats, session timeouts and
committed offsets; read_committed isolation. See docs/simulator.md for what is left out.

Clients pay for each request leg with :meth:`SimWorld.transmit`, so a killed broker refuses,
a paused one hangs and a network fault delays or resets exactly that broker's traffic. On a
healthy path a send with acks 0/1 never suspends, which keeps the simulator fast.

Several adapters of one run share the cluster through their world
(:meth:`SimKafkaCluster.of`), so a producer adapter and a consumer adapter see the same topics.

Layout: this module is the adapter (admin, ``inspect()``); the producer and the consumer are in
:mod:`~mqlab.brokers.sim.kafka.producer` and :mod:`~mqlab.brokers.sim.kafka.consumer`, the
cluster they talk to in :mod:`~mqlab.brokers.sim.kafka.server`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Unpack

from mqlab.brokers.base import AdapterOptions, BrokerError, OperationTimedOut
from mqlab.brokers.kafka.api import (
    ConsumerSettings,
    GroupInfo,
    GroupMember,
    GroupOffset,
    KafkaAPI,
    KafkaNode,
    KafkaSnapshot,
    PartitionInfo,
    ProducerSettings,
    TopicInfo,
    TopicPartition,
)
from mqlab.brokers.registry import SYSTEMS
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.kafka.config import (
    CONTROLLER_ID,
    CONTROLLER_NODE,
    OFFSETS_TOPIC,
)
from mqlab.brokers.sim.kafka.consumer import SimKafkaConsumer
from mqlab.brokers.sim.kafka.groups import Group
from mqlab.brokers.sim.kafka.log import Topic
from mqlab.brokers.sim.kafka.producer import SimKafkaProducer
from mqlab.brokers.sim.kafka.server import SimKafkaCluster
from mqlab.brokers.sim.kafka.wire import RETRY_BACKOFF, coordinator_round_trip
from mqlab.brokers.sim.world import NodeState, SimWorld


class SimKafkaBroker(SimBroker, KafkaAPI):
    """Kafka on the simulator (registered as ``sim:kafka``).

    Args:
        world: the run's world; a private one (seed 0) when omitted, closed with the adapter.
        brokers: brokers in the cluster if this adapter creates it (default 3, like the lab).
        broker_config: Kafka broker configs for a cluster this adapter creates (see
            :data:`mqlab.brokers.sim.kafka.server.DEFAULT_CONFIG`).
        options: as :class:`mqlab.brokers.base.Broker`. ``bus`` must be the world's bus when
            both are given (observations carry its virtual clock); ``namespace`` defaults to a
            deterministic one from the world.
    """

    nodes = SYSTEMS["kafka"].proxy_names

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        brokers: int = 3,
        broker_config: Mapping[str, object] | None = None,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(world=world, **options)
        self._cluster_options: dict[str, Any] = {"brokers": brokers, "config": broker_config}
        self._cluster: SimKafkaCluster | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def cluster(self) -> SimKafkaCluster:
        """The simulated cluster (shared by every Kafka adapter of the world)."""
        if self._cluster is None:
            self._cluster = SimKafkaCluster.of(self.world, **self._cluster_options)
        return self._cluster

    async def _connect(self) -> None:
        cluster = self.cluster
        cluster.start()
        deadline = self.world.now() + self.connect_timeout
        while not any(self.world.clear_path(b.node) for b in cluster.brokers.values()):
            if self.world.now() >= deadline:
                raise self.unavailable("no broker answers")
            await asyncio.sleep(RETRY_BACKOFF)

    async def _close(self) -> None:
        await self.close_clients()
        if self._owns_world:
            if self._cluster is not None:
                self._cluster.stop()
            await self.world.aclose()

    async def cleanup(self) -> None:
        """Close this adapter's clients, then delete the namespace's topics, groups and
        transactional state (safe to repeat)."""
        await self.close_clients()
        cluster = self.cluster
        prefix = f"{self.namespace}-"
        for topic in cluster.topics_with_prefix(prefix):
            cluster.delete_topic(topic.name)
        for group in cluster.groups_with_prefix(prefix):
            cluster.delete_group(group.group_id)
        for transactional_id in [t for t in cluster.transactions if t.startswith(prefix)]:
            del cluster.transactions[transactional_id]

    # -- topics ----------------------------------------------------------------------------

    async def _controller(self, what: str) -> None:
        """Admin requests go to the controller: wait for it up to the connect timeout.

        ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11, ``wait_for`` swallows a
        cancel that lands in the loop turn its inner wait finishes (the run session's cancel
        at the very start of a run was lost that way).
        """
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.world.until_state(CONTROLLER_NODE, NodeState.UP)
        except TimeoutError:
            raise OperationTimedOut(
                f"{what}: the Kafka controller did not answer within {self.connect_timeout:g}s"
            ) from None

    async def _create_topic(
        self, name: str, partitions: int, replication_factor: int, config: dict[str, str]
    ) -> TopicInfo:
        await self._controller(f"create topic {name}")
        topic = self.cluster.create_topic(
            name, partitions, replication_factor, {k: str(v) for k, v in config.items()}
        )
        return self._topic_info(topic)

    async def delete_topic(self, name: str) -> None:
        """Delete ``name`` (no error when it is already gone)."""
        await self._controller(f"delete topic {name}")
        self.cluster.delete_topic(name)

    async def describe_topic(self, name: str) -> TopicInfo:
        """Leaders, replicas, ISR and offsets of every partition of ``name``.

        Raises:
            BrokerError: the topic does not exist.
        """
        topic = self.cluster.topics.get(name)
        if topic is None or topic.internal:
            raise BrokerError(f"UnknownTopicOrPartition: topic {name!r} does not exist")
        return self._topic_info(topic)

    @staticmethod
    def _topic_info(topic: Topic) -> TopicInfo:
        return TopicInfo(
            name=topic.name,
            partitions=tuple(
                PartitionInfo(
                    partition=p.index,
                    leader=p.leader,
                    replicas=p.replicas,
                    isr=tuple(p.isr),
                    log_start=0,
                    high_watermark=p.high_watermark,
                    log_end=p.log_end,
                )
                for p in topic.partitions
            ),
            replication_factor=topic.replication_factor,
            config=dict(topic.config),
        )

    # -- clients ---------------------------------------------------------------------------

    async def _open_producer(self, settings: ProducerSettings) -> SimKafkaProducer:
        producer = SimKafkaProducer(self, settings)
        await producer.start()
        return producer

    async def _open_consumer(
        self, topics: tuple[str, ...], settings: ConsumerSettings
    ) -> SimKafkaConsumer:
        consumer = SimKafkaConsumer(self, topics, settings)
        consumer.start()
        return consumer

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """Committed offsets of ``group_id`` as its coordinator stores them."""
        await coordinator_round_trip(
            self.cluster, OFFSETS_TOPIC, group_id, self.connect_timeout, "offset fetch"
        )
        group = self.cluster.groups.get(group_id)
        return dict(sorted(group.committed.items())) if group is not None else {}

    # -- snapshot --------------------------------------------------------------------------

    async def inspect(self) -> KafkaSnapshot:
        """Brokers as the controller sees them (fenced ones not alive), this namespace's
        topics and groups. The controller is not a broker (KRaft, node 0 in the lab): it shows
        as ``controller_id`` (None while it is down)."""
        return self._snapshot()

    def peek(self) -> KafkaSnapshot | None:
        """The snapshot :meth:`inspect` gives, read without a request (see
        :meth:`SimBroker.peek`; the simulated cluster's metadata needs none anyway)."""
        return self._snapshot() if self._connected else None

    def _snapshot(self) -> KafkaSnapshot:
        cluster = self.cluster
        controller_alive = cluster.controller_up
        nodes = [
            KafkaNode(broker_id, "sim", 0, alive=not broker.fenced)
            for broker_id, broker in cluster.brokers.items()
        ]
        prefix = f"{self.namespace}-"
        topics = tuple(self._topic_info(t) for t in cluster.topics_with_prefix(prefix))
        groups = tuple(self._group_info(g) for g in cluster.groups_with_prefix(prefix))
        return KafkaSnapshot(
            brokers=tuple(nodes),
            topics=topics,
            groups=groups,
            controller_id=CONTROLLER_ID if controller_alive else None,
        )

    def _group_info(self, group: Group) -> GroupInfo:
        cluster = self.cluster
        members = sorted(group.members.values(), key=lambda m: m.member_id)
        partitions: set[TopicPartition] = set(group.committed)
        for member in members:
            partitions.update(member.assignment)
        offsets = []
        for tp in sorted(partitions):
            topic = cluster.topics.get(tp.topic)
            high_watermark = (
                topic.partitions[tp.partition].high_watermark
                if topic is not None and tp.partition < len(topic.partitions)
                else 0
            )
            offsets.append(
                GroupOffset(tp.topic, tp.partition, group.committed.get(tp), high_watermark)
            )
        return GroupInfo(
            group_id=group.group_id,
            state=group.state,
            members=tuple(GroupMember(m.member_id, m.client_id, m.assignment) for m in members),
            offsets=tuple(offsets),
            protocol=group.protocol,
        )
