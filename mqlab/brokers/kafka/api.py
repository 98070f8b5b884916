"""The Kafka interface, in Kafka's own vocabulary: topics, partitions, offsets, groups.

Implemented by :class:`mqlab.brokers.kafka.client.KafkaBroker` (aiokafka against the lab's KRaft
cluster) and by the simulator's Kafka model. Offsets follow Kafka's convention everywhere: a
*committed* offset is the offset of the next record the group will read, so lag is
``high_watermark - committed``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Unpack, get_args

from mqlab.brokers.base import (
    AdapterOptions,
    Broker,
    BrokerError,
    Capabilities,
    Placement,
    Snapshot,
    check_window,
    send_windowed,
)
from mqlab.observe.events import Committed

MESSAGE_ID_HEADER = "mqlab-id"
"""Header that carries mqlab's message id (see :mod:`mqlab.observe.events`)."""

Acks = Literal[0, 1, "all"]
IsolationLevel = Literal["read_uncommitted", "read_committed"]
AssignmentStrategy = Literal["range", "roundrobin"]
OffsetReset = Literal["earliest", "latest"]

KAFKA_CAPABILITIES = Capabilities(
    ordering="partition",
    delivery="at-least-once",
    replay=True,
    priority=False,
    routing="partition key",
    dedup_window_seconds=None,
    dead_letter=False,
    transactions=True,
    per_key_ordering=True,
    ops_burden="high",
    throughput="millions/s (cluster)",
)


class NotEnoughReplicas(BrokerError):
    """acks=all write refused: the ISR is smaller than min.insync.replicas."""


class ProduceTimedOut(BrokerError):
    """A send was not acknowledged in time (leader gone, no ISR, network fault)."""


class CommitFailed(BrokerError):
    """An offset commit was refused because the group rebalanced since this member joined:
    its partitions may belong to another member now (poll to rejoin, then reprocess)."""


class ProducerFenced(BrokerError):
    """A newer producer with the same transactional id (or the transaction's timeout) fenced
    this one: it is a zombie and must not write."""


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """One partition of one topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record landed (offset -1: acks=0, the broker never said)."""

    topic: str
    partition: int
    offset: int

    def placement(self) -> Placement:
        """Where the send landed, as ``Produced`` reports it."""
        return Placement(
            partition=self.partition, position=self.offset if self.offset >= 0 else None
        )


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A record as a consumer sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    @property
    def message_id(self) -> str:
        """mqlab's message id from the headers (falls back to ``topic:partition:offset``)."""
        for name, value in self.headers:
            if name == MESSAGE_ID_HEADER:
                return value.decode()
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """Placement and offsets of one partition.

    ``log_end`` is the leader's log end offset; ``high_watermark`` the last offset replicated to
    the whole ISR (+1), the highest a read_uncommitted consumer can see. On the real cluster
    both come from the leader's ListOffsets answer, so they are equal unless a follower lags.
    """

    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    log_start: int = 0
    high_watermark: int = 0
    log_end: int = 0


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic with its partitions and the configs mqlab cares about."""

    name: str
    partitions: tuple[PartitionInfo, ...]
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """A broker of the cluster. ``controller``: it is (or hosts) the active controller."""

    node_id: int
    host: str
    port: int
    alive: bool
    controller: bool = False


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A member of a consumer group and the partitions it owns."""

    member_id: str
    client_id: str
    assignment: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class GroupOffset:
    """A group's progress on one partition (``committed`` None: nothing committed yet)."""

    topic: str
    partition: int
    committed: int | None
    high_watermark: int

    @property
    def lag(self) -> int:
        """Records the group still has to read on this partition."""
        return self.high_watermark - (self.committed or 0)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group: state (Stable, PreparingRebalance, Empty ...), members, offsets."""

    group_id: str
    state: str
    members: tuple[GroupMember, ...]
    offsets: tuple[GroupOffset, ...]
    protocol: str = ""


@dataclass(frozen=True, slots=True)
class KafkaSnapshot(Snapshot):
    """Everything a UI needs to draw the cluster for one namespace."""

    system: ClassVar[str] = "kafka"

    brokers: tuple[KafkaNode, ...]
    topics: tuple[TopicInfo, ...]
    groups: tuple[GroupInfo, ...]
    controller_id: int | None = None


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """What a producer was asked for, checked (see :meth:`KafkaAPI.producer`)."""

    name: str
    acks: Acks
    idempotent: bool
    transactional_id: str | None
    request_timeout: float
    linger_ms: int
    transaction_timeout: float


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """What a consumer was asked for, checked (see :meth:`KafkaAPI.consumer`)."""

    name: str
    group_id: str
    auto_commit: bool
    auto_commit_interval: float
    auto_offset_reset: OffsetReset
    isolation_level: IsolationLevel
    assignment_strategy: AssignmentStrategy
    session_timeout: float
    heartbeat_interval: float
    max_poll_records: int
    max_poll_interval: float


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record on its way to the broker, stamped with mqlab's message id (the first
    header)."""

    topic: str
    value: bytes
    key: bytes | None
    partition: int | None
    headers: tuple[tuple[str, bytes], ...]
    message_id: str


