"""The simulated Kafka consumer: a group member that joins, heartbeats, rebalances, fetches
and commits on the simulated cluster, and can die like kill -9 (:meth:`SimKafkaConsumer.crash`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from mqlab.brokers.base import BrokerError, OperationTimedOut
from mqlab.brokers.kafka.api import (
    CommitFailed,
    ConsumerSettings,
    KafkaConsumer,
    KafkaRecord,
    TopicPartition,
)
from mqlab.brokers.sim.fast import slot_builder
from mqlab.brokers.sim.kafka.config import (
    OFFSETS_TOPIC,
    KafkaServerError,
    RebalanceNeeded,
    RetriableError,
)
from mqlab.brokers.sim.kafka.groups import Group
from mqlab.brokers.sim.kafka.log import Partition, new_record
from mqlab.brokers.sim.kafka.wire import RETRY_BACKOFF, ClientClosed, coordinator_round_trip
from mqlab.brokers.sim.world import NodeUnreachable
from mqlab.observe.events import ConsumerCrashed, Delivered

if TYPE_CHECKING:
    from mqlab.brokers.sim.kafka.client import SimKafkaBroker

MAX_POLL_INTERVAL = 300.0
"""max.poll.interval.ms: a member that does not poll for this long leaves its group."""

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
        self, adapter: SimKafkaBroker, topics: tuple[str, ...], settings: ConsumerSettings
    ) -> None:
        self.name = settings.name
        self.group_id = settings.group_id
        self.topics = topics
        self._adapter = adapter
        self._cluster = adapter.cluster
        self._world = adapter.world
        self._bus = adapter.bus
        self._source = adapter.name
        self._auto_commit = settings.auto_commit
        self._auto_commit_interval = settings.auto_commit_interval
        self._reset_policy = settings.auto_offset_reset
        self._read_committed = settings.isolation_level == "read_committed"
        self._strategy = settings.assignment_strategy
        self._session_timeout = settings.session_timeout
        self._heartbeat_interval = settings.heartbeat_interval
        self._max_poll_records = settings.max_poll_records
        self._max_poll_interval = settings.max_poll_interval
        self._member_id: str | None = None
        self._generation = -1
        self._assignment: tuple[TopicPartition, ...] = ()
        self._parts: list[tuple[TopicPartition, Partition]] = []
        self._positions: dict[TopicPartition, int] = {}
        self._fetched_ends: dict[TopicPartition, int] = {}
        """Each partition's end as this consumer's last fetch saw it (see behind())."""
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
        self._fetched_ends.clear()
        self._tickets.clear()

    def _current_offsets(self) -> dict[TopicPartition, int]:
        return {tp: self._positions[tp] for tp in self._assignment if tp in self._positions}

    # -- fetching --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._state != "running":
            raise ClientClosed(f"consumer {self.name} is {self._state}")
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
            self._fetched_ends[tp] = end
            if position >= end:
                continue
            stop = min(end, position + room)
            topic = tp.topic
            index = tp.partition
            for offset, entry in enumerate(leader.log[position:stop], position):
                if entry.control:
                    continue  # a transaction marker: never handed to the application
                if read_committed and entry.txn and partition.is_aborted(entry.producer_id, offset):
                    continue
                # Kafka has no redelivered flag and no delivery count: a record read again
                # (after a crash, a rebalance, a seek) is delivered like the first time.
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
            positions[tp] = stop
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

    async def behind(self) -> bool:
        if self._state != "running":
            return False
        positions, ends = self._positions, self._fetched_ends
        # Not fetched yet since the assignment (a rejoin after a cut): as unknown as behind.
        return any(
            tp not in ends or tp not in positions or positions[tp] < ends[tp]
            for tp in self._assignment
        )

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
            self._adapter.forget(self)
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._member_id is not None:
            await self._leave(f"{self.name} left the group")
        self._revoke()
        self._state = "closed"
        self._wakeup.set()
        self._adapter.forget(self)

    async def crash(self, point: str = "crash()") -> None:
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
        self._adapter.forget(self)
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
