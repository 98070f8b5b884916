"""A producer for order events: the reference solution of the keyed-producer exercise."""

from __future__ import annotations

from mqlab.brokers.kafka.api import KafkaAPI, KafkaProducer


async def open_producer(kafka: KafkaAPI) -> KafkaProducer:
    """acks=all: a record is acknowledged once the in-sync replicas have it, so a leader that
    dies cannot take it along; idempotent: the client's retries on the new leader neither
    duplicate nor reorder a batch."""
    return await kafka.producer(acks="all", idempotent=True)


async def publish(
    producer: KafkaProducer, topic: str, order_id: str, event_id: str, payload: bytes
) -> None:
    """The order id is the key: every event of an order goes to the same partition."""
    await producer.send(topic, payload, key=order_id.encode(), message_id=event_id)
