"""The simulator's SQS (+ SNS): queues, receipt handles, visibility and FIFO groups on virtual time.

Layout (the same in every simulated system): this module is the server model
(:class:`SimSqsServer`), its data is in :mod:`~mqlab.brokers.sim.sqs.queues`, and the simulated
adapter, :class:`~mqlab.brokers.sim.sqs.client.SimSqsBroker`, in
:mod:`~mqlab.brokers.sim.sqs.client`.

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
  (AWS, of course, never goes away.) moto as it ships forgets a deleted message's
  deduplication id; the lab's server keeps it for the window as AWS does, and so does the
  simulator.
* ``DeadLettered`` is emitted when the message is moved (the real adapter can only notice it
  when it later receives the message from the dead-letter queue).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from typing import TypeVar

from mqlab.brokers.sim.sqs.queues import (
    ACCOUNT,
    REGION,
    Dedup,
    Queue,
    Stored,
    Topic,
)
from mqlab.brokers.sim.world import NodeChange, NodeState, SimServer, SimWorld
from mqlab.brokers.sqs.api import (
    DEDUP_WINDOW_SECONDS,
    NewQueue,
    QueueMissing,
    ReceiptHandleInvalid,
    SnsTopicInfo,
    SqsQueueInfo,
    SqsRequestRefused,
    SqsSnapshot,
    redrive_reason,
)
from mqlab.observe.events import (
    DeadLettered,
)

_T = TypeVar("_T")

NODE = "sqs"
"""The simulated node (the lab's process name) that faults target."""

SOURCE = "sim:sqs"
"""``broker`` field of the observations the server itself emits (redrive)."""

MAX_VISIBILITY_TIMEOUT = 43_200
MAX_DELAY_SECONDS = 900

DEFAULT_DUPLICATE_RATE = 0.01
"""Share of standard-queue receives that leave a duplicate copy behind (at-least-once)."""
DEFAULT_REORDER_RATE = 0.05
"""Chance that two neighbouring messages swap places in a standard-queue receive."""

_DUPLICATE_DELAY = (0.2, 2.0)  # seconds until a left-behind copy shows up again

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_FIFO_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}\.fifo$")


