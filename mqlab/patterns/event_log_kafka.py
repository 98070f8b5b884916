"""Kafka as the log projections replay, and why it cannot be an event store.

Kept apart from :mod:`mqlab.patterns.event_sourcing` (the model) like the stores; the class
docstring explains what Kafka lacks (a conditional append) and where the conflict shows up
instead (a projection replaying the log).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mqlab.patterns.event_sourcing import DomainEvent, EventSource, StoredEvent

if TYPE_CHECKING:
    from mqlab.brokers.kafka.api import KafkaAPI, KafkaProducer


class KafkaEventLog(EventSource):
    """Kafka as the event log that projections replay, on the real cluster or ``sim:kafka``.

    Why this is not an :class:`EventStore`: Kafka has no conditional append. A produce
    request cannot say "only if this partition ends at offset N" or "only if this key's last
    record has version 3", so two writers that both loaded version 3 both append a version 4
    and Kafka acknowledges both. The idempotent producer only drops *one producer's own*
    retries, and transactions make several writes atomic, not conditional. Optimistic
    concurrency therefore has to come from elsewhere: a store that has it (PostgreSQL here,
    with Kafka fed from it through an outbox), or a single writer per aggregate (commands
    partitioned by aggregate id and handled by the one consumer that owns the partition). A
    reader of the log can only *detect* the clash after the fact: :meth:`Projection.apply`
    reports two events claiming one version as a ``VersionConflict`` with ``detected=
    "replay"``.

    The topic has one partition by default, so ``position`` (offset + 1) is a global order and
    a projection can resume from it; with more partitions only a full replay is possible
    (order then holds per aggregate: the key is the aggregate id).

    Args:
        kafka: a connected Kafka adapter (real or simulated).
        topic: the logical topic name (qualified with the adapter's namespace).
        partitions: the topic's partitions.
        replication_factor: the topic's replication factor (3, the lab's brokers: the
            producer uses acks=all and the lab's topics need 2 in-sync replicas).
    """

    def __init__(
        self,
        kafka: KafkaAPI,
        topic: str = "events",
        *,
        partitions: int = 1,
        replication_factor: int = 3,
        name: str | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = kafka.qualify(topic)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.name = name or kafka.name
        self._producer: KafkaProducer | None = None
        self._replays = 0

    async def setup(self) -> None:
        """Create the topic and an idempotent producer (acks=all)."""
        await self.kafka.create_topic(
            self.topic, partitions=self.partitions, replication_factor=self.replication_factor
        )
        self._producer = await self.kafka.producer(acks="all", idempotent=True)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.close()
            self._producer = None

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        """Append ``events`` (keyed by aggregate id), with no version check at all."""
        if self._producer is None:
            raise RuntimeError("KafkaEventLog.setup() was not called")
        for event in events:
            await self._producer.send(
                self.topic,
                event.to_json().encode(),
                key=event.aggregate_id.encode(),
                message_id=event.event_id,
            )

    async def read_all(
        self, after_position: int = 0, *, timeout: float = 30.0
    ) -> list[StoredEvent]:
        """Replay the topic from the beginning with a fresh consumer group (nothing is
        committed), up to each partition's high watermark at the start of the replay.

        Raises:
            ValueError: ``after_position`` on a topic with several partitions.
            TimeoutError: the replay did not reach the end within ``timeout`` seconds.
        """
        from mqlab.brokers.kafka.api import TopicPartition

        if after_position and self.partitions > 1:
            raise ValueError("positions are global only on a one-partition topic")
        info = await self.kafka.describe_topic(self.topic)
        ends = {TopicPartition(self.topic, p.partition): p.high_watermark for p in info.partitions}
        if all(end == 0 for end in ends.values()):
            return []
        self._replays += 1
        consumer = await self.kafka.consumer(
            [self.topic], group_id=self.kafka.qualify(f"replay-{self._replays}")
        )
        found: list[tuple[int, int, DomainEvent]] = []
        try:
            async with asyncio.timeout(timeout):
                while len(consumer.assignment()) < len(ends):
                    # Joining the group happens inside poll; what arrives meanwhile comes
                    # again after the seek below.
                    await consumer.poll(timeout=0.5)
                for tp in sorted(ends):
                    await consumer.seek(tp, after_position if self.partitions == 1 else 0)
                while True:
                    positions = {tp: await consumer.position(tp) for tp in ends}
                    if all(positions[tp] >= end for tp, end in ends.items()):
                        break
                    found += _decoded(await consumer.poll(timeout=0.5))
        finally:
            await consumer.close()
        found = [f for f in found if f[1] < ends[TopicPartition(self.topic, f[0])]]
        found.sort(key=lambda item: (item[0], item[1]))
        if self.partitions == 1:
            return [StoredEvent(offset + 1, event) for _, offset, event in found]
        return [StoredEvent(index, item[2]) for index, item in enumerate(found, start=1)]


def _decoded(records: Sequence[Any]) -> list[tuple[int, int, DomainEvent]]:
    return [(r.partition, r.offset, DomainEvent.from_json(r.value)) for r in records]
