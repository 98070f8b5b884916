"""The simulator's SQS (+ SNS): queues, receipt handles, visibility and FIFO groups on virtual time.

Layout (the same places as the real adapter in :mod:`mqlab.brokers.sqs.client`): errors, the server
model (stored messages, queues, topics, :class:`SimSqsServer`), then :class:`SimSqsBroker` with
lifecycle, queues, messages, SNS, inspection and the plumbing at the end.

What is modelled, because the course teaches it:

* Standard queues are at-least-once with best-effort order: with the server's (seeded,
  configurable, zero-able) ``duplicate_rate`` a received message leaves a second copy behind
  that is delivered again a moment later, even if the first is deleted; with ``reorder_rate``
  neighbouring messages swap places in a receive.
* Visibility timeout, ChangeMessageVisibility, DelaySeconds (queue default and per message,
  standard queues only), long polling that returns as soon as a message is there,
  ApproximateReceiveCount, and redrive: a receive that finds a message already received
  ``maxReceiveCount`` times moves it to the dead-letter queue instead (as SQS does).
* FIFO queues: a send needs a message group; a group with a message in flight delivers
  nothing else (head-of-line blocking); a receive fills its batch from one group first, in
  order; deduplication by id or by the body's SHA-256 (content-based) for five minutes from
  the first send, whether or not the message was deleted meanwhile (a duplicate send answers
  with the original MessageId and sequence number, as SQS does).
* SNS topics fan a publish out to every subscribed queue (raw delivery keeps the body and the
  message attributes; otherwise the queue gets SNS's JSON envelope).

Choices where the lab's server (moto) and AWS differ, made to match the lab and the real
adapter:

* A stale receipt handle (from an earlier receive of a message that has been received again
  since) still deletes the message, as moto does; deleting an already deleted message is
  fine; a handle the server never issued raises :class:`ReceiptHandleInvalid`.
* Killing the ``sqs`` node loses every queue and topic: the lab's server keeps them in memory.
  (AWS, of course, never goes away; moto forgets deleted messages' deduplication ids, the
  simulator follows AWS there.)
* ``DeadLettered`` is emitted when the message is moved (the real adapter can only notice it
  when it later receives the message from the dead-letter queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.sim.link import (
    SIM_ADDRESS,
    connection_refused,
    first_of,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.world import NodeChange, NodeState, NodeUnreachable, SimWorld
from mqlab.brokers.sqs.api import (
    MESSAGE_ID_ATTRIBUTE,
    ReceiptHandleInvalid,
    SendResult,
    SnsTopicInfo,
    SqsAPI,
    SqsMessage,
    SqsQueueInfo,
    SqsRequestRefused,
    SqsSnapshot,
    check_queue_settings,
)
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import (
    Acked,
    BrokerDown,
    BrokerUp,
    DeadLettered,
    Delivered,
    Nacked,
    Observation,
    Produced,
    ProduceFailed,
)

_T = TypeVar("_T")

NODE = "sqs"
"""The simulated node (the lab's process name) that faults target."""

SOURCE = "sim:sqs"
"""``broker`` field of the observations the server itself emits (redrive)."""

REGION = "us-east-1"
ACCOUNT = "123456789012"
DEDUP_WINDOW_SECONDS = 300.0
"""SQS FIFO's deduplication interval (fixed at five minutes by AWS)."""
MAX_LONG_POLL_SECONDS = 20
MAX_BATCH = 10
MAX_VISIBILITY_TIMEOUT = 43_200
MAX_DELAY_SECONDS = 900

DEFAULT_DUPLICATE_RATE = 0.01
"""Share of standard-queue receives that leave a duplicate copy behind (at-least-once)."""
DEFAULT_REORDER_RATE = 0.05
"""Chance that two neighbouring messages swap places in a standard-queue receive."""

_DUPLICATE_DELAY = (0.2, 2.0)  # seconds until a left-behind copy shows up again
_PROBE_INTERVAL = 0.5
_RETRY_INTERVAL = 0.25  # how often a call asks an unreachable endpoint again
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_FIFO_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}\.fifo$")


# --- errors -------------------------------------------------------------------------------


class _QueueMissing(SqsRequestRefused):
    """The queue does not exist (deleted, or never created in this namespace)."""


# --- the server model -----------------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
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
class _Dedup:
    first_sent_at: float
    sqs_message_id: str
    sequence_number: str | None


class _Queue:
    """One queue: its attributes, its messages in arrival order and its receipt handles."""

    def __init__(
        self,
        name: str,
        *,
        visibility_timeout: int,
        delay_seconds: int,
        content_based_dedup: bool,
        receive_wait_time: int,
        dead_letter_queue: str | None,
        max_receive_count: int | None,
    ) -> None:
        self.name = name
        self.fifo = name.endswith(".fifo")
        self.url = f"sim://sqs.{REGION}/{ACCOUNT}/{name}"
        self.arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        self.visibility_timeout = visibility_timeout
        self.delay_seconds = delay_seconds
        self.content_based_dedup = content_based_dedup
        self.receive_wait_time = receive_wait_time
        self.dead_letter_queue = dead_letter_queue
        self.max_receive_count = max_receive_count
        self.messages: dict[int, _Stored] = {}
        self.handles: dict[str, _Stored] = {}
        self.deleted_handles: set[str] = set()
        self.dedup: dict[str, _Dedup] = {}
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

    def remove(self, message: _Stored) -> None:
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
class _Topic:
    name: str
    arn: str
    fifo: bool
    subscriptions: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """subscription ARN -> (queue name, raw delivery)."""


