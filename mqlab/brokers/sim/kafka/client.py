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

Several adapters of one run share the cluster through their world (``world.kafka_cluster()``),
so a producer adapter and a consumer adapter see the same topics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.kafka.api import (
    MESSAGE_ID_HEADER,
    Acks,
    AssignmentStrategy,
    CommitFailed,
    GroupInfo,
    GroupMember,
    GroupOffset,
    IsolationLevel,
    KafkaAPI,
    KafkaConsumer,
    KafkaNode,
    KafkaProducer,
    KafkaRecord,
    KafkaSnapshot,
    NotEnoughReplicas,
    OffsetReset,
    PartitionInfo,
    ProducerFenced,
    ProduceTimedOut,
    RecordMetadata,
    TopicInfo,
    TopicPartition,
    default_partition,
)
from mqlab.brokers.sim.fast import slot_builder
from mqlab.brokers.sim.kafka.server import (
    CONTROLLER_ID,
    CONTROLLER_NODE,
    OFFSETS_TOPIC,
    TRANSACTION_TOPIC,
    CoordinatorNotAvailable,
    Group,
    KafkaServerError,
    LeaderNotAvailable,
    NotEnoughReplicasError,
    NotLeaderOrFollower,
    Partition,
    RebalanceNeeded,
    RetriableError,
    SimKafkaCluster,
    Topic,
    Transaction,
    new_record,
)
from mqlab.brokers.sim.world import NodeState, NodeUnreachable, SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import ConsumerCrashed, Delivered, Produced, ProduceFailed

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CommitFailed",
    "ProducerFenced",
    "SimKafkaBroker",
    "SimKafkaCluster",
    "SimKafkaConsumer",
    "SimKafkaProducer",
]

RETRY_BACKOFF = 0.1
"""retry.backoff.ms: the pause before a client retries a failed request."""

BATCH_SIZE = 16384
"""batch.size: the sticky partitioner moves on after this many bytes to one partition."""

RECORD_OVERHEAD = 10
"""Bytes counted per record on top of key, value and headers (a varint-encoded record)."""

MAX_POLL_INTERVAL = 300.0
"""max.poll.interval.ms: a member that does not poll for this long leaves its group."""

TRANSACTION_TIMEOUT = 60.0
"""transaction.timeout.ms: the coordinator aborts a transaction left open longer."""

_KEY_CACHE_LIMIT = 65536


_new_produced = slot_builder(
    Produced,
    (
        "at",
        "broker",
        "destination",
        "message_id",
        "key",
        "partition",
        "position",
        "producer",
        "duplicate",
    ),
)
_new_delivered = slot_builder(
    Delivered,
    (
        "at",
        "broker",
        "destination",
        "message_id",
        "consumer",
        "key",
        "partition",
        "position",
        "delivery_count",
        "redelivered",
    ),
)
_new_metadata = slot_builder(RecordMetadata, ("topic", "partition", "offset"))


class _Closed(BrokerError):
    """A client was used after close() or crash()."""


