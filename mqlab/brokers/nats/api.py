"""The NATS JetStream interface, in NATS's vocabulary: subjects, streams, consumers, sequences.

Implemented by :class:`mqlab.brokers.nats.client.NatsBroker` (nats-py) and by the simulator's model.
Core NATS (no JetStream) is at-most-once pub/sub; :meth:`NatsAPI.subscribe` exposes it so the
difference can be shown. Everything durable goes through streams and consumers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from mqlab.brokers.base import Broker, BrokerError, Capabilities, Placement, Snapshot

MESSAGE_ID_HEADER = "mqlab-id"

DeliverPolicy = Literal["all", "last", "new", "by_start_sequence", "by_start_time"]
Retention = Literal["limits", "interest", "workqueue"]
JsOperation = Literal["ack", "nak", "term", "in_progress"]

NATS_CAPABILITIES = Capabilities(
    ordering="stream",
    delivery="at-least-once",
    replay=True,
    priority=False,
    routing="subject wildcards",
    dedup_window_seconds=120.0,
    dead_letter=False,
    transactions=False,
    per_key_ordering=False,
    ops_burden="low",
    throughput="~300K/s",
)


@dataclass(frozen=True, slots=True)
class PubAck:
    """JetStream's answer to a publish. ``duplicate``: dropped by the Nats-Msg-Id window."""

    stream: str
    sequence: int
    duplicate: bool = False

    def placement(self) -> Placement:
        """Where the publish landed, as ``Produced`` reports it."""
        return Placement(position=self.sequence, duplicate=self.duplicate)


_FORBIDDEN_IN_NAMES = frozenset(" .*>\t\r\n")


class JetStreamError(BrokerError):
    """JetStream refused a request (bad configuration, unknown stream or consumer ...).

    Defined in the interface so callers catch it whichever backend raised it.
    """


class NoStreamForSubject(JetStreamError):
    """A JetStream publish to a subject that no stream captures (nothing would store it)."""


class JsMessage(ABC):
    """A message fetched by a JetStream consumer, not yet acknowledged.

    Settling is written here once for both backends: send it (each adapter's :meth:`_send`),
    then report ``Acked`` / ``Nacked``. Adapters set the attributes below from the fetch.

    Args:
        broker: the adapter it was fetched through (observations go on its bus).
        consumer: the durable consumer that fetched it, as observations name it.
    """

    subject: str
    stream: str
    stream_sequence: int
    consumer_sequence: int
    num_delivered: int
    data: bytes
    headers: Mapping[str, str]

    def __init__(self, broker: Broker, consumer: str) -> None:
        self._reporter = broker
        self.consumer = consumer

    @property
    def message_id(self) -> str:
        """mqlab's message id (or ``stream#seq`` when missing)."""
        return self.headers.get(MESSAGE_ID_HEADER) or f"{self.stream}#{self.stream_sequence}"

    @property
    def where(self) -> str:
        """``stream#sequence``, as error messages name the message."""
        return f"{self.stream}#{self.stream_sequence}"

    def report_delivered(self) -> None:
        """Emit the ``Delivered`` observation of this fetch (a redelivery when JetStream has
        delivered it before)."""
        self._reporter.report_delivered(
            self.subject,
            self.message_id,
            self.consumer,
            position=self.stream_sequence,
            delivery_count=self.num_delivered,
            redelivered=self.num_delivered > 1,
        )

    async def ack(self) -> None:
        """Acknowledge (and wait for the server to confirm it): the consumer's ack floor can
        move past this sequence."""
        await self._send("ack")
        self._reporter.report_settled(self.subject, self.message_id, self.consumer)

    async def nak(self, delay: float | None = None) -> None:
        """Negative ack: redeliver (after ``delay`` seconds if given)."""
        await self._send("nak", delay=delay)
        self._reporter.report_settled(self.subject, self.message_id, self.consumer, requeue=True)

    async def term(self) -> None:
        """Terminate: never redeliver this message to this consumer."""
        await self._send("term")
        self._reporter.report_settled(self.subject, self.message_id, self.consumer, requeue=False)

    async def in_progress(self) -> None:
        """Reset the ack-wait timer (still working on it)."""
        await self._send("in_progress")

    @abstractmethod
    async def _send(self, operation: JsOperation, *, delay: float | None = None) -> None:
        """Send the acknowledgement ``operation`` and wait until the server has it.

        Raises:
            JetStreamError: the server refused it (already acknowledged ...).
        """


class NatsPullConsumer(ABC):
    """A durable pull consumer bound to a stream."""

    name: str
    stream: str

    @abstractmethod
    async def fetch(self, batch: int = 1, timeout: float = 1.0) -> list[JsMessage]:
        """Up to ``batch`` messages; an empty list if none arrive within ``timeout``."""

    @abstractmethod
    async def close(self) -> None:
        """Stop fetching (the durable consumer stays on the server; delete it via the stream)."""


