"""Wrong on purpose: each record is committed before it is processed (at-most-once)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaRecord, TopicPartition


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    return await kafka.consumer([topic], group_id=group, auto_commit=False, session_timeout=2.0)


async def consume(
    consumer: KafkaConsumer, process: Callable[[KafkaRecord], Awaitable[None]]
) -> None:
    while True:
        for record in await consumer.poll(timeout=0.5):
            try:
                await consumer.commit(
                    {TopicPartition(record.topic, record.partition): record.offset + 1}
                )
            except BrokerError:
                continue
            await process(record)
