"""The real Kafka consumer: an :class:`AIOKafkaConsumer` in a group, with bounded calls and
observations of its deliveries, commits and rebalances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import (
    IllegalStateError,
)
from aiokafka.structs import OffsetAndMetadata

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka import wire
from mqlab.brokers.kafka.api import (
    ConsumerSettings,
    KafkaConsumer,
    KafkaRecord,
    TopicPartition,
)
from mqlab.brokers.kafka.wire import error_text, ours, theirs
from mqlab.observe.events import (
    Rebalanced,
)

if TYPE_CHECKING:
    from mqlab.brokers.kafka.client import KafkaBroker


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reports every new assignment of one consumer as a Rebalanced observation."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to report yet: the new assignment follows in on_partitions_assigned."""

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._consumer.report_assignment(frozenset(ours(tp) for tp in assigned))


POSITION_PATIENCE = 1.0
"""How long :meth:`Consumer.behind` waits for a position aiokafka is still looking up."""


class Consumer(KafkaConsumer):
    """An :class:`AIOKafkaConsumer` in a group, with observations and bounded calls."""

    def __init__(
        self,
        broker: KafkaBroker,
        consumer: AIOKafkaConsumer,
        settings: ConsumerSettings,
        *,
        request_timeout: float,
    ) -> None:
        self.name = settings.name
        self.group_id = settings.group_id
        self._broker = broker
        self._consumer = consumer
        self._request_timeout = request_timeout
        self._read_committed = settings.isolation_level == "read_committed"
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
                {ours(tp): int(meta.offset) for tp, meta in (offsets or {}).items()}
            )
            return result

        coordinator._do_commit_offsets = commit_and_report

    def _report_commits(self, offsets: dict[TopicPartition, int]) -> None:
        self._broker.report_committed(self.group_id, offsets, self.name)

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
            explicit = {theirs(tp): OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
        # Committed observations come from watch_commits(), once the broker accepted them.
        await self._broker.bounded(self._consumer.commit(explicit), f"commit by {self.name}")

    async def committed(self, tp: TopicPartition) -> int | None:
        result = await self._broker.bounded(
            self._consumer.committed(theirs(tp)), f"committed({tp})"
        )
        return None if result is None else int(result)

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(theirs(tp), offset)
        except (IllegalStateError, AssertionError, ValueError) as error:
            raise BrokerError(
                f"kafka: {self.name} cannot seek {tp} to {offset}: partition not assigned "
                f"to it ({error_text(error)})"
            ) from error

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        targets = [theirs(tp) for tp in tps] if tps else list(self._consumer.assignment())
        if not targets:
            return
        try:
            await self._broker.bounded(
                self._consumer.seek_to_beginning(*targets), "seek_to_beginning"
            )
        except BrokerError as error:
            raise BrokerError(
                f"kafka: {self.name} cannot seek to the beginning of "
                f"{', '.join(str(ours(tp)) for tp in targets)}: {error}"
            ) from error

    async def position(self, tp: TopicPartition) -> int:
        try:
            return int(
                await self._broker.bounded(self._consumer.position(theirs(tp)), f"position({tp})")
            )
        except BrokerError as error:
            raise BrokerError(f"kafka: {self.name} has no position on {tp}: {error}") from error

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(ours(tp) for tp in self._consumer.assignment())

    async def behind(self) -> bool:
        if self._closed:
            return False
        consumer = self._consumer
        for tp in consumer.assignment():
            # aiokafka keeps both ends from the partition's last fetch response (None before
            # the first; the last stable offset is -1 under read_uncommitted).
            end = consumer.last_stable_offset(tp) if self._read_committed else None
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is None:
                return True  # assigned, and no fetch of it answered yet (a rejoin after a cut)
            try:
                position = await self._broker.bounded(
                    consumer.position(tp), f"position({tp})", timeout=POSITION_PATIENCE
                )
            except BrokerError:
                return True  # where to start is still being looked up (a reset is pending)
            if int(position) < int(end):
                return True
        return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # stop() sends LeaveGroup, so the others rebalance at once instead of after the
        # session timeout; bounded because a dead coordinator would make it wait.
        await self._broker.let_go(self, wire.stop_consumer(self._consumer), self._request_timeout)
