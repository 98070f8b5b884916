"""The NATS JetStream interface, in NATS's vocabulary: subjects, streams, consumers, sequences.

Implemented by :class:`mqlab.brokers.nats.client.NatsBroker` (nats-py) and by the simulator's model.
Core NATS (no JetStream) is at-most-once pub/sub; :meth:`NatsAPI.subscribe` exposes it so the
difference can be shown. Everything durable goes through streams and consumers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Unpack

from mqlab.brokers.base import (
    AdapterOptions,
    Broker,
    BrokerError,
    Capabilities,
    Placement,
    Snapshot,
    check_window,
    send_windowed,
)

MESSAGE_ID_HEADER = "mqlab-id"
MSG_ID_HEADER = "Nats-Msg-Id"
"""JetStream's deduplication header (what ``publish(msg_id=...)`` sets)."""
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
"""Subject prefix of the advisory JetStream sends when a consumer gives up on a message."""

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


def already_acknowledged(operation: str) -> JetStreamError:
    """The error for settling a delivery a second time (nats-py refuses it before asking the
    server, and so does the simulator)."""
    return JetStreamError(f"{operation}: the message was already acknowledged")


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
        self.report_acked()

    def report_acked(self) -> None:
        """Emit the ``Acked`` observation of this message (after its ack reached the
        server)."""
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


