"""The real Kafka adapter: aiokafka against the lab's KRaft cluster (or any Kafka 3.x).

Layout (the same in every adapter module): errors and helpers, the producer, the consumer,
then the broker class with lifecycle, admin, inspect(), the cluster watcher and cleanup().

What it adds on top of aiokafka, and why:

* **Bounded waits.** aiokafka retries many failures for as long as its request timeout allows
  and an idempotent producer retries forever. Learners must get an answer instead of a hang,
  so every call here runs under a deadline and ends in a :class:`BrokerError` subclass with a
  one-line message: :class:`BrokerUnavailable` from ``connect()``, ``NotEnoughReplicas`` /
  ``ProduceTimedOut`` from ``send()``, :class:`OperationTimedOut` elsewhere.
* **Observations.** Every send, delivery, commit (explicit, automatic or transactional) and
  rebalance is reported on the bus. Kafka itself has no "redelivered" flag, so the adapter
  keeps, per consumer group, the highest offset it has delivered on each partition: a record
  at or below that mark is a redelivery (a consumer died before committing, or someone
  replayed with ``seek``).
* **A cluster watcher.** A background task asks every broker for metadata every
  ``watch_interval`` seconds for as long as the adapter is connected, whether or not anyone
  listens yet: a change can only be reported against the state seen before it, and the cost
  (one small request per broker per half second) is nothing next to a learner's missed
  "broker 2 is down". It emits BrokerDown / BrokerUp (``node="kafka-broker-<id>"``, the lab's
  process and proxy names) when a node leaves or rejoins the cluster's metadata (killed, or
  fenced by the controller) or stops answering this client (a network toxic), and
  LeaderChanged when a partition of this namespace gets a new leader or ISR.
* **Never stranded on dead brokers.** aiokafka asks only the brokers of the last metadata
  answer, which omits fenced ones; after "followers fenced, then the leader killed" a client
  would know only the dead leader and stay stuck until that process returns. Every client the
  adapter creates falls back to the bootstrap addresses when no known broker answers (see
  :func:`mqlab.brokers.kafka.wire.fall_back_to_bootstrap`), and so do the adapter's own
  requests and the watcher.
* **The controller.** In KRaft the metadata answer names a random broker as "controller"; the
  snapshot's ``controller_id`` is the leader of the KRaft quorum instead (DescribeQuorum,
  which brokers forward to the controllers), so with the lab's dedicated controller it is 0
  and no broker is flagged as controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.structs import OffsetAndMetadata
from aiokafka.structs import TopicPartition as AioTopicPartition

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.kafka import wire
from mqlab.brokers.kafka.api import (
    MESSAGE_ID_HEADER,
    Acks,
    AssignmentStrategy,
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
    ProduceTimedOut,
    RecordMetadata,
    TopicInfo,
    TopicPartition,
    default_partition,
)
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    Committed,
    Delivered,
    LeaderChanged,
    Produced,
    ProduceFailed,
    Rebalanced,
)

__all__ = ["KafkaBroker"]

# aiokafka logs connection failures at ERROR level. With no logging configured, Python would
# print them raw on stderr next to the adapter's own one-line error; a NullHandler stops that
# fallback while an application that does configure logging still receives the records.
logging.getLogger("aiokafka").addHandler(logging.NullHandler())

_T = TypeVar("_T")

_ASSIGNORS = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}

_WATCH_NODE_TIMEOUT = 1.5
"""Seconds the watcher waits for one broker's metadata answer before counting it unreachable."""

_REBOOTSTRAP_TIMEOUT = 2.0
"""Seconds to wait for any bootstrap address to answer once no known broker does."""

_ALWAYS_REPORTED_CONFIGS = ("min.insync.replicas",)
"""Topic configs reported in TopicInfo.config even when inherited from the broker default:
acks=all lessons hinge on min.insync.replicas, whatever set it."""


def _error_text(error: BaseException) -> str:
    """A short, one-line description of an aiokafka (or OS) error."""
    if isinstance(error, NodeNotReadyError):  # aiokafka's wording is long and says less
        return "broker not reachable"
    if isinstance(error, RequestTimedOutError | TimeoutError):
        return "no answer in time"
    name = type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not text:
        return name
    return text if name in text else f"{name}: {text}"


def _key_text(key: bytes | None) -> str | None:
    """A record key as observations carry it (text; undecodable bytes replaced)."""
    return None if key is None else key.decode("utf-8", errors="replace")


def _node_name(node_id: int) -> str:
    """How observations name a broker: ``kafka-broker-<node id>``.

    The lab names its broker processes and their Toxiproxy proxies the same way (node id N is
    ``kafka-broker-N``), and so does the simulator, so a BrokerDown lines up with the fault
    that caused it (FaultInjected targets those names) on a real cluster and on ``sim``.
    """
    return f"kafka-broker-{node_id}"