class SimSqsServer(SimServer):
    """The SQS/SNS endpoint of a simulated world, shared by every adapter of that world.

    Args:
        world: the world (clock, seeded randomness, node faults).
        duplicate_rate: share of standard-queue receives that leave a duplicate behind.
        reorder_rate: chance that two neighbouring messages swap in a standard receive.
    """

    model_key = "sqs"

    def __init__(
        self,
        world: SimWorld,
        *,
        duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
        reorder_rate: float = DEFAULT_REORDER_RATE,
    ) -> None:
        super().__init__(world)
        self.duplicate_rate = duplicate_rate
        self.reorder_rate = reorder_rate
        self.queues: dict[str, Queue] = {}
        self.topics: dict[str, Topic] = {}
        self._orders = itertools.count(1)
        self._sequence_numbers = itertools.count(1)
        self._subscription_ids = itertools.count(1)

    # --- queues -------------------------------------------------------------------------

    def create_queue(self, request: NewQueue) -> Queue:
        name = request.name
        if not (_FIFO_QUEUE_NAME if name.endswith(".fifo") else _QUEUE_NAME).match(name):
            raise SqsRequestRefused(
                f"CreateQueue on {name} refused: InvalidParameterValue: Can only include "
                "alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
            )
        candidate = Queue(request)
        if request.dead_letter_queue is not None:
            target = self.queue(request.dead_letter_queue, "CreateQueue")
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

    def queue(self, name: str, operation: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise QueueMissing(f"queue {name!r} does not exist ({operation})")
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
    ) -> tuple[Stored, bool]:
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
                original = Stored(
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
        message = Stored(
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
            queue.dedup[key] = Dedup(now, message.sqs_message_id, message.sequence_number)
        queue.messages[message.order] = message
        queue.notify()
        return message, False

    def receive(self, name: str, max_messages: int, visibility_timeout: int) -> list[Stored]:
        """One pass of ReceiveMessage over the queue (long polling repeats it)."""
        queue = self.queue(name, "ReceiveMessage")
        now = self.world.now()
        self._forget_old_dedup_ids(queue, now)
        candidates: Iterable[Stored]
        if queue.fifo:
            candidates = self._fifo_candidates(queue, now)
        else:
            # Look only as far as needed: a snapshot (redrive and duplicates change the
            # queue while we go), the visible ones lazily, the first few maybe shuffled.
            visible = (m for m in list(queue.messages.values()) if m.visible(now))
            window = list(itertools.islice(visible, max_messages + 1))
            self._shuffle_a_little(window, max_messages)
            candidates = itertools.chain(window, visible)
        received: list[Stored] = []
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

    def delete_message(self, name: str, receipt_handle: str) -> Stored | None:
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

    def change_visibility(self, name: str, receipt_handle: str, timeout: int) -> Stored:
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

    def create_topic(self, name: str) -> Topic:
        if not (_FIFO_QUEUE_NAME if name.endswith(".fifo") else _QUEUE_NAME).match(name):
            raise SqsRequestRefused(
                f"CreateTopic on {name} refused: InvalidParameter: Topic Name must be made up "
                "of alphanumeric characters, hyphens and underscores, 1 to 256 long"
            )
        topic = self.topics.get(name)
        if topic is None:
            topic = Topic(name, f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}", name.endswith(".fifo"))
            self.topics[name] = topic
        return topic

    def topic_by_arn(self, arn: str, operation: str) -> Topic:
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
    def _fifo_candidates(queue: Queue, now: float) -> list[Stored]:
        """Receivable messages of a FIFO queue, a group at a time: groups in the order of
        their oldest message, each group's messages in order, stopping at the first one that
        is not receivable (everything behind a hidden message of its group waits)."""
        by_group: dict[str, list[Stored]] = {}
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

    def _shuffle_a_little(self, candidates: list[Stored], batch: int) -> None:
        """Best-effort ordering: now and then two neighbours swap places."""
        if self.reorder_rate <= 0:
            return
        for index in range(min(len(candidates), batch + 1) - 1):
            if self.world.rng.random() < self.reorder_rate:
                candidates[index], candidates[index + 1] = candidates[index + 1], candidates[index]

    def _hand_out(self, queue: Queue, message: Stored, now: float, visibility: int) -> None:
        message.received = True
        message.receive_count += 1
        if message.first_receive_at is None:
            message.first_receive_at = now
        message.visible_at = now + visibility
        handle = self.world.next_id(f"{message.sqs_message_id}-receipt")
        message.receipt_handle = handle
        queue.handles[handle] = message

    def _leave_duplicate(self, queue: Queue, message: Stored, now: float) -> None:
        """At-least-once: a copy of the message on another server missed this receive and
        will be handed out again a moment later."""
        low, high = _DUPLICATE_DELAY
        copy = Stored(
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

    def _redrive(self, queue: Queue, message: Stored, now: float) -> None:
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
        self.emit(
            DeadLettered(
                at=now,
                broker=SOURCE,
                source=queue.name,
                target=target_name,
                message_id=message.message_id,
                reason=redrive_reason(limit),
            )
        )

    @staticmethod
    def _forget_old_dedup_ids(queue: Queue, now: float) -> None:
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
    topic: Topic, sns_message_id: str, body: str, attributes: dict[str, str], world: SimWorld
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


def configure_sqs(
    world: SimWorld, *, duplicate_rate: float | None = None, reorder_rate: float | None = None
) -> SimSqsServer:
    """Set how often standard queues duplicate and reorder in ``world`` (0 turns it off, for
    lessons that need an exact outcome).

    Raises:
        ValueError: a rate outside 0..1.
    """
    server = SimSqsServer.of(world)
    for label, rate in (("duplicate_rate", duplicate_rate), ("reorder_rate", reorder_rate)):
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError(f"{label} must be between 0 and 1, not {rate}")
    if duplicate_rate is not None:
        server.duplicate_rate = duplicate_rate
    if reorder_rate is not None:
        server.reorder_rate = reorder_rate
    return server