class _ClosedByUnsubscribing(ABC):
    """What a pull consumer and a core subscription share: closing one unsubscribes it, once.

    A closed pull consumer stops fetching (the durable consumer stays on the server; delete it
    via the stream); a closed core subscription receives nothing published afterwards.
    """

    _closed: bool

    async def close(self) -> None:
        """Unsubscribe; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._unsubscribe()

    @abstractmethod
    async def _unsubscribe(self) -> None:
        """Drop the subscription; the adapter stops tracking it."""


class NatsPullConsumer(_ClosedByUnsubscribing):
    """A durable pull consumer bound to a stream."""

    def __init__(self, stream: str, name: str) -> None:
        self.stream = stream
        self.name = name
        self._closed = False

    async def fetch(self, batch: int = 1, timeout: float = 1.0) -> list[JsMessage]:
        """Up to ``batch`` messages; ``[]`` when none arrive within ``timeout``. Returns as
        soon as at least one message is there (with whatever else is ready); emits
        ``Delivered`` for each.

        Raises:
            BrokerUnavailable: the connection is down (rather than "no messages").
            JetStreamError: closed, a batch below 1, or the consumer or its stream was
                deleted.
        """
        if self._closed:
            raise JetStreamError(f"consumer {self.name} on {self.stream} is closed")
        if batch < 1:
            raise JetStreamError("fetch: batch must be at least 1")
        messages = await self._fetch(batch, timeout)
        for message in messages:
            message.report_delivered()
        return messages

    async def ack_batch(self, messages: Sequence[JsMessage]) -> None:
        """Acknowledge fetched messages of this consumer in one round trip: the acks go out
        back to back and one flush (a PING/PONG) follows, so the server has them all when
        this returns (where :meth:`JsMessage.ack` waits for each ack's own confirmation).
        Reports ``Acked`` per message, as one ack each would.

        Raises:
            JetStreamError: a message of another consumer, or one already acknowledged
                (nothing is sent then).
            BrokerUnavailable / OperationTimedOut: the flush got no answer (the server may
                have some of the acks; those it lacks are redelivered after ack_wait).
        """
        if not messages:
            return
        for message in messages:
            if message.consumer != self.name:
                raise JetStreamError(
                    f"ack_batch on {self.name}: {message.where} was fetched by {message.consumer}"
                )
        await self._send_acks(list(messages))
        for message in messages:
            message.report_acked()

    @abstractmethod
    async def _fetch(self, batch: int, timeout: float) -> list[JsMessage]:
        """One pull request."""

    @abstractmethod
    async def _send_acks(self, messages: list[JsMessage]) -> None:
        """Send an ack for each message without waiting for its confirmation, then make sure
        the server has them all.

        Raises:
            JetStreamError: one was acknowledged before (checked before anything is sent).
        """


class NatsSubscription(_ClosedByUnsubscribing):
    """A core NATS subscription (no persistence, no acks)."""

    def __init__(self, broker: Broker, subject: str) -> None:
        self._reporter = broker
        self.subject = subject
        self._closed = False

    async def next(self, timeout: float = 1.0) -> tuple[str, bytes] | None:
        """(subject, data) of the next message, or None when nothing arrives within
        ``timeout``; emits ``Delivered``.

        Raises:
            BrokerError: the subscription is closed.
        """
        if self._closed:
            raise BrokerError(f"subscription to {self.subject} is closed")
        received = await self._next(timeout)
        if received is None:
            return None
        subject, data, headers = received
        self._reporter.report_delivered(
            subject,
            headers.get(MESSAGE_ID_HEADER) or f"{subject}@core",
            f"core:{self.subject}",
        )
        return subject, data

    @abstractmethod
    async def _next(self, timeout: float) -> tuple[str, bytes, Mapping[str, str]] | None:
        """The next message as (subject, data, headers), or None after ``timeout``."""


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


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """A stream's settings as the adapters send them (subjects namespaced)."""

    subjects: tuple[str, ...]
    retention: Retention
    max_msgs: int
    max_age: float
    duplicate_window: float
    max_msgs_per_subject: int


@dataclass(frozen=True, slots=True)
class PullConsumerConfig:
    """A durable pull consumer's settings as the adapters send them (filter namespaced, the
    start position only with the deliver policy that uses it)."""

    filter_subject: str | None
    ack_wait: float
    max_deliver: int
    deliver_policy: DeliverPolicy
    start_sequence: int | None
    start_time: float | None


class NatsOptions(AdapterOptions, total=False):
    """What a NATS adapter takes (see :class:`NatsAPI`)."""

    request_timeout: float | None


class NatsAPI(Broker):
    """NATS JetStream in its own vocabulary.

    Stream names cannot contain dots, so namespaced names use ``_``: ``qualify("orders")``
    gives ``mq-3f2a9c-orders`` for streams and ``subject_prefix()`` gives ``mq-3f2a9c.`` for
    subjects.

    Args:
        request_timeout: seconds a JetStream request may take (defaults to ``connect_timeout``).
        options: see :class:`~mqlab.brokers.base.Broker`.
    """

    system = "nats"
    capabilities = NATS_CAPABILITIES

    def __init__(
        self, *, request_timeout: float | None = None, **options: Unpack[AdapterOptions]
    ) -> None:
        super().__init__(**options)
        self.request_timeout = self.connect_timeout if request_timeout is None else request_timeout
        # What this adapter opened and nobody closed yet: closed with it (close_clients).
        self._pull_consumers: list[NatsPullConsumer] = []
        self._subscriptions: list[NatsSubscription] = []

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

    # -- streams (names namespaced and settings checked here; each adapter's hooks below) --

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
        """Create the stream capturing ``subjects`` (wildcards allowed), or update it when it
        exists with other settings.

        Raises:
            JetStreamError: a bad name or setting, or subjects that overlap another stream.
        """
        config = StreamConfig(
            subjects=tuple(self.full_subject(subject) for subject in subjects),
            retention=retention,
            max_msgs=max_msgs,
            max_age=max_age,
            duplicate_window=duplicate_window,
            max_msgs_per_subject=max_msgs_per_subject,
        )
        return await self._add_stream(self.stream_name(name), config)

    async def delete_stream(self, name: str) -> None:
        """Delete the stream and its consumers; a stream that is already gone is fine."""
        await self._delete_stream(self.stream_name(name))

    async def stream_info(self, name: str) -> StreamInfo:
        """A stream's subjects, limits and state, fresh from the server."""
        return await self._stream_info(self.stream_name(name))

    # -- publishing ----------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> PubAck:
        """JetStream publish, waiting for the stream's PubAck; ``msg_id`` sets Nats-Msg-Id
        for the server's deduplication. Emits ``Produced`` (``duplicate`` from the PubAck) or
        ``ProduceFailed``.

        Raises:
            NoStreamForSubject: no stream captures ``subject``.
            OperationTimedOut: the PubAck did not come within ``request_timeout``.
        """
        target = self.full_subject(subject)
        mqlab_id = message_id or self.new_message_id()
        all_headers = {**(headers or {}), MESSAGE_ID_HEADER: mqlab_id}
        if msg_id is not None:
            all_headers[MSG_ID_HEADER] = msg_id
        return await self.send_reported(
            self._publish(target, data, all_headers),
            destination=target,
            message_id=mqlab_id,
            placed=PubAck.placement,
        )

    async def publish_many(
        self,
        subject: str,
        payloads: Sequence[bytes],
        *,
        window: int = 256,
        headers: Mapping[str, str] | None = None,
    ) -> list[PubAck]:
        """JetStream publishes of ``payloads`` with up to ``window`` PubAcks outstanding at
        once, instead of waiting for each before the next; the PubAcks in order.

        Each message is reported as :meth:`publish` reports it (``Produced`` with its
        sequence, or ``ProduceFailed``). After the first failure nothing more is published;
        the publishes in flight are awaited, then that failure is raised (messages after it
        were never sent and report nothing).

        Raises:
            BrokerError: a window outside 1..10,000.
            NoStreamForSubject / OperationTimedOut: what :meth:`publish` raises.
        """
        check_window(window, self.system)
        target = self.full_subject(subject)

        async def one(data: bytes) -> PubAck:
            mqlab_id = self.new_message_id()
            stamped = {**(headers or {}), MESSAGE_ID_HEADER: mqlab_id}
            return await self.send_reported(
                self._publish_pipelined(target, data, stamped),
                destination=target,
                message_id=mqlab_id,
                placed=PubAck.placement,
            )

        return await send_windowed(payloads, window, one)

    async def publish_core(self, subject: str, data: bytes) -> None:
        """Core NATS publish: no ack; only current subscribers see it (fire and forget:
        nobody listening means it is gone). Emits ``Produced`` once the server has it."""
        target = self.full_subject(subject)
        mqlab_id = self.new_message_id()
        await self._publish_core(target, data, {MESSAGE_ID_HEADER: mqlab_id})
        self.report_produced(target, mqlab_id)

    # -- consumers -----------------------------------------------------------------------

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
        """Create (or bind to an identical) durable pull consumer with explicit acks.

        ``start_time`` is a UNIX timestamp (seconds; virtual seconds on the simulator).

        Raises:
            JetStreamError: a missing start position for ``by_start_sequence`` /
                ``by_start_time``, an unknown stream, or a durable that exists with other
                settings.
        """
        stream_name = self.stream_name(stream)
        check_name("consumer", durable)
        check_start_position(deliver_policy, start_sequence, start_time)
        config = PullConsumerConfig(
            filter_subject=self.full_subject(filter_subject) if filter_subject else None,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            deliver_policy=deliver_policy,
            start_sequence=start_sequence if deliver_policy == "by_start_sequence" else None,
            start_time=start_time if deliver_policy == "by_start_time" else None,
        )
        consumer = await self._pull_consumer(stream_name, durable, config)
        self._pull_consumers.append(consumer)
        return consumer

    async def consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        """A consumer's ack floor and pending / redelivered counts, fresh from the server."""
        return await self._consumer_info(self.stream_name(stream), durable)

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer; one that is already gone is fine."""
        await self._delete_consumer(self.stream_name(stream), durable)

    async def subscribe(self, subject: str) -> NatsSubscription:
        """A core NATS subscription (at-most-once; ``*`` and ``>`` wildcards)."""
        subscription = await self._subscribe(self.full_subject(subject))
        self._subscriptions.append(subscription)
        return subscription

    def forget(self, closed: NatsPullConsumer | NatsSubscription) -> None:
        """A pull consumer or subscription closed: the adapter no longer closes it itself."""
        if closed in self._pull_consumers:
            self._pull_consumers.remove(closed)
        if closed in self._subscriptions:
            self._subscriptions.remove(closed)

    async def close_clients(self) -> None:
        """Close every pull consumer, then every subscription, this adapter opened and nobody
        closed yet (what each adapter's ``_close`` does first)."""
        for consumer in list(self._pull_consumers):
            await consumer.close()
        for subscription in list(self._subscriptions):
            await subscription.close()

    # -- what each adapter does with the namespaced names --------------------------------

    @abstractmethod
    async def _add_stream(self, name: str, config: StreamConfig) -> StreamInfo:
        """Add the stream, or update it when it exists."""

    @abstractmethod
    async def _delete_stream(self, name: str) -> None:
        """Delete the stream (no error if gone)."""

    @abstractmethod
    async def _stream_info(self, name: str) -> StreamInfo:
        """STREAM.INFO."""

    @abstractmethod
    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> PubAck:
        """JetStream publish and wait for the PubAck."""

    @abstractmethod
    async def _publish_pipelined(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> PubAck:
        """JetStream publish and wait for the PubAck (within the request timeout), through
        the client's asynchronous publish where it has one: one reply subject for every
        PubAck instead of a request's own reply machinery, which is what lets a window of
        publishes cost less per message than the same number of requests."""

    @abstractmethod
    async def _publish_core(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Core publish; returns once the server has it (a flush)."""

    @abstractmethod
    async def _pull_consumer(
        self, stream: str, durable: str, config: PullConsumerConfig
    ) -> NatsPullConsumer:
        """Add (or bind to) the durable consumer and subscribe to it."""

    @abstractmethod
    async def _consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        """CONSUMER.INFO."""

    @abstractmethod
    async def _delete_consumer(self, stream: str, durable: str) -> None:
        """Delete the durable consumer (no error if gone)."""

    @abstractmethod
    async def _subscribe(self, subject: str) -> NatsSubscription:
        """A core subscription, registered with the server (a flush) before it returns."""

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
