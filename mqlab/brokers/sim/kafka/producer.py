"""The simulated Kafka producer: the Java client's partitioner, acks 0/1/all, retries,
idempotence and transactions, on the simulated cluster.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import (
    KafkaProducer,
    NotEnoughReplicas,
    OutgoingRecord,
    ProducerFenced,
    ProducerSettings,
    ProduceTimedOut,
    RecordMetadata,
    TopicPartition,
    default_partition,
)
from mqlab.brokers.sim.fast import slot_builder
from mqlab.brokers.sim.kafka.config import (
    OFFSETS_TOPIC,
    TRANSACTION_TOPIC,
    KafkaServerError,
    LeaderNotAvailable,
    NotEnoughReplicasError,
    NotLeaderOrFollower,
    RetriableError,
)
from mqlab.brokers.sim.kafka.log import Partition, Topic
from mqlab.brokers.sim.kafka.server import Transaction
from mqlab.brokers.sim.kafka.wire import RETRY_BACKOFF, ClientClosed, coordinator_round_trip
from mqlab.brokers.sim.world import NodeUnreachable
from mqlab.observe.events import Produced

if TYPE_CHECKING:
    from mqlab.brokers.sim.kafka.client import SimKafkaBroker

BATCH_SIZE = 16384
"""batch.size: the sticky partitioner moves on after this many bytes to one partition."""

RECORD_OVERHEAD = 10
"""Bytes counted per record on top of key, value and headers (a varint-encoded record)."""

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
_new_metadata = slot_builder(RecordMetadata, ("topic", "partition", "offset"))


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A record off the fast path, on its way to its partition's leader: what the retries,
    the acks=0 hand-off and the observations about it need."""

    partition: Partition
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    message_id: str
    key_text: str | None

    @property
    def nbytes(self) -> int:
        """The bytes the request carries (headers aside, as the retries always counted)."""
        return len(self.value) + len(self.key or b"") + RECORD_OVERHEAD