class KafkaProducer(ABC):
    """A producer bound to one configuration (acks, idempotence, transactions).

    :meth:`send` is written here once: it stamps the record with mqlab's message id and
    hands it to the adapter's :meth:`_send`.
    """

    name: str

    def __init__(self, broker: KafkaAPI, name: str) -> None:
        self._adapter = broker
        self.name = name

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

        Args:
            partition: explicit partition; otherwise the default partitioner picks one
                (murmur2 of the key, or sticky for a null key).
            message_id: mqlab id put in the ``mqlab-id`` header (generated when omitted).

        Returns:
            Where the record landed (offset -1 with acks=0: the broker never said).

        Raises:
            NotEnoughReplicas: acks=all and the ISR is below min.insync.replicas.
            ProduceTimedOut: no acknowledgement within the request timeout.
            BrokerError: the producer is closed, or the topic or partition does not exist.
        """
        message_id = message_id or self._adapter.new_message_id()
        stamped = ((MESSAGE_ID_HEADER, message_id.encode()), *headers)
        return await self._send(OutgoingRecord(topic, value, key, partition, stamped, message_id))

    async def send_many(
        self,
        topic: str,
        values: Sequence[bytes],
        *,
        key: bytes | None = None,
        partition: int | None = None,
        window: int = 256,
    ) -> list[RecordMetadata]:
        """Send ``values`` with up to ``window`` records awaiting their acknowledgement at
        once (the client batches them per partition, up to ``linger_ms``), instead of
        waiting for each before the next; where each landed, in order.

        Each record is reported as :meth:`send` reports it (``Produced`` / ``ProduceFailed``).
        After the first failure nothing more is sent; the records in flight are awaited,
        then that failure is raised (records after it were never sent and report nothing).

        Raises:
            BrokerError: a window outside 1..10,000; what :meth:`send` raises.
        """
        check_window(window, "kafka")

        async def one(value: bytes) -> RecordMetadata:
            return await self.send(topic, value, key=key, partition=partition)

        return await send_windowed(values, window, one)

    @abstractmethod
    async def _send(self, record: OutgoingRecord) -> RecordMetadata:
        """Send the stamped record and report it (``Produced`` / ``ProduceFailed``)."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged (or failed)."""

    def not_transactional(self) -> BrokerError:
        """The error for a transaction call on a producer made without a transactional id
        (the same words on the real cluster and the simulator)."""
        return BrokerError(
            f"producer {self.name} has no transactional_id: transactions need "
            "producer(transactional_id=...)"
        )

    async def begin_transaction(self) -> None:
        """Start a transaction (transactional producers only)."""
        raise self.not_transactional()

    async def commit_transaction(self) -> None:
        """Commit the current transaction: its records become visible to read_committed."""
        raise self.not_transactional()

    async def abort_transaction(self) -> None:
        """Abort the current transaction: read_committed consumers never see its records."""
        raise self.not_transactional()

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        """Commit consumer offsets inside the current transaction (consume-transform-produce)."""
        raise self.not_transactional()

    @abstractmethod
    async def close(self) -> None:
        """Flush and release the producer."""