def _ours(tp: AioTopicPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _theirs(tp: TopicPartition) -> AioTopicPartition:
    return AioTopicPartition(tp.topic, tp.partition)


@dataclass(slots=True)
class _NodeState:
    """What the watcher last knew about one broker."""

    host: str
    port: int
    registered: bool = True
    reachable: bool = True

    @property
    def up(self) -> bool:
        return self.registered and self.reachable


# --- producer -----------------------------------------------------------------------------


class _Producer(KafkaProducer):
    """An :class:`AIOKafkaProducer` with bounded sends, error mapping and observations."""

    def __init__(
        self,
        broker: KafkaBroker,
        producer: AIOKafkaProducer,
        *,
        name: str,
        acks: Acks,
        idempotent: bool,
        transactional: bool,
        request_timeout: float,
    ) -> None:
        self.name = name
        self._broker = broker
        self._producer = producer
        self._acks = acks
        self._idempotent = idempotent
        self._transactional = transactional
        self._request_timeout = request_timeout
        self._pending_offsets: list[tuple[str, dict[TopicPartition, int]]] = []
        self._closed = False

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
        if self._closed:
            raise BrokerError(f"kafka: producer {self.name} is closed")
        message_id = message_id or self._broker.new_message_id()
        all_headers = [(MESSAGE_ID_HEADER, message_id.encode()), *headers]
        broker = self._broker
        try:
            metadata = await self._send(topic, value, key, partition, all_headers)
        except BrokerError as error:
            broker.emit(
                ProduceFailed(
                    at=broker.bus.now(),
                    broker=broker.name,
                    destination=topic,
                    message_id=message_id,
                    error=str(error),
                    producer=self.name,
                    key=_key_text(key),
                )
            )
            raise
        broker.emit(
            Produced(
                at=broker.bus.now(),
                broker=broker.name,
                destination=topic,
                message_id=message_id,
                key=_key_text(key),
                partition=metadata.partition,
                position=metadata.offset if metadata.offset >= 0 else None,
                producer=self.name,
            )
        )
        return metadata

    async def _send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int | None,
        headers: list[tuple[str, bytes]],
    ) -> RecordMetadata:
        loop = asyncio.get_running_loop()
        # One deadline for the whole send: waiting for metadata and buffer space, then for the
        # acknowledgement. The extra second lets aiokafka's own expiry (request_timeout after
        # the batch was created) report its more precise error first; an idempotent producer
        # has no such expiry (it retries until it succeeds), so there the deadline decides.
        deadline = loop.time() + self._request_timeout + 1.0
        where = f"{topic}[{partition}]" if partition is not None else topic
        future = None
        try:
            async with asyncio.timeout_at(deadline):
                if partition is not None:
                    known = await self._producer.partitions_for(topic)
                    if partition not in known:
                        raise BrokerError(
                            f"topic {topic} has no partition {partition} "
                            f"(it has {len(known)}: 0..{len(known) - 1})"
                        )
                # Cancelling send() while it queues withdraws the record. Once queued, the
                # timeout only cancels this wait: the record may still be written later (a
                # lost acknowledgement is how duplicates happen, which lessons show).
                future = await self._producer.send(
                    topic, value, key=key, partition=partition, headers=headers
                )
                record = await future
        except TimeoutError:
            if future is None:
                raise ProduceTimedOut(
                    f"kafka: could not even queue a record for {where} within "
                    f"{self._request_timeout:g}s (no metadata for the topic: is the cluster up?)"
                ) from None
            raise await self._diagnose_timeout(topic, key, partition) from None
        except UnknownTopicOrPartitionError:
            raise BrokerError(f"kafka: topic {topic} does not exist") from None
        except KafkaError as error:
            raise self._translate(error, where) from error
        return RecordMetadata(topic=record.topic, partition=record.partition, offset=record.offset)

    def _translate(self, error: KafkaError, where: str) -> BrokerError:
        if isinstance(error, NotEnoughReplicasError | NotEnoughReplicasAfterAppendError):
            return NotEnoughReplicas(
                f"kafka: {where}: acks=all refused, the partition has fewer in-sync replicas "
                f"than min.insync.replicas ({_error_text(error)})"
            )
        if isinstance(
            error,
            KafkaTimeoutError | RequestTimedOutError | KafkaConnectionError | NodeNotReadyError,
        ):
            return ProduceTimedOut(
                f"kafka: {where}: not acknowledged within {self._request_timeout:g}s "
                f"({_error_text(error)})"
            )
        return BrokerError(f"kafka: send to {where} failed: {_error_text(error)}")

    async def _diagnose_timeout(
        self, topic: str, key: bytes | None, partition: int | None
    ) -> BrokerError:
        """Explain a send that got no answer, from the partition's state in the metadata."""
        waited = f"{self._request_timeout:g}s"
        try:
            # Bounded tighter than a normal call: the learner is already waiting.
            async with asyncio.timeout(3.0):
                info = await self._broker.describe_topic(topic)
        except (BrokerError, TimeoutError) as error:
            return ProduceTimedOut(
                f"kafka: {topic}: not acknowledged within {waited}, and the cluster does not "
                f"answer metadata requests either ({error})"
            )
        if partition is None and key is not None and info.partitions:
            partition = default_partition(key, len(info.partitions))
        candidates = [p for p in info.partitions if partition is None or p.partition == partition]
        min_isr = int(info.config.get("min.insync.replicas", "1"))
        for p in candidates:
            if p.leader < 0:
                return ProduceTimedOut(
                    f"kafka: {topic}[{p.partition}]: not acknowledged within {waited}: "
                    "the partition has no leader"
                )
            if self._acks == "all" and len(p.isr) < min_isr:
                return NotEnoughReplicas(
                    f"kafka: {topic}[{p.partition}]: acks=all not acknowledged within {waited}: "
                    f"ISR {list(p.isr)} is smaller than min.insync.replicas={min_isr}"
                )
        leaders = sorted({p.leader for p in candidates})
        retrying = " (the idempotent producer keeps retrying)" if self._idempotent else ""
        return ProduceTimedOut(
            f"kafka: {topic}: not acknowledged within {waited} by leader broker "
            f"{', '.join(map(str, leaders))}{retrying}"
        )

    async def flush(self) -> None:
        await self._broker.bounded(self._producer.flush(), "flush")

    async def begin_transaction(self) -> None:
        self._require_transactional()
        await self._broker.bounded(self._producer.begin_transaction(), "begin_transaction")
        self._pending_offsets.clear()

    async def commit_transaction(self) -> None:
        self._require_transactional()
        await self._broker.bounded(self._producer.commit_transaction(), "commit_transaction")
        # Offsets sent inside the transaction are committed only now, atomically with it.
        broker = self._broker
        for group_id, offsets in self._pending_offsets:
            for tp, offset in sorted(offsets.items()):
                broker.emit(
                    Committed(
                        at=broker.bus.now(),
                        broker=broker.name,
                        group=group_id,
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=offset,
                        consumer=self.name,
                    )
                )
        self._pending_offsets.clear()

    async def abort_transaction(self) -> None:
        self._require_transactional()
        await self._broker.bounded(self._producer.abort_transaction(), "abort_transaction")
        self._pending_offsets.clear()

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        self._require_transactional()
        await self._broker.bounded(
            self._producer.send_offsets_to_transaction(
                {_theirs(tp): offset for tp, offset in offsets.items()}, group_id
            ),
            "send_offsets_to_transaction",
        )
        self._pending_offsets.append((group_id, dict(offsets)))

    def _require_transactional(self) -> None:
        if not self._transactional:
            raise BrokerError(f"producer {self.name} has no transactional_id")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker.forget_producer(self)
        # stop() flushes; against a dead cluster that could wait for ever, so it is bounded
        # (records still unacknowledged then are dropped, as the learner's error says).
        with contextlib.suppress(TimeoutError, KafkaError, OSError):
            async with asyncio.timeout(self._request_timeout):
                await self._producer.stop()