class SimKafkaProducer(KafkaProducer):
    """A producer on the simulated cluster (see :class:`KafkaProducer`).

    Retries follow the Java client: retriable errors (no leader, not leader, broker gone,
    NotEnoughReplicas) are retried every ``retry.backoff.ms`` until ``request_timeout``; a
    non-idempotent retry after a lost acknowledgement writes the record twice, an idempotent
    one is recognised by its sequence number and answered with the original offset.
    """

    _adapter: SimKafkaBroker

    def __init__(self, adapter: SimKafkaBroker, settings: ProducerSettings) -> None:
        super().__init__(adapter, settings.name)
        acks = settings.acks
        self._cluster = adapter.cluster
        self._world = adapter.world
        self._bus = adapter.bus
        self._source = adapter.name
        self._acks = acks
        self._acks_all = acks == "all"
        self._idempotent = settings.idempotent
        self._transactional_id = settings.transactional_id
        self._request_timeout = settings.request_timeout
        self._linger = settings.linger_ms / 1000.0
        self._transaction_timeout = settings.transaction_timeout
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

    async def _send(self, record: OutgoingRecord) -> RecordMetadata:
        """Send one record and wait for the acknowledgement ``acks`` asks for.

        Raises:
            NotEnoughReplicas: acks=all and the ISR stayed below min.insync.replicas.
            ProduceTimedOut: no acknowledgement within the request timeout.
            ProducerFenced: a newer producer took over this transactional id.
            BrokerError: unknown topic or partition, closed producer, send outside a
                transaction on a transactional producer.
        """
        if self._closed:
            raise ClientClosed(f"producer {self.name} is closed")
        topic, value, key, partition = record.topic, record.value, record.key, record.partition
        message_id, headers = record.message_id, record.headers
        topic_state = self._cluster.topics.get(topic)
        if topic_state is None or topic_state.internal:
            raise BrokerError(f"UnknownTopicOrPartition: topic {topic!r} does not exist")
        if self._txn is not None:
            self._check_transaction(require_open=True)
        mid = message_id
        all_headers = headers
        count = len(topic_state.partitions)
        if partition is None:
            if key is None:
                # The caller's headers only: the message id header the interface added is
                # mqlab's bookkeeping, not part of the batch a real client would fill.
                extra = sum(len(h) + len(v) for h, v in headers[1:])
                size = len(value) + RECORD_OVERHEAD + extra
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
        return await self._send_with_retries(
            _Outgoing(target, key, value, all_headers, mid, key_text)
        )

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

    async def _send_with_retries(self, record: _Outgoing) -> RecordMetadata:
        world = self._world
        partition = record.partition
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
        if self._acks == 0:
            self._fire_and_forget(record)
            self._emit_produced(record, None, duplicate=False)
            return RecordMetadata(tp.topic, tp.partition, -1)
        last_error: BaseException | None = None
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise self._give_up(record, last_error)
            attempt = self._attempt(record, sequence, deadline)
            leader = partition.leader
            try:
                if leader >= 0 and world.clear_path(self._cluster.node_of(leader)):
                    # No network leg can hang: only the replication wait can take long, and
                    # it has its own deadline (cheaper than wait_for, which makes a task).
                    offset, duplicate = await attempt
                else:
                    offset, duplicate = await asyncio.wait_for(attempt, remaining)
            except TimeoutError:
                raise self._give_up(record, last_error) from None
            except (RetriableError, NodeUnreachable) as error:
                last_error = error
            except BrokerError as error:
                self._emit_failed(record, str(error))
                raise
            else:
                self._emit_produced(record, offset, duplicate=duplicate)
                return _new_metadata(tp.topic, tp.partition, offset)
            if partition.topic.deleted:
                error_text = f"UnknownTopicOrPartition: topic {tp.topic!r} was deleted"
                self._emit_failed(record, error_text)
                raise BrokerError(error_text)
            await asyncio.sleep(min(RETRY_BACKOFF, max(0.0, deadline - world.now())))

    async def _attempt(self, record: _Outgoing, sequence: int, deadline: float) -> tuple[int, bool]:
        """One produce request to the current leader and its answer.

        Raises:
            TimeoutError: still waiting for replication at ``deadline``.
        """
        partition = record.partition
        if partition.topic.deleted:
            raise BrokerError(f"UnknownTopicOrPartition: topic {partition.tp.topic!r} was deleted")
        leader = partition.leader
        if leader < 0:
            raise LeaderNotAvailable(f"{partition.tp} has no leader")
        node = self._cluster.node_of(leader)
        await self._leg(node, "upstream", deadline, record.nbytes)
        try:
            if partition.leader != leader:
                raise NotLeaderOrFollower(f"broker {leader} no longer leads {partition.tp}")
            offset, duplicate = self._cluster.append(
                partition,
                record.key,
                record.value,
                record.headers,
                acks_all=self._acks_all,
                producer_id=self._producer_id,
                producer_epoch=self._epoch,
                sequence=sequence,
                txn=self._txn is not None,
                key_text=record.key_text,
                message_id=record.message_id,
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

    def _fire_and_forget(self, record: _Outgoing) -> None:
        """acks=0: the bytes are handed to the socket; whether they arrive nobody says."""
        partition = record.partition

        async def deliver() -> None:
            leader = partition.leader
            if leader < 0:
                return
            try:
                node = self._cluster.node_of(leader)
                await self._world.transmit(node, "upstream", record.nbytes)
                if partition.leader == leader and not partition.topic.deleted:
                    self._cluster.append(
                        partition,
                        record.key,
                        record.value,
                        record.headers,
                        acks_all=False,
                        key_text=record.key_text,
                        message_id=record.message_id,
                    )
            except (BrokerError, NodeUnreachable):
                return  # lost silently: that is acks=0

        task = self._world.spawn(deliver(), name=f"{self.name}-acks0")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _give_up(self, record: _Outgoing, last_error: BaseException | None) -> BrokerError:
        if isinstance(last_error, NotEnoughReplicasError):
            error: BrokerError = NotEnoughReplicas(str(last_error))
        else:
            why = f" (last error: {last_error})" if last_error is not None else ""
            error = ProduceTimedOut(
                f"no acknowledgement for {record.partition.tp} within "
                f"{self._request_timeout:g}s{why}"
            )
        self._emit_failed(record, str(error))
        return error

    def _emit_produced(self, record: _Outgoing, offset: int | None, *, duplicate: bool) -> None:
        tp = record.partition.tp
        self._adapter.report_produced(
            tp.topic,
            record.message_id,
            key=record.key_text,
            partition=tp.partition,
            position=offset,
            producer=self.name,
            duplicate=duplicate,
        )

    def _emit_failed(self, record: _Outgoing, error: str) -> None:
        self._adapter.report_produce_failed(
            record.partition.tp.topic,
            record.message_id,
            error,
            key=record.key_text,
            producer=self.name,
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
            raise self.not_transactional()
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
        self._adapter.forget(self)