class KafkaConsumer(ABC):
    """A consumer in a group. Polling is explicit so learners see the loop."""

    name: str
    group_id: str

    @abstractmethod
    async def poll(self, *, max_records: int = 100, timeout: float = 1.0) -> list[KafkaRecord]:
        """Fetch up to ``max_records`` (waiting at most ``timeout`` seconds for the first).

        Joins the group and gets an assignment on first use; rebalances happen inside poll.
        """

    @abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (next offset to read per partition), or the current positions."""

    @abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp`` as the broker has it."""

    @abstractmethod
    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move this consumer's position on an assigned partition (replay)."""

    @abstractmethod
    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        """Replay from the log start of ``tps`` (all assigned partitions when empty)."""

    @abstractmethod
    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record this consumer will fetch from ``tp``."""

    @abstractmethod
    def assignment(self) -> frozenset[TopicPartition]:
        """Partitions currently assigned to this consumer."""

    @abstractmethod
    async def behind(self) -> bool:
        """True when the last fetch from an assigned partition showed records past this
        consumer's position (up to the high watermark; the last stable offset under
        read_committed): there is more to read, it just has not arrived. Also True for an
        assigned partition no fetch has answered for yet, or whose position is still being
        looked up (after a rejoin that came with a network cut): not known to be caught up.
        What the consumer has learned, not what the cluster holds now; never raises."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group cleanly (triggers a rebalance for the others)."""

    async def crash(self, point: str = "crash()") -> None:
        """Stop the way a killed process stops: no commit, no LeaveGroup, so the group
        notices only when the session timeout runs out and only then moves the partitions.

        ``point`` says where in the consume loop it happened (for the observation). A client
        inside a live process cannot vanish from a real cluster like this, so this default
        (the real adapter's) closes cleanly instead: a real crash is a worker process killed
        with SIGKILL (:mod:`mqlab.scenarios.worker`). The simulator's consumer does vanish.
        """
        await self.close()