# --- consumer -----------------------------------------------------------------------------


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reports every new assignment of one consumer as a Rebalanced observation."""

    def __init__(self, consumer: _Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to report yet: the new assignment follows in on_partitions_assigned."""

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._consumer.report_assignment(frozenset(_ours(tp) for tp in assigned))


class _Consumer(KafkaConsumer):
    """An :class:`AIOKafkaConsumer` in a group, with observations and bounded calls."""

    def __init__(
        self,
        broker: KafkaBroker,
        consumer: AIOKafkaConsumer,
        *,
        name: str,
        group_id: str,
        request_timeout: float,
    ) -> None:
        self.name = name
        self.group_id = group_id
        self._broker = broker
        self._consumer = consumer
        self._request_timeout = request_timeout
        self._closed = False

    def watch_commits(self) -> None:
        """Report every offset commit aiokafka makes for this consumer.

        Auto-commits, the commit before a rebalance and the last commit on close all go
        through the group coordinator's ``_do_commit_offsets``; wrapping it on this instance
        is the one place that sees each of them exactly once, after the broker accepted it.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        original = getattr(coordinator, "_do_commit_offsets", None)
        if coordinator is None or original is None:
            return

        async def commit_and_report(assignment: Any, offsets: Any) -> Any:
            result = await original(assignment, offsets)
            self._report_commits(
                {_ours(tp): int(meta.offset) for tp, meta in (offsets or {}).items()}
            )
            return result

        coordinator._do_commit_offsets = commit_and_report

    def _report_commits(self, offsets: dict[TopicPartition, int]) -> None:
        broker = self._broker
        for tp, offset in sorted(offsets.items()):
            broker.emit(
                Committed(
                    at=broker.bus.now(),
                    broker=broker.name,
                    group=self.group_id,
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=offset,
                    consumer=self.name,
                )
            )

    def report_assignment(self, assignment: frozenset[TopicPartition]) -> None:
        """Emit Rebalanced for this member's new assignment (called by the listener)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        generation = getattr(coordinator, "generation", 0)
        broker = self._broker
        broker.emit(
            Rebalanced(
                at=broker.bus.now(),
                broker=broker.name,
                group=self.group_id,
                generation=generation if isinstance(generation, int) and generation > 0 else 0,
                assignment=((self.name, tuple(str(tp) for tp in sorted(assignment))),),
                reason=f"{self.name} joined generation {generation}",
            )
        )

    async def poll(self, *, max_records: int = 100, timeout: float = 1.0) -> list[KafkaRecord]:
        if self._closed:
            raise BrokerError(f"kafka: consumer {self.name} is closed")
        batches = await self._broker.bounded(
            self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records),
            f"poll by {self.name}",
            timeout=timeout + self._request_timeout,
        )
        records: list[KafkaRecord] = []
        for tp, messages in batches.items():
            for message in messages:
                record = KafkaRecord(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=message.offset,
                    key=message.key,
                    value=message.value if message.value is not None else b"",
                    headers=tuple((name, bytes(value)) for name, value in message.headers),
                    timestamp_ms=message.timestamp,
                )
                self._broker.report_delivery(self, record)
                records.append(record)
        return records

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        explicit = None
        if offsets is not None:
            explicit = {
                _theirs(tp): OffsetAndMetadata(offset, "") for tp, offset in offsets.items()
            }
        # Committed observations come from watch_commits(), once the broker accepted them.
        await self._broker.bounded(self._consumer.commit(explicit), f"commit by {self.name}")

    async def committed(self, tp: TopicPartition) -> int | None:
        result = await self._broker.bounded(
            self._consumer.committed(_theirs(tp)), f"committed({tp})"
        )
        return None if result is None else int(result)

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(_theirs(tp), offset)
        except (IllegalStateError, AssertionError, ValueError) as error:
            raise BrokerError(
                f"kafka: {self.name} cannot seek {tp} to {offset}: partition not assigned "
                f"to it ({_error_text(error)})"
            ) from error

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        targets = [_theirs(tp) for tp in tps] if tps else list(self._consumer.assignment())
        if not targets:
            return
        try:
            await self._broker.bounded(
                self._consumer.seek_to_beginning(*targets), "seek_to_beginning"
            )
        except BrokerError as error:
            raise BrokerError(
                f"kafka: {self.name} cannot seek to the beginning of "
                f"{', '.join(str(_ours(tp)) for tp in targets)}: {error}"
            ) from error

    async def position(self, tp: TopicPartition) -> int:
        try:
            return int(
                await self._broker.bounded(self._consumer.position(_theirs(tp)), f"position({tp})")
            )
        except BrokerError as error:
            raise BrokerError(f"kafka: {self.name} has no position on {tp}: {error}") from error

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(_ours(tp) for tp in self._consumer.assignment())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker.forget_consumer(self)
        # stop() sends LeaveGroup, so the others rebalance at once instead of after the
        # session timeout; bounded because a dead coordinator would make it wait.
        with contextlib.suppress(TimeoutError, KafkaError, OSError):
            async with asyncio.timeout(self._request_timeout):
                await self._consumer.stop()


