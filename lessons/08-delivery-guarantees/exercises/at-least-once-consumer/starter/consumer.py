"""A payments consumer (mqlab exercise: at-least-once-consumer). See TASK.md."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaRecord


async def open_consumer(kafka: KafkaAPI, topic: str, group: str) -> KafkaConsumer:
    """A consumer of ``topic`` in ``group``."""
    return await kafka.consumer([topic], group_id=group, session_timeout=2.0)


async def consume(
    consumer: KafkaConsumer, process: Callable[[KafkaRecord], Awaitable[None]]
) -> None:
    """Process every record, for ever (the grader cancels it)."""
    while True:
        records = await consumer.poll(timeout=0.5)
        # TODO: committing as soon as the batch is here means nothing is ever processed
        # twice. What happens to the rest of the batch if the consumer dies now?
        try:
            await consumer.commit()
        except BrokerError:
            continue  # the group rebalanced: poll again
        for record in records:
            await process(record)