class KafkaAPI(Broker):
    """Kafka in its own vocabulary. See :mod:`mqlab.brokers.kafka.api` for the data types."""

    system = "kafka"
    capabilities = KAFKA_CAPABILITIES

    def __init__(self, **options: Unpack[AdapterOptions]) -> None:
        super().__init__(**options)
        # What this adapter opened and nobody closed yet: closed with it (close_clients).
        self._producers: list[KafkaProducer] = []
        self._consumers: list[KafkaConsumer] = []

    def report_committed(
        self, group_id: str, offsets: Mapping[TopicPartition, int], consumer: str
    ) -> None:
        """Emit one ``Committed`` per partition, in partition order, once the broker has the
        offsets (a consumer's commit, or a transaction's at its commit)."""
        for tp in sorted(offsets):
            self.emit(
                Committed(
                    at=self.bus.now(),
                    broker=self.name,
                    group=group_id,
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=offsets[tp],
                    consumer=consumer,
                )
            )

    async def create_topic(
        self,
        name: str,
        *,
        partitions: int = 1,
        replication_factor: int = 1,
        config: dict[str, str] | None = None,
    ) -> TopicInfo:
        """Create ``name`` (already qualified by the caller) and wait until every partition has
        a leader. ``config`` takes Kafka topic configs, e.g. ``{"min.insync.replicas": "2"}``.

        Raises:
            BrokerError: the topic exists or the cluster has fewer live brokers than
                ``replication_factor``.
        """
        return await self._create_topic(name, partitions, replication_factor, dict(config or {}))

    @abstractmethod
    async def _create_topic(
        self, name: str, partitions: int, replication_factor: int, config: dict[str, str]
    ) -> TopicInfo:
        """CreateTopics, then wait for the leaders."""

    @abstractmethod
    async def delete_topic(self, name: str) -> None:
        """Delete a topic (no error if it is already gone)."""

    @abstractmethod
    async def describe_topic(self, name: str) -> TopicInfo:
        """Leaders, replicas, ISR and offsets of every partition of ``name``."""

    async def producer(
        self,
        *,
        acks: Acks = "all",
        idempotent: bool = False,
        transactional_id: str | None = None,
        name: str | None = None,
        request_timeout: float = 10.0,
        linger_ms: int = 0,
        transaction_timeout: float = 60.0,
    ) -> KafkaProducer:
        """A started producer. ``transactional_id`` implies ``idempotent``.

        ``transaction_timeout`` (transaction.timeout.ms, in seconds): the coordinator aborts a
        transaction left open longer, and the producer is fenced.

        Raises:
            BrokerError: acks other than 0, 1 or "all"; idempotence without acks="all" (as the
                Java client refuses it); no broker or coordinator answers in time.
        """
        if acks not in (0, 1, "all"):
            raise BrokerError(f"kafka: acks must be 0, 1 or 'all', not {acks!r}")
        idempotent = idempotent or transactional_id is not None
        if idempotent and acks != "all":
            raise BrokerError(f"kafka: an idempotent producer needs acks='all' (got {acks!r})")
        settings = ProducerSettings(
            name=name or self.new_client_name("producer"),
            acks=acks,
            idempotent=idempotent,
            transactional_id=transactional_id,
            request_timeout=request_timeout,
            linger_ms=linger_ms,
            transaction_timeout=transaction_timeout,
        )
        producer = await self._open_producer(settings)
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
        max_poll_interval: float = 300.0,
    ) -> KafkaConsumer:
        """A started consumer subscribed to ``topics`` as a member of ``group_id``.

        The defaults are short on purpose (heartbeat 0.3 s, session 6 s): with Kafka's own
        defaults a two-member group takes over 10 s to settle, which hides the lesson.
        ``max_poll_interval`` (max.poll.interval.ms, in seconds): a member that does not poll
        for this long leaves its group (Kafka's default, 5 minutes).

        Raises:
            BrokerError: no topics, an unknown assignment strategy, offset reset policy or
                isolation level; no broker answers in time.
        """
        chosen = (topics,) if isinstance(topics, str) else tuple(topics)
        if not chosen:
            raise BrokerError("kafka: a consumer needs at least one topic")
        if assignment_strategy not in get_args(AssignmentStrategy):
            raise BrokerError(
                f"kafka: unknown assignment strategy {assignment_strategy!r} (range, roundrobin)"
            )
        if auto_offset_reset not in get_args(OffsetReset):
            raise BrokerError(
                f"kafka: auto_offset_reset must be earliest or latest, not {auto_offset_reset!r}"
            )
        if isolation_level not in get_args(IsolationLevel):
            raise BrokerError(f"kafka: unknown isolation level {isolation_level!r}")
        settings = ConsumerSettings(
            name=name or self.new_client_name("consumer"),
            group_id=group_id,
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
        consumer = await self._open_consumer(chosen, settings)
        self._consumers.append(consumer)
        return consumer

    def forget(self, closed: KafkaProducer | KafkaConsumer) -> None:
        """A producer or consumer closed (or crashed): the adapter no longer closes it itself."""
        if closed in self._producers:
            self._producers.remove(closed)
        if closed in self._consumers:
            self._consumers.remove(closed)

    async def close_clients(self) -> None:
        """Close every consumer, then every producer, this adapter opened and nobody closed
        yet (what each adapter's ``_close`` and ``cleanup`` do first: Kafka refuses to delete
        a group that still has members)."""
        for consumer in list(self._consumers):
            await consumer.close()
        for producer in list(self._producers):
            await producer.close()
        self._consumers.clear()
        self._producers.clear()

    @abstractmethod
    async def _open_producer(self, settings: ProducerSettings) -> KafkaProducer:
        """Start a producer with these (checked) settings."""

    @abstractmethod
    async def _open_consumer(
        self, topics: tuple[str, ...], settings: ConsumerSettings
    ) -> KafkaConsumer:
        """Start a consumer of ``topics`` with these (checked) settings; it joins its group
        in the background."""

    @abstractmethod
    async def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """Committed offsets of ``group_id`` as the broker stores them."""

    @abstractmethod
    async def inspect(self) -> KafkaSnapshot:
        """Brokers, this namespace's topics (leaders, ISR, offsets) and groups (lag)."""


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` as a signed 32-bit int (exactly as the Java client)."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length & ~3
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def default_partition(key: bytes, partitions: int) -> int:
    """The Java client's partition for a non-null key: ``toPositive(murmur2(key)) % n``.

    ``toPositive`` masks the sign bit (it is not ``abs``), which is why this is not simply
    ``hash(key) % n`` as the cheat sheet's diagram shortens it.
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
