"""The simulated nats-server's data: stored messages, streams with their limits, durable
consumers with their pending and redelivery state, core subscribers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mqlab.brokers.nats.api import (
    MESSAGE_ID_HEADER,
    JetStreamError,
    StreamInfo,
)
from mqlab.brokers.sim.nats import subjects as nats_subjects

_MESSAGE_OVERHEAD = 30  # bytes nats-server's file store counts per message besides its content


def refused(operation: str, target: str, description: str, code: int) -> JetStreamError:
    return JetStreamError(f"{operation} {target}: {description} (JetStream error {code})")


# --- the server model -----------------------------------------------------------------------


@dataclass(slots=True)
class Stored:
    """A message in a stream."""

    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: float

    @property
    def size(self) -> int:
        header_bytes = (
            len("NATS/1.0\r\n\r\n") + sum(len(f"{k}: {v}\r\n") for k, v in self.headers.items())
            if self.headers
            else 0
        )
        return _MESSAGE_OVERHEAD + len(self.subject) + len(self.data) + header_bytes

    @property
    def message_id(self) -> str:
        return self.headers.get(MESSAGE_ID_HEADER) or ""


@dataclass(slots=True)
class Pending:
    """A message delivered to a consumer and not yet acknowledged."""

    consumer_sequence: int
    deadline: float
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class Handout:
    """One delivery of a stored message to a consumer (what a fetch returns)."""

    message: Stored
    stream: str
    consumer: str
    consumer_sequence: int
    num_delivered: int


class Consumer:
    """A durable pull consumer's configuration and the server-side state it advances."""

    def __init__(
        self,
        stream: Stream,
        name: str,
        *,
        filter_subject: str | None,
        ack_wait: float,
        max_deliver: int,
        deliver_policy: str,
        start_sequence: int,
    ) -> None:
        self.stream = stream
        self.name = name
        self.filter_subject = filter_subject
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.deliver_policy = deliver_policy
        self.next_sequence = start_sequence  # the server's o.sseq
        self.consumer_sequence = 0  # last consumer sequence handed out
        self.delivered_stream_sequence = start_sequence - 1
        self.ack_floor_stream = start_sequence - 1
        self.ack_floor_consumer = 0
        self.pending: dict[int, Pending] = {}
        self.redelivery_counts: dict[int, int] = {}
        self.redelivery_queue: list[int] = []
        self.alive = True
        self._changed = asyncio.Event()

    def wants(self, subject: str) -> bool:
        return self.filter_subject is None or nats_subjects.matches(self.filter_subject, subject)

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def has_acked(self, sequence: int) -> bool:
        """Done with ``sequence`` (acked, termed or never meant to get it)."""
        return sequence < self.next_sequence and sequence not in self.pending

    def queue_redelivery(self, sequence: int) -> None:
        if sequence not in self.redelivery_queue:
            self.redelivery_queue.append(sequence)
            self.redelivery_queue.sort()
        self.notify()


class Stream:
    """A stream: its configuration, its messages by sequence and its consumers."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config
        self.messages: dict[int, Stored] = {}
        self.by_subject: dict[str, deque[int]] = {}
        self.last_sequence = 0
        self.bytes = 0
        self.dedup: dict[str, tuple[int, float]] = {}
        self.consumers: dict[str, Consumer] = {}
        self.age_timer: asyncio.TimerHandle | None = None
        self.alive = True

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self.config["subjects"])

    @property
    def retention(self) -> str:
        return str(self.config["retention"])

    @property
    def first_sequence(self) -> int:
        return next(iter(self.messages)) if self.messages else self.last_sequence + 1

    def captures(self, subject: str) -> bool:
        return any(nats_subjects.matches(pattern, subject) for pattern in self.subjects)

    def info(self) -> StreamInfo:
        return StreamInfo(
            name=self.name,
            subjects=self.subjects,
            messages=len(self.messages),
            bytes=self.bytes,
            first_sequence=self.first_sequence,
            last_sequence=self.last_sequence,
            retention=self.retention,
            max_msgs=int(self.config["max_msgs"]),
            max_age_seconds=float(self.config["max_age"]),
            duplicate_window_seconds=float(self.config["duplicate_window"]),
        )


@dataclass(slots=True)
class CoreSubscriber:
    """A core NATS subscription: ``deliver`` decides (it knows its client's connection)."""

    pattern: str
    deliver: Callable[[str, bytes, dict[str, str]], None]
