"""Wrong on purpose: the consumer's automatic commit (every second, in the background)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaRecord


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    return await kafka.consumer([topic], group_id=group, auto_commit=True, session_timeout=2.0)


async def consume(
    consumer: KafkaConsumer, process: Callable[[KafkaRecord], Awaitable[None]]
) -> None:
    while True:
        for record in await consumer.poll(timeout=0.5):
            await process(record)