class SimSqsServer:
    """The SQS/SNS endpoint of a simulated world, shared by every adapter of that world.

    Args:
        world: the world (clock, seeded randomness, node faults).
        duplicate_rate: share of standard-queue receives that leave a duplicate behind.
        reorder_rate: chance that two neighbouring messages swap in a standard receive.
    """

    def __init__(
        self,
        world: SimWorld,
        *,
        duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
        reorder_rate: float = DEFAULT_REORDER_RATE,
    ) -> None:
        self.world = world
        self.duplicate_rate = duplicate_rate
        self.reorder_rate = reorder_rate
        self.queues: dict[str, _Queue] = {}
        self.topics: dict[str, _Topic] = {}
        self._orders = itertools.count(1)
        self._sequence_numbers = itertools.count(1)
        self._subscription_ids = itertools.count(1)
        world.watch(self._on_node_change)

    def _emit(self, observation: Observation) -> None:
        self.world.bus.emit(observation)

    # --- queues -------------------------------------------------------------------------

    def create_queue(self, name: str, **settings: Any) -> _Queue:
        if not (_FIFO_QUEUE_NAME if name.endswith(".fifo") else _QUEUE_NAME).match(name):
            raise SqsRequestRefused(
                f"CreateQueue on {name} refused: InvalidParameterValue: Can only include "
                "alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
            )
        candidate = _Queue(name, **settings)
        dead_letter_queue = settings.get("dead_letter_queue")
        if dead_letter_queue is not None:
            target = self.queue(dead_letter_queue, "CreateQueue")
            if target.fifo != candidate.fifo:
                kind = "FIFO" if candidate.fifo else "standard"
                raise SqsRequestRefused(
                    f"CreateQueue on {name} refused: InvalidParameterCombination: the "
                    f"dead-letter queue of a {kind} queue must be a {kind} queue too"
                )
        existing = self.queues.get(name)
        if existing is not None:
            if existing.attributes() != candidate.attributes():
                raise SqsRequestRefused(
                    f"CreateQueue on {name} refused: QueueAlreadyExists: The specified queue "
                    "already exists."
                )
            return existing
        self.queues[name] = candidate
        return candidate

    def queue(self, name: str, operation: str) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise _QueueMissing(f"queue {name!r} does not exist ({operation})")
        return queue

    def delete_queue(self, name: str) -> None:
        queue = self.queue(name, "DeleteQueue")
        queue.alive = False
        del self.queues[name]
        queue.notify()

    def purge(self, name: str) -> None:
        queue = self.queue(name, "PurgeQueue")
        for message in list(queue.messages.values()):
            queue.remove(message)

    def queue_info(self, name: str) -> SqsQueueInfo:
        queue = self.queue(name, "GetQueueAttributes")
        now = self.world.now()
        visible, in_flight, delayed = queue.depths(now)
        dead_letter_depth = None
        if queue.dead_letter_queue is not None:
            target = self.queues.get(queue.dead_letter_queue)
            if target is not None:
                dead_letter_depth = sum(target.depths(now))
        return SqsQueueInfo(
            name=queue.name,
            url=queue.url,
            fifo=queue.fifo,
            visible=visible,
            in_flight=in_flight,
            delayed=delayed,
            visibility_timeout=queue.visibility_timeout,
            delay_seconds=queue.delay_seconds,
            content_based_dedup=queue.content_based_dedup,
            dead_letter_queue=queue.dead_letter_queue,
            max_receive_count=queue.max_receive_count,
            dead_letter_depth=dead_letter_depth,
        )

    # --- messages -----------------------------------------------------------------------

    def send(
        self,
        name: str,
        body: str,
        attributes: dict[str, str],
        *,
        group_id: str | None,
        dedup_id: str | None,
        delay_seconds: int | None,
    ) -> tuple[_Stored, bool]:
        """SendMessage; returns the stored message and whether it was a duplicate (then the
        returned message is the original: SQS answers a deduplicated send with its ids).
        """
        queue = self.queue(name, "SendMessage")
        now = self.world.now()
        if queue.fifo:
            if group_id is None:
                raise SqsRequestRefused(
                    f"SendMessage on {name} refused: MissingParameter: The request must "
                    "contain the parameter MessageGroupId."
                )
            if dedup_id is None and not queue.content_based_dedup:
                raise SqsRequestRefused(
                    f"SendMessage on {name} refused: InvalidParameterValue: The queue should "
                    "either have ContentBasedDeduplication enabled or MessageDeduplicationId "
                    "provided explicitly"
                )
            if delay_seconds:
                raise SqsRequestRefused(
                    f"SendMessage on {name} refused: InvalidParameterValue: Value "
                    f"{delay_seconds} for parameter DelaySeconds is invalid. Reason: The "
                    "request include parameter that is not valid for this queue type."
                )
        if delay_seconds is not None and not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
            raise SqsRequestRefused(
                f"SendMessage on {name} refused: InvalidParameterValue: Value {delay_seconds} "
                "for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 "
                "and <= 900."
            )
        key = None
        if queue.fifo:
            key = dedup_id if dedup_id is not None else _content_hash(body)
            known = queue.dedup.get(key)
            if known is not None and now - known.first_sent_at < DEDUP_WINDOW_SECONDS:
                original = _Stored(
                    sqs_message_id=known.sqs_message_id,
                    body=body,
                    attributes=dict(attributes),
                    sent_at=now,
                    order=0,
                    group_id=group_id,
                    dedup_id=key,
                    sequence_number=known.sequence_number,
                )
                return original, True
        delay = queue.delay_seconds if delay_seconds is None else delay_seconds
        message = _Stored(
            sqs_message_id=self.world.next_id("sqs-message"),
            body=body,
            attributes=dict(attributes),
            sent_at=now,
            order=next(self._orders),
            delayed_until=now + delay,
            group_id=group_id if queue.fifo else None,
            dedup_id=key,
            sequence_number=(
                f"{10**19 + next(self._sequence_numbers):020d}" if queue.fifo else None
            ),
        )
        if key is not None:
            queue.dedup[key] = _Dedup(now, message.sqs_message_id, message.sequence_number)
        queue.messages[message.order] = message
        queue.notify()
        return message, False

    def receive(self, name: str, max_messages: int, visibility_timeout: int) -> list[_Stored]:
        """One pass of ReceiveMessage over the queue (long polling repeats it)."""
        queue = self.queue(name, "ReceiveMessage")
        now = self.world.now()
        self._forget_old_dedup_ids(queue, now)
        candidates: Iterable[_Stored]
        if queue.fifo:
            candidates = self._fifo_candidates(queue, now)
        else:
            # Look only as far as needed: a snapshot (redrive and duplicates change the
            # queue while we go), the visible ones lazily, the first few maybe shuffled.
            visible = (m for m in list(queue.messages.values()) if m.visible(now))
            window = list(itertools.islice(visible, max_messages + 1))
            self._shuffle_a_little(window, max_messages)
            candidates = itertools.chain(window, visible)
        received: list[_Stored] = []
        for message in candidates:
            if len(received) >= max_messages:
                break
            if (
                queue.max_receive_count is not None
                and queue.dead_letter_queue is not None
                and message.receive_count >= queue.max_receive_count
            ):
                self._redrive(queue, message, now)
                continue
            self._hand_out(queue, message, now, visibility_timeout)
            received.append(message)
            if (
                not queue.fifo
                and self.duplicate_rate > 0
                and self.world.rng.random() < self.duplicate_rate
            ):
                self._leave_duplicate(queue, message, now)
        return received

    def delete_message(self, name: str, receipt_handle: str) -> _Stored | None:
        """DeleteMessage; returns the deleted message (None when it was already gone)."""
        queue = self.queue(name, "DeleteMessage")
        message = queue.handles.get(receipt_handle)
        if message is None:
            if receipt_handle in queue.deleted_handles:
                return None
            raise ReceiptHandleInvalid(
                f"DeleteMessage on {name}: The input receipt handle "
                f'"{receipt_handle}" is not a valid receipt handle.'
            )
        if message.order not in queue.messages:
            return None  # deleted through another of its receipt handles
        queue.remove(message)
        queue.deleted_handles.add(receipt_handle)
        return message

    def change_visibility(self, name: str, receipt_handle: str, timeout: int) -> _Stored:
        queue = self.queue(name, "ChangeMessageVisibility")
        if not 0 <= timeout <= MAX_VISIBILITY_TIMEOUT:
            raise SqsRequestRefused(
                f"ChangeMessageVisibility on {name} refused: InvalidParameterValue: Value "
                f"{timeout} for parameter VisibilityTimeout is invalid. Reason: must be "
                f"between 0 and {MAX_VISIBILITY_TIMEOUT}."
            )
        message = queue.handles.get(receipt_handle)
        if message is None or message.order not in queue.messages:
            raise ReceiptHandleInvalid(
                f"ChangeMessageVisibility on {name}: The input receipt handle "
                f'"{receipt_handle}" is not a valid receipt handle.'
            )
        message.visible_at = self.world.now() + timeout
        queue.notify()
        return message

    # --- SNS ----------------------------------------------------------------------------

    def create_topic(self, name: str) -> _Topic:
        if not (_FIFO_QUEUE_NAME if name.endswith(".fifo") else _QUEUE_NAME).match(name):
            raise SqsRequestRefused(
                f"CreateTopic on {name} refused: InvalidParameter: Topic Name must be made up "
                "of alphanumeric characters, hyphens and underscores, 1 to 256 long"
            )
        topic = self.topics.get(name)
        if topic is None:
            topic = _Topic(name, f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}", name.endswith(".fifo"))
            self.topics[name] = topic
        return topic

    def topic_by_arn(self, arn: str, operation: str) -> _Topic:
        for topic in self.topics.values():
            if topic.arn == arn:
                return topic
        raise SqsRequestRefused(f"{operation} on {arn} refused: NotFound: Topic does not exist")

    def subscribe(self, topic_arn: str, queue: str, raw: bool) -> str:
        topic = self.topic_by_arn(topic_arn, "Subscribe")
        self.queue(queue, "Subscribe")
        for arn, (existing, existing_raw) in topic.subscriptions.items():
            if existing == queue and existing_raw == raw:
                return arn
        arn = f"{topic.arn}:sub-{next(self._subscription_ids):06d}"
        topic.subscriptions[arn] = (queue, raw)
        return arn

    def publish(
        self,
        topic_arn: str,
        body: str,
        attributes: dict[str, str],
        *,
        group_id: str | None,
        dedup_id: str | None,
    ) -> str:
        """SNS Publish: a copy to every subscribed queue; returns the SNS MessageId."""
        topic = self.topic_by_arn(topic_arn, "Publish")
        if topic.fifo and group_id is None:
            raise SqsRequestRefused(
                f"Publish on {topic.name} refused: InvalidParameter: The MessageGroupId "
                "parameter is required for FIFO topics"
            )
        if topic.fifo and dedup_id is None:
            raise SqsRequestRefused(
                f"Publish on {topic.name} refused: InvalidParameter: The topic should either "
                "have ContentBasedDeduplication enabled or MessageDeduplicationId provided "
                "explicitly"
            )
        sns_message_id = self.world.next_id("sns-message")
        for queue_name, raw in topic.subscriptions.values():
            if queue_name not in self.queues:
                continue  # SNS cannot deliver to a deleted queue; the copy is lost
            if raw:
                copy_body, copy_attributes = body, dict(attributes)
            else:
                copy_body = _sns_envelope(topic, sns_message_id, body, attributes, self.world)
                copy_attributes = {}
            with contextlib.suppress(SqsRequestRefused):  # SNS drops undeliverable copies
                self.send(
                    queue_name,
                    copy_body,
                    copy_attributes,
                    group_id=group_id,
                    dedup_id=dedup_id,
                    delay_seconds=None,
                )
        return sns_message_id

    def delete_topic(self, name: str) -> None:
        self.topics.pop(name, None)

    # --- inspection ---------------------------------------------------------------------

    def snapshot(self, prefix: str) -> SqsSnapshot:
        queues = tuple(
            self.queue_info(name) for name in sorted(self.queues) if name.startswith(prefix)
        )
        topics = tuple(
            SnsTopicInfo(
                name=topic.name,
                arn=topic.arn,
                subscribed_queues=tuple(sorted(q for q, _ in topic.subscriptions.values())),
            )
            for name, topic in sorted(self.topics.items())
            if name.startswith(prefix)
        )
        return SqsSnapshot(queues=queues, topics=topics)

    # --- internals ----------------------------------------------------------------------

    @staticmethod
    def _fifo_candidates(queue: _Queue, now: float) -> list[_Stored]:
        """Receivable messages of a FIFO queue, a group at a time: groups in the order of
        their oldest message, each group's messages in order, stopping at the first one that
        is not receivable (everything behind a hidden message of its group waits)."""
        by_group: dict[str, list[_Stored]] = {}
        blocked: set[str] = set()
        for message in queue.messages.values():
            group = message.group_id or ""
            if group in blocked:
                continue
            if not message.visible(now):
                blocked.add(group)  # in flight or delayed: the rest of the group waits
                continue
            by_group.setdefault(group, []).append(message)
        return [m for group, messages in by_group.items() if group not in blocked for m in messages]

    def _shuffle_a_little(self, candidates: list[_Stored], batch: int) -> None:
        """Best-effort ordering: now and then two neighbours swap places."""
        if self.reorder_rate <= 0:
            return
        for index in range(min(len(candidates), batch + 1) - 1):
            if self.world.rng.random() < self.reorder_rate:
                candidates[index], candidates[index + 1] = candidates[index + 1], candidates[index]

    def _hand_out(self, queue: _Queue, message: _Stored, now: float, visibility: int) -> None:
        message.received = True
        message.receive_count += 1
        if message.first_receive_at is None:
            message.first_receive_at = now
        message.visible_at = now + visibility
        handle = self.world.next_id(f"{message.sqs_message_id}-receipt")
        message.receipt_handle = handle
        queue.handles[handle] = message

    def _leave_duplicate(self, queue: _Queue, message: _Stored, now: float) -> None:
        """At-least-once: a copy of the message on another server missed this receive and
        will be handed out again a moment later."""
        low, high = _DUPLICATE_DELAY
        copy = _Stored(
            sqs_message_id=message.sqs_message_id,
            body=message.body,
            attributes=dict(message.attributes),
            sent_at=message.sent_at,
            order=next(self._orders),
            visible_at=now + self.world.rng.uniform(low, high),
            received=True,  # hidden (counted in flight) until it shows up
            receive_count=message.receive_count - 1,
            first_receive_at=message.first_receive_at,
        )
        queue.messages[copy.order] = copy

    def _redrive(self, queue: _Queue, message: _Stored, now: float) -> None:
        target_name = queue.dead_letter_queue
        target = self.queues.get(target_name) if target_name is not None else None
        queue.remove(message)
        if target is None or target_name is None:
            return  # a redrive policy pointing at a deleted queue: the message is gone
        message.order = next(self._orders)
        message.visible_at = now
        message.delayed_until = 0.0
        target.messages[message.order] = message
        target.notify()
        limit = queue.max_receive_count
        self._emit(
            DeadLettered(
                at=now,
                broker=SOURCE,
                source=queue.name,
                target=target_name,
                message_id=message.message_id,
                reason=(f"received {limit} times without being deleted (maxReceiveCount {limit})"),
            )
        )

    @staticmethod
    def _forget_old_dedup_ids(queue: _Queue, now: float) -> None:
        if not queue.dedup:
            return
        expired = [
            k for k, d in queue.dedup.items() if now - d.first_sent_at >= DEDUP_WINDOW_SECONDS
        ]
        for key in expired:
            del queue.dedup[key]

    def _on_node_change(self, change: NodeChange) -> None:
        if change.node != NODE:
            return
        if change.state is NodeState.DOWN:
            # The lab's server keeps everything in memory: a killed process forgets it all.
            for queue in self.queues.values():
                queue.alive = False
                queue.notify()
            self.queues.clear()
            self.topics.clear()
        elif change.state is NodeState.UP:
            for queue in self.queues.values():
                queue.notify()


