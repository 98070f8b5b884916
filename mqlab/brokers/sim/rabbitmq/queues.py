"""The simulated RabbitMQ node's data: messages, exchanges and bindings, queues with their
priority levels and expiry, channels with their unacknowledged deliveries, subscriptions.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mqlab.brokers.rabbitmq.api import (
    QueueInfo,
)
from mqlab.brokers.sim.clock import TIMER_SLACK


@dataclass(slots=True)
class Message:
    """A message as one queue holds it (every queue a message is routed to gets a copy)."""

    message_id: str
    body: bytes
    exchange: str
    routing_keys: tuple[str, ...]
    headers: dict[str, Any]
    priority: int | None
    expiration_ms: int | None
    seq: int = 0
    expires_at: float | None = None
    redelivered: bool = False


@dataclass(slots=True)
class Binding:
    queue: str
    routing_key: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class Exchange:
    name: str
    type: str
    durable: bool
    bindings: list[Binding] = field(default_factory=list)


@dataclass(slots=True)
class Handout:
    """One delivery of a message on a channel (what basic.deliver / basic.get-ok carry)."""

    channel: Channel
    tag: int
    queue: str
    message: Message
    redelivered: bool


class Queue:
    """A classic queue: ready messages per priority level (each a heap by arrival), counters
    and the consumers that messages are pushed to."""

    def __init__(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        self.name = name
        self.durable = durable
        self.arguments = arguments
        self.max_priority: int | None = arguments.get("x-max-priority")
        self.ttl_ms: int | None = arguments.get("x-message-ttl")
        self.dead_letter_exchange: str | None = arguments.get("x-dead-letter-exchange")
        self.dead_letter_routing_key: str | None = arguments.get("x-dead-letter-routing-key")
        self.max_length: int | None = arguments.get("x-max-length")
        self.levels: dict[int, list[tuple[int, Message]]] = {}
        self.ready = 0
        self.unacked = 0
        self.subscriptions: list[Subscription] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.alive = True
        self.dispatching = False

    def level_of(self, message: Message) -> int:
        """The priority level a message waits in (all messages are level 0 without
        ``x-max-priority``; a priority above the maximum counts as the maximum)."""
        if self.max_priority is None:
            return 0
        return min(message.priority or 0, self.max_priority)

    def push(self, message: Message) -> None:
        """Add a ready message at its position (a requeued one returns to where it was)."""
        heapq.heappush(self.levels.setdefault(self.level_of(message), []), (message.seq, message))
        self.ready += 1

    def head_level(self) -> int | None:
        """The level the next delivery comes from: the highest non-empty one."""
        levels = [level for level, heap in self.levels.items() if heap]
        return max(levels) if levels else None

    def pop_head(self) -> Message | None:
        level = self.head_level()
        if level is None:
            return None
        _, message = heapq.heappop(self.levels[level])
        self.ready -= 1
        return message

    def pop_expired(self, now: float) -> list[Message]:
        """Drop the messages whose time is up *at the head* of each level: one that expired
        behind a live head waits until it reaches the head, as in RabbitMQ."""
        expired: list[Message] = []
        for level in sorted(self.levels, reverse=True):
            heap = self.levels[level]
            while heap and has_expired(heap[0][1], now):
                expired.append(heapq.heappop(heap)[1])
                self.ready -= 1
        return expired

    def next_expiry(self) -> float | None:
        heads = [
            heap[0][1].expires_at
            for heap in self.levels.values()
            if heap and heap[0][1].expires_at is not None
        ]
        return min(h for h in heads if h is not None) if heads else None

    def clear(self) -> int:
        dropped = self.ready
        self.levels.clear()
        self.ready = 0
        return dropped


def has_expired(message: Message, now: float) -> bool:
    """Whether ``message``'s time to live is up at ``now``."""
    return message.expires_at is not None and message.expires_at <= now + TIMER_SLACK


class Channel:
    """An AMQP channel: delivery tags and the messages delivered on it but not yet settled."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.open = True
        self.unacked: dict[int, tuple[Queue, Message]] = {}
        self.subscriptions: list[Subscription] = []
        self._tags = itertools.count(1)

    def track(self, queue: Queue, message: Message) -> Handout:
        tag = next(self._tags)
        self.unacked[tag] = (queue, message)
        queue.unacked += 1
        return Handout(self, tag, queue.name, message, message.redelivered)

    def untracked(self, queue: Queue, message: Message) -> Handout:
        """A delivery that needs no settling (basic.get with no_ack)."""
        return Handout(self, next(self._tags), queue.name, message, message.redelivered)


@dataclass(slots=True)
class Subscription:
    """basic.consume: a queue pushes to ``sink`` while the channel holds fewer than
    ``prefetch`` unacknowledged messages."""

    queue: Queue
    channel: Channel
    prefetch: int
    sink: Callable[[Handout], None]
    on_cancel: Callable[[str], None] | None = None
    """Told when RabbitMQ itself ends the subscription (basic.cancel: its queue was deleted)."""

    def has_credit(self) -> bool:
        return self.channel.open and len(self.channel.unacked) < self.prefetch


def describe_queue(queue: Queue) -> QueueInfo:
    return QueueInfo(
        name=queue.name,
        ready=queue.ready,
        unacked=queue.unacked,
        consumers=len(queue.subscriptions),
        max_priority=queue.max_priority,
        message_ttl_ms=queue.ttl_ms,
        dead_letter_exchange=queue.dead_letter_exchange,
        dead_letter_routing_key=queue.dead_letter_routing_key,
        max_length=queue.max_length,
        durable=queue.durable,
    )
