"""The simulated Kafka cluster: brokers, a KRaft controller, partitions with replicas, leaders,
ISR and high watermarks, group coordinators and transaction coordinators.

This is the server side of the Kafka model; the client side (producer, consumer, admin
adapter) lives in :mod:`mqlab.brokers.sim.kafka.client` and only talks to the cluster through the
methods here, after paying for each request leg with :meth:`SimWorld.transmit`.

What happens, in the order the course shows it:

* Appends go to the partition leader's log (a list of entries; an entry's index is its offset).
  Followers copy new entries ``replica_fetch_delay`` virtual seconds later, all partitions of a
  follower broker in one fetch round, as a replica fetcher does. The high watermark is the
  smallest log end offset in the ISR; acks=all producers wait for it to pass their record.
* A killed or paused broker stops heartbeating; ``broker.session.timeout.ms`` later the
  controller fences it: it leaves every ISR (unless it is the last member) and its leaderships
  move to the first replica in the ISR (clean) or, with ``unclean.leader.election.enable``, to
  any live replica, whose shorter log then becomes the truth. A restart is a controlled
  shutdown (fenced at once). A broker back up truncates its log where it diverges from the
  leader (leader epochs), fetches, and rejoins the ISR once it has caught up to the high
  watermark. A follower that stops fetching for ``replica.lag.time.max.ms`` leaves the ISR.
  Every ``leader.imbalance.check.interval.seconds`` preferred leaders get their partitions back.
  Without the controller nothing of this happens: leaders keep serving, the ISR stays.
* Groups and transactions are coordinated by the leader of their ``__consumer_offsets`` /
  ``__transaction_state`` partition, so they become unavailable while that partition is offline.

The defaults are the lab's ``server.properties`` (:data:`DEFAULT_CONFIG`), so a sim run and a
lab run time out, fence and rebalance alike.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import CommitFailed, KafkaRecord, TopicPartition
from mqlab.brokers.sim.fast import slot_builder
from mqlab.brokers.sim.kafka.algorithms import ASSIGNORS, assign_replicas, coordinator_partition
from mqlab.brokers.sim.world import NodeChange, NodeState, SimWorld
from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    Committed,
    LeaderChanged,
    Note,
    Rebalanced,
)

if TYPE_CHECKING:
    from mqlab.observe.events import Observation

new_record = slot_builder(
    KafkaRecord, ("topic", "partition", "offset", "key", "value", "headers", "timestamp_ms")
)

SOURCE = "sim:kafka"
"""``broker`` field of the observations the cluster emits (the adapter's registry name)."""

CONTROLLER_NODE = "kafka-controller"
CONTROLLER_ID = 0
OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_TOPIC = "__transaction_state"

DEFAULT_CONFIG: dict[str, str] = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "num.partitions": "1",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "false",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.num.partitions": "10",
    "transaction.max.timeout.ms": "900000",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.max.session.timeout.ms": "1800000",
    "replica.lag.time.max.ms": "10000",
    "auto.leader.rebalance.enable": "true",
    "leader.imbalance.check.interval.seconds": "30",
    "leader.imbalance.per.broker.percentage": "10",
}
"""Broker configs of the lab's cluster (mqlab/lab/kafka.py), Kafka's defaults elsewhere."""

TOPIC_CONFIGS = frozenset({"min.insync.replicas", "unclean.leader.election.enable"})
"""Topic-level overrides the model honours (others are stored and shown, not modelled)."""

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


# --- errors the cluster answers with -----------------------------------------------------


class KafkaServerError(BrokerError):
    """An error code a broker returns. ``retriable`` tells the client to retry."""

    retriable = False


class RetriableError(KafkaServerError):
    """A retriable error code (the client retries until its timeout)."""

    retriable = True


class NotLeaderOrFollower(RetriableError):
    """The request went to a broker that is no longer the partition's leader."""


class LeaderNotAvailable(RetriableError):
    """The partition has no leader right now (offline or being elected)."""


class NotEnoughReplicasError(RetriableError):
    """acks=all refused: the ISR is below min.insync.replicas (retried until the timeout)."""


class NotEnoughReplicasAfterAppend(NotEnoughReplicasError):
    """Written to the leader, but the ISR shrank below min.insync.replicas before it was
    replicated: the record is in the log even though the producer gets an error."""


class CoordinatorNotAvailable(RetriableError):
    """The group or transaction coordinator's partition is offline."""


class ConnectionLost(RetriableError):
    """The broker died while the request was in flight."""


class RebalanceNeeded(RetriableError):
    """Internal: the member must (re)join the group."""


# --- configuration -----------------------------------------------------------------------


