"""A deposits consumer: the reference solution of the offsets-with-the-data exercise."""

from __future__ import annotations

import json

from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaRecord, TopicPartition
from mqlab.patterns.database import BusinessDatabase


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    """No Kafka commits at all: the database is where the position lives."""
    return await kafka.consumer([topic], group_id=group, auto_commit=False, session_timeout=2.0)


def _partition(record: KafkaRecord) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


async def _seek_to_stored(
    consumer: KafkaConsumer, db: BusinessDatabase, partitions: frozenset[TopicPartition]
) -> set[TopicPartition]:
    """Seek each partition to the offset the database has; returns those that had one."""
    wanted = [(tp.topic, tp.partition) for tp in partitions]
    stored = await db.stored_offsets(consumer.group_id, wanted)
    moved = set()
    for tp in sorted(partitions):
        offset = stored.get((tp.topic, tp.partition))
        if offset is not None:
            await consumer.seek(tp, offset)
            moved.add(tp)
    return moved


async def consume(consumer: KafkaConsumer, db: BusinessDatabase) -> None:
    """Per record, one transaction moves the stored offset and credits the account; on
    every new assignment, seek to the offsets the database has."""
    known: frozenset[TopicPartition] = frozenset()
    while True:
        records = await consumer.poll(timeout=0.5)
        assignment = consumer.assignment()
        if assignment != known:
            newly = assignment - known
            known = assignment
            moved = await _seek_to_stored(consumer, db, newly)
            # Those came from Kafka's position, not the database's: the next poll reads
            # from where the database is.
            records = [r for r in records if _partition(r) not in moved]
        for record in records:
            deposit = json.loads(record.value)
            async with db.transaction() as tx:
                moved = await tx.advance_offset(
                    consumer.group_id,
                    record.topic,
                    record.partition,
                    start=record.offset,
                    end=record.offset + 1,
                )
                if moved:  # False: the database is past this record, it was credited
                    await tx.credit(
                        deposit["account"], deposit["amount"], message_id=record.message_id
                    )
