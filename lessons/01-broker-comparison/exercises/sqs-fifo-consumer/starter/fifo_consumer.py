"""An SQS FIFO producer and consumer (mqlab exercise: sqs-fifo-consumer). See TASK.md."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from mqlab.brokers.sqs.api import SqsAPI, SqsMessage
from mqlab.patterns.idempotency import DedupStore


async def send_event(sqs: SqsAPI, queue: str, order_id: str, event_id: str, body: str) -> None:
    """Send one event of ``order_id``."""
    # TODO: a FIFO queue wants a deduplication id on every send. Any id will do... will it,
    # when this very send is retried?
    await sqs.send(queue, body, group_id=order_id, dedup_id=str(uuid.uuid4()), message_id=event_id)


async def consume(
    sqs: SqsAPI,
    queue: str,
    handle: Callable[[SqsMessage], Awaitable[None]],
    processed: DedupStore,
    name: str,
) -> None:
    """Handle every event once, for ever (the grader cancels it)."""
    while True:
        for message in await sqs.receive(queue, wait_time=1, consumer=name):
            # TODO: some events take longer than the visibility timeout. And what if this
            # message was handled before, by a consumer that died before its delete?
            await handle(message)
            await sqs.delete_message(queue, message.receipt_handle, consumer=name)
