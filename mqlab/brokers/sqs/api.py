"""The SQS (+ SNS fan-out) interface, in AWS's vocabulary: queues, receipt handles, visibility
timeouts, message groups, deduplication ids, redrive policies, topics and subscriptions.

Implemented by :class:`mqlab.brokers.sqs.client.SqsBroker` (boto3 against the lab's moto server) and
by the simulator's SQS model. Queues are addressed by *name*; adapters map names to URLs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from mqlab.brokers.base import Broker, BrokerError, Capabilities, Snapshot

MESSAGE_ID_ATTRIBUTE = "mqlab-id"
"""Message attribute that carries mqlab's message id."""

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
    dedup_window_seconds=300.0,
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
class SendResult:
    """What SQS said about a send. ``sequence_number`` only on FIFO queues."""

    sqs_message_id: str
    message_id: str
    sequence_number: str | None = None


MAX_BATCH = 10
"""The most entries one SendMessageBatch takes (and ReceiveMessage returns)."""


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


class SqsAPI(Broker):
    """SQS standard and FIFO plus SNS fan-out, in AWS's vocabulary.

    ``capabilities`` describes a standard queue; FIFO queues behave as
    :data:`SQS_FIFO_CAPABILITIES` (see :meth:`capabilities_for`).
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

    @abstractmethod
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
        """Create a queue (FIFO when ``name`` ends in ``.fifo``); returns its URL.

        ``dead_letter_queue`` (an existing queue's name) with ``max_receive_count`` sets the
        redrive policy.
        """

    @abstractmethod
    async def delete_queue(self, name: str) -> None:
        """Delete a queue (no error if gone)."""

    @abstractmethod
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
        """SendMessage. FIFO queues need ``group_id``; ``dedup_id`` unless content-based."""

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

    @abstractmethod
    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_time: float = 0,
        visibility_timeout: int | None = None,
        consumer: str = "consumer",
    ) -> list[SqsMessage]:
        """ReceiveMessage (long polling when ``wait_time`` > 0)."""

    @abstractmethod
    async def delete_message(self, queue: str, receipt_handle: str, *, consumer: str = "") -> None:
        """DeleteMessage: the acknowledgement."""

    @abstractmethod
    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        """ChangeMessageVisibility (0 makes it visible again at once: SQS's "nack")."""

    @abstractmethod
    async def purge_queue(self, name: str) -> None:
        """PurgeQueue."""

    @abstractmethod
    async def queue_info(self, name: str) -> SqsQueueInfo:
        """Depth and settings of one queue, fresh from the server."""

    @abstractmethod
    async def create_topic(self, name: str) -> str:
        """Create an SNS topic (FIFO when ``name`` ends in ``.fifo``); returns its ARN."""

    @abstractmethod
    async def subscribe_queue(self, topic_arn: str, queue: str, *, raw: bool = True) -> str:
        """Subscribe ``queue`` to the topic (raw delivery: the body arrives unwrapped)."""

    @abstractmethod
    async def publish(
        self,
        topic_arn: str,
        body: str,
        *,
        group_id: str | None = None,
        dedup_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """SNS Publish; returns mqlab's message id."""

    @abstractmethod
    async def inspect(self) -> SqsSnapshot:
        """Queues (visible, in flight, delayed, FIFO settings, redrive and DLQ depth), topics."""
