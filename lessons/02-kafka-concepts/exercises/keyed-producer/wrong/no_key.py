"""Wrong on purpose: a durable producer that drops the key."""

from __future__ import annotations

from mqlab.brokers.kafka.api import KafkaAPI, KafkaProducer


async def open_producer(kafka: KafkaAPI) -> KafkaProducer:
    return await kafka.producer(acks="all", idempotent=True)


async def publish(
    producer: KafkaProducer, topic: str, order_id: str, event_id: str, payload: bytes
) -> None:
    await producer.send(topic, payload, message_id=event_id)
