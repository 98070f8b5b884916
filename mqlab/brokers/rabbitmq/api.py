"""The RabbitMQ interface, in AMQP 0-9-1's vocabulary: exchanges, bindings, queues, ack/nack.

Implemented by :class:`mqlab.brokers.rabbitmq.client.RabbitMQBroker` (aio-pika + the management HTTP
API) and by the simulator's RabbitMQ model.

This module is the adapter's half; the deliveries and consumers it hands out are in
:mod:`mqlab.brokers.rabbitmq.delivery` and the errors in :mod:`mqlab.brokers.rabbitmq.errors`.
All of them are re-exported here, so code written against the interface imports from ``api``
alone.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Unpack

from mqlab.brokers.base import (
    AdapterOptions,
    Broker,
    Capabilities,
    OperationTimedOut,
    Snapshot,
    check_window,
    send_windowed,
)
from mqlab.brokers.rabbitmq.delivery import (
    GET_CONSUMER,
    MESSAGE_ID_HEADER,
    RabbitConsumer,
    RabbitDelivery,
    SettleVerb,
    XDeath,
)
from mqlab.brokers.rabbitmq.errors import (
    AlreadySettled,
    ConnectionLost,
    NotFound,
    PreconditionFailed,
    PublishRejected,
    RabbitMQError,
    Unroutable,
)
from mqlab.brokers.rabbitmq.topology import Topology

__all__ = [
    "GET_CONSUMER",
    "MESSAGE_ID_HEADER",
    "RABBITMQ_CAPABILITIES",
    "AlreadySettled",
    "BindingInfo",
    "ConnectionLost",
    "ExchangeInfo",
    "ExchangeType",
    "NotFound",
    "PreconditionFailed",
    "Publication",
    "PublishRejected",
    "QueueInfo",
    "RabbitConsumer",
    "RabbitDelivery",
    "RabbitMQAPI",
    "RabbitMQError",
    "RabbitMQOptions",
    "RabbitSnapshot",
    "SettleVerb",
    "Unroutable",
    "XDeath",
]

ExchangeType = Literal["direct", "topic", "fanout", "headers"]

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
class Publication:
    """A message on its way to the broker, names qualified and mqlab's id in the headers."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    priority: int | None
    expiration_ms: int | None
    message_id: str
    mandatory: bool

    @property
    def destination(self) -> str:
        """Where observations say it went: the exchange, or the queue on the default one."""
        return self.exchange or self.routing_key


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


class RabbitMQOptions(AdapterOptions, total=False):
    """What a RabbitMQ adapter takes (see :class:`RabbitMQAPI`)."""

    operation_timeout: float
    reconnect_interval: float
    heartbeat: int