def _content_hash(body: str) -> str:
    """Content-based deduplication id: SHA-256 of the body, as SQS computes it."""
    return hashlib.sha256(body.encode()).hexdigest()


def _sns_envelope(
    topic: _Topic, sns_message_id: str, body: str, attributes: dict[str, str], world: SimWorld
) -> str:
    """The JSON SNS wraps a message in when raw delivery is off."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": sns_message_id,
            "TopicArn": topic.arn,
            "Message": body,
            "Timestamp": f"{world.now():.3f}",
            "MessageAttributes": {
                key: {"Type": "String", "Value": value} for key, value in attributes.items()
            },
        },
        sort_keys=True,
    )


def sqs_server(world: SimWorld) -> SimSqsServer:
    """The world's SQS/SNS endpoint (created on first use)."""
    return world.model("sqs", lambda: SimSqsServer(world))


def configure_sqs(
    world: SimWorld, *, duplicate_rate: float | None = None, reorder_rate: float | None = None
) -> SimSqsServer:
    """Set how often standard queues duplicate and reorder in ``world`` (0 turns it off, for
    lessons that need an exact outcome).

    Raises:
        ValueError: a rate outside 0..1.
    """
    server = sqs_server(world)
    for label, rate in (("duplicate_rate", duplicate_rate), ("reorder_rate", reorder_rate)):
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError(f"{label} must be between 0 and 1, not {rate}")
    if duplicate_rate is not None:
        server.duplicate_rate = duplicate_rate
    if reorder_rate is not None:
        server.reorder_rate = reorder_rate
    return server


