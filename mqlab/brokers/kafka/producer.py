"""The real Kafka producer: an :class:`AIOKafkaProducer` with bounded sends, errors in the
interface's terms (NotEnoughReplicas, ProduceTimedOut) and observations.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import (
    KafkaProducer,
    NotEnoughReplicas,
    OutgoingRecord,
    ProducerSettings,
    ProduceTimedOut,
    RecordMetadata,
    TopicPartition,
    default_partition,
)
from mqlab.brokers.kafka.wire import error_text, key_text, theirs

if TYPE_CHECKING:
    from mqlab.brokers.kafka.client import KafkaBroker


class Producer(KafkaProducer):
    """An :class:`AIOKafkaProducer` with bounded sends, error mapping and observations."""

    def __init__(
        self, broker: KafkaBroker, producer: AIOKafkaProducer, settings: ProducerSettings
    ) -> None:
        super().__init__(broker, settings.name)
        self._broker = broker
        self._producer = producer
        self._acks = settings.acks
        self._idempotent = settings.idempotent
        self._transactional = settings.transactional_id is not None
        self._request_timeout = settings.request_timeout
        self._pending_offsets: list[tuple[str, dict[TopicPartition, int]]] = []
        self._closed = False

    async def _send(self, record: OutgoingRecord) -> RecordMetadata:
        if self._closed:
            raise BrokerError(f"kafka: producer {self.name} is closed")
        return await self._broker.send_reported(
            self._acknowledged(
                record.topic, record.value, record.key, record.partition, list(record.headers)
            ),
            destination=record.topic,
            message_id=record.message_id,
            key=key_text(record.key),
            producer=self.name,
            placed=RecordMetadata.placement,
        )

    async def _acknowledged(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int | None,
        headers: list[tuple[str, bytes]],
    ) -> RecordMetadata:
        loop = asyncio.get_running_loop()
        # One deadline for the whole send: waiting for metadata and buffer space, then for the
        # acknowledgement. The extra second lets aiokafka's own expiry (request_timeout after
        # the batch was created) report its more precise error first; an idempotent producer
        # has no such expiry (it retries until it succeeds), so there the deadline decides.
        deadline = loop.time() + self._request_timeout + 1.0
        where = f"{topic}[{partition}]" if partition is not None else topic
        future = None
        try:
            async with asyncio.timeout_at(deadline):
                if partition is not None:
                    known = await self._producer.partitions_for(topic)
                    if partition not in known:
                        raise BrokerError(
                            f"topic {topic} has no partition {partition} "
                            f"(it has {len(known)}: 0..{len(known) - 1})"
                        )
                # Cancelling send() while it queues withdraws the record. Once queued, the
                # timeout only cancels this wait: the record may still be written later (a
                # lost acknowledgement is how duplicates happen, which lessons show).
                future = await self._producer.send(
                    topic, value, key=key, partition=partition, headers=headers
                )
                record = await future
        except TimeoutError:
            if future is None:
                raise ProduceTimedOut(
                    f"kafka: could not even queue a record for {where} within "
                    f"{self._request_timeout:g}s (no metadata for the topic: is the cluster up?)"
                ) from None
            raise await self._diagnose_timeout(topic, key, partition) from None
        except UnknownTopicOrPartitionError:
            raise BrokerError(f"kafka: topic {topic} does not exist") from None
        except KafkaError as error:
            raise self._translate(error, where) from error
        if record is None:
            # acks=0: aiokafka resolves the send with no metadata, the broker never answered.
            landed = await self._partition_of(topic, key, partition)
            return RecordMetadata(topic=topic, partition=landed, offset=-1)
        return RecordMetadata(topic=record.topic, partition=record.partition, offset=record.offset)

    async def _partition_of(self, topic: str, key: bytes | None, partition: int | None) -> int:
        """Where an unacknowledged record went: the explicit partition, the key's (the same
        murmur2 rule the client applied), or -1 for a keyless record (the client picked one
        at random and does not say which)."""
        if partition is not None:
            return partition
        if key is None:
            return -1
        return default_partition(key, len(await self._producer.partitions_for(topic)))

    def _translate(self, error: KafkaError, where: str) -> BrokerError:
        if isinstance(error, NotEnoughReplicasError | NotEnoughReplicasAfterAppendError):
            return NotEnoughReplicas(
                f"kafka: {where}: acks=all refused, the partition has fewer in-sync replicas "
                f"than min.insync.replicas ({error_text(error)})"
            )
        if isinstance(
            error,
            KafkaTimeoutError | RequestTimedOutError | KafkaConnectionError | NodeNotReadyError,
        ):
            return ProduceTimedOut(
                f"kafka: {where}: not acknowledged within {self._request_timeout:g}s "
                f"({error_text(error)})"
            )
        return BrokerError(f"kafka: send to {where} failed: {error_text(error)}")

    async def _diagnose_timeout(
        self, topic: str, key: bytes | None, partition: int | None
    ) -> BrokerError:
        """Explain a send that got no answer, from the partition's state in the metadata."""
        waited = f"{self._request_timeout:g}s"
        try:
            # Bounded tighter than a normal call: the learner is already waiting.
            async with asyncio.timeout(3.0):
                info = await self._broker.describe_topic(topic)
        except (BrokerError, TimeoutError) as error:
            return ProduceTimedOut(
                f"kafka: {topic}: not acknowledged within {waited}, and the cluster does not "
                f"answer metadata requests either ({error})"
            )
        if partition is None and key is not None and info.partitions:
            partition = default_partition(key, len(info.partitions))
        candidates = [p for p in info.partitions if partition is None or p.partition == partition]
        min_isr = int(info.config.get("min.insync.replicas", "1"))
        for p in candidates:
            if p.leader < 0:
                return ProduceTimedOut(
                    f"kafka: {topic}[{p.partition}]: not acknowledged within {waited}: "
                    "the partition has no leader"
                )
            if self._acks == "all" and len(p.isr) < min_isr:
                return NotEnoughReplicas(
                    f"kafka: {topic}[{p.partition}]: acks=all not acknowledged within {waited}: "
                    f"ISR {list(p.isr)} is smaller than min.insync.replicas={min_isr}"
                )
        leaders = sorted({p.leader for p in candidates})
        retrying = " (the idempotent producer keeps retrying)" if self._idempotent else ""
        return ProduceTimedOut(
            f"kafka: {topic}: not acknowledged within {waited} by leader broker "
            f"{', '.join(map(str, leaders))}{retrying}"
        )

    async def flush(self) -> None:
        await self._broker.bounded(self._producer.flush(), "flush")

    async def begin_transaction(self) -> None:
        self._require_transactional()
        await self._broker.bounded(self._producer.begin_transaction(), "begin_transaction")
        self._pending_offsets.clear()

    async def commit_transaction(self) -> None:
        self._require_transactional()
        await self._broker.bounded(self._producer.commit_transaction(), "commit_transaction")
        # Offsets sent inside the transaction are committed only now, atomically with it.
        broker = self._broker
        for group_id, offsets in self._pending_offsets:
            broker.report_committed(group_id, offsets, self.name)
        self._pending_offsets.clear()

    async def abort_transaction(self) -> None:
        self._require_transactional()
        await self._broker.bounded(self._producer.abort_transaction(), "abort_transaction")
        self._pending_offsets.clear()

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        self._require_transactional()
        await self._broker.bounded(
            self._producer.send_offsets_to_transaction(
                {theirs(tp): offset for tp, offset in offsets.items()}, group_id
            ),
            "send_offsets_to_transaction",
        )
        self._pending_offsets.append((group_id, dict(offsets)))

    def _require_transactional(self) -> None:
        if not self._transactional:
            raise self.not_transactional()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # stop() flushes; against a dead cluster that could wait for ever, so it is bounded
        # (records still unacknowledged then are dropped, as the learner's error says).
        await self._broker.let_go(self, self._producer.stop(), self._request_timeout)
