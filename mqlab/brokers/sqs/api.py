"""The SQS (+ SNS fan-out) interface, in AWS's vocabulary: queues, receipt handles, visibility
timeouts, message groups, deduplication ids, redrive policies, topics and subscriptions.

Implemented by :class:`mqlab.brokers.sqs.client.SqsBroker` (boto3 against the lab's moto server) and
by the simulator's SQS model. Queues are addressed by *name*; adapters map names to URLs.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Unpack

from mqlab.brokers.base import (
    AdapterOptions,
    Broker,
    BrokerError,
    Capabilities,
    Placement,
    Snapshot,
)

MESSAGE_ID_ATTRIBUTE = "mqlab-id"
"""Message attribute that carries mqlab's message id."""
MAX_BATCH = 10
"""The most entries one SendMessageBatch takes (and ReceiveMessage returns)."""
MAX_LONG_POLL_SECONDS = 20
"""The longest ReceiveMessage wait SQS accepts."""
DEDUP_WINDOW_SECONDS = 300.0
"""SQS FIFO's deduplication interval (fixed at five minutes by AWS)."""

SQS_CAPABILITIES = Capabilities(
    ordering="none",
    delivery="at-least-once",
    replay=False,
    priority=False,
    routing="none",
    dedup_window_seconds=None,
    dead_letter=True,
    transactions=False,
    per_key_ordering=False,
    ops_burden="zero",
    throughput="nearly unlimited (standard)",
)

SQS_FIFO_CAPABILITIES = Capabilities(
    ordering="message group",
    delivery="exactly-once-within-dedup-window",
    replay=False,
    priority=False,
    routing="message group",
    dedup_window_seconds=DEDUP_WINDOW_SECONDS,
    dead_letter=True,
    transactions=False,
    per_key_ordering=True,
    ops_burden="zero",
    throughput="~300/s per API action (3,000/s batched)",
)


class SqsRequestRefused(BrokerError):
    """SQS or SNS answered a request with an error (bad parameter, missing queue ...).

    Defined in the interface so callers catch it whichever backend raised it.
    """


class QueueMissing(SqsRequestRefused):
    """The queue does not exist (deleted, or never created in this namespace)."""


def redrive_reason(max_receive_count: int | None) -> str:
    """Why a redrive policy moved a message to its dead-letter queue (``DeadLettered``);
    ``None`` when the source queue's maxReceiveCount is not known."""
    if max_receive_count is None:
        return "maxReceiveCount reached"
    return (
        f"received {max_receive_count} times without being deleted "
        f"(maxReceiveCount {max_receive_count})"
    )


def check_queue_settings(
    queue: str,
    *,
    content_based_dedup: bool,
    dead_letter_queue: str | None,
    max_receive_count: int | None,
) -> None:
    """The CreateQueue settings that only make sense together (shared by both backends).

    Raises:
        SqsRequestRefused: content-based dedup on a standard queue, or half a redrive policy.
    """
    if content_based_dedup and not queue.endswith(".fifo"):
        raise SqsRequestRefused(
            f"content-based deduplication needs a FIFO queue (a name ending in .fifo), "
            f"not {queue!r}"
        )
    if (dead_letter_queue is None) != (max_receive_count is None):
        raise SqsRequestRefused(
            "a redrive policy needs both dead_letter_queue and max_receive_count"
        )


def check_batch(entries: Sequence[BatchEntry]) -> None:
    """A SendMessageBatch takes one to ten entries (shared by both backends).

    Raises:
        SqsRequestRefused: none, or more than ten.
    """
    if not 1 <= len(entries) <= MAX_BATCH:
        raise SqsRequestRefused(
            f"a SendMessageBatch takes 1 to {MAX_BATCH} entries, not {len(entries)}"
        )


def arn_name(arn: str) -> str:
    """The resource name at the end of an SQS queue or SNS topic ARN."""
    return arn.rsplit(":", 1)[-1]


class ReceiptHandleInvalid(BrokerError):
    """The receipt handle is stale: the visibility timeout expired and someone else got it."""