class SimKafkaBroker(KafkaAPI):
    """Kafka on the simulator (registered as ``sim:kafka``).

    Args:
        world: the run's world; a private one (seed 0) when omitted, closed with the adapter.
        brokers: brokers in the cluster if this adapter creates it (default 3, like the lab).
        broker_config: Kafka broker configs for a cluster this adapter creates (see
            :data:`mqlab.brokers.sim.kafka.server.DEFAULT_CONFIG`).
        bus, namespace, endpoints, connect_timeout: as :class:`mqlab.brokers.base.Broker`.
            ``bus`` must be the world's bus when both are given (observations carry its
            virtual clock); ``namespace`` defaults to a deterministic one from the world.
    """

    backend = "sim"

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        brokers: int = 3,
        broker_config: Mapping[str, object] | None = None,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if world is not None and bus is not None and bus is not world.bus:
            raise BrokerError("a simulated adapter emits on its world's bus: pass one of them")
        self._owns_world = world is None
        self.world = world if world is not None else SimWorld(bus=bus)
        super().__init__(
            bus=self.world.bus,
            namespace=namespace or self.world.new_namespace(),
            endpoints=endpoints,
            connect_timeout=connect_timeout,
        )
        self._cluster_options: dict[str, Any] = {"brokers": brokers, "config": broker_config}
        self._cluster: SimKafkaCluster | None = None
        self._producers: list[SimKafkaProducer] = []
        self._consumers: list[SimKafkaConsumer] = []
        self._client_counter = 0
        self._message_counter = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def cluster(self) -> SimKafkaCluster:
        """The simulated cluster (shared by every Kafka adapter of the world)."""
        if self._cluster is None:
            self._cluster = self.world.kafka_cluster(**self._cluster_options)
        return self._cluster

    async def _connect(self) -> None:
        cluster = self.cluster
        cluster.start()
        deadline = self.world.now() + self.connect_timeout
        while not any(self.world.clear_path(b.node) for b in cluster.brokers.values()):
            if self.world.now() >= deadline:
                nodes = ", ".join(b.node for b in cluster.brokers.values())
                raise BrokerUnavailable("kafka", f"the simulator ({nodes})", "no broker answers")
            await asyncio.sleep(RETRY_BACKOFF)

    async def _close(self) -> None:
        await self._close_clients()
        if self._owns_world:
            if self._cluster is not None:
                self._cluster.stop()
            await self.world.aclose()

    async def _close_clients(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        for producer in list(self._producers):
            await producer.close()
        self._consumers.clear()
        self._producers.clear()

    async def cleanup(self) -> None:
        """Close this adapter's clients, then delete the namespace's topics, groups and
        transactional state (safe to repeat)."""
        await self._close_clients()
        cluster = self.cluster
        prefix = f"{self.namespace}-"
        for topic in cluster.topics_with_prefix(prefix):
            cluster.delete_topic(topic.name)
        for group in cluster.groups_with_prefix(prefix):
            cluster.delete_group(group.group_id)
        for transactional_id in [t for t in cluster.transactions if t.startswith(prefix)]:
            del cluster.transactions[transactional_id]

    def new_message_id(self) -> str:
        """An mqlab message id for a send without one: ``<namespace>-<n>``, as the real
        adapter numbers them (deterministic here, because the namespace is)."""
        self._message_counter += 1
        return f"{self.namespace}-{self._message_counter}"

    def _next_client_name(self, kind: str) -> str:
        self._client_counter += 1
        return f"{kind}-{self._client_counter}"

    # -- topics ----------------------------------------------------------------------------

    async def _controller(self, what: str) -> None:
        """Admin requests go to the controller: wait for it up to the connect timeout."""
        try:
            await asyncio.wait_for(
                self.world.until_state(CONTROLLER_NODE, NodeState.UP), self.connect_timeout
            )
        except TimeoutError:
            raise OperationTimedOut(
                f"{what}: the Kafka controller did not answer within {self.connect_timeout:g}s"
            ) from None

    async def create_topic(
        self,
        name: str,
        *,
        partitions: int = 1,
        replication_factor: int = 1,
        config: dict[str, str] | None = None,
    ) -> TopicInfo:
        """Create ``name`` on the simulated cluster (see :meth:`KafkaAPI.create_topic`)."""
        await self._controller(f"create topic {name}")
        topic = self.cluster.create_topic(
            name,
            partitions,
            replication_factor,
            {k: str(v) for k, v in (config or {}).items()},
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

    async def producer(
        self,
        *,
        acks: Acks = "all",
        idempotent: bool = False,
        transactional_id: str | None = None,
        name: str | None = None,
        request_timeout: float = 10.0,
        linger_ms: int = 0,
        transaction_timeout: float = TRANSACTION_TIMEOUT,
    ) -> SimKafkaProducer:
        """A started producer (see :meth:`KafkaAPI.producer`).

        Args:
            transaction_timeout: transaction.timeout.ms in seconds (simulator extra).

        Raises:
            BrokerError: acks other than "all" with idempotence, or no transaction
                coordinator within ``request_timeout``.
        """
        if acks not in (0, 1, "all"):
            raise BrokerError(f"acks must be 0, 1 or 'all', not {acks!r}")
        if transactional_id is not None:
            idempotent = True
        if idempotent and acks != "all":
            raise BrokerError("an idempotent producer needs acks='all' (as the Java client)")
        producer = SimKafkaProducer(
            self,
            acks=acks,
            idempotent=idempotent,
            transactional_id=transactional_id,
            name=name or self._next_client_name("producer"),
            request_timeout=request_timeout,
            linger_ms=linger_ms,
            transaction_timeout=transaction_timeout,
        )
        await producer.start()
        self._producers.append(producer)
        return producer

    async def consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        name: str | None = None,
        auto_commit: bool = False,
        auto_commit_interval: float = 1.0,
        auto_offset_reset: OffsetReset = "earliest",
        isolation_level: IsolationLevel = "read_uncommitted",
        assignment_strategy: AssignmentStrategy = "range",
        session_timeout: float = 6.0,
        heartbeat_interval: float = 0.3,
        max_poll_records: int = 500,
        max_poll_interval: float = MAX_POLL_INTERVAL,
    ) -> SimKafkaConsumer:
        """A started consumer that joins ``group_id`` (see :meth:`KafkaAPI.consumer`).

        Args:
            max_poll_interval: max.poll.interval.ms in seconds (simulator extra).

        Raises:
            BrokerError: no topics, an unknown assignment strategy or offset reset policy.
        """
        if isinstance(topics, str):
            topics = [topics]
        if not topics:
            raise BrokerError("a consumer needs at least one topic")
        if assignment_strategy not in ("range", "roundrobin"):
            raise BrokerError(
                f"unknown assignment strategy {assignment_strategy!r} (range, roundrobin)"
            )
        if auto_offset_reset not in ("earliest", "latest"):
            raise BrokerError(
                f"auto_offset_reset must be earliest or latest, not {auto_offset_reset!r}"
            )
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise BrokerError(f"unknown isolation level {isolation_level!r}")
        consumer = SimKafkaConsumer(
            self,
            tuple(topics),
            group_id=group_id,
            name=name or self._next_client_name("consumer"),
            auto_commit=auto_commit,
            auto_commit_interval=auto_commit_interval,
            auto_offset_reset=auto_offset_reset,
            isolation_level=isolation_level,
            assignment_strategy=assignment_strategy,
            session_timeout=session_timeout,
            heartbeat_interval=heartbeat_interval,
            max_poll_records=max_poll_records,
            max_poll_interval=max_poll_interval,
        )
        consumer.start()
        self._consumers.append(consumer)
        return consumer

    def _forget(self, client: object) -> None:
        if client in self._producers:
            self._producers.remove(client)
        if client in self._consumers:
            self._consumers.remove(client)

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


async def coordinator_round_trip(
    cluster: SimKafkaCluster, topic: str, key: str, timeout: float, what: str
) -> int:
    """Find ``key``'s coordinator and carry one request to it and back; returns its id.

    Raises:
        OperationTimedOut: no coordinator answered within ``timeout`` virtual seconds.
    """
    world = cluster.world
    deadline = world.now() + timeout
    last: BaseException | None = None
    while True:
        try:
            broker_id = cluster.coordinator(topic, key)
            node = cluster.node_of(broker_id)
            if not world.clear_path(node):
                remaining = max(0.0, deadline - world.now())
                await asyncio.wait_for(world.transmit(node, "upstream"), remaining)
                remaining = max(0.0, deadline - world.now())
                await asyncio.wait_for(world.transmit(node, "downstream"), remaining)
            if not cluster.broker_up(broker_id):
                raise CoordinatorNotAvailable(f"{node} does not answer")
            return broker_id
        except (RetriableError, NodeUnreachable) as error:
            last = error
        except TimeoutError:
            last = last or CoordinatorNotAvailable("no answer")
        if world.now() + RETRY_BACKOFF > deadline:
            raise OperationTimedOut(
                f"{what} for {key!r}: no coordinator answered within {timeout:g}s ({last})"
            )
        await asyncio.sleep(RETRY_BACKOFF)


class SimKafkaProducer(KafkaProducer):
    """A producer on the simulated cluster (see :class:`KafkaProducer`).

    Retries follow the Java client: retriable errors (no leader, not leader, broker gone,
    NotEnoughReplicas) are retried every ``retry.backoff.ms`` until ``request_timeout``; a
    non-idempotent retry after a lost acknowledgement writes the record twice, an idempotent
    one is recognised by its sequence number and answered with the original offset.
    """

    def __init__(
        self,
        adapter: SimKafkaBroker,
        *,
        acks: Acks,
        idempotent: bool,
        transactional_id: str | None,
        name: str,
        request_timeout: float,
        linger_ms: int,
        transaction_timeout: float,
    ) -> None:
        self.name = name
        self._adapter = adapter
        self._cluster = adapter.cluster
        self._world = adapter.world
        self._bus = adapter.bus
        self._source = adapter.name
        self._acks = acks
        self._acks_all = acks == "all"
        self._idempotent = idempotent
        self._transactional_id = transactional_id
        self._request_timeout = request_timeout
        self._linger = linger_ms / 1000.0
        self._transaction_timeout = transaction_timeout
        self._clock = asyncio.get_running_loop().time  # == world.now(), without the lookup
        self._producer_id = -1
        self._epoch = 0
        self._sequences: dict[TopicPartition, int] = {}
        self._sticky: dict[str, list[int]] = {}
        self._key_partitions: dict[int, dict[bytes, int]] = {}
        self._txn: Transaction | None = None
        self._in_transaction = False
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def start(self) -> None:
        """InitProducerId: a producer id for idempotence; for a transactional id, fence the
        previous producer with that id and abort what it left open."""
        if self._transactional_id is not None:
            await coordinator_round_trip(
                self._cluster,
                TRANSACTION_TOPIC,
                self._transactional_id,
                self._request_timeout,
                "InitProducerId",
            )
            txn = self._cluster.init_transactions(
                self._transactional_id, self.name, self._transaction_timeout
            )
            self._txn = txn
            self._producer_id = txn.producer_id
            self._epoch = txn.epoch
            # A new epoch restarts every partition's sequence numbers.
            self._sequences.clear()
        elif self._idempotent:
            self._producer_id = self._cluster.new_producer_id()

    # -- sending ---------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        message_id: str | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for the acknowledgement ``acks`` asks for.

        Raises:
            NotEnoughReplicas: acks=all and the ISR stayed below min.insync.replicas.
            ProduceTimedOut: no acknowledgement within the request timeout.
            ProducerFenced: a newer producer took over this transactional id.
            BrokerError: unknown topic or partition, closed producer, send outside a
                transaction on a transactional producer.
        """
        if self._closed:
            raise _Closed(f"producer {self.name} is closed")
        topic_state = self._cluster.topics.get(topic)
        if topic_state is None or topic_state.internal:
            raise BrokerError(f"UnknownTopicOrPartition: topic {topic!r} does not exist")
        if self._txn is not None:
            self._check_transaction(require_open=True)
        mid = message_id if message_id is not None else self._adapter.new_message_id()
        all_headers = ((MESSAGE_ID_HEADER, mid.encode()), *headers)
        count = len(topic_state.partitions)
        if partition is None:
            if key is None:
                size = len(value) + RECORD_OVERHEAD + sum(len(h) + len(v) for h, v in headers)
                partition = self._sticky_partition(topic_state, size)
            else:
                # murmur2 in Python costs microseconds: remember it per partition count.
                by_key = self._key_partitions.get(count)
                if by_key is None or len(by_key) >= _KEY_CACHE_LIMIT:
                    by_key = self._key_partitions[count] = {}
                cached = by_key.get(key)
                if cached is None:
                    cached = by_key[key] = default_partition(key, count)
                partition = cached
        elif not 0 <= partition < count:
            raise BrokerError(f"UnknownTopicOrPartition: {topic} has no partition {partition}")
        target = topic_state.partitions[partition]
        key_text = None if key is None else key.decode("utf-8", "replace")
        leader = target.leader
        if (
            not self._acks_all
            and leader >= 0
            and not self._linger
            and self._world.clear_path(target.leader_node)
        ):
            # Healthy path with acks 0/1: the leader appends and answers at once, nothing
            # suspends (this is the simulator's hot path).
            now = self._clock()
            offset = self._cluster.append_plain(
                target, key, value, all_headers, key_text, mid, int(now * 1000)
            )
            position = offset if self._acks == 1 else None
            self._bus.emit(
                _new_produced(
                    now, self._source, topic, mid, key_text, partition, position, self.name, False
                )
            )
            return _new_metadata(topic, partition, -1 if position is None else offset)
        return await self._send_with_retries(target, key, value, all_headers, mid, key_text)

    def _sticky_partition(self, topic: Topic, size: int) -> int:
        """The uniform sticky partitioner: stay on one partition until ``batch.size`` bytes
        went to it, then pick another at random among those with a leader."""
        state = self._sticky.get(topic.name)
        partitions = topic.partitions
        if (
            state is None
            or state[1] >= BATCH_SIZE
            or state[0] >= len(partitions)
            or partitions[state[0]].leader < 0
        ):
            available = [p.index for p in partitions if p.leader >= 0] or [
                p.index for p in partitions
            ]
            state = [available[self._world.rng.randrange(len(available))], 0]
            self._sticky[topic.name] = state
        state[1] += size
        return state[0]

    async def _send_with_retries(
        self,
        partition: Partition,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...],
        message_id: str,
        key_text: str | None,
    ) -> RecordMetadata:
        world = self._world
        tp = partition.tp
        deadline = self._clock() + self._request_timeout
        sequence = -1
        if self._producer_id >= 0:
            sequence = self._sequences.get(tp, 0)
            self._sequences[tp] = sequence + 1
        if self._txn is not None:
            await self._add_partition(tp, deadline)
        if self._linger:
            await asyncio.sleep(self._linger)
        nbytes = len(value) + len(key or b"") + RECORD_OVERHEAD
        if self._acks == 0:
            self._fire_and_forget(partition, key, value, headers, message_id, key_text, nbytes)
            self._emit_produced(tp, message_id, key_text, None, duplicate=False)
            return RecordMetadata(tp.topic, tp.partition, -1)
        last_error: BaseException | None = None
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise self._give_up(tp, message_id, key_text, last_error)
            attempt = self._attempt(
                partition, key, value, headers, sequence, message_id, key_text, nbytes, deadline
            )
            leader = partition.leader
            try:
                if leader >= 0 and world.clear_path(self._cluster.node_of(leader)):
                    # No network leg can hang: only the replication wait can take long, and
                    # it has its own deadline (cheaper than wait_for, which makes a task).
                    offset, duplicate = await attempt
                else:
                    offset, duplicate = await asyncio.wait_for(attempt, remaining)
            except TimeoutError:
                raise self._give_up(tp, message_id, key_text, last_error) from None
            except (RetriableError, NodeUnreachable) as error:
                last_error = error
            except BrokerError as error:
                self._emit_failed(tp, message_id, key_text, str(error))
                raise
            else:
                self._emit_produced(tp, message_id, key_text, offset, duplicate=duplicate)
                return _new_metadata(tp.topic, tp.partition, offset)
            if partition.topic.deleted:
                error_text = f"UnknownTopicOrPartition: topic {tp.topic!r} was deleted"
                self._emit_failed(tp, message_id, key_text, error_text)
                raise BrokerError(error_text)
            await asyncio.sleep(min(RETRY_BACKOFF, max(0.0, deadline - world.now())))

    async def _attempt(
        self,
        partition: Partition,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...],
        sequence: int,
        message_id: str,
        key_text: str | None,
        nbytes: int,
        deadline: float,
    ) -> tuple[int, bool]:
        """One produce request to the current leader and its answer.

        Raises:
            TimeoutError: still waiting for replication at ``deadline``.
        """
        if partition.topic.deleted:
            raise BrokerError(f"UnknownTopicOrPartition: topic {partition.tp.topic!r} was deleted")
        leader = partition.leader
        if leader < 0:
            raise LeaderNotAvailable(f"{partition.tp} has no leader")
        node = self._cluster.node_of(leader)
        await self._leg(node, "upstream", deadline, nbytes)
        try:
            if partition.leader != leader:
                raise NotLeaderOrFollower(f"broker {leader} no longer leads {partition.tp}")
            offset, duplicate = self._cluster.append(
                partition,
                key,
                value,
                headers,
                acks_all=self._acks_all,
                producer_id=self._producer_id,
                producer_epoch=self._epoch,
                sequence=sequence,
                txn=self._txn is not None,
                key_text=key_text,
                message_id=message_id,
                timestamp_ms=int(self._clock() * 1000),
            )
            if self._acks_all:
                await self._cluster.wait_replicated(partition, offset, deadline)
        except KafkaServerError:
            await self._leg(node, "downstream", deadline)  # the error answer travels back too
            raise
        await self._leg(node, "downstream", deadline)
        return offset, duplicate

    async def _leg(self, node: str, stream: str, deadline: float, nbytes: int = 0) -> None:
        """One network leg of a produce request, never past the send's deadline (a fault
        can appear while the request waits for replication)."""
        world = self._world
        if world.clear_path(node):
            return
        await asyncio.wait_for(
            world.transmit(node, stream, nbytes), max(0.0, deadline - self._clock())
        )

    def _fire_and_forget(
        self,
        partition: Partition,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...],
        message_id: str,
        key_text: str | None,
        nbytes: int,
    ) -> None:
        """acks=0: the bytes are handed to the socket; whether they arrive nobody says."""

        async def deliver() -> None:
            leader = partition.leader
            if leader < 0:
                return
            try:
                await self._world.transmit(self._cluster.node_of(leader), "upstream", nbytes)
                if partition.leader == leader and not partition.topic.deleted:
                    self._cluster.append(
                        partition,
                        key,
                        value,
                        headers,
                        acks_all=False,
                        key_text=key_text,
                        message_id=message_id,
                    )
            except (BrokerError, NodeUnreachable):
                return  # lost silently: that is acks=0

        task = self._world.spawn(deliver(), name=f"{self.name}-acks0")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _give_up(
        self,
        tp: TopicPartition,
        message_id: str,
        key_text: str | None,
        last_error: BaseException | None,
    ) -> BrokerError:
        if isinstance(last_error, NotEnoughReplicasError):
            error: BrokerError = NotEnoughReplicas(str(last_error))
        else:
            why = f" (last error: {last_error})" if last_error is not None else ""
            error = ProduceTimedOut(
                f"no acknowledgement for {tp} within {self._request_timeout:g}s{why}"
            )
        self._emit_failed(tp, message_id, key_text, str(error))
        return error

    def _emit_produced(
        self,
        tp: TopicPartition,
        message_id: str,
        key_text: str | None,
        offset: int | None,
        *,
        duplicate: bool,
    ) -> None:
        self._bus.emit(
            _new_produced(
                self._clock(),
                self._source,
                tp.topic,
                message_id,
                key_text,
                tp.partition,
                offset,
                self.name,
                duplicate,
            )
        )

    def _emit_failed(
        self, tp: TopicPartition, message_id: str, key_text: str | None, error: str
    ) -> None:
        self._bus.emit(
            ProduceFailed(
                at=self._world.now(),
                broker=self._source,
                destination=tp.topic,
                message_id=message_id,
                error=error,
                producer=self.name,
                key=key_text,
            )
        )

    async def flush(self) -> None:
        """Wait until every acks=0 record in flight has arrived or is lost, at most the
        request timeout (a frozen leader must not hang the producer's close)."""
        if not self._background:
            return
        _, pending = await asyncio.wait(list(self._background), timeout=self._request_timeout)
        for task in pending:
            task.cancel()  # still in a dead or frozen connection: lost, as acks=0 allows
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- transactions ----------------------------------------------------------------------

    def _check_transaction(self, *, require_open: bool) -> Transaction:
        txn = self._txn
        if txn is None:
            raise BrokerError("this producer has no transactional_id")
        if self._cluster.transactions.get(txn.transactional_id) is not txn or (
            txn.epoch != self._epoch
        ):
            raise ProducerFenced(
                f"ProducerFenced: producer {self.name} was fenced: a newer producer uses "
                f"transactional id {txn.transactional_id!r}, or its transaction timed out"
            )
        if require_open and not self._in_transaction:
            raise BrokerError(
                f"producer {self.name}: send outside a transaction (call begin_transaction)"
            )
        return txn

    async def _add_partition(self, tp: TopicPartition, deadline: float) -> None:
        txn = self._check_transaction(require_open=True)
        if tp in txn.partitions:
            return
        await coordinator_round_trip(
            self._cluster,
            TRANSACTION_TOPIC,
            txn.transactional_id,
            max(0.0, deadline - self._world.now()),
            "AddPartitionsToTxn",
        )
        self._cluster.add_to_transaction(txn, tp)

    async def begin_transaction(self) -> None:
        """Start a transaction (local to the producer until the first send)."""
        self._check_transaction(require_open=False)
        if self._in_transaction:
            raise BrokerError(f"producer {self.name}: a transaction is already open")
        self._in_transaction = True

    async def commit_transaction(self) -> None:
        """Commit: COMMIT markers go to every partition written, sent offsets are committed."""
        await self._end(commit=True)

    async def abort_transaction(self) -> None:
        """Abort: ABORT markers; read_committed consumers skip the transaction's records."""
        await self._end(commit=False)

    async def _end(self, *, commit: bool) -> None:
        txn = self._check_transaction(require_open=True)
        await self.flush()
        await coordinator_round_trip(
            self._cluster,
            TRANSACTION_TOPIC,
            txn.transactional_id,
            self._request_timeout,
            "EndTxn",
        )
        self._check_transaction(require_open=True)
        self._cluster.end_transaction(txn, commit=commit)
        self._in_transaction = False

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        """Commit ``offsets`` for ``group_id`` only if (and when) this transaction commits."""
        txn = self._check_transaction(require_open=True)
        await coordinator_round_trip(
            self._cluster, OFFSETS_TOPIC, group_id, self._request_timeout, "TxnOffsetCommit"
        )
        self._cluster.open_transaction(txn)
        txn.offsets.setdefault(group_id, {}).update(offsets)

    async def close(self) -> None:
        """Flush and release (an open transaction stays open until its timeout aborts it)."""
        if self._closed:
            return
        await self.flush()
        self._closed = True
        self._adapter._forget(self)


class SimKafkaConsumer(KafkaConsumer):
    """A consumer group member on the simulated cluster (see :class:`KafkaConsumer`).

    A background task does what aiokafka's coordinator task does: join the group, heartbeat
    every ``heartbeat_interval``, rejoin when the coordinator announces a rebalance (revoking
    every partition first: the eager protocol), auto-commit the current positions every
    ``auto_commit_interval`` and leave the group when ``poll`` was not called for
    ``max_poll_interval``. :meth:`poll` only fetches.

    :meth:`crash` is the simulator's kill -9: the member stops without leaving, so its
    partitions move only when the coordinator's session timeout expires.
    """

    def __init__(
        self,
        adapter: SimKafkaBroker,
        topics: tuple[str, ...],
        *,
        group_id: str,
        name: str,
        auto_commit: bool,
        auto_commit_interval: float,
        auto_offset_reset: OffsetReset,
        isolation_level: IsolationLevel,
        assignment_strategy: AssignmentStrategy,
        session_timeout: float,
        heartbeat_interval: float,
        max_poll_records: int,
        max_poll_interval: float,
    ) -> None:
        self.name = name
        self.group_id = group_id
        self.topics = topics
        self._adapter = adapter
        self._cluster = adapter.cluster
        self._world = adapter.world
        self._bus = adapter.bus
        self._source = adapter.name
        self._auto_commit = auto_commit
        self._auto_commit_interval = auto_commit_interval
        self._reset_policy = auto_offset_reset
        self._read_committed = isolation_level == "read_committed"
        self._strategy = assignment_strategy
        self._session_timeout = session_timeout
        self._heartbeat_interval = heartbeat_interval
        self._max_poll_records = max_poll_records
        self._max_poll_interval = max_poll_interval
        self._member_id: str | None = None
        self._generation = -1
        self._assignment: tuple[TopicPartition, ...] = ()
        self._parts: list[tuple[TopicPartition, Partition]] = []
        self._positions: dict[TopicPartition, int] = {}
        self._needs_join = True
        self._left_idle = False
        self._wakeup = asyncio.Event()
        self._kick = asyncio.Event()
        self._state = "running"
        self._fatal: BaseException | None = None
        self._round_robin = 0
        self._last_poll = 0.0
        self._tickets: dict[int, bool] = {}
        self._fetching: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._listener: Callable[[], None] = self._wakeup.set

    def start(self) -> None:
        """Start the coordinator task (it joins the group right away)."""
        self._last_poll = self._world.now()
        self._task = self._world.spawn(self._coordinate(), name=f"{self.name}-coordinator")

    # -- the coordinator task --------------------------------------------------------------

    async def _coordinate(self) -> None:
        world = self._world
        next_beat = next_commit = 0.0
        while True:
            if self._left_idle:
                self._kick.clear()
                await self._kick.wait()
                continue
            if self._needs_join:
                await self._join()
                next_beat = world.now() + self._heartbeat_interval
                next_commit = world.now() + self._auto_commit_interval
                continue
            wake = min(next_beat, next_commit) if self._auto_commit else next_beat
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), max(0.0, wake - world.now()))
            if self._needs_join or self._left_idle:
                continue
            now = world.now()
            if now - self._last_poll > self._max_poll_interval:
                await self._leave(
                    f"{self.name} did not poll for {self._max_poll_interval:g}s "
                    "(max.poll.interval.ms)"
                )
                self._left_idle = True
                continue
            if self._auto_commit and now >= next_commit:
                next_commit = now + self._auto_commit_interval
                await self._commit_quietly()
            if now >= next_beat:
                next_beat = now + self._heartbeat_interval
                await self._heartbeat()

    async def _coordinator_leg(self) -> bool:
        """Carry one request to the group coordinator and back; False when it failed."""
        try:
            await coordinator_round_trip(
                self._cluster, OFFSETS_TOPIC, self.group_id, self._session_timeout, "heartbeat"
            )
        except (OperationTimedOut, RetriableError):
            return False
        return True

    async def _join(self) -> None:
        self._revoke()
        try:
            await coordinator_round_trip(
                self._cluster, OFFSETS_TOPIC, self.group_id, self._session_timeout, "JoinGroup"
            )
            group = self._cluster.group(self.group_id)
            future = group.join(
                self._member_id,
                self.name,
                self.topics,
                self._strategy,
                self._session_timeout,
                self._max_poll_interval,
            )
            result = await future
        except RebalanceNeeded:
            self._member_id = None  # the coordinator forgot us: join as a new member
            return
        except (OperationTimedOut, RetriableError):
            await asyncio.sleep(RETRY_BACKOFF)
            return
        except KafkaServerError as error:
            self._fatal = error
            self._wakeup.set()
            self._left_idle = True
            return
        if result is None:
            return  # dropped while waiting: join again
        self._member_id = result.member_id
        self._generation = result.generation
        self._assign(result.assignment)
        self._needs_join = False

    def _group(self) -> Group:
        return self._cluster.group(self.group_id)

    async def _heartbeat(self) -> None:
        if not await self._coordinator_leg():
            return
        if self._member_id is None:
            self._needs_join = True
            return
        answer = self._group().heartbeat(self._member_id, self._generation)
        if answer == "unknown":
            self._member_id = None
            self._needs_join = True
        elif answer == "rebalance":
            self._needs_join = True

    async def _leave(self, reason: str) -> None:
        if self._auto_commit:
            await self._commit_quietly()
        self._revoke()
        member_id, self._member_id = self._member_id, None
        self._needs_join = True
        if member_id is not None and await self._coordinator_leg():
            self._group().leave(member_id, reason)

    async def _commit_quietly(self) -> None:
        offsets = self._current_offsets()
        if not offsets or self._member_id is None:
            return
        if not await self._coordinator_leg():
            return
        try:
            self._group().commit(self._member_id, self._generation, offsets, self.name)
        except CommitFailed:
            self._needs_join = True

    # -- assignment ------------------------------------------------------------------------

    def _assign(self, assignment: tuple[TopicPartition, ...]) -> None:
        self._assignment = assignment
        self._parts = []
        for tp in assignment:
            topic = self._cluster.topics.get(tp.topic)
            if topic is None or tp.partition >= len(topic.partitions):
                continue
            partition = topic.partitions[tp.partition]
            partition.listeners.append(self._listener)
            self._parts.append((tp, partition))
        self._wakeup.set()

    def _revoke(self) -> None:
        for _, partition in self._parts:
            if self._listener in partition.listeners:
                partition.listeners.remove(self._listener)
        self._parts = []
        self._assignment = ()
        self._positions.clear()
        self._tickets.clear()

    def _current_offsets(self) -> dict[TopicPartition, int]:
        return {tp: self._positions[tp] for tp in self._assignment if tp in self._positions}

    # -- fetching --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._state != "running":
            raise _Closed(f"consumer {self.name} is {self._state}")
        if self._fatal is not None:
            raise BrokerError(str(self._fatal))

    async def poll(self, *, max_records: int = 100, timeout: float = 1.0) -> list[KafkaRecord]:
        """Fetch up to ``max_records`` (at most ``max_poll_records``), waiting up to
        ``timeout`` virtual seconds for the first; rebalances happen meanwhile."""
        self._check_usable()
        world = self._world
        now = world.now()
        self._last_poll = now
        if self._left_idle:
            self._left_idle = False
            self._kick.set()
        limit = min(max_records, self._max_poll_records)
        records = self._collect(limit)
        if records:
            return records
        deadline = now + timeout
        while True:
            remaining = deadline - world.now()
            if remaining <= 0:
                return []
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return []
            self._check_usable()
            records = self._collect(limit)
            if records:
                return records

    def _collect(self, limit: int) -> list[KafkaRecord]:
        parts = self._parts
        if self._needs_join or not parts:
            return []
        world = self._world
        cluster = self._cluster
        brokers = cluster.brokers
        positions = self._positions
        group = self._group()
        delivered_upto = group.delivered_upto
        redeliveries = group.redeliveries
        read_committed = self._read_committed
        emit = self._bus.emit
        now = world.now()
        source = self._source
        name = self.name
        out: list[KafkaRecord] = []
        room = limit
        count = len(parts)
        start = self._round_robin % count
        self._round_robin += 1
        for i in range(count):
            tp, partition = parts[(start + i) % count]
            leader_id = partition.leader
            if leader_id < 0 or partition.topic.deleted:
                continue
            if not world.clear_path(brokers[leader_id].node) and not self._take_ticket(leader_id):
                continue
            leader = partition.replica[leader_id]
            position = positions.get(tp)
            if position is None or position > leader.log_end:
                position = self._reset_position(tp, partition, position)
            end = partition.last_stable_offset if read_committed else partition.high_watermark
            if position >= end:
                continue
            stop = min(end, position + room)
            upto = delivered_upto.get(tp, 0)
            topic = tp.topic
            index = tp.partition
            if position >= upto and not read_committed:
                # The common case, kept lean: first deliveries, nothing to filter but markers.
                for offset, entry in enumerate(leader.log[position:stop], position):
                    if not entry.control:
                        emit(
                            _new_delivered(
                                now,
                                source,
                                topic,
                                entry.message_id,
                                name,
                                entry.key_text,
                                index,
                                offset,
                                1,
                                False,
                            )
                        )
                        out.append(
                            new_record(
                                topic,
                                index,
                                offset,
                                entry.key,
                                entry.value,
                                entry.headers,
                                entry.timestamp_ms,
                            )
                        )
                positions[tp] = delivered_upto[tp] = stop
                room = limit - len(out)
                if room <= 0:
                    break
                continue
            for offset, entry in enumerate(leader.log[position:stop], position):
                if entry.control:
                    continue
                if read_committed and entry.txn and partition.is_aborted(entry.producer_id, offset):
                    continue
                if offset < upto:
                    times = redeliveries.get((tp, offset), 1) + 1
                    redeliveries[(tp, offset)] = times
                    redelivered = True
                else:
                    times = 1
                    redelivered = False
                emit(
                    _new_delivered(
                        now,
                        source,
                        topic,
                        entry.message_id,
                        name,
                        entry.key_text,
                        index,
                        offset,
                        times,
                        redelivered,
                    )
                )
                out.append(entry.to_record(tp, offset))
            positions[tp] = stop
            if stop > upto:
                delivered_upto[tp] = stop
            room = limit - len(out)
            if room <= 0:
                break
        return out

    def _reset_position(self, tp: TopicPartition, partition: Partition, current: int | None) -> int:
        """Where to start: the committed offset, or (none, or out of range) the reset policy."""
        committed = self._group().committed.get(tp) if current is None else None
        log_end = partition.log_end
        if committed is not None and 0 <= committed <= log_end:
            position = committed
        elif self._reset_policy == "earliest":
            position = 0
        else:
            position = (
                partition.last_stable_offset if self._read_committed else partition.high_watermark
            )
        self._positions[tp] = position
        return position

    def _take_ticket(self, broker_id: int) -> bool:
        """On a faulty path a fetch is a real round trip: use a completed one if there is
        one, otherwise start one (the data shows up in a later poll)."""
        if self._tickets.pop(broker_id, False):
            return True
        if broker_id not in self._fetching:
            self._fetching.add(broker_id)
            self._world.spawn(self._fetch_trip(broker_id), name=f"{self.name}-fetch")
        return False

    async def _fetch_trip(self, broker_id: int) -> None:
        node = self._cluster.node_of(broker_id)
        try:
            await asyncio.wait_for(self._world.transmit(node, "upstream"), self._session_timeout)
            await asyncio.wait_for(
                self._world.transmit(node, "downstream", 1024), self._session_timeout
            )
            self._tickets[broker_id] = True
            self._wakeup.set()
        except (NodeUnreachable, TimeoutError):
            await asyncio.sleep(RETRY_BACKOFF)
            self._wakeup.set()
        finally:
            self._fetching.discard(broker_id)

    # -- offsets ---------------------------------------------------------------------------

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (next offset to read) or the current positions.

        Raises:
            CommitFailed: the group rebalanced since this member joined.
            OperationTimedOut: the coordinator is unavailable.
        """
        self._check_usable()
        chosen = self._current_offsets() if offsets is None else dict(offsets)
        for tp, offset in chosen.items():
            if offset < 0:
                raise BrokerError(f"commit: offset for {tp} must not be negative ({offset})")
        out_of_group = self._needs_join or self._member_id is None
        if not chosen and not (out_of_group and self._generation >= 0):
            return  # nothing consumed yet: nothing to commit
        await coordinator_round_trip(
            self._cluster, OFFSETS_TOPIC, self.group_id, self._session_timeout, "OffsetCommit"
        )
        if self._needs_join or self._member_id is None:
            # It was a member and is not now: its partitions were revoked (a rebalance, or it
            # left after max.poll.interval), so its progress may belong to another member.
            raise CommitFailed(
                f"commit failed for group {self.group_id}: {self.name} is not a member of the "
                "current generation (the group rebalanced; poll again to rejoin)"
            )
        try:
            self._group().commit(self._member_id, self._generation, chosen, self.name)
        except CommitFailed:
            self._needs_join = True
            self._kick.set()
            raise

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp`` as the coordinator has it."""
        self._check_usable()
        await coordinator_round_trip(
            self._cluster, OFFSETS_TOPIC, self.group_id, self._session_timeout, "OffsetFetch"
        )
        return self._group().committed.get(tp)

    def _require_assigned(self, tp: TopicPartition, what: str) -> Partition:
        for assigned, partition in self._parts:
            if assigned == tp:
                return partition
        raise BrokerError(f"{what}: {tp} is not assigned to {self.name}")

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move the position on an assigned partition (the next poll reads from there)."""
        self._check_usable()
        self._require_assigned(tp, "seek")
        if offset < 0:
            raise BrokerError(f"seek: offset must not be negative ({offset})")
        self._positions[tp] = offset
        self._wakeup.set()

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        """Replay from the log start of ``tps`` (every assigned partition when empty)."""
        self._check_usable()
        targets = tps or self._assignment
        for tp in targets:
            self._require_assigned(tp, "seek_to_beginning")
            self._positions[tp] = 0
        self._wakeup.set()

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record this consumer fetches from ``tp``."""
        self._check_usable()
        partition = self._require_assigned(tp, "position")
        position = self._positions.get(tp)
        if position is None:
            position = self._reset_position(tp, partition, None)
        return position

    def assignment(self) -> frozenset[TopicPartition]:
        """Partitions assigned now (empty while a rebalance is in progress)."""
        return frozenset(self._assignment)

    @property
    def member_id(self) -> str | None:
        """The member id the coordinator gave this consumer (None before it joined)."""
        return self._member_id

    @property
    def generation(self) -> int:
        """The group generation this consumer last joined (-1 before the first join)."""
        return self._generation

    # -- ending ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit (with auto-commit), leave the group cleanly and stop. Idempotent."""
        if self._state != "running":
            self._adapter._forget(self)
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._member_id is not None:
            await self._leave(f"{self.name} left the group")
        self._revoke()
        self._state = "closed"
        self._wakeup.set()
        self._adapter._forget(self)

    def crash(self, point: str = "crash()") -> None:
        """Die like kill -9: no commit, no LeaveGroup. The coordinator notices when the
        session timeout expires, and only then are the partitions reassigned."""
        if self._state != "running":
            return
        if self._task is not None:
            self._task.cancel()
        for _, partition in self._parts:
            if self._listener in partition.listeners:
                partition.listeners.remove(self._listener)
        self._state = "crashed"
        self._wakeup.set()
        self._adapter._forget(self)
        self._bus.emit(
            ConsumerCrashed(
                at=self._world.now(),
                broker=self._source,
                consumer=self.name,
                point=point,
                detail=(
                    f"stopped without leaving group {self.group_id}; its partitions move after "
                    f"the session timeout ({self._session_timeout:g}s)"
                ),
            )
        )