def _as_bool(value: str) -> bool:
    return value.strip().lower() == "true"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The broker configs the model uses, typed (seconds instead of ms)."""

    session_timeout: float
    min_insync_replicas: int
    unclean_leader_election: bool
    default_replication_factor: int
    offsets_partitions: int
    offsets_replication_factor: int
    transaction_partitions: int
    transaction_replication_factor: int
    transaction_min_isr: int
    initial_rebalance_delay: float
    min_session_timeout: float
    max_session_timeout: float
    replica_lag_time_max: float
    auto_leader_rebalance: bool
    leader_imbalance_interval: float
    leader_imbalance_percentage: float
    raw: Mapping[str, str]

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, object] | None) -> ClusterConfig:
        """Kafka-named settings (``{"min.insync.replicas": 1}``) over :data:`DEFAULT_CONFIG`.

        Raises:
            BrokerError: an unknown setting name (with the known ones).
        """
        raw = dict(DEFAULT_CONFIG)
        for name, value in (overrides or {}).items():
            if name not in DEFAULT_CONFIG:
                raise BrokerError(
                    f"unknown simulated broker config {name!r} (known: {', '.join(raw)})"
                )
            raw[name] = str(value).lower() if isinstance(value, bool) else str(value)
        ms = 1000.0
        return cls(
            session_timeout=int(raw["broker.session.timeout.ms"]) / ms,
            min_insync_replicas=int(raw["min.insync.replicas"]),
            unclean_leader_election=_as_bool(raw["unclean.leader.election.enable"]),
            default_replication_factor=int(raw["default.replication.factor"]),
            offsets_partitions=int(raw["offsets.topic.num.partitions"]),
            offsets_replication_factor=int(raw["offsets.topic.replication.factor"]),
            transaction_partitions=int(raw["transaction.state.log.num.partitions"]),
            transaction_replication_factor=int(raw["transaction.state.log.replication.factor"]),
            transaction_min_isr=int(raw["transaction.state.log.min.isr"]),
            initial_rebalance_delay=int(raw["group.initial.rebalance.delay.ms"]) / ms,
            min_session_timeout=int(raw["group.min.session.timeout.ms"]) / ms,
            max_session_timeout=int(raw["group.max.session.timeout.ms"]) / ms,
            replica_lag_time_max=int(raw["replica.lag.time.max.ms"]) / ms,
            auto_leader_rebalance=_as_bool(raw["auto.leader.rebalance.enable"]),
            leader_imbalance_interval=float(raw["leader.imbalance.check.interval.seconds"]),
            leader_imbalance_percentage=float(raw["leader.imbalance.per.broker.percentage"]),
            raw=raw,
        )


# --- logs, replicas, partitions, topics --------------------------------------------------


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
        # transactions: producer id -> first offset of its open transaction here
        self.ongoing: dict[int, int] = {}
        self.aborted: dict[int, list[tuple[int, int]]] = {}
        self.pending_markers: list[tuple[int, int]] = []  # (marker offset, producer id)

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
        """The last stable offset: below it every transaction is decided (read_committed
        consumers read up to here)."""
        if not self.ongoing:
            return self.high_watermark
        return min(self.high_watermark, *self.ongoing.values())

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
            return _as_bool(value)
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


# --- groups ------------------------------------------------------------------------------


@dataclass(slots=True)
class Member:
    """A consumer group member as the coordinator sees it."""

    member_id: str
    client_id: str
    topics: tuple[str, ...]
    strategy: str
    session_timeout: float
    rebalance_timeout: float
    last_heartbeat: float = 0.0
    joined: bool = False
    join_future: asyncio.Future[JoinResult | None] | None = None
    assignment: tuple[TopicPartition, ...] = ()
    expiry: asyncio.TimerHandle | None = None


def _release(member: Member) -> None:
    """Answer a member's pending JoinGroup with "join again"."""
    if member.join_future is not None and not member.join_future.done():
        member.join_future.set_result(None)


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What a member gets when a rebalance completes."""

    member_id: str
    generation: int
    assignment: tuple[TopicPartition, ...]


GROUP_EMPTY = "Empty"
GROUP_PREPARING = "PreparingRebalance"
GROUP_STABLE = "Stable"
GROUP_DEAD = "Dead"


class Group:
    """A consumer group's coordinator state: members, generation, committed offsets.

    The assignment is computed with the group's assignor exactly as the group leader's client
    would, at the moment every known member has (re)joined.
    """

    def __init__(self, cluster: SimKafkaCluster, group_id: str) -> None:
        self.cluster = cluster
        self.group_id = group_id
        self.state = GROUP_EMPTY
        self.generation = 0
        self.protocol = ""
        self.leader_id = ""
        self.members: dict[str, Member] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.delivered_upto: dict[TopicPartition, int] = {}
        self.redeliveries: dict[tuple[TopicPartition, int], int] = {}
        self.pending_txn_offsets: dict[int, dict[TopicPartition, int]] = {}
        self._completion: asyncio.Handle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._reason = ""

    # -- membership ---------------------------------------------------------------------

    def join(
        self,
        member_id: str | None,
        client_id: str,
        topics: Sequence[str],
        strategy: str,
        session_timeout: float,
        rebalance_timeout: float,
    ) -> asyncio.Future[JoinResult | None]:
        """JoinGroup: returns a future resolved when the rebalance completes (with None when
        the member was dropped meanwhile and has to join again).

        Raises:
            KafkaServerError: session timeout outside the broker's bounds, or an assignor no
                other member supports, or an unknown member id.
        """
        config = self.cluster.config
        if not config.min_session_timeout <= session_timeout <= config.max_session_timeout:
            raise KafkaServerError(
                f"InvalidSessionTimeout: session timeout {session_timeout:g}s is outside the "
                f"broker's group.min/max.session.timeout.ms ({config.min_session_timeout:g}s.."
                f"{config.max_session_timeout:g}s)"
            )
        others = [m for m in self.members.values() if m.member_id != member_id]
        if others and all(m.strategy != strategy for m in others):
            raise KafkaServerError(
                f"InconsistentGroupProtocol: group {self.group_id} uses "
                f"{others[0].strategy!r}, this consumer only supports {strategy!r}"
            )
        loop = asyncio.get_running_loop()
        if member_id is None or member_id not in self.members:
            if member_id is not None:
                raise RebalanceNeeded("UnknownMemberId")
            member_id = self.cluster.world.next_id(client_id)
            member = Member(
                member_id=member_id,
                client_id=client_id,
                topics=tuple(topics),
                strategy=strategy,
                session_timeout=session_timeout,
                rebalance_timeout=rebalance_timeout,
            )
            self.members[member_id] = member
            reason = f"{client_id} joined"
        else:
            member = self.members[member_id]
            member.topics = tuple(topics)
            reason = f"{client_id} rejoined"
        if self.state != GROUP_PREPARING:
            self._prepare(reason)
        member.joined = True
        _release(member)
        member.join_future = loop.create_future()
        self._touch(member)
        self._schedule_completion()
        return member.join_future

    def heartbeat(self, member_id: str, generation: int) -> str:
        """Heartbeat: ``ok``, ``rebalance`` (rejoin now) or ``unknown`` (expired: join anew)."""
        member = self.members.get(member_id)
        if member is None:
            return "unknown"
        self._touch(member)
        if self.state == GROUP_PREPARING and not member.joined:
            return "rebalance"
        if generation != self.generation:
            return "rebalance"
        return "ok"

    def leave(self, member_id: str, reason: str) -> None:
        """LeaveGroup (a clean close) or session expiry: the others rebalance at once."""
        member = self.members.pop(member_id, None)
        if member is None:
            return
        if member.expiry is not None:
            member.expiry.cancel()
        _release(member)
        if self.leader_id == member_id:
            self.leader_id = ""
        if not self.members:
            # The last member left: the group is empty now (as the LeaveGroup answer says).
            if self.state != GROUP_PREPARING:
                self._prepare(reason)
            else:
                self._reason = f"{self._reason}; {reason}"
            if self._completion is not None:
                self._completion.cancel()
                self._completion = None
            self._complete(False)
            return
        if self.state == GROUP_PREPARING:
            self._reason = f"{self._reason}; {reason}"
            self._schedule_completion()
        else:
            self._prepare(reason)
            self._schedule_completion()

    def metadata_changed(self, topic: str) -> None:
        """A subscribed topic appeared or disappeared: members rejoin (the leader's client
        notices the metadata change and triggers a rebalance)."""
        if self.state == GROUP_STABLE and any(topic in m.topics for m in self.members.values()):
            self._prepare(f"topic {topic} changed")
            self._schedule_completion()

    # -- offsets -------------------------------------------------------------------------

    def commit(
        self,
        member_id: str | None,
        generation: int,
        offsets: Mapping[TopicPartition, int],
        consumer: str,
    ) -> None:
        """OffsetCommit from a member of the current generation.

        Raises:
            CommitFailed: the member is gone or the group has rebalanced since it joined.
        """
        if member_id is not None:
            member = self.members.get(member_id)
            if member is None or generation != self.generation or self.state != GROUP_STABLE:
                raise CommitFailed(
                    f"commit failed for group {self.group_id}: the group has rebalanced "
                    "(the partitions may belong to another member now)"
                )
            self._touch(member)
        self.store_offsets(offsets, consumer)

    def store_offsets(self, offsets: Mapping[TopicPartition, int], consumer: str) -> None:
        """Write committed offsets and emit one ``Committed`` per partition."""
        emit = self.cluster.emit
        now = self.cluster.world.now()
        for tp in sorted(offsets):
            offset = offsets[tp]
            self.committed[tp] = offset
            emit(
                Committed(
                    at=now,
                    broker=SOURCE,
                    group=self.group_id,
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=offset,
                    consumer=consumer,
                )
            )

    # -- internals -----------------------------------------------------------------------

    def _touch(self, member: Member) -> None:
        now = self.cluster.world.now()
        member.last_heartbeat = now
        if member.expiry is not None:
            member.expiry.cancel()
        member.expiry = asyncio.get_running_loop().call_at(
            now + member.session_timeout, self._expire, member.member_id
        )

    def _expire(self, member_id: str) -> None:
        member = self.members.get(member_id)
        if member is None:
            return
        if not self.cluster.coordinator_available(self.group_id):
            # No coordinator to notice: the next coordinator starts a fresh session.
            self._touch(member)
            return
        if member.join_future is not None and not member.join_future.done():
            self._touch(member)  # a pending JoinGroup keeps the member alive
            return
        self.leave(member_id, f"{member.client_id} session timed out")

    def _prepare(self, reason: str) -> None:
        self.state = GROUP_PREPARING
        self._reason = reason
        for member in self.members.values():
            member.joined = False
        if self._deadline is not None:
            self._deadline.cancel()
        timeout = max((m.rebalance_timeout for m in self.members.values()), default=0.0)
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._complete, True)

    def _schedule_completion(self) -> None:
        if self._completion is not None:
            return
        if not all(m.joined for m in self.members.values()):
            return
        loop = asyncio.get_running_loop()
        delay = self.cluster.config.initial_rebalance_delay if self.generation == 0 else 0.0
        if delay > 0:
            self._completion = loop.call_later(delay, self._complete, False)
        else:
            self._completion = loop.call_soon(self._complete, False)

    def _complete(self, forced: bool) -> None:
        self._completion = None
        if self.state != GROUP_PREPARING:
            return
        if not forced and not all(m.joined for m in self.members.values()):
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for member_id in [m.member_id for m in self.members.values() if not m.joined]:
            dropped = self.members.pop(member_id)
            if dropped.expiry is not None:
                dropped.expiry.cancel()
            _release(dropped)
        self.generation += 1
        if not self.members:
            self.state = GROUP_EMPTY
            self.protocol = ""
            self.leader_id = ""
            self._emit_rebalanced()
            return
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        self.protocol = self.members[self.leader_id].strategy
        counts = self.cluster.partition_counts()
        plan = ASSIGNORS[self.protocol](
            counts, {m.member_id: m.topics for m in self.members.values()}
        )
        self.state = GROUP_STABLE
        for member in self.members.values():
            member.assignment = tuple(sorted(plan.get(member.member_id, [])))
            future = member.join_future
            if future is not None and not future.done():
                future.set_result(JoinResult(member.member_id, self.generation, member.assignment))
        self._emit_rebalanced()

    def _emit_rebalanced(self) -> None:
        self.cluster.emit(
            Rebalanced(
                at=self.cluster.world.now(),
                broker=SOURCE,
                group=self.group_id,
                generation=self.generation,
                assignment=tuple(
                    (m.client_id, tuple(str(tp) for tp in m.assignment))
                    for m in sorted(self.members.values(), key=lambda m: m.member_id)
                ),
                reason=self._reason,
            )
        )


# --- transactions ------------------------------------------------------------------------


@dataclass(slots=True)
class Transaction:
    """A transactional id's coordinator state."""

    transactional_id: str
    producer_id: int
    epoch: int = 0
    state: str = "Empty"  # Empty | Ongoing | CompleteCommit | CompleteAbort
    partitions: dict[TopicPartition, None] = field(default_factory=dict)
    offsets: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)
    timeout: float = 60.0
    timer: asyncio.TimerHandle | None = None
    owner: str = ""


