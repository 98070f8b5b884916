"""Retries with RabbitMQ's dead-lettering (mqlab exercise: rabbitmq-dlx-retry). See TASK.md."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqlab.brokers.rabbitmq.api import RabbitDelivery, RabbitMQAPI


async def declare_topology(
    rabbit: RabbitMQAPI, *, queue: str, wait_queue: str, parking_queue: str, retry_delay_ms: int
) -> None:
    """The work queue, the wait queue and the parking queue."""
    # TODO: only the work queue so far. Where does a rejected message go?
    await rabbit.declare_queue(queue)


async def consume(
    rabbit: RabbitMQAPI,
    *,
    queue: str,
    parking_queue: str,
    handle: Callable[[RabbitDelivery], Awaitable[None]],
    max_attempts: int,
) -> None:
    """Handle every delivery of ``queue``, for ever (the grader cancels it)."""
    consumer = await rabbit.consume(queue, prefetch=10)
    while True:
        delivery = await consumer.next(timeout=1.0)
        if delivery is None:
            continue
        try:
            await handle(delivery)
        except Exception:
            # TODO: try again... right now?
            await delivery.nack(requeue=True)
        else:
            await delivery.ack()
