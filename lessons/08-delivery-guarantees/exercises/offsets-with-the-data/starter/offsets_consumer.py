"""A deposits consumer (mqlab exercise: offsets-with-the-data). See TASK.md."""

from __future__ import annotations

import json

from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer
from mqlab.patterns.database import BusinessDatabase


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    """A consumer of ``topic`` in ``group``."""
    # TODO: Kafka commits the offsets on its own here. Where should they live instead?
    return await kafka.consumer([topic], group_id=group, auto_commit=True, session_timeout=2.0)


async def consume(consumer: KafkaConsumer, db: BusinessDatabase) -> None:
    """Credit every deposit exactly once, for ever (the grader cancels it)."""
    while True:
        for record in await consumer.poll(timeout=0.5):
            deposit = json.loads(record.value)
            async with db.transaction() as tx:
                # TODO: after a crash, how would a new consumer know this credit was made?
                await tx.credit(deposit["account"], deposit["amount"], message_id=record.message_id)
