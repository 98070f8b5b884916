"""A producer for order events (mqlab exercise: keyed-producer). See TASK.md."""

from __future__ import annotations

from mqlab.brokers.kafka.api import KafkaAPI, KafkaProducer


async def open_producer(kafka: KafkaAPI) -> KafkaProducer:
    """A started producer for the order events."""
    # TODO: fire and forget is the fastest producer there is. What does it cost when a
    # broker dies?
    return await kafka.producer(acks=0)


async def publish(
    producer: KafkaProducer, topic: str, order_id: str, event_id: str, payload: bytes
) -> None:
    """Send one event of order ``order_id``; return once Kafka has it."""
    # TODO: which partition does this record go to, and does it matter for the order's
    # other events?
    await producer.send(topic, payload, message_id=event_id)
