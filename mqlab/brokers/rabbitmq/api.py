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
    """A message delivered to a consumer, not yet settled."""

    queue: str
    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any]
    priority: int | None
    redelivered: bool
    delivery_tag: int

    @property
    def message_id(self) -> str:
        """mqlab's message id from the headers (or ``queue#tag`` when missing)."""
        value = self.headers.get(MESSAGE_ID_HEADER)
        if isinstance(value, bytes):
            return value.decode()
        return str(value) if value is not None else f"{self.queue}#{self.delivery_tag}"

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

    @abstractmethod
    async def ack(self) -> None:
        """Settle positively: the broker forgets the message."""

    @abstractmethod
    async def nack(self, *, requeue: bool = True) -> None:
        """Settle negatively: requeue (redelivered=True next time) or drop / dead-letter."""

    async def reject(self, *, requeue: bool = False) -> None:
        """Reject one message (same effect as ``nack`` for a single delivery)."""
        await self.nack(requeue=requeue)


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
    """RabbitMQ in its own vocabulary."""

    system = "rabbitmq"
    capabilities = RABBITMQ_CAPABILITIES

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
