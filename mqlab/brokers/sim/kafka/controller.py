"""The KRaft controller of the simulated Kafka cluster: it notices brokers that die, pause or
come back, fences them, elects leaders (clean or unclean), shrinks ISRs of followers that stop
fetching and gives partitions back to their preferred leaders.

Without the controller none of this happens: leaders keep serving and the ISR stays, as in a
KRaft cluster whose quorum is gone.
"""

from __future__ import annotations

import asyncio
from collections import deque

from mqlab.brokers.sim.kafka.config import (
    CONTROLLER_NODE,
    SOURCE,
    ConnectionLost,
    NotLeaderOrFollower,
)
from mqlab.brokers.sim.kafka.log import Partition, UnreplicatedMarker
from mqlab.brokers.sim.kafka.replication import ReplicationLayer
from mqlab.brokers.sim.world import NodeChange, NodeState
from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    Note,
)


class ControllerLayer(ReplicationLayer):
    """The controller's decisions on top of the replicated partitions (see the module docstring)."""

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
        """Producer and transaction state of entries the new leader does not have. A decided
        transaction whose records it has but whose marker it lacks gets the marker again."""
        for producer_id, recent in list(partition.producer_state.items()):
            kept = deque(((e, s, o) for e, s, o in recent if o < end), maxlen=5)
            if kept:
                partition.producer_state[producer_id] = kept
            else:
                del partition.producer_state[producer_id]
        for producer_id, first in list(partition.ongoing.items()):
            if first >= end:
                del partition.ongoing[producer_id]
        surviving: list[UnreplicatedMarker] = []
        lost: list[UnreplicatedMarker] = []
        for pending in partition.pending_markers:
            if pending.marker_offset < end:
                surviving.append(pending)
            elif pending.first_offset < end:
                lost.append(pending)
        partition.pending_markers = surviving
        rewritten = {(pending.producer_id, pending.first_offset) for pending in lost}
        for producer_id, ranges in list(partition.aborted.items()):
            # The offsets the new leader lacks will be reused: no aborted range may cover them.
            # A range whose marker is written again is recorded again with it; one cut short
            # (an unclean election lost a settled marker) keeps the records that survived
            # hidden, as the coordinator decided (Kafka would leave that transaction hanging).
            kept_ranges = [
                (first, min(last, end - 1))
                for first, last in ranges
                if first < end and (producer_id, first) not in rewritten
            ]
            if kept_ranges:
                partition.aborted[producer_id] = kept_ranges
            else:
                del partition.aborted[producer_id]
        for pending in lost:
            self._rewrite_marker(partition, pending)

    def _rewrite_marker(self, partition: Partition, lost: UnreplicatedMarker) -> None:
        """The new leader has a decided transaction's records but not its marker: the
        coordinator, whose WriteTxnMarkers to the old leader failed, writes it on this one."""
        partition.ongoing[lost.producer_id] = lost.first_offset
        if not partition.topic.internal:
            kind = "COMMIT" if lost.commit else "ABORT"
            self.emit(
                Note(
                    at=self.world.now(),
                    broker=SOURCE,
                    text=(
                        f"broker {partition.leader} leads {partition.tp} without the {kind} "
                        f"marker of producer {lost.producer_id}'s transaction: the "
                        f"coordinator writes it again at offset {partition.log_end}"
                    ),
                )
            )
        self._write_marker(partition, lost.producer_id, lost.commit)

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
