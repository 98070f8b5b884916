"""Wrong on purpose: the credit commits in the database, the offset in Kafka."""

from __future__ import annotations

import json

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, TopicPartition
from mqlab.patterns.database import BusinessDatabase


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    return await kafka.consumer([topic], group_id=group, auto_commit=False, session_timeout=2.0)


async def consume(consumer: KafkaConsumer, db: BusinessDatabase) -> None:
    while True:
        for record in await consumer.poll(timeout=0.5):
            deposit = json.loads(record.value)
            async with db.transaction() as tx:
                await tx.credit(deposit["account"], deposit["amount"], message_id=record.message_id)
            try:
                await consumer.commit(
                    {TopicPartition(record.topic, record.partition): record.offset + 1}
                )
            except BrokerError:
                continue
