"""The data path of the simulated Kafka cluster: appends on the leader, followers fetching,
the ISR growing back, the high watermark and the acks=all waiters, and the transaction markers
whose replication decides what read_committed consumers see.

:class:`ReplicationLayer` is the base of :class:`~mqlab.brokers.sim.kafka.server.SimKafkaCluster`
and holds the cluster's state; the controller's decisions (fencing, elections) are the next
layer, in :mod:`mqlab.brokers.sim.kafka.controller`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from mqlab.brokers.base import BrokerError
from mqlab.brokers.sim.kafka.algorithms import coordinator_partition
from mqlab.brokers.sim.kafka.config import (
    CONTROLLER_NODE,
    OFFSETS_TOPIC,
    SOURCE,
    ClusterConfig,
    LeaderNotAvailable,
    NotEnoughReplicasAfterAppend,
    NotEnoughReplicasError,
)
from mqlab.brokers.sim.kafka.groups import Group
from mqlab.brokers.sim.kafka.log import (
    BrokerState,
    Entry,
    Partition,
    Replica,
    Topic,
    UnreplicatedMarker,
)
from mqlab.brokers.sim.world import SimServer, SimWorld
from mqlab.observe.events import (
    LeaderChanged,
    Note,
)

if TYPE_CHECKING:
    from mqlab.brokers.sim.kafka.server import Transaction
    from mqlab.observe.events import Observation


class ReplicationLayer(SimServer):
    """The cluster's brokers and partitions and how data moves between their replicas.

    Args:
        world: the run's world (clock, rng, faults, bus).
        brokers: number of brokers (nodes ``kafka-broker-1..n``).
        config: broker configs by their Kafka names over
            :data:`~mqlab.brokers.sim.kafka.config.DEFAULT_CONFIG`.
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
        super().__init__(world)
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

    # -- lifecycle -----------------------------------------------------------------------
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

    # -- transaction markers -------------------------------------------------------------

    def _write_marker(self, partition: Partition, producer_id: int, commit: bool) -> None:
        """WriteTxnMarkers for one partition: append ``producer_id``'s COMMIT or ABORT marker
        on the leader (later, while the partition has no leader). The marker takes an offset."""
        leader = partition.leader_replica
        if leader is None:
            # The marker waits for a leader; until then the transaction blocks the LSO.
            self._retry_marker_later(partition, producer_id, commit)
            return
        # The transaction is no longer open here: the producer's next records start a new one,
        # while this one holds the LSO until its marker is replicated (pending_markers).
        first = partition.ongoing.pop(producer_id, None)
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
            partition.pending_markers.append(UnreplicatedMarker(offset, producer_id, first, commit))
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
        """A transaction is decided for consumers once its marker is below the HW.

        Only the transaction that marker ended is settled: the producer may already have an
        open transaction after it on this partition (``partition.ongoing``), which still holds
        the last stable offset at its first record, as in Kafka's producer state.
        """
        high_watermark = partition.high_watermark
        partition.pending_markers = [
            pending
            for pending in partition.pending_markers
            if pending.marker_offset >= high_watermark
        ]
        partition.notify()
