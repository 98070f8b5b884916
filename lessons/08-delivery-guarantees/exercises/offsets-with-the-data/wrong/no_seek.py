"""Wrong on purpose: offset and credit in one transaction, but no seek, and the guard ignored."""

from __future__ import annotations

import json

from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer
from mqlab.patterns.database import BusinessDatabase


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    return await kafka.consumer([topic], group_id=group, auto_commit=False, session_timeout=2.0)


async def consume(consumer: KafkaConsumer, db: BusinessDatabase) -> None:
    while True:
        for record in await consumer.poll(timeout=0.5):
            deposit = json.loads(record.value)
            async with db.transaction() as tx:
                await tx.advance_offset(
                    consumer.group_id,
                    record.topic,
                    record.partition,
                    start=record.offset,
                    end=record.offset + 1,
                )
                await tx.credit(deposit["account"], deposit["amount"], message_id=record.message_id)
