"""Wrong on purpose: no visibility handling while a slow event is handled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqlab.brokers.sqs.api import SqsAPI, SqsMessage
from mqlab.patterns.idempotency import DedupStore


async def send_event(sqs: SqsAPI, queue: str, order_id: str, event_id: str, body: str) -> None:
    """The order is the message group (its events stay in order); the event id is the
    deduplication id, so a retried send within five minutes is dropped by SQS."""
    await sqs.send(queue, body, group_id=order_id, dedup_id=event_id, message_id=event_id)


async def consume(
    sqs: SqsAPI,
    queue: str,
    handle: Callable[[SqsMessage], Awaitable[None]],
    processed: DedupStore,
    name: str,
) -> None:
    """Skip what was handled; handle under a visibility heartbeat; remember; then delete."""
    while True:
        for message in await sqs.receive(queue, wait_time=1, consumer=name):
            if await processed.seen(message.message_id):
                # Handled by a consumer that died before its delete: just delete it.
                await sqs.delete_message(queue, message.receipt_handle, consumer=name)
                continue
            await handle(message)
            await processed.remember(message.message_id)
            await sqs.delete_message(queue, message.receipt_handle, consumer=name)