@dataclass(frozen=True, slots=True)
class NewQueue:
    """A CreateQueue request as the adapters carry it out: names qualified, combinations
    checked."""

    name: str
    visibility_timeout: int
    delay_seconds: int
    content_based_dedup: bool
    receive_wait_time: int
    dead_letter_queue: str | None
    max_receive_count: int | None

    @property
    def fifo(self) -> bool:
        """FIFO queue names end in ``.fifo``."""
        return self.name.endswith(".fifo")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message on its way to a queue (SendMessage) or a topic (Publish), with mqlab's id."""

    body: str
    message_id: str
    group_id: str | None = None
    dedup_id: str | None = None
    delay_seconds: int | None = None

    @property
    def attributes(self) -> dict[str, str]:
        """The message attributes it carries: mqlab's id."""
        return {MESSAGE_ID_ATTRIBUTE: self.message_id}


@dataclass(frozen=True, slots=True)
class SendResult:
    """What SQS said about a send. ``sequence_number`` only on FIFO queues."""

    sqs_message_id: str
    message_id: str
    sequence_number: str | None = None


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """One message of a SendMessageBatch (the same fields as :meth:`SqsAPI.send`)."""

    body: str
    group_id: str | None = None
    dedup_id: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """A received message. ``receive_count`` is ApproximateReceiveCount."""

    queue: str
    sqs_message_id: str
    receipt_handle: str
    body: str
    message_id: str
    receive_count: int = 1
    group_id: str | None = None
    dedup_id: str | None = None
    sequence_number: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SqsQueueInfo:
    """One queue's depth and settings (ApproximateNumberOfMessages* and attributes)."""

    name: str
    url: str
    fifo: bool
    visible: int
    in_flight: int
    delayed: int
    visibility_timeout: int
    delay_seconds: int = 0
    content_based_dedup: bool = False
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None
    dead_letter_depth: int | None = None


