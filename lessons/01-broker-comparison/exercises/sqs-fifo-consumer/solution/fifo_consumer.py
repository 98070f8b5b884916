"""An SQS FIFO producer and consumer: the reference solution of sqs-fifo-consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mqlab.brokers.sqs.api import SqsAPI, SqsMessage
from mqlab.patterns.idempotency import DedupStore

# How long a received message stays invisible to the other consumer, and how often the
# heartbeat pushes that out again while the work runs. The margin between them (5 s) is what
# a slow machine may take between two heartbeats, or between the receive and the delete of a
# quick event, before SQS hands the message to the other consumer mid-work: with the queue's
# own 2 s and a heartbeat every 0.5 s (a margin of 1.5 s) a loaded CI machine once did.
# Kept short all the same: a message whose consumer dies comes back only when it runs out.
VISIBILITY_SECONDS = 6
EXTEND_EVERY = 1.0


async def send_event(sqs: SqsAPI, queue: str, order_id: str, event_id: str, body: str) -> None:
    """The order is the message group (its events stay in order); the event id is the
    deduplication id, so a retried send within five minutes is dropped by SQS."""
    await sqs.send(queue, body, group_id=order_id, dedup_id=event_id, message_id=event_id)


async def _keep_invisible(sqs: SqsAPI, queue: str, message: SqsMessage) -> None:
    """Push the visibility timeout out while the work runs (a heartbeat)."""
    while True:
        await asyncio.sleep(EXTEND_EVERY)
        await sqs.change_visibility(queue, message.receipt_handle, VISIBILITY_SECONDS)


async def consume(
    sqs: SqsAPI,
    queue: str,
    handle: Callable[[SqsMessage], Awaitable[None]],
    processed: DedupStore,
    name: str,
) -> None:
    """Skip what was handled; handle under a visibility heartbeat; remember; then delete."""
    while True:
        received = await sqs.receive(
            queue, wait_time=1, visibility_timeout=VISIBILITY_SECONDS, consumer=name
        )
        for message in received:
            if await processed.seen(message.message_id):
                # Handled by a consumer that died before its delete: just delete it.
                await sqs.delete_message(queue, message.receipt_handle, consumer=name)
                continue
            heartbeat = asyncio.ensure_future(_keep_invisible(sqs, queue, message))
            try:
                await handle(message)
            finally:
                heartbeat.cancel()
            await processed.remember(message.message_id)
            await sqs.delete_message(queue, message.receipt_handle, consumer=name)
