"""The RabbitMQ interface, in AMQP 0-9-1's vocabulary: exchanges, bindings, queues, ack/nack.

Implemented by :class:`mqlab.brokers.rabbitmq.client.RabbitMQBroker` (aio-pika + the management HTTP
API) and by the simulator's RabbitMQ model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mqlab.brokers.base import Broker, BrokerError, Capabilities, Snapshot

ExchangeType = Literal["direct", "topic", "fanout", "headers"]
SettleVerb = Literal["ack", "nack", "reject"]

MESSAGE_ID_HEADER = "mqlab-id"

RABBITMQ_CAPABILITIES = Capabilities(
    ordering="queue",
    delivery="at-least-once",
    replay=False,
    priority=True,
    max_priority=255,
    routing="exchanges",
    dedup_window_seconds=None,
    dead_letter=True,
    transactions=False,
    per_key_ordering=False,
    ops_burden="medium",
    throughput="~50K/s per queue",
)


@dataclass(frozen=True, slots=True)
class XDeath:
    """One entry of the ``x-death`` header RabbitMQ adds when it dead-letters a message."""

    queue: str
    reason: str  # rejected | expired | maxlen | delivery_limit
    count: int
    exchange: str = ""
    routing_keys: tuple[str, ...] = ()


class RabbitMQError(BrokerError):
    """A RabbitMQ operation failed; the message is one line naming what and why.

    These error classes live in the interface so that code written against it can catch
    them whichever backend (the real node or the simulator) raised them.
    """


class Unroutable(RabbitMQError):
    """A ``mandatory`` publish matched no queue, so RabbitMQ returned it (basic.return)."""


class PublishRejected(RabbitMQError):
    """RabbitMQ answered a publish with a negative confirm (basic.nack)."""


class NotFound(RabbitMQError):
    """The exchange or queue does not exist (AMQP 404 NOT_FOUND)."""


class PreconditionFailed(RabbitMQError):
    """A declaration clashes with what exists, or a settle used a stale tag (AMQP 406)."""


class ConnectionLost(RabbitMQError):
    """The connection or channel closed under an operation; the adapter is reconnecting."""


class AlreadySettled(RabbitMQError):
    """A delivery was acked/nacked twice, or fetched with ``no_ack`` (nothing to settle)."""


class RabbitDelivery(ABC):
    """A message delivered to a consumer, not yet settled.

    Settling is written here once for both backends: refuse a second settle, send it on the
    delivery's channel (each adapter's :meth:`_send_settle`), then report ``Acked`` /
    ``Nacked``. Adapters set the attributes below from what the broker delivered.

    Args:
        broker: the adapter the delivery came through (observations go on its bus).
        consumer: who received it, as observations name it.
        no_ack: fetched with ``no_ack``: RabbitMQ already forgot it, nothing to settle.
    """

    queue: str
    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any]
    priority: int | None
    redelivered: bool
    delivery_tag: int

    def __init__(self, broker: Broker, *, consumer: str, no_ack: bool) -> None:
        self._reporter = broker
        self.consumer = consumer
        self.no_ack = no_ack
        self._settled = no_ack

    @property
    def message_id(self) -> str:
        """mqlab's message id from the headers (or ``queue#tag`` when missing)."""
        value = self.headers.get(MESSAGE_ID_HEADER)
        if isinstance(value, bytes):
            return value.decode()
        return str(value) if value is not None else f"{self.queue}#{self.delivery_tag}"

    @property
    def delivery_count(self) -> int:
        """Quorum queues count deliveries (x-delivery-count); classic queues only flag a
        redelivery, so 2 means "at least the second time"."""
        counted = self.headers.get("x-delivery-count")
        if isinstance(counted, int):
            return counted + 1
        return 2 if self.redelivered else 1

    @property
    def x_death(self) -> tuple[XDeath, ...]:
        """The message's dead-letter history, newest first, as RabbitMQ records it."""
        raw = self.headers.get("x-death") or []
        deaths: list[XDeath] = []
        for entry in raw:
            keys = entry.get("routing-keys") or []
            deaths.append(
                XDeath(
                    queue=_text(entry.get("queue", "")),
                    reason=_text(entry.get("reason", "")),
                    count=int(entry.get("count", 0)),
                    exchange=_text(entry.get("exchange", "")),
                    routing_keys=tuple(_text(k) for k in keys),
                )
            )
        return tuple(deaths)

    def report_delivered(self) -> None:
        """Emit the ``Delivered`` observation of this delivery."""
        self._reporter.report_delivered(
            self.queue,
            self.message_id,
            self.consumer,
            key=self.routing_key,
            delivery_count=self.delivery_count,
            redelivered=self.redelivered,
        )

    async def ack(self) -> None:
        """Settle positively on the delivery's channel: the broker forgets the message.

        Raises:
            AlreadySettled: settled before, or fetched with ``no_ack``.
            ConnectionLost: the channel closed since (RabbitMQ requeued the message).
        """
        await self._settle("ack", requeue=None)

    async def nack(self, *, requeue: bool = True) -> None:
        """Settle negatively: requeue (redelivered=True next time) or drop / dead-letter."""
        await self._settle("nack", requeue=requeue)

    async def reject(self, *, requeue: bool = False) -> None:
        """basic.reject: the single-message form of ``nack``, with the same effect."""
        await self._settle("reject", requeue=requeue)

    async def _settle(self, verb: SettleVerb, *, requeue: bool | None) -> None:
        if self.no_ack:
            raise AlreadySettled(
                f"rabbitmq: cannot {verb} {self.message_id}: it was fetched with no_ack, "
                "RabbitMQ already forgot it"
            )
        if self._settled:
            raise AlreadySettled(f"rabbitmq: {self.message_id} was already settled")
        await self._send_settle(verb, requeue=bool(requeue))
        self._settled = True
        self._reporter.report_settled(self.queue, self.message_id, self.consumer, requeue=requeue)
        if requeue is False:
            self._rejected()

    @abstractmethod
    async def _send_settle(self, verb: SettleVerb, *, requeue: bool) -> None:
        """Send basic.ack / basic.nack / basic.reject on the channel it was delivered on.

        Raises:
            RabbitMQError: the broker refused it or the channel is gone.
        """

    def _rejected(self) -> None:  # noqa: B027 (an optional hook: most adapters need none)
        """Called after a negative settle without requeue (an adapter that must infer the
        dead-lettering RabbitMQ does silently reports it here)."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RabbitConsumer(ABC):
    """A basic.consume subscription with a prefetch window."""

    name: str
    queue: str

    @abstractmethod
    async def next(self, timeout: float = 1.0) -> RabbitDelivery | None:
        """The next delivery, or None if none arrives within ``timeout`` seconds."""

    @abstractmethod
    async def close(self) -> None:
        """Cancel the subscription and close its channel: unacked messages go back to the
        queue with redelivered=True (what happens when a consumer dies)."""


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """An exchange as declared."""

    name: str
    type: str
    durable: bool = True


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A binding from an exchange to a queue."""

    exchange: str
    queue: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's depth and the arguments that shape its behaviour."""

    name: str
    ready: int
    unacked: int
    consumers: int
    max_priority: int | None = None
    message_ttl_ms: int | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_length: int | None = None
    durable: bool = True