class NatsSubscription(ABC):
    """A core NATS subscription (no persistence, no acks)."""

    subject: str

    @abstractmethod
    async def next(self, timeout: float = 1.0) -> tuple[str, bytes] | None:
        """(subject, data) of the next message, or None after ``timeout``."""

    @abstractmethod
    async def close(self) -> None:
        """Unsubscribe."""

    def report_delivered(self, broker: Broker, subject: str, headers: Mapping[str, str]) -> None:
        """Emit ``Delivered`` for a core message received on ``subject``."""
        broker.report_delivered(
            subject,
            headers.get(MESSAGE_ID_HEADER) or f"{subject}@core",
            f"core:{self.subject}",
        )


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's subjects, limits and state."""

    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int
    first_sequence: int
    last_sequence: int
    retention: str = "limits"
    max_msgs: int = -1
    max_age_seconds: float = 0.0
    duplicate_window_seconds: float = 120.0


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A JetStream consumer's progress.

    ``ack_floor``: highest stream sequence below which everything is acknowledged;
    ``num_pending``: messages not yet delivered; ``num_ack_pending``: delivered, not acked;
    ``num_redelivered``: messages delivered more than once.
    """

    stream: str
    name: str
    ack_floor: int
    delivered: int
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    ack_wait_seconds: float
    max_deliver: int
    filter_subject: str | None = None
    deliver_policy: str = "all"


@dataclass(frozen=True, slots=True)
class NatsSnapshot(Snapshot):
    """Streams and their consumers in one namespace."""

    system: ClassVar[str] = "nats"

    streams: tuple[StreamInfo, ...]
    consumers: tuple[ConsumerInfo, ...]


class NatsAPI(Broker):
    """NATS JetStream in its own vocabulary.

    Stream names cannot contain dots, so namespaced names use ``_``: ``qualify("orders")``
    gives ``mq-3f2a9c-orders`` for streams and ``subject_prefix()`` gives ``mq-3f2a9c.`` for
    subjects.
    """

    system = "nats"
    capabilities = NATS_CAPABILITIES

    def subject(self, logical: str) -> str:
        """A subject inside this namespace: ``orders.eu`` -> ``mq-3f2a9c.orders.eu``."""
        return f"{self.namespace}.{logical}"

    def stream_name(self, name: str) -> str:
        """The server-side stream name: ``<namespace>-<name>`` (an already namespaced name is
        kept).

        Raises:
            JetStreamError: a name the server would refuse.
        """
        stream = name if name.startswith(f"{self.namespace}-") else self.qualify(name)
        check_name("stream", stream)
        return stream

    def full_subject(self, subject: str) -> str:
        """The server-side subject (an already namespaced subject is kept)."""
        return subject if subject.startswith(f"{self.namespace}.") else self.subject(subject)

    @abstractmethod
    async def add_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        retention: Retention = "limits",
        max_msgs: int = -1,
        max_age: float = 0.0,
        duplicate_window: float = 120.0,
        max_msgs_per_subject: int = -1,
    ) -> StreamInfo:
        """Create (or update) a stream capturing ``subjects`` (wildcards allowed)."""

    @abstractmethod
    async def delete_stream(self, name: str) -> None:
        """Delete a stream and its consumers (no error if gone)."""

    @abstractmethod
    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> PubAck:
        """JetStream publish; ``msg_id`` sets Nats-Msg-Id for broker-side dedup."""

    @abstractmethod
    async def pull_consumer(
        self,
        stream: str,
        durable: str,
        *,
        filter_subject: str | None = None,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        deliver_policy: DeliverPolicy = "all",
        start_sequence: int | None = None,
        start_time: float | None = None,
    ) -> NatsPullConsumer:
        """Create (or bind to) a durable pull consumer.

        ``start_time`` is a UNIX timestamp (seconds; virtual seconds on the simulator).
        """

    @abstractmethod
    async def consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        """A consumer's ack floor / pending / redelivered counts, fresh from the server."""

    @abstractmethod
    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer (no error if gone)."""

    @abstractmethod
    async def stream_info(self, name: str) -> StreamInfo:
        """A stream's state, fresh from the server."""

    @abstractmethod
    async def subscribe(self, subject: str) -> NatsSubscription:
        """A core NATS subscription (at-most-once; wildcards ``*`` and ``>``)."""

    @abstractmethod
    async def publish_core(self, subject: str, data: bytes) -> None:
        """Core NATS publish (fire and forget: nobody listening means it is gone)."""

    @abstractmethod
    async def inspect(self) -> NatsSnapshot:
        """Streams and consumers of this namespace."""


def check_name(kind: Literal["stream", "consumer"], name: str) -> None:
    """Refuse a stream or consumer name the server would refuse (shared by both backends).

    Raises:
        JetStreamError: empty, or containing a dot, whitespace, ``*`` or ``>``.
    """
    if not name or _FORBIDDEN_IN_NAMES & set(name):
        raise JetStreamError(
            f"{kind} name {name!r} is not allowed (no dots, spaces, '*' or '>'; "
            "subjects use dots, stream and consumer names do not)"
        )


def check_start_position(
    deliver_policy: DeliverPolicy, start_sequence: int | None, start_time: float | None
) -> None:
    """A ``by_start_*`` deliver policy needs its start position (shared by both backends).

    Raises:
        JetStreamError: the position the policy names is missing.
    """
    if deliver_policy == "by_start_sequence" and start_sequence is None:
        raise JetStreamError("deliver_policy by_start_sequence needs start_sequence")
    if deliver_policy == "by_start_time" and start_time is None:
        raise JetStreamError("deliver_policy by_start_time needs start_time")
