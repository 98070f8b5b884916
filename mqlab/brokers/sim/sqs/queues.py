"""The simulated SQS/SNS endpoint's data: stored messages, deduplication ids, queues with
their settings and in-flight messages, SNS topics.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mqlab.brokers.sqs.api import (
    MESSAGE_ID_ATTRIBUTE,
    NewQueue,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass(slots=True)
class Stored:
    """One copy of a message as the queue stores it."""

    sqs_message_id: str
    body: str
    attributes: dict[str, str]
    sent_at: float
    order: int
    delayed_until: float = 0.0
    visible_at: float = 0.0
    received: bool = False
    receive_count: int = 0
    first_receive_at: float | None = None
    receipt_handle: str | None = None
    group_id: str | None = None
    dedup_id: str | None = None
    sequence_number: str | None = None

    @property
    def message_id(self) -> str:
        return self.attributes.get(MESSAGE_ID_ATTRIBUTE) or self.sqs_message_id

    def delayed(self, now: float) -> bool:
        return not self.received and now < self.delayed_until

    def in_flight(self, now: float) -> bool:
        return self.received and now < self.visible_at

    def visible(self, now: float) -> bool:
        return now >= self.delayed_until and now >= self.visible_at


@dataclass(slots=True)
class Dedup:
    first_sent_at: float
    sqs_message_id: str
    sequence_number: str | None


class Queue:
    """One queue: its attributes (as CreateQueue set them), its messages in arrival order and
    its receipt handles."""

    def __init__(self, created: NewQueue) -> None:
        name = created.name
        self.name = name
        self.fifo = created.fifo
        self.url = f"sim://sqs.{REGION}/{ACCOUNT}/{name}"
        self.arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        self.visibility_timeout = created.visibility_timeout
        self.delay_seconds = created.delay_seconds
        self.content_based_dedup = created.content_based_dedup
        self.receive_wait_time = created.receive_wait_time
        self.dead_letter_queue = created.dead_letter_queue
        self.max_receive_count = created.max_receive_count
        self.messages: dict[int, Stored] = {}
        self.handles: dict[str, Stored] = {}
        self.deleted_handles: set[str] = set()
        self.dedup: dict[str, Dedup] = {}
        self.alive = True
        self._changed = asyncio.Event()

    def attributes(self) -> tuple[Any, ...]:
        """What CreateQueue compares when the queue exists already."""
        return (
            self.visibility_timeout,
            self.delay_seconds,
            self.content_based_dedup,
            self.receive_wait_time,
            self.dead_letter_queue,
            self.max_receive_count,
        )

    def notify(self) -> None:
        """Wake long polls: something may have become receivable."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def next_visibility(self, now: float) -> float | None:
        """When the next currently hidden message becomes receivable (for long polls)."""
        times = [max(m.delayed_until, m.visible_at) for m in self.messages.values()]
        later = [t for t in times if t > now]
        return min(later) if later else None

    def remove(self, message: Stored) -> None:
        self.messages.pop(message.order, None)
        if message.receipt_handle is not None:
            self.deleted_handles.add(message.receipt_handle)

    def depths(self, now: float) -> tuple[int, int, int]:
        """(visible, in flight, delayed), SQS's ApproximateNumberOfMessages* attributes."""
        visible = in_flight = delayed = 0
        for message in self.messages.values():
            if message.delayed(now):
                delayed += 1
            elif message.in_flight(now):
                in_flight += 1
            else:
                visible += 1
        return visible, in_flight, delayed


@dataclass(slots=True)
class Topic:
    name: str
    arn: str
    fifo: bool
    subscriptions: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """subscription ARN -> (queue name, raw delivery)."""