# --- the broker ---------------------------------------------------------------------------


class KafkaBroker(KafkaAPI):
    """Kafka through aiokafka, in Kafka's vocabulary (see :class:`KafkaAPI`).

    Args:
        request_timeout: seconds any single operation (admin call, send, commit, close) may
            take before it fails with a BrokerError; producers default to the value they are
            given in :meth:`producer`.
        watch_interval: seconds between two metadata rounds of the cluster watcher.
    """

    def __init__(
        self,
        *,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        watch_interval: float = 0.5,
    ) -> None:
        super().__init__(
            bus=bus, namespace=namespace, endpoints=endpoints, connect_timeout=connect_timeout
        )
        self.request_timeout = request_timeout
        self.watch_interval = watch_interval
        self._admin: AIOKafkaAdminClient | None = None
        self._watch_client: AIOKafkaClient | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._nodes: dict[int, _NodeState] = {}
        self._partitions: dict[tuple[str, int], wire.PartitionState] = {}
        self._producers: list[_Producer] = []
        self._consumers: list[_Consumer] = []
        self._created_topics: set[str] = set()
        self._used_groups: set[str] = set()
        self._delivered_up_to: dict[str, dict[tuple[str, int], int]] = {}
        self._redeliveries: dict[tuple[str, str, int, int], int] = {}
        self._message_ids = itertools.count(1)
        self._producer_numbers = itertools.count(1)
        self._consumer_numbers = itertools.count(1)

    @property
    def bootstrap(self) -> str:
        """The bootstrap addresses (``host:port,...``) this adapter connects to."""
        return self.endpoints.kafka_bootstrap

    # -- small helpers shared by producers and consumers -----------------------------------

    def new_message_id(self) -> str:
        """A fresh mqlab message id for a record sent without one."""
        return f"{self.namespace}-{next(self._message_ids)}"

    async def bounded(
        self, awaitable: Awaitable[_T], what: str, timeout: float | None = None
    ) -> _T:
        """Await ``awaitable`` for at most ``timeout`` (default: request_timeout) seconds.

        Raises:
            OperationTimedOut: it did not finish in time.
            BrokerError: aiokafka raised; the message names the operation and the error.
        """
        seconds = self.request_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(seconds):
                return await awaitable
        except TimeoutError:
            raise OperationTimedOut(
                f"kafka: {what} did not finish within {seconds:g}s (cluster at {self.bootstrap})"
            ) from None
        except (KafkaError, OSError) as error:
            raise BrokerError(f"kafka: {what} failed: {_error_text(error)}") from error
        except (IllegalStateError, AssertionError) as error:  # aiokafka's usage errors
            raise BrokerError(f"kafka: {what}: {_error_text(error)}") from error

    def forget_producer(self, producer: _Producer) -> None:
        if producer in self._producers:
            self._producers.remove(producer)

    def forget_consumer(self, consumer: _Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    def report_delivery(self, consumer: _Consumer, record: KafkaRecord) -> None:
        """Emit Delivered, flagging a redelivery when this group already got that offset."""
        marks = self._delivered_up_to.setdefault(consumer.group_id, {})
        where = (record.topic, record.partition)
        redelivered = record.offset <= marks.get(where, -1)
        count = 1
        if redelivered:
            key = (consumer.group_id, record.topic, record.partition, record.offset)
            count = self._redeliveries.get(key, 1) + 1
            self._redeliveries[key] = count
        else:
            marks[where] = record.offset
        self.emit(
            Delivered(
                at=self.bus.now(),
                broker=self.name,
                destination=record.topic,
                message_id=record.message_id,
                consumer=consumer.name,
                key=_key_text(record.key),
                partition=record.partition,
                position=record.offset,
                delivery_count=count,
                redelivered=redelivered,
            )
        )

    @property
    def _client(self) -> AIOKafkaClient:
        if self._admin is None:
            raise BrokerError("kafka: the adapter is not connected (call connect() first)")
        client: AIOKafkaClient = self._admin._client
        return client

    def _node_order(self) -> list[int]:
        """Nodes to ask, the ones believed up first (shuffled so load spreads).

        Every node the client knows is in the list: the watcher's states only decide the
        order, they may lag behind the client's metadata (a node the watcher last saw fenced).
        """
        up = [n for n, state in self._nodes.items() if state.up]
        down = [n for n, state in self._nodes.items() if not state.up and state.registered]
        random.shuffle(up)
        known = {b.nodeId for b in self._client.cluster.brokers()}
        ordered = [n for n in up + down if n in known]
        return ordered + sorted(known.difference(ordered))

    async def _ask_any(self, what: str, ask: Any) -> Any:
        """Run ``ask(node_id)`` against the first node that answers (bounded).

        When no known node answers, the broker list itself may be stale (only dead brokers
        left in it): the client's metadata is then refreshed from the bootstrap addresses and
        the nodes it did not know yet are asked too.
        """
        failures: dict[str, list[str]] = {}

        async def first_answer() -> Any:
            asked: set[int] = set()
            rebootstrapped = False
            while True:
                for node_id in self._node_order():
                    if node_id in asked:
                        continue
                    asked.add(node_id)
                    try:
                        async with asyncio.timeout(min(self.request_timeout, 3.0)):
                            return await ask(node_id)
                    except (KafkaError, OSError, TimeoutError) as error:
                        failures.setdefault(_error_text(error), []).append(str(node_id))
                if rebootstrapped or not await wire.rebootstrap(self._client, _REBOOTSTRAP_TIMEOUT):
                    break
                rebootstrapped = True
            why = "; ".join(
                f"node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)}: {text}"
                for text, nodes in failures.items()
            )
            raise BrokerError(f"kafka: {what}: no broker answered ({why or 'none known'})")

        return await self.bounded(first_answer(), what)

    async def _metadata(self, topics: list[str] | None = None) -> wire.ClusterView:
        async def ask(node_id: int) -> wire.ClusterView:
            view, response = await wire.fetch_metadata(self._client, node_id, topics)
            if topics is None:
                self._client.cluster.update_metadata(response)
            return view

        view: wire.ClusterView = await self._ask_any("metadata", ask)
        return view

    # -- lifecycle -------------------------------------------------------------------------

    async def _connect(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.namespace}-admin",
            request_timeout_ms=int(self.request_timeout * 1000),
        )
        wire.fall_back_to_bootstrap(admin._client, _REBOOTSTRAP_TIMEOUT)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await admin.start()
                self._admin = admin
                view = await self._metadata()
                if not view.brokers:
                    raise BrokerError("the cluster reports no live brokers")
        except (TimeoutError, KafkaError, OSError, BrokerError) as error:
            self._admin = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await admin.close()
            detail = (
                f"no answer within {self.connect_timeout:g}s"
                if isinstance(error, TimeoutError)
                else _error_text(error)
            )
            raise BrokerUnavailable("kafka", self.bootstrap, detail) from None
        self._nodes = {
            node_id: _NodeState(host, port) for node_id, (host, port) in view.brokers.items()
        }
        self._remember_partitions(view, emit=False)
        self._watch_client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.namespace}-watcher",
            # A short request timeout recycles a connection stuck behind a network toxic or a
            # paused broker quickly, so the next round asks it afresh.
            request_timeout_ms=int(_WATCH_NODE_TIMEOUT * 1000),
        )
        wire.fall_back_to_bootstrap(self._watch_client, _REBOOTSTRAP_TIMEOUT)
        self._watcher = asyncio.create_task(self._watch(), name=f"{self.namespace}-kafka-watcher")

    async def _close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        for producer in list(self._producers):
            await producer.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        for closable in (self._watch_client, self._admin):
            if closable is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):
                        await closable.close()
        self._watch_client = None
        self._admin = None

    # -- topics ----------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        *,
        partitions: int = 1,
        replication_factor: int = 1,
        config: dict[str, str] | None = None,
    ) -> TopicInfo:
        timeout_ms = int(self.request_timeout * 1000)

        async def ask(node_id: int) -> tuple[int, str | None]:
            return await wire.create_topic(
                self._client,
                node_id,
                name,
                partitions,
                replication_factor,
                dict(config or {}),
                timeout_ms,
            )

        error_code, message = await self._ask_any(f"create topic {name}", ask)
        if error_code != 0:
            error = for_code(error_code)
            if error is TopicAlreadyExistsError:
                raise BrokerError(f"kafka: topic {name} already exists")
            raise BrokerError(f"kafka: cannot create topic {name}: {message or error.__name__}")
        self._created_topics.add(name)
        await self._wait_for_leaders(name, partitions)
        return await self.describe_topic(name)

    async def _wait_for_leaders(self, name: str, partitions: int) -> None:
        """Wait until every live broker reports a leader for every partition of ``name``."""

        def complete(view: wire.ClusterView) -> bool:
            states = view.partitions(name)
            return len(states) == partitions and all(s.leader >= 0 for s in states.values())

        await self._until_every_broker_agrees([name], complete, f"wait for leaders of {name}")

    async def _until_every_broker_agrees(
        self, topics: list[str], condition: Callable[[wire.ClusterView], bool], what: str
    ) -> None:
        """Poll every live broker's metadata for ``topics`` until ``condition`` holds for all.

        Each broker learns about topic changes from the controller on its own schedule; a
        client asking one that has not caught up would be told a new topic does not exist
        (or see a deleted one), so creation and deletion wait for all of them (bounded).
        """

        async def agreed() -> None:
            while True:
                view = await self._metadata(topics)
                if condition(view):
                    answers = await asyncio.gather(
                        *(wire.fetch_metadata(self._client, node, topics) for node in view.brokers),
                        return_exceptions=True,
                    )
                    if all(
                        not isinstance(answer, BaseException) and condition(answer[0])
                        for answer in answers
                    ):
                        return
                await asyncio.sleep(0.05)

        await self.bounded(agreed(), what)

    async def delete_topic(self, name: str) -> None:
        await self._delete_topics([name])
        self._created_topics.discard(name)

    async def _delete_topics(self, names: list[str]) -> None:
        if not names:
            return
        timeout_ms = int(self.request_timeout * 1000)

        async def ask(node_id: int) -> dict[str, int]:
            return await wire.delete_topics(self._client, node_id, names, timeout_ms)

        results = await self._ask_any(f"delete topics {', '.join(names)}", ask)
        for topic, error_code in sorted(results.items()):
            if error_code not in (0, wire.UNKNOWN_TOPIC_OR_PARTITION):
                raise BrokerError(
                    f"kafka: cannot delete topic {topic}: {for_code(error_code).__name__}"
                )

        await self._until_every_broker_agrees(
            names,
            lambda view: not any(name in view.topics for name in names),
            f"wait for deletion of {', '.join(names)}",
        )

    async def describe_topic(self, name: str) -> TopicInfo:
        view = await self._metadata([name])
        if name not in view.topics:
            raise BrokerError(f"kafka: topic {name} does not exist")
        (info,) = await self._topic_infos(view, [name])
        return info

    async def _topic_infos(self, view: wire.ClusterView, names: list[str]) -> list[TopicInfo]:
        """TopicInfo for ``names`` (all in ``view``): offsets and configs fetched in bulk."""
        leaders = {
            (name, p): state.leader
            for name in names
            for p, state in view.partitions(name).items()
            if state.leader >= 0
        }
        client = self._client
        earliest, latest, configs = await self.bounded(
            asyncio.gather(
                wire.list_offsets(client, leaders, wire.EARLIEST),
                wire.list_offsets(client, leaders, wire.LATEST),
                self._topic_configs(names),
            ),
            "describe topics",
        )
        infos = []
        for name in names:
            states = view.partitions(name)
            partitions = tuple(
                PartitionInfo(
                    partition=p,
                    leader=state.leader,
                    replicas=state.replicas,
                    isr=state.isr,
                    log_start=earliest.get((name, p), 0),
                    # ListOffsets(latest) answers the high watermark; the leader's log end
                    # offset is not exposed to clients, so both fields carry that answer.
                    high_watermark=latest.get((name, p), 0),
                    log_end=latest.get((name, p), 0),
                )
                for p, state in sorted(states.items())
            )
            replication = len(partitions[0].replicas) if partitions else 0
            infos.append(
                TopicInfo(
                    name=name,
                    partitions=partitions,
                    replication_factor=replication,
                    config=configs.get(name, {}),
                )
            )
        return infos

    async def _topic_configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Topic-level overrides of ``names`` plus the always-reported effective configs."""
        if not names:
            return {}

        async def ask(node_id: int) -> dict[str, dict[str, str]]:
            return await wire.topic_configs(self._client, node_id, names, _ALWAYS_REPORTED_CONFIGS)

        configs: dict[str, dict[str, str]] = await self._ask_any("describe topic configs", ask)
        return configs

    # -- producers and consumers -----------------------------------------------------------

    async def producer(
        self,
        *,
        acks: Acks = "all",
        idempotent: bool = False,
        transactional_id: str | None = None,
        name: str | None = None,
        request_timeout: float = 10.0,
        linger_ms: int = 0,
    ) -> KafkaProducer:
        name = name or f"producer-{next(self._producer_numbers)}"
        idempotent = idempotent or transactional_id is not None
        if idempotent and acks != "all":
            raise BrokerError(f"kafka: an idempotent producer needs acks='all' (got {acks!r})")
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.namespace}-{name}",
            acks=acks,
            enable_idempotence=idempotent,
            transactional_id=transactional_id,
            request_timeout_ms=int(request_timeout * 1000),
            linger_ms=linger_ms,
        )
        wire.fall_back_to_bootstrap(producer.client, _REBOOTSTRAP_TIMEOUT)
        await self._start_client(producer.start(), producer.stop, f"producer {name}")
        wrapped = _Producer(
            self,
            producer,
            name=name,
            acks=acks,
            idempotent=idempotent,
            transactional=transactional_id is not None,
            request_timeout=request_timeout,
        )
        self._producers.append(wrapped)
        return wrapped

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
    ) -> KafkaConsumer:
        if assignment_strategy not in _ASSIGNORS:
            raise BrokerError(
                f"kafka: unknown assignment strategy {assignment_strategy!r} "
                f"(known: {', '.join(_ASSIGNORS)})"
            )
        name = name or f"consumer-{next(self._consumer_numbers)}"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            # The member id the broker assigns is "<client_id>-<uuid>", and both assignors
            # order members by it: naming the client after the consumer makes the assignment
            # predictable from the names (and readable in Kafka's own tools).
            client_id=name,
            group_id=group_id,
            enable_auto_commit=auto_commit,
            auto_commit_interval_ms=int(auto_commit_interval * 1000),
            auto_offset_reset=auto_offset_reset,
            isolation_level=isolation_level,
            partition_assignment_strategy=(_ASSIGNORS[assignment_strategy],),
            # Short on purpose (see KafkaAPI.consumer): a heartbeat every 0.3 s notices a
            # rebalance within a heartbeat, and a 6 s session lets a crashed member's
            # partitions move on within seconds instead of Kafka's default 45 s.
            session_timeout_ms=int(session_timeout * 1000),
            heartbeat_interval_ms=int(heartbeat_interval * 1000),
            max_poll_records=max_poll_records,
            request_timeout_ms=int(self.request_timeout * 1000),
        )
        wire.fall_back_to_bootstrap(consumer._client, _REBOOTSTRAP_TIMEOUT)
        await self._start_client(consumer.start(), consumer.stop, f"consumer {name}")
        wrapped = _Consumer(
            self, consumer, name=name, group_id=group_id, request_timeout=self.request_timeout
        )
        wrapped.watch_commits()
        # Subscribing after start() keeps connect bounded: the group join then happens in the
        # background and the first polls return nothing until the assignment arrives.
        try:
            consumer.subscribe(list(topics), listener=_RebalanceListener(wrapped))
        except (KafkaError, TypeError, ValueError) as error:
            await wrapped.close()
            raise BrokerError(
                f"kafka: {name} cannot subscribe to {list(topics)}: {error}"
            ) from error
        self._consumers.append(wrapped)
        self._used_groups.add(group_id)
        return wrapped

    async def _start_client(self, start: Awaitable[Any], stop: Any, what: str) -> None:
        """Start an aiokafka client within connect_timeout, or stop it and explain."""
        self._require_admin()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await start
        except (TimeoutError, KafkaError, OSError) as error:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await stop()
            detail = (
                f"{what} got no answer within {self.connect_timeout:g}s"
                if isinstance(error, TimeoutError)
                else f"{what}: {_error_text(error)}"
            )
            raise BrokerUnavailable("kafka", self.bootstrap, detail) from None

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        coordinator = await self._coordinator(group_id)
        offsets = await self.bounded(
            wire.committed_offsets(self._client, coordinator, group_id),
            f"offsets of group {group_id}",
        )
        return {TopicPartition(t, p): offset for (t, p), offset in offsets.items()}

    async def _coordinator(self, group_id: str) -> int:
        async def ask(node_id: int) -> int:
            return await wire.find_coordinator(self._client, node_id, group_id)

        coordinator: int = await self._ask_any(f"find the coordinator of {group_id}", ask)
        return coordinator

    def _require_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise BrokerError("kafka: the adapter is not connected (call connect() first)")
        return self._admin

    # -- inspect ---------------------------------------------------------------------------

    def _in_namespace(self, name: str) -> bool:
        return name.startswith(f"{self.namespace}-")

    async def inspect(self) -> KafkaSnapshot:
        view = await self._metadata(None)
        topic_names = sorted(
            name for name in view.topics if self._in_namespace(name) or name in self._created_topics
        )
        topics = await self._topic_infos(view, topic_names)
        high_watermarks = {
            (topic.name, p.partition): p.high_watermark
            for topic in topics
            for p in topic.partitions
        }
        group_ids = sorted(
            group
            for group in await self.bounded(
                wire.list_groups(self._client, view.brokers), "list consumer groups"
            )
            if self._in_namespace(group) or group in self._used_groups
        )
        groups = [await self._group_info(group_id, high_watermarks) for group_id in group_ids]

        async def ask_quorum(node_id: int) -> int | None:
            return await wire.quorum_leader(self._client, node_id)

        try:
            controller_id: int | None = await self._ask_any("describe the quorum", ask_quorum)
        except BrokerError:
            controller_id = None
        known = {node_id: (state.host, state.port) for node_id, state in self._nodes.items()}
        known.update(view.brokers)
        brokers = tuple(
            KafkaNode(
                node_id=node_id,
                host=host,
                port=port,
                alive=node_id in view.brokers,
                controller=node_id == controller_id,
            )
            for node_id, (host, port) in sorted(known.items())
        )
        return KafkaSnapshot(
            brokers=brokers, topics=tuple(topics), groups=tuple(groups), controller_id=controller_id
        )

    async def _group_info(
        self, group_id: str, high_watermarks: dict[tuple[str, int], int]
    ) -> GroupInfo:
        coordinator = await self._coordinator(group_id)
        client = self._client
        state, committed = await self.bounded(
            asyncio.gather(
                wire.describe_group(client, coordinator, group_id),
                wire.committed_offsets(client, coordinator, group_id),
            ),
            f"describe group {group_id}",
        )
        members = tuple(
            GroupMember(
                member_id=member.member_id,
                client_id=member.client_id,
                assignment=tuple(TopicPartition(t, p) for t, p in member.assignment),
            )
            for member in sorted(state.members, key=lambda m: m.member_id)
        )
        partitions = set(committed)
        partitions.update((tp.topic, tp.partition) for m in members for tp in m.assignment)
        outside = sorted({topic for topic, p in partitions if (topic, p) not in high_watermarks})
        if outside:  # the group reads topics outside this namespace: ask their leaders too
            view = await self._metadata(outside)
            leaders = {
                (topic, p): state.leader
                for topic in outside
                for p, state in view.partitions(topic).items()
                if state.leader >= 0
            }
            high_watermarks = {
                **high_watermarks,
                **await self.bounded(
                    wire.list_offsets(client, leaders, wire.LATEST), "list offsets"
                ),
            }
        offsets = tuple(
            GroupOffset(
                topic=topic,
                partition=partition,
                committed=committed.get((topic, partition)),
                high_watermark=high_watermarks.get((topic, partition), 0),
            )
            for topic, partition in sorted(partitions)
        )
        return GroupInfo(
            group_id=group_id,
            state=state.state,
            members=members,
            offsets=offsets,
            protocol=state.protocol,
        )

    # -- the cluster watcher ---------------------------------------------------------------

    async def _watch(self) -> None:
        """Every watch_interval: ask each broker for metadata and report what changed."""
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                await self._watch_round()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the watcher must outlive any single bad round
                logging.getLogger(__name__).debug("kafka watcher round failed: %r", error)

    async def _watch_round(self) -> None:
        client = self._watch_client
        if client is None:
            return
        if not client.cluster.brokers():
            # Not bootstrapped yet, or every broker vanished: start from the bootstrap list.
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                async with asyncio.timeout(_WATCH_NODE_TIMEOUT * 2):
                    await client.bootstrap()

        async def ask_every_node() -> dict[int, tuple[wire.ClusterView, Any] | None]:
            known_to_client = {b.nodeId for b in client.cluster.brokers()}
            candidates = sorted(
                known_to_client | {n for n, s in self._nodes.items() if s.registered}
            )

            async def ask(node_id: int) -> tuple[wire.ClusterView, Any] | None:
                if node_id not in known_to_client:
                    return None
                try:
                    async with asyncio.timeout(_WATCH_NODE_TIMEOUT):
                        return await wire.fetch_metadata(client, node_id, None)
                except (KafkaError, OSError, TimeoutError):
                    return None

            answers = await asyncio.gather(*(ask(n) for n in candidates))
            return dict(zip(candidates, answers, strict=True))

        answers = await ask_every_node()
        if not any(answers.values()) and await wire.rebootstrap(client, _REBOOTSTRAP_TIMEOUT):
            # No known broker answered, yet one of the bootstrap addresses did: the client's
            # list held only dead brokers (the live ones were fenced when it was last
            # refreshed). Ask again with the fresh list rather than report the cluster down.
            answers = await ask_every_node()
        answered = sorted(n for n, answer in answers.items() if answer is not None)
        if not answered:
            self._report_nodes(None, set())
            return
        # The lowest answering node's view: a stable choice, so two brokers that are a few
        # milliseconds apart in applying a change do not make leaders seem to flap.
        reply = answers[answered[0]]
        assert reply is not None
        view, response = reply
        client.cluster.update_metadata(response)
        if self._admin is not None:  # keeps the admin client's idea of the brokers fresh too
            self._client.cluster.update_metadata(response)
        self._report_nodes(view, set(answered))
        self._remember_partitions(view, emit=True)

    def _report_nodes(self, view: wire.ClusterView | None, answered: set[int]) -> None:
        """Update node states from one round and emit BrokerDown / BrokerUp for changes."""
        registered = view.brokers if view is not None else {}
        for node_id, (host, port) in registered.items():
            self._nodes.setdefault(node_id, _NodeState(host, port, registered=False))
        for node_id, state in sorted(self._nodes.items()):
            was_up = state.up
            if view is not None:
                state.registered = node_id in registered
                if node_id in registered:
                    state.host, state.port = registered[node_id]
            state.reachable = node_id in answered
            if was_up and not state.up:
                if view is None:
                    detail = "no broker of the cluster answers this client"
                elif not state.registered:
                    detail = "left the cluster metadata (stopped, or fenced by the controller)"
                else:
                    detail = "registered in the cluster but not answering this client"
                self.emit(
                    BrokerDown(
                        at=self.bus.now(),
                        broker=self.name,
                        node=_node_name(node_id),
                        detail=f"{state.host}:{state.port} {detail}",
                    )
                )
            elif not was_up and state.up:
                self.emit(
                    BrokerUp(
                        at=self.bus.now(),
                        broker=self.name,
                        node=_node_name(node_id),
                        detail=f"{state.host}:{state.port} is registered and answering again",
                    )
                )

    def _remember_partitions(self, view: wire.ClusterView, *, emit: bool) -> None:
        """Keep this namespace's partition states; emit LeaderChanged for the changes."""
        current = {
            (topic, p): state
            for topic, states in view.topics.items()
            if self._in_namespace(topic) or topic in self._created_topics
            for p, state in states.items()
        }
        if emit:
            for (topic, p), state in sorted(current.items()):
                before = self._partitions.get((topic, p))
                if before is None or (before.leader, before.isr) == (state.leader, state.isr):
                    continue
                self.emit(
                    LeaderChanged(
                        at=self.bus.now(),
                        broker=self.name,
                        topic=topic,
                        partition=p,
                        leader=state.leader,
                        isr=state.isr,
                        previous_leader=before.leader,
                        previous_isr=before.isr,
                    )
                )
        self._partitions = current

    # -- cleanup ---------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Close this adapter's clients, then delete the namespace's groups and topics.

        Clients are closed first because Kafka refuses to delete a group that still has
        members. Groups and topics already gone are fine; a group that still has members
        from somewhere else is retried until its members' session would have expired.
        """
        for consumer in list(self._consumers):
            await consumer.close()
        for producer in list(self._producers):
            await producer.close()
        if self._admin is None:
            return
        try:
            await self._delete_namespace()
        except BrokerError as error:
            raise BrokerError(
                f"{error} (namespace {self.namespace} not cleaned up; a later "
                f"KafkaBroker(namespace={self.namespace!r}) cleans it up on close)"
            ) from error

    async def _delete_namespace(self) -> None:
        problems: list[str] = []
        view = await self._metadata(None)
        listed = await self.bounded(
            wire.list_groups(self._client, view.brokers), "list consumer groups"
        )
        # The groups this adapter used are deleted even when unlisted (their coordinator may
        # be the broker that did not answer); deleting a group that is gone is fine.
        groups = sorted({g for g in listed if self._in_namespace(g)} | self._used_groups)
        for group_id in groups:
            problem = await self._delete_group(group_id)
            if problem:
                problems.append(problem)
        topics = sorted(
            name for name in view.topics if self._in_namespace(name) or name in self._created_topics
        )
        await self._delete_topics(topics)
        self._created_topics.clear()
        self._used_groups.clear()
        self._delivered_up_to.clear()
        self._redeliveries.clear()
        if problems:
            raise BrokerError("kafka: cleanup incomplete: " + "; ".join(problems))

    async def _delete_group(self, group_id: str) -> str | None:
        """Delete one group; returns a problem description instead of raising."""
        loop = asyncio.get_running_loop()
        # A member that vanished without leaving keeps the group non-empty until its session
        # times out (the consumer default is 6 s): wait that long, not for ever.
        deadline = loop.time() + 10.0
        while True:
            coordinator = await self._coordinator(group_id)
            results = await self.bounded(
                wire.delete_groups(self._client, coordinator, [group_id]),
                f"delete group {group_id}",
            )
            code = results.get(group_id, 0)
            if code in (0, wire.GROUP_ID_NOT_FOUND):
                return None
            if code != wire.NON_EMPTY_GROUP or loop.time() > deadline:
                return f"group {group_id} not deleted ({for_code(code).__name__})"
            await asyncio.sleep(0.5)