class RabbitMQAPI(Broker):
    """RabbitMQ in its own vocabulary.

    Args:
        operation_timeout: seconds any single broker call may take (publish confirm, declare,
            get, ack, management request) before :class:`OperationTimedOut`; also how long an
            operation waits for a reconnect while the connection is down.
        reconnect_interval: seconds between reconnection attempts after the connection drops.
        heartbeat: AMQP heartbeat in seconds; a silent (not closed) connection is declared dead
            after about three of them.
        options: see :class:`~mqlab.brokers.base.Broker`.

    Names: methods take *logical* names (``"work"``) and qualify them with the adapter's
    namespace (``"mq-3f2a9c-work"``); a name that already carries the namespace, the default
    exchange ``""`` and the predefined ``amq.*`` exchanges are used as they are. What comes
    back from the broker uses the broker-side name. The naming rules and the argument checks
    below are shared by the real adapter and the simulator's.
    """

    system = "rabbitmq"
    capabilities = RABBITMQ_CAPABILITIES

    def __init__(
        self,
        *,
        operation_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        heartbeat: int = 5,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(**options)
        self.operation_timeout = operation_timeout
        self.reconnect_interval = reconnect_interval
        self.heartbeat = heartbeat
        self.declared = Topology()
        """What this adapter declared (re-declared after a reconnect)."""

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

    def call_timed_out(self, what: str, *, connected: bool) -> OperationTimedOut:
        """The error for a broker call that did not finish within ``operation_timeout``:
        while ``connected`` the node gave no answer, otherwise the call waited for a reconnect
        that did not come in time."""
        state = (
            "no answer" if connected else f"the connection to {self.address} is down, reconnecting"
        )
        return OperationTimedOut(
            f"rabbitmq: {what} did not finish within {self.operation_timeout:g}s ({state})"
        )

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

    # -- topology (recorded for the re-declaration after a reconnect) -----------------------

    async def declare_exchange(
        self, name: str, type: ExchangeType = "direct", *, durable: bool = True
    ) -> None:
        """Declare an exchange (idempotent for identical arguments).

        Raises:
            PreconditionFailed: it exists with another type or durability.
            RabbitMQError: the default exchange or an ``amq.*`` one.
        """
        full = self.own_exchange(name, "declared")
        await self._declare_exchange(full, type, durable)
        self.declared.exchange_declared(full, type, durable)

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
        """Declare a queue with the ``x-*`` arguments the course teaches (checked and
        qualified by :meth:`queue_arguments`).

        Raises:
            PreconditionFailed: the queue exists with other arguments (RabbitMQ never changes
                a queue's arguments; delete it first).
        """
        full = self.qualify_queue(name)
        arguments = self.queue_arguments(
            max_priority=max_priority,
            message_ttl_ms=message_ttl_ms,
            dead_letter_exchange=dead_letter_exchange,
            dead_letter_routing_key=dead_letter_routing_key,
            max_length=max_length,
        )
        await self._declare_queue(full, durable, arguments)
        self.declared.queue_declared(full, durable, arguments)

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind ``queue`` to ``exchange`` (``arguments`` for headers exchanges: x-match ...).

        Raises:
            NotFound: the queue or the exchange does not exist.
        """
        full_queue = self.qualify_queue(queue)
        full_exchange = self.qualify(exchange)
        binding_arguments = dict(arguments or {})
        await self._bind_queue(full_queue, full_exchange, routing_key, binding_arguments)
        self.declared.bound(full_queue, full_exchange, routing_key, binding_arguments)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue (no error if gone); this adapter's consumers on it are closed first,
        so that their automatic re-subscription cannot re-create it."""
        full = self.qualify_queue(name)
        await self._delete_queue(full)
        self.declared.queue_deleted(full)

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange and its bindings (no error if gone)."""
        full = self.own_exchange(name, "deleted")
        await self._delete_exchange(full)
        self.declared.exchange_deleted(full)

    # -- messages ----------------------------------------------------------------------------

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
        """Publish a persistent message with publisher confirms; returns mqlab's message id.

        ``exchange=""`` is the default exchange (routing key = queue name). Emits
        ``Produced`` on the confirm, ``ProduceFailed`` otherwise.

        Raises:
            Unroutable: ``mandatory`` and no queue matched.
            NotFound: the exchange does not exist.
            PublishRejected: RabbitMQ nacked it.
            OperationTimedOut / ConnectionLost: no confirm in time.
        """
        full_exchange, full_key = self.publish_target(
            exchange, routing_key, priority=priority, expiration_ms=expiration_ms
        )
        message_id = message_id or self.new_message_id()
        publication = Publication(
            exchange=full_exchange,
            routing_key=full_key,
            body=bytes(body),
            headers={**(headers or {}), MESSAGE_ID_HEADER: message_id},
            priority=priority,
            expiration_ms=expiration_ms,
            message_id=message_id,
            mandatory=mandatory,
        )
        await self.send_reported(
            self._publish(publication),
            destination=publication.destination,
            message_id=message_id,
            key=routing_key,
        )
        return message_id

    async def publish_many(
        self,
        exchange: str,
        routing_key: str,
        bodies: Sequence[bytes],
        *,
        window: int = 256,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        mandatory: bool = False,
    ) -> list[str]:
        """Publish ``bodies`` with up to ``window`` publisher confirms outstanding at once
        (RabbitMQ confirms them in batches), instead of waiting for each before the next;
        returns mqlab's message ids in order.

        Each message is reported as :meth:`publish` reports it: ``Produced`` on its confirm,
        ``ProduceFailed`` otherwise. After the first failure nothing more is published; the
        publishes in flight are awaited, then that failure is raised (messages after it were
        never sent and report nothing).

        Raises:
            BrokerError: a window outside 1..10,000.
            RabbitMQError: what :meth:`publish` raises.
        """
        check_window(window, self.system)
        self.publish_target(exchange, routing_key, priority=priority)

        async def one(body: bytes) -> str:
            return await self.publish(
                exchange, routing_key, body, priority=priority, headers=headers, mandatory=mandatory
            )

        return await send_windowed(bodies, window, one)

    async def get(self, queue: str, *, no_ack: bool = False) -> RabbitDelivery | None:
        """basic.get one message, or None if the queue has no ready message.

        Raises:
            NotFound: the queue does not exist.
        """
        return await self._get(self.qualify_queue(queue), no_ack)

    async def consume(
        self, queue: str, *, prefetch: int = 10, name: str | None = None
    ) -> RabbitConsumer:
        """Start a consumer on its own channel with ``prefetch`` unacked messages at most.

        Raises:
            NotFound: the queue does not exist.
            RabbitMQError: a prefetch below 1.
        """
        full = self.qualify_queue(queue)
        if prefetch < 1:
            raise RabbitMQError("rabbitmq: prefetch must be at least 1")
        return await self._consume(full, prefetch, name or self.new_client_name("consumer"))

    async def purge_queue(self, name: str) -> int:
        """Drop every ready message (unacked ones stay); returns how many."""
        return await self._purge_queue(self.qualify_queue(name))

    async def queue_info(self, name: str) -> QueueInfo:
        """Current depth of one queue (ready / unacked / consumers), fresh from the broker.

        Raises:
            NotFound: the queue does not exist.
        """
        return await self._queue_info(self.qualify_queue(name))

    # -- what each adapter does with the checked, broker-side names -------------------------

    @abstractmethod
    async def _declare_exchange(self, name: str, kind: str, durable: bool) -> None:
        """exchange.declare."""

    @abstractmethod
    async def _declare_queue(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        """queue.declare."""

    @abstractmethod
    async def _bind_queue(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any]
    ) -> None:
        """queue.bind."""

    @abstractmethod
    async def _delete_queue(self, name: str) -> None:
        """Close this adapter's consumers of ``name``, then queue.delete."""

    @abstractmethod
    async def _delete_exchange(self, name: str) -> None:
        """exchange.delete."""

    @abstractmethod
    async def _publish(self, publication: Publication) -> None:
        """basic.publish and wait for the confirm (raise Unroutable when returned)."""

    @abstractmethod
    async def _get(self, queue: str, no_ack: bool) -> RabbitDelivery | None:
        """basic.get."""

    @abstractmethod
    async def _consume(self, queue: str, prefetch: int, name: str) -> RabbitConsumer:
        """basic.consume on a channel of its own."""

    @abstractmethod
    async def _purge_queue(self, name: str) -> int:
        """queue.purge; returns how many messages were dropped."""

    @abstractmethod
    async def _queue_info(self, name: str) -> QueueInfo:
        """One queue's depth and arguments."""

    @abstractmethod
    async def inspect(self) -> RabbitSnapshot:
        """Exchanges, bindings and queues of this namespace."""