@dataclass(frozen=True, slots=True)
class RabbitSnapshot(Snapshot):
    """Exchanges, bindings and queues of one namespace."""

    system: ClassVar[str] = "rabbitmq"

    exchanges: tuple[ExchangeInfo, ...]
    bindings: tuple[BindingInfo, ...]
    queues: tuple[QueueInfo, ...]


class RabbitMQAPI(Broker):
    """RabbitMQ in its own vocabulary.

    Names: methods take *logical* names (``"work"``) and qualify them with the adapter's
    namespace (``"mq-3f2a9c-work"``); a name that already carries the namespace, the default
    exchange ``""`` and the predefined ``amq.*`` exchanges are used as they are. What comes
    back from the broker uses the broker-side name. The naming rules and the argument checks
    below are shared by the real adapter and the simulator's.
    """

    system = "rabbitmq"
    capabilities = RABBITMQ_CAPABILITIES

    def qualify(self, logical_name: str) -> str:
        """The broker-side name; the default exchange, ``amq.*`` and names that already carry
        this namespace are left alone (so names read back from the broker can be passed in)."""
        if (
            not logical_name
            or logical_name.startswith("amq.")
            or logical_name.startswith(f"{self.namespace}-")
        ):
            return logical_name
        return super().qualify(logical_name)

    def qualify_queue(self, name: str) -> str:
        """The broker-side name of a queue.

        Raises:
            RabbitMQError: an empty name.
        """
        if not name:
            raise RabbitMQError("rabbitmq: a queue name must not be empty")
        return self.qualify(name)

    def own_exchange(self, name: str, doing: str) -> str:
        """The broker-side name of an exchange this namespace may declare or delete.

        Raises:
            RabbitMQError: the default exchange or a predefined ``amq.*`` one.
        """
        full = self.qualify(name)
        if not full or full.startswith("amq."):
            raise RabbitMQError(f"rabbitmq: {name!r} is predefined and cannot be {doing}")
        return full

    def queue_arguments(
        self,
        *,
        max_priority: int | None = None,
        message_ttl_ms: int | None = None,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """The ``x-*`` arguments of a queue declaration, names qualified.

        ``dead_letter_exchange=""`` is the default exchange; then the dead-letter routing key
        names a queue and is qualified like one.

        Raises:
            RabbitMQError: a value RabbitMQ refuses (priority outside 1..255, a negative TTL
                or length).
        """
        arguments: dict[str, Any] = {}
        if max_priority is not None:
            if not 1 <= max_priority <= 255:
                raise RabbitMQError(f"rabbitmq: max_priority must be 1..255, not {max_priority}")
            arguments["x-max-priority"] = max_priority
        if message_ttl_ms is not None:
            if message_ttl_ms < 0:
                raise RabbitMQError("rabbitmq: message_ttl_ms must not be negative")
            arguments["x-message-ttl"] = message_ttl_ms
        if dead_letter_exchange is not None:
            arguments["x-dead-letter-exchange"] = self.qualify(dead_letter_exchange)
        if dead_letter_routing_key is not None:
            arguments["x-dead-letter-routing-key"] = (
                self.qualify(dead_letter_routing_key)
                if dead_letter_exchange == ""
                else dead_letter_routing_key
            )
        if max_length is not None:
            if max_length < 0:
                raise RabbitMQError("rabbitmq: max_length must not be negative")
            arguments["x-max-length"] = max_length
        return arguments

    def publish_target(
        self,
        exchange: str,
        routing_key: str,
        *,
        priority: int | None = None,
        expiration_ms: int | None = None,
    ) -> tuple[str, str]:
        """``(exchange, routing key)`` as the broker gets them: on the default exchange the
        routing key names a queue and is qualified like one.

        Raises:
            RabbitMQError: a priority outside 0..255 or a negative expiration.
        """
        if priority is not None and not 0 <= priority <= 255:
            raise RabbitMQError(f"rabbitmq: priority must be 0..255, not {priority}")
        if expiration_ms is not None and expiration_ms < 0:
            raise RabbitMQError(f"rabbitmq: expiration_ms must be >= 0, not {expiration_ms}")
        full_exchange = self.qualify(exchange)
        full_key = self.qualify(routing_key) if exchange == "" else routing_key
        return full_exchange, full_key

    @abstractmethod
    async def declare_exchange(
        self, name: str, type: ExchangeType = "direct", *, durable: bool = True
    ) -> None:
        """Declare an exchange (idempotent for identical arguments)."""

    @abstractmethod
    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        max_priority: int | None = None,
        message_ttl_ms: int | None = None,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
        max_length: int | None = None,
    ) -> None:
        """Declare a queue with the ``x-*`` arguments the course teaches."""

    @abstractmethod
    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind ``queue`` to ``exchange`` (``arguments`` for headers exchanges: x-match ...)."""

    @abstractmethod
    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        expiration_ms: int | None = None,
        message_id: str | None = None,
        mandatory: bool = False,
    ) -> str:
        """Publish with publisher confirms; returns mqlab's message id.

        ``exchange=""`` is the default exchange (routing key = queue name).
        Raises BrokerError if ``mandatory`` and nothing was routed.
        """

    @abstractmethod
    async def get(self, queue: str, *, no_ack: bool = False) -> RabbitDelivery | None:
        """basic.get one message, or None if the queue has no ready message."""

    @abstractmethod
    async def consume(
        self, queue: str, *, prefetch: int = 10, name: str | None = None
    ) -> RabbitConsumer:
        """Start a consumer on its own channel with ``prefetch`` unacked messages at most."""

    @abstractmethod
    async def purge_queue(self, name: str) -> int:
        """Drop every ready message; returns how many."""

    @abstractmethod
    async def delete_queue(self, name: str) -> None:
        """Delete a queue (no error if gone)."""

    @abstractmethod
    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange (no error if gone)."""

    @abstractmethod
    async def queue_info(self, name: str) -> QueueInfo:
        """Current depth of one queue (ready / unacked / consumers), fresh from the broker."""

    @abstractmethod
    async def inspect(self) -> RabbitSnapshot:
        """Exchanges, bindings and queues of this namespace."""
