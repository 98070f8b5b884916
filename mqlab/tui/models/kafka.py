"""The Kafka cluster as the live widget draws it: brokers, partitions, offsets, groups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    Committed,
    LeaderChanged,
    Observation,
    Produced,
    Rebalanced,
)
from mqlab.tui.models import short_name
from mqlab.tui.models.snapshots import KafkaSnapshot

BROKER_PREFIX = "kafka-broker-"
"""How the lab (and the simulator) name a Kafka broker process: ``kafka-broker-2``."""


@dataclass
class PartitionState:
    """One partition: placement and the three offsets of its log."""

    topic: str
    partition: int
    leader: int = -1
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    log_start: int = 0
    high_watermark: int = 0
    log_end: int = 0


@dataclass
class GroupState:
    """A consumer group: who owns which partition, and what it committed."""

    group: str
    generation: int = 0
    state: str = ""
    assignment: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """member -> ``topic:partition`` names (short topic names)."""
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    """(short topic, partition) -> committed offset (the next offset to read)."""


@dataclass
class KafkaView:
    """The cluster folded from Kafka observations and :class:`KafkaSnapshot` s."""

    brokers: dict[int, bool] = field(default_factory=dict)
    """broker id -> alive."""
    controller_id: int | None = None
    controller_known: bool = False
    """Whether a snapshot said who the controller is (observations never do)."""
    partitions: dict[tuple[str, int], PartitionState] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)
    version: int = 0
    """Bumped on every change, so a widget repaints only when something moved."""
    ended: bool = False
    """The run is over: the last snapshot is the last look before its topics were deleted."""
    liveness_reports: int = 0
    """How many broker-down and broker-up observations were folded (a snapshot is stamped
    with it when requested)."""
    _liveness_report_of: dict[int, int] = field(default_factory=dict)
    """Each broker's latest down/up observation, as its :attr:`liveness_reports` number."""

    def end(self) -> None:
        """Mark the run over (the view says its snapshot is the last look)."""
        self.ended = True
        self.version += 1

    def __call__(self, observation: Observation) -> None:
        """Fold one observation (anything that is not about Kafka is ignored).

        Dispatched on the observation's type: a burst is mostly ``Produced``, and this runs
        for every one of them in the UI's frame.
        """
        fold = _FOLDS.get(type(observation))
        if fold is not None and fold(self, observation):
            self.version += 1

    def _produced(self, observation: Produced) -> bool:
        partition, position = observation.partition, observation.position
        if partition is None or position is None or observation.duplicate:
            return False
        if "kafka" not in observation.broker:
            return False
        state = self._partition(short_name(observation.destination), partition)
        if position >= state.log_end:
            state.log_end = position + 1
        # Observations do not carry the high watermark; with acks=all it follows the
        # acknowledged end closely, and a snapshot corrects it.
        if position >= state.high_watermark:
            state.high_watermark = position + 1
        return True

    def _leader_changed(self, observation: LeaderChanged) -> bool:
        state = self._partition(short_name(observation.topic), observation.partition)
        state.leader = observation.leader
        state.isr = observation.isr
        for broker_id in observation.isr:
            self.brokers.setdefault(broker_id, True)
        return True

    def _broker_down(self, observation: BrokerDown) -> bool:
        return self._set_alive(observation.node, alive=False)

    def _broker_up(self, observation: BrokerUp) -> bool:
        return self._set_alive(observation.node, alive=True)

    def _committed(self, observation: Committed) -> bool:
        group = self._group(short_name(observation.group))
        key = (short_name(observation.topic), observation.partition)
        group.committed[key] = observation.offset
        return True

    def _rebalanced(self, observation: Rebalanced) -> bool:
        if "kafka" not in observation.broker:
            return False
        group = self._group(short_name(observation.group))
        # Each member reports its own share of a generation (as the real adapter's rebalance
        # listener does): a new generation starts a new assignment, later reports add to it.
        if observation.generation != group.generation:
            group.assignment = {}
        group.generation = observation.generation
        group.assignment.update(
            (member, tuple(short_name(tp) for tp in partitions))
            for member, partitions in observation.assignment
        )
        return True

    def apply_snapshot(
        self, snapshot: KafkaSnapshot, *, requested_after: int | None = None
    ) -> None:
        """Take the broker's own word for everything it reports.

        ``requested_after`` is :attr:`liveness_reports` when the snapshot was asked for. A
        snapshot reaches the UI a while after the broker answered, and a broker reported down
        or up since the request may have changed after the answer: that report stays (the
        next snapshot confirms it), so a late snapshot never shows a restarted broker dead.
        """
        reported = self._liveness_report_of
        self.brokers = {
            node.node_id: (
                self.brokers.get(node.node_id, node.alive)
                if requested_after is not None and reported.get(node.node_id, 0) > requested_after
                else node.alive
            )
            for node in snapshot.brokers
        }
        self.controller_id = snapshot.controller_id
        self.controller_known = True
        for topic in snapshot.topics:
            name = short_name(topic.name)
            for info in topic.partitions:
                state = self._partition(name, info.partition)
                state.leader = info.leader
                state.replicas = info.replicas
                state.isr = info.isr
                state.log_start = info.log_start
                state.high_watermark = info.high_watermark
                state.log_end = max(info.log_end, info.high_watermark)
        for group_info in snapshot.groups:
            group = self._group(short_name(group_info.group_id))
            group.state = group_info.state
            if group_info.members or not group.assignment:
                group.assignment = {
                    member.client_id or member.member_id: tuple(
                        f"{short_name(tp.topic)}:{tp.partition}" for tp in member.assignment
                    )
                    for member in group_info.members
                }
            for offset in group_info.offsets:
                if offset.committed is not None:
                    group.committed[(short_name(offset.topic), offset.partition)] = offset.committed
        self.version += 1

    @property
    def empty(self) -> bool:
        """Nothing known yet (no Kafka observation, no snapshot)."""
        return not self.brokers and not self.partitions and not self.groups

    def lag(self, group: GroupState, topic: str, partition: int) -> int | None:
        """Records ``group`` still has to read on a partition (None: nothing committed)."""
        committed = group.committed.get((topic, partition))
        state = self.partitions.get((topic, partition))
        if committed is None or state is None:
            return None
        return max(0, state.high_watermark - committed)

    def _partition(self, topic: str, partition: int) -> PartitionState:
        key = (topic, partition)
        state = self.partitions.get(key)
        if state is None:
            state = self.partitions[key] = PartitionState(topic, partition)
        return state

    def _group(self, name: str) -> GroupState:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = GroupState(name)
        return group

    def _set_alive(self, node: str, *, alive: bool) -> bool:
        if not node.startswith(BROKER_PREFIX):
            return False
        number = node.removeprefix(BROKER_PREFIX)
        if not number.isdigit():
            return False
        self.liveness_reports += 1
        self._liveness_report_of[int(number)] = self.liveness_reports
        self.brokers[int(number)] = alive
        return True


_FOLDS: dict[type[Observation], Callable[[KafkaView, Any], bool]] = {
    Produced: KafkaView._produced,
    LeaderChanged: KafkaView._leader_changed,
    BrokerDown: KafkaView._broker_down,
    BrokerUp: KafkaView._broker_up,
    Committed: KafkaView._committed,
    Rebalanced: KafkaView._rebalanced,
}
"""What each observation type changes (the rest are not about Kafka)."""
