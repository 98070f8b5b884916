"""Wrong on purpose: keyed, but fire and forget (acks=0)."""

from __future__ import annotations

from mqlab.brokers.kafka.api import KafkaAPI, KafkaProducer


async def open_producer(kafka: KafkaAPI) -> KafkaProducer:
    return await kafka.producer(acks=0)


async def publish(
    producer: KafkaProducer, topic: str, order_id: str, event_id: str, payload: bytes
) -> None:
    await producer.send(topic, payload, key=order_id.encode(), message_id=event_id)
