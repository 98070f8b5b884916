"""Wrong on purpose: the topology is there, but a failure is requeued at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqlab.brokers.rabbitmq.api import RabbitDelivery, RabbitMQAPI


async def declare_topology(
    rabbit: RabbitMQAPI, *, queue: str, wait_queue: str, parking_queue: str, retry_delay_ms: int
) -> None:
    """queue --(reject)--> wait_queue --(TTL)--> queue; parking_queue on the side. Both hops
    use the default exchange, whose routing key is a queue's name."""
    await rabbit.declare_queue(queue, dead_letter_exchange="", dead_letter_routing_key=wait_queue)
    await rabbit.declare_queue(
        wait_queue,
        message_ttl_ms=retry_delay_ms,
        dead_letter_exchange="",
        dead_letter_routing_key=queue,
    )
    await rabbit.declare_queue(parking_queue)


def attempt(rabbit: RabbitMQAPI, queue: str, delivery: RabbitDelivery) -> int:
    """1 + how often ``queue`` rejected this message (RabbitMQ counts it in x-death)."""
    name = rabbit.qualify(queue)
    rejected = sum(d.count for d in delivery.x_death if d.queue == name and d.reason == "rejected")
    return 1 + rejected


async def consume(
    rabbit: RabbitMQAPI,
    *,
    queue: str,
    parking_queue: str,
    handle: Callable[[RabbitDelivery], Awaitable[None]],
    max_attempts: int,
) -> None:
    """Ack what worked; reject a failure into the wait queue, or park it on its last
    attempt (published to the parking queue, then acked, so it is never lost)."""
    consumer = await rabbit.consume(queue, prefetch=10)
    while True:
        delivery = await consumer.next(timeout=1.0)
        if delivery is None:
            continue
        try:
            await handle(delivery)
        except Exception:
            if attempt(rabbit, queue, delivery) >= max_attempts:
                await rabbit.publish(
                    "", parking_queue, delivery.body, message_id=delivery.message_id
                )
                await delivery.ack()
            else:
                await delivery.nack(requeue=True)
        else:
            await delivery.ack()