# --- the adapter ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Receipt:
    """Who received a message under a receipt handle (to name it in Acked/Nacked)."""

    message_id: str
    consumer: str


class SimSqsBroker(SqsAPI):
    """The simulator's SQS/SNS adapter: the real adapter's interface and behaviour over the
    world's shared :class:`SimSqsServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        bus, namespace, endpoints, connect_timeout: see :class:`mqlab.brokers.base.Broker`.
        request_timeout: seconds a request may take (long polls get their wait on top).
        duplicate_rate, reorder_rate: set the world's SQS behaviour (see
            :func:`configure_sqs`); ``None`` keeps what the world has.
    """

    backend = "sim"

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float | None = None,
        duplicate_rate: float | None = None,
        reorder_rate: float | None = None,
    ) -> None:
        if world is not None and bus is not None and bus is not world.bus:
            raise BrokerError("a simulated adapter emits on its world's bus: pass one of them")
        self._owns_world = world is None
        self.world = world if world is not None else SimWorld(bus=bus)
        super().__init__(
            bus=self.world.bus,
            namespace=namespace or self.world.new_namespace(),
            endpoints=endpoints,
            connect_timeout=connect_timeout,
        )
        self.request_timeout = connect_timeout if request_timeout is None else request_timeout
        self.address = f"{SIM_ADDRESS} ({NODE})"
        self._duplicate_rate = duplicate_rate
        self._reorder_rate = reorder_rate
        self._server: SimSqsServer | None = None
        self._receipts: dict[str, _Receipt] = {}
        self._message_counter = itertools.count(1)
        # None until connected: failed connection attempts are not "the broker went down".
        self._reachable: bool | None = None
        self._probe: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def _connect(self) -> None:
        server = configure_sqs(
            self.world, duplicate_rate=self._duplicate_rate, reorder_rate=self._reorder_rate
        )
        self._server = server
        try:
            await self._call(
                "ListQueues", self.address, lambda: None, patience=self.connect_timeout
            )
        except BrokerError as error:
            self._server = None
            if isinstance(error, BrokerUnavailable):
                raise
            raise BrokerUnavailable(self.system, self.address, str(error)) from None

    async def _close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        self._server = None
        self._reachable = None
        if self._owns_world:
            await self.world.aclose()

    async def cleanup(self) -> None:
        """Delete every queue and SNS topic (with its subscriptions) of this namespace."""
        if self._server is None:
            return
        server = self._server
        prefix = f"{self.namespace}-"

        def delete_all() -> None:
            for name in [n for n in server.queues if n.startswith(prefix)]:
                server.delete_queue(name)
            for name in [n for n in server.topics if n.startswith(prefix)]:
                server.delete_topic(name)

        await self._call("DeleteQueue", prefix, delete_all)

    # --- queues -------------------------------------------------------------------------

    async def create_queue(
        self,
        name: str,
        *,
        visibility_timeout: int = 30,
        delay_seconds: int = 0,
        content_based_dedup: bool = False,
        receive_wait_time: int = 0,
        dead_letter_queue: str | None = None,
        max_receive_count: int | None = None,
    ) -> str:
        """CreateQueue (FIFO when the name ends in ``.fifo``); returns the queue URL.

        Raises:
            SqsRequestRefused: a setting SQS does not accept for this queue type.
        """
        queue = self._queue_name(name)
        check_queue_settings(
            queue,
            content_based_dedup=content_based_dedup,
            dead_letter_queue=dead_letter_queue,
            max_receive_count=max_receive_count,
        )
        _check_range(queue, "VisibilityTimeout", visibility_timeout, MAX_VISIBILITY_TIMEOUT)
        _check_range(queue, "DelaySeconds", delay_seconds, MAX_DELAY_SECONDS)
        _check_range(queue, "ReceiveMessageWaitTimeSeconds", receive_wait_time, 20)
        if max_receive_count is not None and not 1 <= max_receive_count <= 1000:
            raise SqsRequestRefused(
                f"CreateQueue on {queue} refused: InvalidParameterValue: maxReceiveCount must "
                "be between 1 and 1000"
            )
        dead_letter = self._queue_name(dead_letter_queue) if dead_letter_queue else None
        server = self._require_server()
        created = await self._call(
            "CreateQueue",
            queue,
            lambda: server.create_queue(
                queue,
                visibility_timeout=visibility_timeout,
                delay_seconds=delay_seconds,
                content_based_dedup=content_based_dedup,
                receive_wait_time=receive_wait_time,
                dead_letter_queue=dead_letter,
                max_receive_count=max_receive_count,
            ),
        )
        return created.url

    async def delete_queue(self, name: str) -> None:
        """DeleteQueue; a queue that is already gone is not an error."""
        queue = self._queue_name(name)
        server = self._require_server()
        with contextlib.suppress(_QueueMissing):
            await self._call("DeleteQueue", queue, lambda: server.delete_queue(queue))

    async def purge_queue(self, name: str) -> None:
        """PurgeQueue: drop every message, visible or in flight."""
        queue = self._queue_name(name)
        server = self._require_server()
        await self._call("PurgeQueue", queue, lambda: server.purge(queue))

    async def queue_info(self, name: str) -> SqsQueueInfo:
        """Depth and settings of one queue (and its DLQ's depth), fresh from the server."""
        queue = self._queue_name(name)
        server = self._require_server()
        return await self._call("GetQueueAttributes", queue, lambda: server.queue_info(queue))

    # --- messages -----------------------------------------------------------------------

    async def send(
        self,
        queue: str,
        body: str,
        *,
        group_id: str | None = None,
        dedup_id: str | None = None,
        delay_seconds: int | None = None,
        message_id: str | None = None,
    ) -> SendResult:
        """SendMessage with mqlab's id in the ``mqlab-id`` message attribute.

        Raises:
            SqsRequestRefused: e.g. a FIFO send without ``group_id``, or without ``dedup_id``
                on a queue without content-based deduplication.
        """
        name = self._queue_name(queue)
        mqlab_id = message_id or self._new_message_id()
        server = self._require_server()
        try:
            stored, duplicate = await self._call(
                "SendMessage",
                name,
                lambda: server.send(
                    name,
                    body,
                    {MESSAGE_ID_ATTRIBUTE: mqlab_id},
                    group_id=group_id,
                    dedup_id=dedup_id,
                    delay_seconds=delay_seconds,
                ),
                nbytes=len(body.encode()),
            )
        except BrokerError as error:
            self.emit(
                ProduceFailed(
                    at=self.world.now(),
                    broker=self.name,
                    destination=name,
                    message_id=mqlab_id,
                    error=str(error),
                    key=group_id,
                )
            )
            raise
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=name,
                message_id=mqlab_id,
                key=group_id,
                duplicate=duplicate,
            )
        )
        return SendResult(
            sqs_message_id=stored.sqs_message_id,
            message_id=mqlab_id,
            sequence_number=stored.sequence_number,
        )

    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_time: float = 0,
        visibility_timeout: int | None = None,
        consumer: str = "consumer",
    ) -> list[SqsMessage]:
        """ReceiveMessage; ``wait_time`` > 0 long-polls (SQS counts whole seconds, rounded up)
        and returns as soon as at least one message is there.

        Raises:
            SqsRequestRefused: ``max_messages`` outside 1..10 or ``wait_time`` above 20.
        """
        name = self._queue_name(queue)
        if not 1 <= max_messages <= MAX_BATCH:
            raise SqsRequestRefused(f"max_messages must be 1..{MAX_BATCH} (SQS limit)")
        wait_seconds = math.ceil(wait_time) if wait_time > 0 else 0
        if wait_seconds > MAX_LONG_POLL_SECONDS:
            raise SqsRequestRefused(f"wait_time must be at most {MAX_LONG_POLL_SECONDS} s")
        if visibility_timeout is not None:
            _check_range(name, "VisibilityTimeout", visibility_timeout, MAX_VISIBILITY_TIMEOUT)
        server = self._require_server()

        async def poll() -> list[_Stored]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_seconds
            while True:
                state = self.world.state(NODE)
                if state is NodeState.DOWN:
                    raise NodeUnreachable(NODE, "connection reset by peer")
                if state is NodeState.PAUSED:
                    await self.world.next_change(NODE)  # a stopped server answers nothing
                    continue
                target = server.queue(name, "ReceiveMessage")
                hidden_for = (
                    target.visibility_timeout if visibility_timeout is None else visibility_timeout
                )
                found = server.receive(name, max_messages, hidden_for)
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return found
                wake = target.next_visibility(loop.time())
                if wake is not None:
                    remaining = min(remaining, wake - loop.time())
                await first_of(remaining, target.changed(), self.world.next_change(NODE))

        stored = await self._call_async(
            "ReceiveMessage",
            name,
            poll,
            extra=wait_seconds,
            answer_size=lambda found: sum(len(m.body.encode()) for m in found),
        )
        messages: list[SqsMessage] = []
        for item in stored:
            message = SqsMessage(
                queue=name,
                sqs_message_id=item.sqs_message_id,
                receipt_handle=item.receipt_handle or "",
                body=item.body,
                message_id=item.message_id,
                receive_count=item.receive_count,
                group_id=item.group_id,
                dedup_id=item.dedup_id,
                sequence_number=item.sequence_number,
                attributes=dict(item.attributes),
            )
            messages.append(message)
            self._receipts[message.receipt_handle] = _Receipt(message.message_id, consumer)
            self.emit(
                Delivered(
                    at=self.world.now(),
                    broker=self.name,
                    destination=name,
                    message_id=message.message_id,
                    consumer=consumer,
                    key=message.group_id,
                    delivery_count=message.receive_count,
                    redelivered=message.receive_count > 1,
                )
            )
        return messages

    async def delete_message(self, queue: str, receipt_handle: str, *, consumer: str = "") -> None:
        """DeleteMessage: the acknowledgement.

        Raises:
            ReceiptHandleInvalid: the server never issued this handle.
        """
        name = self._queue_name(queue)
        server = self._require_server()
        deleted = await self._call(
            "DeleteMessage", name, lambda: server.delete_message(name, receipt_handle)
        )
        receipt = self._receipts.pop(receipt_handle, None)
        message_id = receipt.message_id if receipt else None
        if message_id is None:
            message_id = deleted.message_id if deleted is not None else receipt_handle
        self.emit(
            Acked(
                at=self.world.now(),
                broker=self.name,
                destination=name,
                message_id=message_id,
                consumer=consumer or (receipt.consumer if receipt else ""),
            )
        )

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        """ChangeMessageVisibility; 0 hands the message back at once (emits ``Nacked``).

        Raises:
            ReceiptHandleInvalid: the handle is unknown or its message is gone.
        """
        name = self._queue_name(queue)
        server = self._require_server()
        changed = await self._call(
            "ChangeMessageVisibility",
            name,
            lambda: server.change_visibility(name, receipt_handle, timeout),
        )
        if timeout == 0:
            receipt = self._receipts.get(receipt_handle)
            self.emit(
                Nacked(
                    at=self.world.now(),
                    broker=self.name,
                    destination=name,
                    message_id=receipt.message_id if receipt else changed.message_id,
                    consumer=receipt.consumer if receipt else "",
                    requeue=True,
                )
            )

    # --- SNS ----------------------------------------------------------------------------

    async def create_topic(self, name: str) -> str:
        """CreateTopic (a FIFO topic when the name ends in ``.fifo``); returns its ARN."""
        topic = self._queue_name(name)
        server = self._require_server()
        created = await self._call("CreateTopic", topic, lambda: server.create_topic(topic))
        return created.arn

    async def subscribe_queue(self, topic_arn: str, queue: str, *, raw: bool = True) -> str:
        """Subscribe ``queue`` to the topic; returns the SubscriptionArn."""
        name = self._queue_name(queue)
        server = self._require_server()
        arn = self._topic_arn(topic_arn)
        return await self._call("Subscribe", name, lambda: server.subscribe(arn, name, raw))

    async def publish(
        self,
        topic_arn: str,
        body: str,
        *,
        group_id: str | None = None,
        dedup_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """SNS Publish with mqlab's id as a message attribute (raw delivery keeps it)."""
        mqlab_id = message_id or self._new_message_id()
        topic = (
            _arn_name(topic_arn) if topic_arn.startswith("arn:") else self._queue_name(topic_arn)
        )
        server = self._require_server()
        try:
            arn = self._topic_arn(topic_arn)
            await self._call(
                "Publish",
                topic,
                lambda: server.publish(
                    arn,
                    body,
                    {MESSAGE_ID_ATTRIBUTE: mqlab_id},
                    group_id=group_id,
                    dedup_id=dedup_id,
                ),
            )
        except BrokerError as error:
            self.emit(
                ProduceFailed(
                    at=self.world.now(),
                    broker=self.name,
                    destination=topic,
                    message_id=mqlab_id,
                    error=str(error),
                    key=group_id,
                )
            )
            raise
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=topic,
                message_id=mqlab_id,
                key=group_id,
            )
        )
        return mqlab_id

    # --- inspection ---------------------------------------------------------------------

    async def inspect(self) -> SqsSnapshot:
        """Every queue (depths, FIFO settings, redrive, DLQ depth) and topic of the namespace."""
        server = self._require_server()
        prefix = f"{self.namespace}-"
        return await self._call("ListQueues", prefix, lambda: server.snapshot(prefix))

    # --- plumbing -----------------------------------------------------------------------

    def _require_server(self) -> SimSqsServer:
        if self._server is None:
            raise BrokerError("the sqs adapter is not connected (use: async with broker)")
        return self._server

    def _queue_name(self, name: str) -> str:
        """The broker-side name: already namespaced names are kept, others are qualified."""
        return name if name.startswith(f"{self.namespace}-") else self.qualify(name)

    def _topic_arn(self, topic: str) -> str:
        if topic.startswith("arn:"):
            return topic
        return f"arn:aws:sns:{REGION}:{ACCOUNT}:{self._queue_name(topic)}"

    def _new_message_id(self) -> str:
        return f"{self.namespace}-{next(self._message_counter):06d}"

    async def _call(
        self,
        operation: str,
        target: str,
        action: Callable[[], _T],
        *,
        patience: float | None = None,
        nbytes: int = 0,
    ) -> _T:
        async def run() -> _T:
            return action()

        return await self._call_async(operation, target, run, patience=patience, nbytes=nbytes)

    async def _call_async(
        self,
        operation: str,
        target: str,
        action: Callable[[], Awaitable[_T]],
        *,
        extra: float = 0.0,
        patience: float | None = None,
        nbytes: int = 0,
        answer_size: Callable[[_T], int] | None = None,
    ) -> _T:
        """One HTTP request over the simulated network, as the real adapter makes it.

        An endpoint that cannot be reached is asked again every quarter second for up to
        ``patience`` (``request_timeout`` by default), then the call raises
        BrokerUnavailable. A request that reached the server but got no answer within
        ``request_timeout`` (+ the long-poll wait) raises OperationTimedOut and is not
        repeated: it may have been carried out (the server acts on it even after the client
        gave up, e.g. once a paused server is resumed). ``nbytes`` / ``answer_size`` are the
        payload sizes of the two legs (what a bandwidth limit slows down).
        """
        world = self.world
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.request_timeout if patience is None else patience)

        async def request() -> _T:
            await world.transmit(NODE, "upstream", nbytes)
            return await action()

        while True:
            try:
                async with asyncio.timeout(self.request_timeout + extra):
                    if world.clear_path(NODE):
                        result = await action()  # nothing on the way (a long poll may wait)
                    else:
                        result = await outlive_caller(world, request(), f"sqs {operation}")
                    size = answer_size(result) if answer_size is not None else 0
                    await world.transmit(NODE, "downstream", size)
            except TimeoutError:
                self._mark_unreachable(
                    f"{operation} got no answer within {self.request_timeout:g} s"
                )
                raise OperationTimedOut(
                    f"sqs did not answer {operation} on {target} within "
                    f"{self.request_timeout:g} s at {self.address}"
                ) from None
            except NodeUnreachable as error:
                self._mark_unreachable(error.reason)
                if loop.time() + _RETRY_INTERVAL > deadline:
                    raise BrokerUnavailable(self.system, self.address, error.reason) from None
                await asyncio.sleep(_RETRY_INTERVAL)
                continue
            self._mark_reachable()
            return result

    def _mark_unreachable(self, detail: str) -> None:
        if self._reachable is not True:  # not connected yet: not "the broker went down"
            return
        self._reachable = False
        self.emit(BrokerDown(at=self.world.now(), broker=self.name, node=NODE, detail=detail))
        if self._probe is None or self._probe.done():
            self._probe = self.world.spawn(self._probe_until_up(), name="sqs probe")

    def _mark_reachable(self) -> None:
        if self._reachable is not False:
            self._reachable = True
            return
        self._reachable = True
        self.emit(
            BrokerUp(
                at=self.world.now(),
                broker=self.name,
                node=NODE,
                detail=f"answering again at {self.address}",
            )
        )

    async def _probe_until_up(self) -> None:
        """While the endpoint is down, ask it twice a second so BrokerUp shows without calls."""
        while self._reachable is False:
            await asyncio.sleep(_PROBE_INTERVAL)
            if connection_refused(self.world, NODE) is not None:
                continue
            try:
                await within(2.0, self.world.transmit(NODE, "upstream"))
                await within(2.0, self.world.transmit(NODE, "downstream"))
            except (TimeoutError, NodeUnreachable):
                continue
            self._mark_reachable()


def _check_range(queue: str, attribute: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise SqsRequestRefused(
            f"{queue}: {attribute} must be between 0 and {maximum}, not {value}"
        )


def _arn_name(arn: str) -> str:
    """The resource name at the end of an SQS queue or SNS topic ARN."""
    return arn.rsplit(":", 1)[-1]
