"""Wrong on purpose: the offset is stored in the database, but in a transaction of its own."""

from __future__ import annotations

import json

from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, TopicPartition
from mqlab.patterns.database import BusinessDatabase


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    return await kafka.consumer([topic], group_id=group, auto_commit=False, session_timeout=2.0)


async def consume(consumer: KafkaConsumer, db: BusinessDatabase) -> None:
    known: frozenset[TopicPartition] = frozenset()
    while True:
        records = await consumer.poll(timeout=0.5)
        newly = consumer.assignment() - known
        if newly:
            known = consumer.assignment()
            stored = await db.stored_offsets(
                consumer.group_id, [(tp.topic, tp.partition) for tp in newly]
            )
            moved = set()
            for tp in newly:
                if (tp.topic, tp.partition) in stored:
                    await consumer.seek(tp, stored[(tp.topic, tp.partition)])
                    moved.add(tp)
            records = [r for r in records if TopicPartition(r.topic, r.partition) not in moved]
        for record in records:
            deposit = json.loads(record.value)
            async with db.transaction() as tx:
                await tx.credit(deposit["account"], deposit["amount"], message_id=record.message_id)
            async with db.transaction() as tx:
                await tx.advance_offset(
                    consumer.group_id,
                    record.topic,
                    record.partition,
                    start=record.offset,
                    end=record.offset + 1,
                )