# --- the cluster -------------------------------------------------------------------------


class SimKafkaCluster:
    """One simulated KRaft cluster (controller ``0`` plus brokers ``1..n``) in a world.

    Args:
        world: the run's world (clock, rng, faults, bus).
        brokers: number of brokers (nodes ``kafka-broker-1..n``).
        config: broker configs by their Kafka names over :data:`DEFAULT_CONFIG`.
        replica_fetch_delay: virtual seconds between a leader append and its followers having
            the data: the window in which acks=1 writes are lost when the leader dies.
    """

    def __init__(
        self,
        world: SimWorld,
        *,
        brokers: int = 3,
        config: Mapping[str, object] | None = None,
        replica_fetch_delay: float = 0.005,
    ) -> None:
        if brokers < 1:
            raise BrokerError("a simulated Kafka cluster needs at least one broker")
        self.world = world
        self.config = ClusterConfig.from_mapping(config)
        self.replica_fetch_delay = replica_fetch_delay
        self.brokers: dict[int, BrokerState] = {}
        for broker_id in range(1, brokers + 1):
            state = BrokerState(broker_id)
            world.register_node(state.node, 3.0)
            state.fenced = not world.is_up(state.node)
            self.brokers[broker_id] = state
        self._node_to_broker = {b.node: b.broker_id for b in self.brokers.values()}
        self.topics: dict[str, Topic] = {}
        self.groups: dict[str, Group] = {}
        self.transactions: dict[str, Transaction] = {}
        self._by_broker: dict[int, list[Partition]] = {b: [] for b in self.brokers}
        self._next_producer_id = 1000
        self._listeners: list[Callable[[Observation], None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._started = False
        self._deferred_fences: dict[int, str] = {}
        world.watch(self._on_node_change)

    # -- observations --------------------------------------------------------------------

    def emit(self, observation: Observation) -> None:
        """Publish on the world's bus (every simulated adapter of the run listens there)."""
        self.world.bus.emit(observation)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the controller's periodic checks (ISR expiry, preferred leaders); idempotent.
        Needs the running loop, so it is called by the first adapter that connects."""
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(self.config.replica_lag_time_max / 2, self._isr_expiration_tick)
        )
        if self.config.auto_leader_rebalance:
            self._timers.append(
                loop.call_later(self.config.leader_imbalance_interval, self._preferred_tick)
            )

    def stop(self) -> None:
        """Cancel the periodic checks (the cluster keeps its state)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._started = False

    # -- nodes ---------------------------------------------------------------------------

    @property
    def controller_up(self) -> bool:
        """True while the KRaft controller runs (metadata changes need it)."""
        return self.world.is_up(CONTROLLER_NODE)

    def broker_up(self, broker_id: int) -> bool:
        """True while ``broker_id``'s process runs."""
        broker = self.brokers.get(broker_id)
        return broker is not None and self.world.is_up(broker.node)

    def node_of(self, broker_id: int) -> str:
        """The world node name of ``broker_id``."""
        return self.brokers[broker_id].node

    def live_brokers(self) -> list[int]:
        """Registered, unfenced brokers (what metadata responses list)."""
        return [b for b, s in self.brokers.items() if not s.fenced]

    def _on_node_change(self, change: NodeChange) -> None:
        if change.node == CONTROLLER_NODE:
            if change.state is NodeState.UP:
                self._controller_back()
            return
        broker_id = self._node_to_broker.get(change.node)
        if broker_id is None:
            return
        broker = self.brokers[broker_id]
        now = self.world.now()
        if change.previous is NodeState.UP:
            # It stops fetching now: remember when it was last caught up.
            for partition in self._by_broker[broker_id]:
                leader = partition.leader_replica
                replica = partition.replica[broker_id]
                if leader is not None and replica.log_end >= leader.log_end:
                    replica.last_caught_up = now
        if change.state is NodeState.DOWN:
            broker.restarted = True
            broker.fetch_scheduled = False
            for partition in self._by_broker[broker_id]:
                if partition.leader == broker_id:
                    self._fail_waiters(partition, ConnectionLost(f"{broker.node} went away"))
            if change.cause == "restart" and not broker.fenced:
                self._fence(broker_id, "controlled shutdown")
            elif broker.fence_timer is None and not broker.fenced:
                self._schedule_fence(broker_id)
        elif change.state is NodeState.PAUSED:
            if broker.fence_timer is None and not broker.fenced:
                self._schedule_fence(broker_id)
        else:  # back up: resumed or started
            if broker.fence_timer is not None:
                broker.fence_timer.cancel()
                broker.fence_timer = None
            self._deferred_fences.pop(broker_id, None)
            if broker.restarted and not broker.fenced:
                # A new incarnation registers: the old one's leaderships end first.
                self._fence(broker_id, "restarted before the controller noticed")
            if broker.restarted:
                for partition in self._by_broker[broker_id]:
                    partition.replica[broker_id].needs_truncation = True
            broker.restarted = False
            if broker.fenced and self.controller_up:
                self._unfence(broker_id)
            self._schedule_fetch(broker_id)
            for partition in self._by_broker[broker_id]:
                if partition.leader == broker_id:
                    self._schedule_followers(partition)

    def _schedule_fence(self, broker_id: int) -> None:
        broker = self.brokers[broker_id]
        broker.fence_timer = asyncio.get_running_loop().call_later(
            self.config.session_timeout, self._fence_timer_fired, broker_id
        )

    def _fence_timer_fired(self, broker_id: int) -> None:
        broker = self.brokers[broker_id]
        broker.fence_timer = None
        if self.world.is_up(broker.node) or broker.fenced:
            return
        timeout = self.config.session_timeout
        self._fence(broker_id, f"no heartbeat for {timeout:g}s (broker.session.timeout.ms)")

    def _controller_back(self) -> None:
        """A (re)started controller: brokers that are down get fenced a session later, brokers
        that came up meanwhile register, deferred ISR changes are retried."""
        for broker_id, broker in self.brokers.items():
            if not self.world.is_up(broker.node):
                if not broker.fenced and broker.fence_timer is None:
                    self._schedule_fence(broker_id)
            elif broker.fenced:
                self._unfence(broker_id)
        self._deferred_fences.clear()
        for broker_id in self.brokers:
            self._schedule_fetch(broker_id)

    def _fence(self, broker_id: int, reason: str) -> None:
        """The controller removes ``broker_id`` from every ISR and moves its leaderships."""
        if not self.controller_up:
            self._deferred_fences[broker_id] = reason
            return
        broker = self.brokers[broker_id]
        if broker.fenced:
            return
        broker.fenced = True
        if broker.fence_timer is not None:
            broker.fence_timer.cancel()
            broker.fence_timer = None
        self.emit(
            BrokerDown(
                at=self.world.now(),
                broker=SOURCE,
                node=broker.node,
                detail=f"fenced by the controller: {reason}",
            )
        )
        for partition in self._by_broker[broker_id]:
            previous_leader, previous_isr = partition.leader, tuple(partition.isr)
            if broker_id in partition.isr and len(partition.isr) > 1:
                partition.isr.remove(broker_id)
            if partition.leader == broker_id:
                self._elect(partition, excluded=broker_id)
            self._after_isr_change(partition, previous_leader, previous_isr)

    def _unfence(self, broker_id: int) -> None:
        broker = self.brokers[broker_id]
        broker.fenced = False
        self.emit(
            BrokerUp(
                at=self.world.now(),
                broker=SOURCE,
                node=broker.node,
                detail="registered with the controller (unfenced)",
            )
        )
        for partition in self._by_broker[broker_id]:
            if partition.leader == -1:
                previous_leader, previous_isr = partition.leader, tuple(partition.isr)
                self._elect(partition, excluded=None)
                self._after_isr_change(partition, previous_leader, previous_isr)

    # -- elections -----------------------------------------------------------------------

    def _eligible(self, broker_id: int, excluded: int | None) -> bool:
        return broker_id != excluded and not self.brokers[broker_id].fenced

    def _elect(self, partition: Partition, excluded: int | None) -> None:
        """Pick a new leader: the first replica (assignment order) in the ISR that is alive;
        otherwise, if allowed, any live replica (unclean); otherwise offline (-1)."""
        for candidate in partition.replicas:
            if candidate in partition.isr and self._eligible(candidate, excluded):
                self._set_leader(partition, candidate, unclean=False)
                return
        if partition.topic.unclean_leader_election:
            for candidate in partition.replicas:
                if self._eligible(candidate, excluded):
                    self._set_leader(partition, candidate, unclean=True)
                    return
        self._set_leader(partition, -1, unclean=False)

    def _set_leader(self, partition: Partition, leader: int, *, unclean: bool) -> None:
        previous = partition.leader
        if leader == previous:
            return
        longest = max((r.log_end for r in partition.replica.values()), default=0)
        partition.leader = leader
        partition.leader_node = self.brokers[leader].node if leader >= 0 else ""
        partition.followers = tuple(self.brokers[b] for b in partition.replicas if b != leader)
        partition.leader_epoch += 1
        self._fail_waiters(partition, NotLeaderOrFollower(f"{partition.tp} has a new leader"))
        if leader == -1:
            partition.notify()
            return
        replica = partition.replica[leader]
        replica.needs_truncation = False
        replica.note_epoch(partition.leader_epoch, replica.log_end)
        new_end = replica.log_end
        if unclean:
            partition.isr = [leader]
            lost_from = new_end
            lost_to = max(partition.high_watermark, longest)
            if lost_to > lost_from:
                self.emit(
                    Note(
                        at=self.world.now(),
                        broker=SOURCE,
                        text=(
                            f"unclean leader election on {partition.tp}: broker {leader} "
                            f"became leader with log end {new_end}; offsets {lost_from}.."
                            f"{lost_to - 1} (committed up to {partition.high_watermark - 1}) "
                            "are lost"
                        ),
                    )
                )
        partition.high_watermark = min(partition.high_watermark, new_end)
        for other in partition.replica.values():
            if other.broker_id != leader:
                other.needs_truncation = True
        self._forget_beyond(partition, new_end)
        self._schedule_followers(partition)
        partition.notify()

    def _forget_beyond(self, partition: Partition, end: int) -> None:
        """Producer and transaction state of entries the new leader does not have."""
        for producer_id, recent in list(partition.producer_state.items()):
            kept = deque(((e, s, o) for e, s, o in recent if o < end), maxlen=5)
            if kept:
                partition.producer_state[producer_id] = kept
            else:
                del partition.producer_state[producer_id]
        for producer_id, first in list(partition.ongoing.items()):
            if first >= end:
                del partition.ongoing[producer_id]
        partition.pending_markers = [(o, p) for o, p in partition.pending_markers if o < end]

    def _after_isr_change(
        self, partition: Partition, previous_leader: int, previous_isr: tuple[int, ...]
    ) -> None:
        if partition.leader == previous_leader and tuple(partition.isr) == previous_isr:
            return
        if not partition.topic.internal:
            self.emit(
                LeaderChanged(
                    at=self.world.now(),
                    broker=SOURCE,
                    topic=partition.tp.topic,
                    partition=partition.index,
                    leader=partition.leader,
                    isr=tuple(partition.isr),
                    previous_leader=previous_leader,
                    previous_isr=previous_isr,
                )
            )
        if partition.topic.internal and partition.topic.name == OFFSETS_TOPIC:
            self._coordinator_moved(partition)
        self._advance_high_watermark(partition)

    def _coordinator_moved(self, partition: Partition) -> None:
        # A new coordinator loads the groups and starts fresh member sessions.
        count = self.config.offsets_partitions
        for group in self.groups.values():
            if coordinator_partition(group.group_id, count) == partition.index:
                for member in list(group.members.values()):
                    group._touch(member)

    def _isr_expiration_tick(self) -> None:
        """Every replica.lag.time.max.ms / 2: leaders drop followers that stopped fetching."""
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(
            loop.call_later(self.config.replica_lag_time_max / 2, self._isr_expiration_tick)
        )
        if not self.controller_up:
            return  # the AlterPartition request would fail: the ISR stays as it is
        now = self.world.now()
        lag_max = self.config.replica_lag_time_max
        for topic in list(self.topics.values()):
            for partition in topic.partitions:
                leader = partition.leader_replica
                if leader is None or not self.broker_up(partition.leader):
                    continue
                previous_isr = tuple(partition.isr)
                for follower_id in previous_isr:
                    if follower_id == partition.leader:
                        continue
                    follower = partition.replica[follower_id]
                    if self.broker_up(follower_id) and follower.log_end >= leader.log_end:
                        follower.last_caught_up = now
                    elif now - follower.last_caught_up > lag_max:
                        partition.isr.remove(follower_id)
                self._after_isr_change(partition, partition.leader, previous_isr)

    def _preferred_tick(self) -> None:
        """Every leader.imbalance.check.interval.seconds: give partitions back to their
        preferred leader when a broker leads too few of its preferred partitions."""
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(
            loop.call_later(self.config.leader_imbalance_interval, self._preferred_tick)
        )
        if not self.controller_up:
            return
        threshold = self.config.leader_imbalance_percentage / 100.0
        for broker_id, broker in self.brokers.items():
            if broker.fenced or not self.world.is_up(broker.node):
                continue
            preferred = [
                p
                for topic in self.topics.values()
                for p in topic.partitions
                if p.replicas[0] == broker_id
            ]
            if not preferred:
                continue
            imbalanced = [p for p in preferred if p.leader != broker_id]
            if len(imbalanced) / len(preferred) <= threshold:
                continue
            for partition in imbalanced:
                if broker_id in partition.isr:
                    previous_leader, previous_isr = partition.leader, tuple(partition.isr)
                    self._set_leader(partition, broker_id, unclean=False)
                    self._after_isr_change(partition, previous_leader, previous_isr)

    # -- replication ---------------------------------------------------------------------

    def _schedule_fetch(self, broker_id: int) -> None:
        broker = self.brokers[broker_id]
        if broker.fetch_scheduled or not self.world.is_up(broker.node):
            return
        broker.fetch_scheduled = True
        asyncio.get_running_loop().call_later(
            self.replica_fetch_delay, self._fetch_round, broker_id
        )

    def _schedule_followers(self, partition: Partition) -> None:
        for broker_id in partition.replicas:
            if broker_id != partition.leader:
                self._schedule_fetch(broker_id)

    def _fetch_round(self, broker_id: int) -> None:
        """One fetch of a follower broker from the leaders of all partitions it follows."""
        broker = self.brokers[broker_id]
        broker.fetch_scheduled = False
        if not self.world.is_up(broker.node):
            return
        now = self.world.now()
        for partition in self._by_broker[broker_id]:
            leader_id = partition.leader
            if leader_id == broker_id or leader_id < 0 or not self.broker_up(leader_id):
                continue
            leader = partition.replica[leader_id]
            follower = partition.replica[broker_id]
            if follower.needs_truncation:
                self._reconcile(partition, follower, leader)
            start = follower.log_end
            end = leader.log_end
            if start < end:
                copied = leader.log[start:end]
                follower.log.extend(copied)
                # Epochs only grow along a log: one look at both ends usually settles it.
                if copied[0].epoch == copied[-1].epoch:
                    follower.note_epoch(copied[0].epoch, start)
                else:
                    for offset, entry in enumerate(copied, start):
                        follower.note_epoch(entry.epoch, offset)
            follower.last_caught_up = now
            if broker_id not in partition.isr:
                self._maybe_expand_isr(partition, broker_id)
            else:
                self._advance_high_watermark(partition)

    def _reconcile(self, partition: Partition, follower: Replica, leader: Replica) -> None:
        """Truncate ``follower`` where its log diverges from the leader's (leader epochs)."""
        follower.needs_truncation = False
        if not follower.epochs:
            return
        epoch, leader_end = leader.end_offset_for(follower.epochs[-1][0])
        if epoch < 0:
            cut = 0
        else:
            _, follower_end = follower.end_offset_for(epoch)
            cut = min(leader_end, follower_end)
        if cut >= follower.log_end:
            return
        removed = follower.truncate(cut)
        records = [e for e in removed if not e.control]
        if records and not partition.topic.internal:
            self.emit(
                Note(
                    at=self.world.now(),
                    broker=SOURCE,
                    text=(
                        f"broker {follower.broker_id} truncated {partition.tp} to offset {cut}: "
                        f"{len(records)} record(s) it held are not in the leader's log "
                        f"(offsets {cut}..{cut + len(removed) - 1})"
                    ),
                )
            )

    def _maybe_expand_isr(self, partition: Partition, broker_id: int) -> None:
        """A follower that caught up to the high watermark rejoins the ISR (needs the
        controller and an unfenced follower)."""
        if not self.controller_up or self.brokers[broker_id].fenced:
            return
        follower = partition.replica[broker_id]
        if follower.log_end < partition.high_watermark or partition.leader < 0:
            return
        previous_isr = tuple(partition.isr)
        partition.isr.append(broker_id)
        partition.isr.sort(key=partition.replicas.index)
        self._after_isr_change(partition, partition.leader, previous_isr)

    def _advance_high_watermark(self, partition: Partition) -> None:
        leader = partition.leader_replica
        if leader is None:
            return
        replica = partition.replica
        high_watermark = min(replica[b].log_end for b in partition.isr)
        if high_watermark <= partition.high_watermark:
            return
        partition.high_watermark = high_watermark
        if partition.pending_markers:
            self._settle_markers(partition)
        waiters = partition.ack_waiters
        if waiters:
            short = len(partition.isr) < partition.min_insync_replicas
            while waiters and waiters[0][0] < high_watermark:
                _, future, _ = waiters.popleft()
                if future.done():
                    continue
                if short:
                    future.set_exception(
                        NotEnoughReplicasAfterAppend(
                            f"{partition.tp}: ISR {partition.isr} is below "
                            f"min.insync.replicas={partition.min_insync_replicas}"
                        )
                    )
                else:
                    future.set_result(None)
        partition.notify()

    def _fail_waiters(self, partition: Partition, error: BrokerError) -> None:
        while partition.ack_waiters:
            _, future, _ = partition.ack_waiters.popleft()
            if not future.done():
                future.set_exception(error)

    # -- produce -------------------------------------------------------------------------

    def append(
        self,
        partition: Partition,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...],
        *,
        acks_all: bool,
        producer_id: int = -1,
        producer_epoch: int = 0,
        sequence: int = -1,
        txn: bool = False,
        key_text: str | None = None,
        message_id: str = "",
        timestamp_ms: int = -1,
    ) -> tuple[int, bool]:
        """Append one record on the leader (the caller checked the leader is reachable).
        ``timestamp_ms`` is the record's CreateTime, set by the producer (now when omitted).

        Returns:
            (offset, duplicate): ``duplicate`` when an idempotent retry was recognised and
            the original offset is returned instead of appending again.

        Raises:
            LeaderNotAvailable: the partition is offline.
            NotEnoughReplicasError: acks=all and the ISR is below min.insync.replicas.
        """
        leader_id = partition.leader
        if leader_id < 0:
            raise LeaderNotAvailable(f"{partition.tp} has no leader")
        leader = partition.replica[leader_id]
        if sequence >= 0:
            # Sequence numbers count per producer epoch: a new epoch (a new producer with the
            # same transactional id) starts again at 0 and is not a duplicate of the old one.
            recent = partition.producer_state.get(producer_id)
            if recent is not None:
                for epoch, seq, offset in recent:
                    if epoch == producer_epoch and seq == sequence and offset < leader.log_end:
                        entry = leader.log[offset]
                        if entry.producer_id == producer_id and entry.sequence == sequence:
                            return offset, True
        if acks_all and len(partition.isr) < partition.topic.min_insync_replicas:
            raise NotEnoughReplicasError(
                f"NotEnoughReplicas: {partition.tp} has ISR {partition.isr}, fewer than "
                f"min.insync.replicas={partition.topic.min_insync_replicas}"
            )
        log = leader.log
        offset = len(log)
        log.append(
            Entry(
                key,
                value,
                headers,
                timestamp_ms if timestamp_ms >= 0 else int(self.world.now() * 1000),
                partition.leader_epoch,
                producer_id,
                sequence,
                txn,
                "",
                key_text,
                message_id,
            )
        )
        if sequence >= 0:
            recent = partition.producer_state.get(producer_id)
            if recent is None:
                recent = partition.producer_state[producer_id] = deque(maxlen=5)
            recent.append((producer_epoch, sequence, offset))
        if txn and producer_id not in partition.ongoing:
            partition.ongoing[producer_id] = offset
        self._replicate(partition)
        return offset, False

    def append_plain(
        self,
        partition: Partition,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...],
        key_text: str | None,
        message_id: str,
        timestamp_ms: int,
    ) -> int:
        """:meth:`append` for the common case, kept lean because it is the simulator's hot
        path: no idempotence, no transaction, acks 0 or 1, and a leader the caller checked.
        Returns the offset."""
        log = partition.replica[partition.leader].log
        offset = len(log)
        log.append(
            Entry(
                key,
                value,
                headers,
                timestamp_ms,
                partition.leader_epoch,
                -1,
                -1,
                False,
                "",
                key_text,
                message_id,
            )
        )
        self._replicate(partition)
        return offset

    def _replicate(self, partition: Partition) -> None:
        """After an append: followers fetch soon (a lone leader commits at once)."""
        if len(partition.isr) == 1:
            self._advance_high_watermark(partition)
        else:
            for follower in partition.followers:
                if not follower.fetch_scheduled:
                    self._schedule_fetch(follower.broker_id)

    def wait_replicated(
        self, partition: Partition, offset: int, deadline: float
    ) -> asyncio.Future[None]:
        """A future resolved when the high watermark passes ``offset`` (acks=all). It fails
        when the leader changes or dies first, when the ISR shrinks below the minimum
        (NotEnoughReplicasAfterAppend) and with ``TimeoutError`` at ``deadline``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if partition.high_watermark > offset:
            future.set_result(None)
            return future
        partition.ack_waiters.append((offset, future, deadline))
        if partition.ack_timer is None:
            partition.ack_timer = loop.call_at(deadline, self._expire_waiters, partition)
        return future

    def _expire_waiters(self, partition: Partition) -> None:
        """Time out the acks=all waiters past their deadline; come back for the next one."""
        partition.ack_timer = None
        now = self.world.now()
        waiting: deque[tuple[int, asyncio.Future[None], float]] = deque()
        for offset, future, deadline in partition.ack_waiters:
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(TimeoutError())
            else:
                waiting.append((offset, future, deadline))
        partition.ack_waiters = waiting
        if waiting:
            partition.ack_timer = asyncio.get_running_loop().call_at(
                min(d for _, _, d in waiting), self._expire_waiters, partition
            )

    # -- topics --------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        config: Mapping[str, str] | None = None,
        *,
        internal: bool = False,
    ) -> Topic:
        """CreateTopics on the controller: place replicas round-robin over the live brokers,
        the first replica leads, the live replicas form the ISR.

        Raises:
            BrokerError: invalid name, exists, bad counts or too few live brokers.
        """
        if not internal and not _TOPIC_NAME.match(name):
            raise BrokerError(
                f"invalid topic name {name!r}: use letters, digits, '.', '_' or '-' (max 249)"
            )
        if name in self.topics:
            raise BrokerError(f"topic {name!r} already exists")
        if partitions < 1:
            raise BrokerError(f"topic {name!r}: partitions must be at least 1")
        live = self.live_brokers()
        if replication_factor < 1 or replication_factor > len(live):
            raise BrokerError(
                f"InvalidReplicationFactor: topic {name!r} asks for {replication_factor} "
                f"replicas but {len(live)} broker(s) are available"
            )
        topic = Topic(self, name, replication_factor, config or {}, internal=internal)
        placement = assign_replicas(live, partitions, replication_factor, self.world.rng)
        for index, replicas in enumerate(placement):
            partition = Partition(topic, index, replicas)
            partition.isr = list(replicas)
            topic.partitions.append(partition)
            for broker_id in replicas:
                self._by_broker[broker_id].append(partition)
            self._set_leader(partition, replicas[0], unclean=False)
        self.topics[name] = topic
        for group in self.groups.values():
            group.metadata_changed(name)
        return topic

    def delete_topic(self, name: str) -> bool:
        """Delete ``name``; False when it does not exist."""
        topic = self.topics.pop(name, None)
        if topic is None:
            return False
        topic.deleted = True
        for partition in topic.partitions:
            self._fail_waiters(partition, LeaderNotAvailable(f"{partition.tp} was deleted"))
            for broker_id in partition.replicas:
                self._by_broker[broker_id].remove(partition)
            partition.notify()
        for group in self.groups.values():
            group.metadata_changed(name)
        return True

    def partition_counts(self) -> dict[str, int]:
        """Partition count of every non-internal topic (what assignors get as metadata)."""
        return {n: len(t.partitions) for n, t in self.topics.items() if not t.internal}

    def internal_topic(self, name: str) -> Topic:
        """``__consumer_offsets`` / ``__transaction_state``, created on first use as Kafka
        does (with fewer replicas while fewer brokers are up)."""
        topic = self.topics.get(name)
        if topic is not None:
            return topic
        if not self.controller_up or not self.live_brokers():
            raise CoordinatorNotAvailable(f"{name} cannot be created yet")
        if name == OFFSETS_TOPIC:
            count, factor = self.config.offsets_partitions, self.config.offsets_replication_factor
        else:
            count = self.config.transaction_partitions
            factor = self.config.transaction_replication_factor
        factor = min(factor, len(self.live_brokers()))
        return self.create_topic(name, count, factor, internal=True)

    # -- coordinators --------------------------------------------------------------------

    def coordinator(self, topic: str, key: str) -> int:
        """The broker coordinating ``key`` (leader of its internal-topic partition).

        Raises:
            CoordinatorNotAvailable: that partition is offline.
        """
        internal = self.internal_topic(topic)
        partition = internal.partitions[coordinator_partition(key, len(internal.partitions))]
        if partition.leader < 0:
            raise CoordinatorNotAvailable(f"the coordinator of {key!r} is not available")
        return partition.leader

    def coordinator_available(self, group_id: str) -> bool:
        """True when ``group_id``'s coordinator broker is elected and running."""
        try:
            broker_id = self.coordinator(OFFSETS_TOPIC, group_id)
        except CoordinatorNotAvailable:
            return False
        return self.broker_up(broker_id)

    def group(self, group_id: str) -> Group:
        """The coordinator state of ``group_id`` (created empty on first use)."""
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(self, group_id)
        return group

    def delete_group(self, group_id: str) -> None:
        """Forget ``group_id`` (its members are dropped as if their sessions ended)."""
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        group.state = GROUP_DEAD
        for member in list(group.members.values()):
            if member.expiry is not None:
                member.expiry.cancel()
            _release(member)
        group.members.clear()
        for handle in (group._completion, group._deadline):
            if handle is not None:
                handle.cancel()

    # -- transactions --------------------------------------------------------------------

    def new_producer_id(self) -> int:
        """InitProducerId for an idempotent producer."""
        self._next_producer_id += 1
        return self._next_producer_id

    def init_transactions(self, transactional_id: str, owner: str, timeout: float) -> Transaction:
        """InitProducerId with a transactional id: bump the epoch (fencing the previous
        producer) and abort whatever it left open."""
        txn = self.transactions.get(transactional_id)
        if txn is None:
            txn = Transaction(transactional_id, self.new_producer_id())
            self.transactions[transactional_id] = txn
        else:
            if txn.state == "Ongoing":
                self.end_transaction(txn, commit=False)
            txn.epoch += 1
        txn.owner = owner
        txn.timeout = timeout
        txn.state = "Empty"
        return txn

    def open_transaction(self, txn: Transaction) -> None:
        """The coordinator's side of the first AddPartitionsToTxn / AddOffsetsToTxn: the
        transaction is ongoing and its timeout starts."""
        if txn.state != "Ongoing":
            txn.state = "Ongoing"
            txn.timer = asyncio.get_running_loop().call_later(
                txn.timeout, self._transaction_timed_out, txn.transactional_id, txn.epoch
            )

    def add_to_transaction(self, txn: Transaction, tp: TopicPartition) -> None:
        """AddPartitionsToTxn."""
        self.open_transaction(txn)
        txn.partitions[tp] = None

    def _transaction_timed_out(self, transactional_id: str, epoch: int) -> None:
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.epoch != epoch or txn.state != "Ongoing":
            return
        self.emit(
            Note(
                at=self.world.now(),
                broker=SOURCE,
                text=(
                    f"transaction {transactional_id} timed out after {txn.timeout:g}s "
                    "(transaction.timeout.ms): the coordinator aborts it"
                ),
            )
        )
        self.end_transaction(txn, commit=False)
        txn.epoch += 1  # the producer is fenced: its next call fails

    def end_transaction(self, txn: Transaction, *, commit: bool) -> None:
        """EndTxn: write a COMMIT/ABORT marker into every partition of the transaction and
        apply (or drop) the offsets sent to it."""
        if txn.timer is not None:
            txn.timer.cancel()
            txn.timer = None
        for tp in txn.partitions:
            topic = self.topics.get(tp.topic)
            if topic is not None and not topic.deleted:
                self._write_marker(topic.partitions[tp.partition], txn.producer_id, commit)
        if commit:
            for group_id, offsets in txn.offsets.items():
                self.group(group_id).store_offsets(offsets, txn.owner)
        txn.partitions.clear()
        txn.offsets.clear()
        txn.state = "CompleteCommit" if commit else "CompleteAbort"

    def _write_marker(self, partition: Partition, producer_id: int, commit: bool) -> None:
        first = partition.ongoing.get(producer_id)
        leader = partition.leader_replica
        if leader is None:
            # The marker waits for a leader; until then the transaction blocks the LSO.
            self._retry_marker_later(partition, producer_id, commit)
            return
        offset = leader.log_end
        marker = Entry(
            None,
            b"",
            (),
            int(self.world.now() * 1000),
            partition.leader_epoch,
            producer_id,
            -1,
            True,
            "commit" if commit else "abort",
        )
        leader.log.append(marker)
        if not commit and first is not None:
            partition.aborted.setdefault(producer_id, []).append((first, offset - 1))
        if first is not None:
            partition.pending_markers.append((offset, producer_id))
        if len(partition.isr) == 1:
            self._advance_high_watermark(partition)
            self._settle_markers(partition)
        else:
            self._schedule_followers(partition)

    def _retry_marker_later(self, partition: Partition, producer_id: int, commit: bool) -> None:
        def retry() -> None:
            if partition.topic.deleted:
                return
            self._write_marker(partition, producer_id, commit)

        asyncio.get_running_loop().call_later(0.1, retry)

    def _settle_markers(self, partition: Partition) -> None:
        """A transaction is decided for consumers once its marker is below the HW."""
        still: list[tuple[int, int]] = []
        for offset, producer_id in partition.pending_markers:
            if offset < partition.high_watermark:
                partition.ongoing.pop(producer_id, None)
            else:
                still.append((offset, producer_id))
        partition.pending_markers = still
        partition.notify()

    # -- snapshot helpers ----------------------------------------------------------------

    def topics_with_prefix(self, prefix: str) -> list[Topic]:
        """Non-internal topics whose name starts with ``prefix``, sorted by name."""
        return [
            self.topics[name]
            for name in sorted(self.topics)
            if name.startswith(prefix) and not self.topics[name].internal
        ]

    def groups_with_prefix(self, prefix: str) -> list[Group]:
        """Groups whose id starts with ``prefix``, sorted by id."""
        return [self.groups[g] for g in sorted(self.groups) if g.startswith(prefix)]