@dataclass(frozen=True, slots=True)
class SnsTopicInfo:
    """An SNS topic and the queues subscribed to it."""

    name: str
    arn: str
    subscribed_queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SqsSnapshot(Snapshot):
    """Queues (with DLQ depth) and SNS topics of one namespace."""

    system: ClassVar[str] = "sqs"

    queues: tuple[SqsQueueInfo, ...]
    topics: tuple[SnsTopicInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    """Who received a message under a receipt handle."""

    queue: str
    message_id: str
    consumer: str


class Receipts:
    """The receipt handles an adapter handed out, so its Acked / Nacked can name the message
    and the consumer (SQS's answers to DeleteMessage and ChangeMessageVisibility carry
    neither). The oldest are forgotten beyond ``limit``, so memory stays flat in long runs."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._receipts: OrderedDict[str, Receipt] = OrderedDict()

    def received(self, message: SqsMessage, consumer: str) -> None:
        """``consumer`` received ``message``."""
        self._receipts[message.receipt_handle] = Receipt(
            message.queue, message.message_id, consumer
        )
        self._receipts.move_to_end(message.receipt_handle)
        while len(self._receipts) > self._limit:
            self._receipts.popitem(last=False)

    def get(self, receipt_handle: str) -> Receipt | None:
        """Who received under ``receipt_handle`` (None: not this adapter, or forgotten)."""
        return self._receipts.get(receipt_handle)

    def pop(self, receipt_handle: str) -> Receipt | None:
        """:meth:`get`, and forget it (the message is deleted)."""
        return self._receipts.pop(receipt_handle, None)


class SqsOptions(AdapterOptions, total=False):
    """What an SQS adapter takes (see :class:`SqsAPI`)."""

    request_timeout: float | None


class SqsAPI(Broker):
    """SQS standard and FIFO plus SNS fan-out, in AWS's vocabulary.

    ``capabilities`` describes a standard queue; FIFO queues behave as
    :data:`SQS_FIFO_CAPABILITIES` (see :meth:`capabilities_for`).

    Args:
        request_timeout: seconds a single request may take to answer (long polls get their
            wait time on top). Defaults to ``connect_timeout``.
        options: see :class:`~mqlab.brokers.base.Broker`.
    """

    system = "sqs"
    capabilities = SQS_CAPABILITIES

    @staticmethod
    def capabilities_for(queue_name: str) -> Capabilities:
        """The comparison-table column for a queue: FIFO names end in ``.fifo``."""
        return SQS_FIFO_CAPABILITIES if queue_name.endswith(".fifo") else SQS_CAPABILITIES

    def queue_name(self, name: str) -> str:
        """The server-side name of a queue or topic: already namespaced names are kept,
        others are qualified."""
        return name if name.startswith(f"{self.namespace}-") else self.qualify(name)

    def topic_name(self, topic: str) -> str:
        """The server-side name of a topic given by ARN or by name."""
        return arn_name(topic) if topic.startswith("arn:") else self.queue_name(topic)

    def report_received(self, message: SqsMessage, consumer: str) -> None:
        """Emit ``Delivered`` for a received message (a redelivery once SQS's
        ApproximateReceiveCount passes 1)."""
        self.report_delivered(
            message.queue,
            message.message_id,
            consumer,
            key=message.group_id,
            delivery_count=message.receive_count,
            redelivered=message.receive_count > 1,
        )

    def __init__(
        self, *, request_timeout: float | None = None, **options: Unpack[AdapterOptions]
    ) -> None:
        super().__init__(**options)
        self.request_timeout = self.connect_timeout if request_timeout is None else request_timeout
        self.receipts = Receipts()
        """The receipt handles this adapter handed out (for Acked / Nacked)."""

    # -- queues (names qualified and requests checked here; each adapter's hooks below) -----

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
        """CreateQueue (FIFO when ``name`` ends in ``.fifo``); returns its URL.

        ``dead_letter_queue`` (an existing queue's name) with ``max_receive_count`` sets the
        redrive policy.

        Raises:
            SqsRequestRefused: a setting SQS does not accept for this queue type.
        """
        queue = self.queue_name(name)
        check_queue_settings(
            queue,
            content_based_dedup=content_based_dedup,
            dead_letter_queue=dead_letter_queue,
            max_receive_count=max_receive_count,
        )
        return await self._create_queue(
            NewQueue(
                name=queue,
                visibility_timeout=visibility_timeout,
                delay_seconds=delay_seconds,
                content_based_dedup=content_based_dedup,
                receive_wait_time=receive_wait_time,
                dead_letter_queue=(
                    self.queue_name(dead_letter_queue) if dead_letter_queue is not None else None
                ),
                max_receive_count=max_receive_count,
            )
        )

    async def delete_queue(self, name: str) -> None:
        """DeleteQueue; a queue that is already gone is not an error."""
        await self._delete_queue(self.queue_name(name))

    async def purge_queue(self, name: str) -> None:
        """PurgeQueue: drop every message, visible or in flight."""
        await self._purge_queue(self.queue_name(name))

    async def queue_info(self, name: str) -> SqsQueueInfo:
        """Depth and settings of one queue (and its DLQ's depth), fresh from the server."""
        return await self._queue_info(self.queue_name(name))

    # -- messages ------------------------------------------------------------------------

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
        """SendMessage with mqlab's id in the ``mqlab-id`` message attribute. Emits
        ``Produced`` (``duplicate=True`` for a FIFO resend inside the deduplication window)
        or ``ProduceFailed``.

        Raises:
            SqsRequestRefused: e.g. a FIFO send without ``group_id``, or without ``dedup_id``
                on a queue without content-based deduplication.
        """
        name = self.queue_name(queue)
        mqlab_id = message_id or self.new_message_id()
        outgoing = Outgoing(body, mqlab_id, group_id, dedup_id, delay_seconds)
        sent, _ = await self.send_reported(
            self._send(name, outgoing),
            destination=name,
            message_id=mqlab_id,
            key=group_id,
            placed=lambda outcome: Placement(duplicate=outcome[1]),
        )
        return sent

    async def send_batch(self, queue: str, entries: Sequence[BatchEntry]) -> list[SendResult]:
        """SendMessageBatch: up to ten messages in one request, which is how SQS producers
        get throughput (one round trip for ten messages).

        This default sends the entries one by one with :meth:`send` (the simulator has no
        round trip to save); the real adapter makes one request.

        Returns:
            One result per entry, in order.

        Raises:
            SqsRequestRefused: no entries or more than ten, or SQS refused an entry (the
                entries before it may have been sent).
        """
        check_batch(entries)
        return [
            await self.send(
                queue,
                entry.body,
                group_id=entry.group_id,
                dedup_id=entry.dedup_id,
                message_id=entry.message_id,
            )
            for entry in entries
        ]

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
        and returns as soon as at least one message is there. Emits ``Delivered`` for each.

        Raises:
            SqsRequestRefused: ``max_messages`` outside 1..10 or ``wait_time`` above 20.
        """
        name = self.queue_name(queue)
        if not 1 <= max_messages <= MAX_BATCH:
            raise SqsRequestRefused(f"max_messages must be 1..{MAX_BATCH} (SQS limit)")
        wait_seconds = math.ceil(wait_time) if wait_time > 0 else 0
        if wait_seconds > MAX_LONG_POLL_SECONDS:
            raise SqsRequestRefused(f"wait_time must be at most {MAX_LONG_POLL_SECONDS} s")
        messages = await self._receive(name, max_messages, wait_seconds, visibility_timeout)
        for message in messages:
            self.receipts.received(message, consumer)
            self.report_received(message, consumer)
        return messages

    async def delete_message(self, queue: str, receipt_handle: str, *, consumer: str = "") -> None:
        """DeleteMessage: the acknowledgement (emits ``Acked``).

        Raises:
            ReceiptHandleInvalid: SQS rejected the handle.
        """
        name = self.queue_name(queue)
        known = await self._delete_message(name, receipt_handle)
        receipt = self.receipts.pop(receipt_handle)
        self.report_settled(
            name,
            receipt.message_id if receipt else known or receipt_handle,
            consumer or (receipt.consumer if receipt else ""),
        )

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        """ChangeMessageVisibility; 0 hands the message back at once (SQS's "nack": emits
        ``Nacked``).

        Raises:
            ReceiptHandleInvalid: SQS rejected the handle.
        """
        name = self.queue_name(queue)
        known = await self._change_visibility(name, receipt_handle, timeout)
        if timeout == 0:
            receipt = self.receipts.get(receipt_handle)
            self.report_settled(
                name,
                receipt.message_id if receipt else known or receipt_handle,
                receipt.consumer if receipt else "",
                requeue=True,
            )

    # -- SNS -----------------------------------------------------------------------------

    async def create_topic(self, name: str) -> str:
        """CreateTopic (a FIFO topic when the name ends in ``.fifo``); returns its ARN."""
        return await self._create_topic(self.queue_name(name))

    async def subscribe_queue(self, topic_arn: str, queue: str, *, raw: bool = True) -> str:
        """Subscribe ``queue`` to the topic (raw delivery: the body arrives unwrapped);
        returns the SubscriptionArn."""
        return await self._subscribe_queue(topic_arn, self.queue_name(queue), raw)

    async def publish(
        self,
        topic_arn: str,
        body: str,
        *,
        group_id: str | None = None,
        dedup_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """SNS Publish with mqlab's id as a message attribute (raw delivery keeps it);
        returns mqlab's message id."""
        mqlab_id = message_id or self.new_message_id()
        topic = self.topic_name(topic_arn)
        await self.send_reported(
            self._publish(topic_arn, topic, Outgoing(body, mqlab_id, group_id, dedup_id)),
            destination=topic,
            message_id=mqlab_id,
            key=group_id,
        )
        return mqlab_id

    # -- what each adapter does with the checked, server-side names ----------------------

    @abstractmethod
    async def _create_queue(self, queue: NewQueue) -> str:
        """CreateQueue; returns the queue URL."""

    @abstractmethod
    async def _delete_queue(self, queue: str) -> None:
        """DeleteQueue (no error if gone)."""

    @abstractmethod
    async def _purge_queue(self, queue: str) -> None:
        """PurgeQueue."""

    @abstractmethod
    async def _queue_info(self, queue: str) -> SqsQueueInfo:
        """GetQueueAttributes (and the DLQ's depth)."""

    @abstractmethod
    async def _send(self, queue: str, message: Outgoing) -> tuple[SendResult, bool]:
        """SendMessage; returns what SQS said and whether it was a deduplicated resend."""

    @abstractmethod
    async def _receive(
        self, queue: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None
    ) -> list[SqsMessage]:
        """ReceiveMessage (emitting ``DeadLettered`` for what arrived on a dead-letter queue)."""

    @abstractmethod
    async def _delete_message(self, queue: str, receipt_handle: str) -> str | None:
        """DeleteMessage; returns the deleted message's mqlab id when the adapter knows it."""

    @abstractmethod
    async def _change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> str | None:
        """ChangeMessageVisibility; returns the message's mqlab id when the adapter knows it."""

    @abstractmethod
    async def _create_topic(self, topic: str) -> str:
        """CreateTopic; returns its ARN."""

    @abstractmethod
    async def _subscribe_queue(self, topic_arn: str, queue: str, raw: bool) -> str:
        """Subscribe (and whatever the server needs to let the topic send to the queue)."""

    @abstractmethod
    async def _publish(self, topic_arn: str, topic: str, message: Outgoing) -> None:
        """SNS Publish (``topic_arn`` as the caller gave it, ``topic`` its server-side name)."""

    @abstractmethod
    async def inspect(self) -> SqsSnapshot:
        """Queues (visible, in flight, delayed, FIFO settings, redrive and DLQ depth), topics."""
