"""A payments consumer: the reference solution of the at-least-once-consumer exercise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaRecord, TopicPartition


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    """No auto-commit: the loop decides when a record is done."""
    return await kafka.consumer([topic], group_id=group, auto_commit=False, session_timeout=2.0)


async def consume(
    consumer: KafkaConsumer, process: Callable[[KafkaRecord], Awaitable[None]]
) -> None:
    """Process, then commit the next offset: a crash in between repeats the record, never
    skips it."""
    while True:
        for record in await consumer.poll(timeout=0.5):
            await process(record)
            partition = TopicPartition(record.topic, record.partition)
            try:
                await consumer.commit({partition: record.offset + 1})
            except BrokerError:
                # The group rebalanced: the partition's new owner reads the record again.
                continue
