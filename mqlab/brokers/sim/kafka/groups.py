"""Consumer groups as the simulated group coordinator keeps them: members, generations,
rebalances and committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mqlab.brokers.kafka.api import CommitFailed, TopicPartition
from mqlab.brokers.sim.kafka.algorithms import ASSIGNORS
from mqlab.brokers.sim.kafka.config import SOURCE, KafkaServerError, RebalanceNeeded
from mqlab.observe.events import (
    Committed,
    Rebalanced,
)

if TYPE_CHECKING:
    from mqlab.brokers.sim.kafka.server import SimKafkaCluster


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


def release(member: Member) -> None:
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
        release(member)
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
        release(member)
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
            release(dropped)
        self.generation += 1
        if not self.members:
            # Nobody is left to be told an assignment, so nothing is reported (as on a real
            # cluster: only members hear of a rebalance).
            self.state = GROUP_EMPTY
            self.protocol = ""
            self.leader_id = ""
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
        """Each member reports its own new assignment, one ``Rebalanced`` per member, as the
        real adapter's members do when their client hands them the assignment (no member can
        see the others'). The reason is the coordinator's, which a real client is not told."""
        now = self.cluster.world.now()
        for member in sorted(self.members.values(), key=lambda m: m.member_id):
            self.cluster.emit(
                Rebalanced(
                    at=now,
                    broker=SOURCE,
                    group=self.group_id,
                    generation=self.generation,
                    assignment=((member.client_id, tuple(str(tp) for tp in member.assignment)),),
                    reason=self._reason,
                )
            )
