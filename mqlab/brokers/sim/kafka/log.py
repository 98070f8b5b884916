"""Partition logs of the simulated Kafka cluster: entries, replicas, partitions, topics and the
controller's view of each broker.

A log is a list of :class:`Entry` objects (an entry's index is its offset); each replica of a
partition keeps its own log and leader-epoch cache, so a follower that missed writes, or held
writes the new leader never had, is visible and can be truncated exactly as Kafka does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from mqlab.brokers.kafka.api import KafkaRecord, TopicPartition
from mqlab.brokers.sim.fast import slot_builder
from mqlab.brokers.sim.kafka.config import as_bool

if TYPE_CHECKING:
    from mqlab.brokers.sim.kafka.server import SimKafkaCluster

new_record = slot_builder(
    KafkaRecord, ("topic", "partition", "offset", "key", "value", "headers", "timestamp_ms")
)


class Entry:
    """One entry of a partition log: a record's content, or a transaction marker
    (``control`` "commit" / "abort"). Its offset is its index in the log.

    Consumers get a :class:`KafkaRecord` built from the entry when they fetch it, so the log
    keeps one object per record (every object kept alive makes Python's garbage collector
    slower, and the log keeps everything).
    """

    __slots__ = (
        "control",
        "epoch",
        "headers",
        "key",
        "key_text",
        "message_id",
        "producer_id",
        "sequence",
        "timestamp_ms",
        "txn",
        "value",
    )

    def __init__(
        self,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...],
        timestamp_ms: int,
        epoch: int,
        producer_id: int = -1,
        sequence: int = -1,
        txn: bool = False,
        control: str = "",
        key_text: str | None = None,
        message_id: str = "",
    ) -> None:
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp_ms = timestamp_ms
        self.epoch = epoch
        self.producer_id = producer_id
        self.sequence = sequence
        self.txn = txn
        self.control = control  # "" for data, "commit" / "abort" for a transaction marker
        self.key_text = key_text  # the key as observations show it (decoded once)
        self.message_id = message_id

    def to_record(self, tp: TopicPartition, offset: int) -> KafkaRecord:
        """The record as a consumer of ``tp`` sees it at ``offset``."""
        return new_record(
            tp.topic, tp.partition, offset, self.key, self.value, self.headers, self.timestamp_ms
        )


class UnreplicatedMarker(NamedTuple):
    """A decided transaction whose COMMIT/ABORT marker is not below the high watermark yet.

    Until it is, the transaction holds the last stable offset back as an open one does; a new
    leader that never got the marker has it written again, as Kafka's transaction coordinator
    retries WriteTxnMarkers on the new leader.
    """

    marker_offset: int
    producer_id: int
    first_offset: int  # the transaction's first record on this partition
    commit: bool


class Replica:
    """One broker's copy of a partition: its own log and leader-epoch cache."""

    __slots__ = ("broker_id", "epochs", "last_caught_up", "log", "needs_truncation")

    def __init__(self, broker_id: int) -> None:
        self.broker_id = broker_id
        self.log: list[Entry] = []
        self.epochs: list[tuple[int, int]] = []  # (leader epoch, start offset), ascending
        self.last_caught_up = 0.0
        self.needs_truncation = False

    @property
    def log_end(self) -> int:
        """Offset the next appended entry gets (entries are never deleted from the start)."""
        return len(self.log)

    def note_epoch(self, epoch: int, start_offset: int) -> None:
        """Record that entries from ``start_offset`` on belong to ``epoch``."""
        if not self.epochs or self.epochs[-1][0] < epoch:
            self.epochs.append((epoch, start_offset))

    def end_offset_for(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch: the largest epoch <= ``epoch`` this replica knows and
        the offset where it ended (the next epoch's start, or the log end)."""
        found = -1
        end = 0
        for index, (known, _start) in enumerate(self.epochs):
            if known > epoch:
                break
            found = known
            end = self.epochs[index + 1][1] if index + 1 < len(self.epochs) else self.log_end
        return found, end

    def truncate(self, offset: int) -> list[Entry]:
        """Drop entries from ``offset`` on (returns them) and forget epochs that start there."""
        removed = self.log[offset:]
        del self.log[offset:]
        self.epochs = [(epoch, start) for epoch, start in self.epochs if start < offset]
        return removed


class Partition:
    """A partition: placement, leader, ISR, high watermark, and what producers and
    transactions left in it."""

    def __init__(self, topic: Topic, index: int, replicas: tuple[int, ...]) -> None:
        self.topic = topic
        self.index = index
        self.tp = TopicPartition(topic.name, index)
        self.replicas = replicas
        self.replica: dict[int, Replica] = {b: Replica(b) for b in replicas}
        self.leader = -1
        self.leader_node = ""  # the leader's world node ("" while offline), for clear_path()
        self.followers: tuple[BrokerState, ...] = ()  # the other replicas' brokers
        self.leader_epoch = -1
        self.isr: list[int] = []
        self.high_watermark = 0
        # acks=all produce requests waiting for the HW: (offset, future, deadline), in offset
        # order; one timer per partition (``ack_timer``) expires those past their deadline.
        self.ack_waiters: deque[tuple[int, asyncio.Future[None], float]] = deque()
        self.ack_timer: asyncio.TimerHandle | None = None
        self.listeners: list[Callable[[], None]] = []
        # idempotence: producer id -> recent (producer epoch, sequence, offset), newest last
        self.producer_state: dict[int, deque[tuple[int, int, int]]] = {}
        # Transactions, as Kafka's producer state keeps them. ``ongoing``: producer id -> first
        # offset of its open transaction here (no marker yet). ``pending_markers``: decided
        # transactions whose marker is not replicated yet; they hold the last stable offset
        # back like open ones. The two are apart because a producer starts its next
        # transaction on a partition while the previous one's marker is still on its way.
        self.ongoing: dict[int, int] = {}
        self.pending_markers: list[UnreplicatedMarker] = []
        # aborted transactions: producer id -> (first offset, last record offset) ranges
        self.aborted: dict[int, list[tuple[int, int]]] = {}

    @property
    def leader_replica(self) -> Replica | None:
        """The leader's replica, None while the partition is offline."""
        return self.replica.get(self.leader)

    @property
    def log_end(self) -> int:
        """The leader's log end offset (the largest replica's when offline)."""
        leader = self.leader_replica
        if leader is not None:
            return leader.log_end
        return max((r.log_end for r in self.replica.values()), default=0)

    @property
    def last_stable_offset(self) -> int:
        """The last stable offset: below it every transaction is decided and its marker
        replicated (read_committed consumers read up to here)."""
        ongoing = self.ongoing
        pending = self.pending_markers
        if not ongoing and not pending:
            return self.high_watermark
        return min(
            self.high_watermark,
            *ongoing.values(),
            *(decided.first_offset for decided in pending),
        )

    @property
    def min_insync_replicas(self) -> int:
        """``min.insync.replicas`` for this partition (topic override or broker default)."""
        return self.topic.min_insync_replicas

    def is_aborted(self, producer_id: int, offset: int) -> bool:
        """True when the transactional record at ``offset`` belongs to an aborted transaction."""
        ranges = self.aborted.get(producer_id, ())
        return any(first <= offset <= last for first, last in ranges)

    def notify(self) -> None:
        """Wake consumers waiting for this partition (new data, leader change)."""
        for listener in self.listeners:
            listener()


class Topic:
    """A topic: its partitions, replication factor and configs."""

    def __init__(
        self,
        cluster: SimKafkaCluster,
        name: str,
        replication_factor: int,
        config: Mapping[str, str],
        *,
        internal: bool = False,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.replication_factor = replication_factor
        self.config = dict(config)
        self.internal = internal
        self.partitions: list[Partition] = []
        self.deleted = False

    @property
    def min_insync_replicas(self) -> int:
        """Topic override of ``min.insync.replicas`` or the broker default."""
        value = self.config.get("min.insync.replicas")
        return int(value) if value is not None else self.cluster.config.min_insync_replicas

    @property
    def unclean_leader_election(self) -> bool:
        """Topic override of ``unclean.leader.election.enable`` or the broker default."""
        value = self.config.get("unclean.leader.election.enable")
        if value is not None:
            return as_bool(value)
        return self.cluster.config.unclean_leader_election


class BrokerState:
    """The controller's view of one broker."""

    __slots__ = ("broker_id", "fence_timer", "fenced", "fetch_scheduled", "node", "restarted")

    def __init__(self, broker_id: int) -> None:
        self.broker_id = broker_id
        self.node = f"kafka-broker-{broker_id}"
        self.fenced = False
        self.fence_timer: asyncio.TimerHandle | None = None
        self.fetch_scheduled = False
        self.restarted = False  # died since it last registered: comes back as a new incarnation
