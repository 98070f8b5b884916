"""The simulated RabbitMQ adapter: the real adapter's interface and behaviour (names, message
ids, errors, reconnects, topology recovery) over the world's shared
:class:`~mqlab.brokers.sim.rabbitmq.server.SimRabbitMQServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mqlab.brokers.base import BrokerError, OperationTimedOut
from mqlab.brokers.rabbitmq.api import (
    MESSAGE_ID_HEADER,
    ConnectionLost,
    ExchangeType,
    NotFound,
    QueueInfo,
    RabbitConsumer,
    RabbitDelivery,
    RabbitMQAPI,
    RabbitMQError,
    RabbitSnapshot,
)
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.link import (
    connection_refused,
    connection_silent,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.rabbitmq.consumer import SimDelivery, SimRabbitConsumer
from mqlab.brokers.sim.rabbitmq.queues import Channel, Handout, Message
from mqlab.brokers.sim.rabbitmq.server import NODE, SimRabbitMQServer
from mqlab.brokers.sim.world import NodeUnreachable, SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    Delivered,
    Produced,
    ProduceFailed,
)

_T = TypeVar("_T")

GET_CONSUMER = "basic.get"
"""The consumer name observations use for messages fetched with ``get``."""

_HEARTBEAT_MISSES = 3  # silent heartbeats after which a client gives a connection up


@dataclass(frozen=True, slots=True)
class _QueueDeclaration:
    """What this adapter declared, to re-declare it identically after a reconnect."""

    name: str
    durable: bool
    arguments: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class _BindingDeclaration:
    queue: str
    exchange: str
    routing_key: str
    arguments: tuple[tuple[str, Any], ...]


class SimRabbitMQBroker(SimBroker, RabbitMQAPI):
    """The simulator's RabbitMQ adapter: the real adapter's interface and behaviour over the
    world's shared :class:`SimRabbitMQServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        bus, namespace, endpoints, connect_timeout: see :class:`mqlab.brokers.base.Broker`
            (``bus`` defaults to the world's; ``namespace`` to a deterministic one).
        operation_timeout, reconnect_interval, heartbeat: as for the real adapter, in virtual
            seconds.
    """

    nodes = (NODE,)

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
        operation_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        heartbeat: int = 5,
    ) -> None:
        super().__init__(
            world=world,
            bus=bus,
            namespace=namespace,
            endpoints=endpoints,
            connect_timeout=connect_timeout,
        )
        self.operation_timeout = operation_timeout
        self.reconnect_interval = reconnect_interval
        self.heartbeat = heartbeat
        self._server: SimRabbitMQServer | None = None
        self._getter: Channel | None = None
        # A dict, not a set: iteration order must not depend on memory addresses (same seed,
        # same run).
        self._consumers: dict[SimRabbitConsumer, None] = {}
        self._exchanges: dict[str, tuple[str, bool]] = {}
        self._queues: dict[str, _QueueDeclaration] = {}
        self._bindings: dict[_BindingDeclaration, None] = {}
        self._message_ids = itertools.count(1)
        self._consumer_ids = itertools.count(1)
        self._link_up = False
        self._link_ready = asyncio.Event()
        self._closing = False
        self._monitor: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None

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

    def _qualify_queue(self, name: str) -> str:
        if not name:
            raise RabbitMQError("rabbitmq: a queue name must not be empty")
        return self.qualify(name)

    # --- lifecycle ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        world = self.world
        server = SimRabbitMQServer.of(world)
        refused = connection_refused(world, NODE)
        if refused is not None:
            raise self.unavailable(refused)
        try:
            await within(self.connect_timeout, self._handshake())
        except TimeoutError:
            raise self.unavailable("timed out") from None
        except NodeUnreachable as error:
            raise self.unavailable(error.reason) from None
        self._closing = False
        self._server = server
        self._link_up = True
        self._link_ready.set()
        self._monitor = world.spawn(self._watch_link(), name=f"rabbitmq link {self.namespace}")

    async def _handshake(self) -> None:
        await self.world.transmit(NODE, "upstream")
        await self.world.transmit(NODE, "downstream")

    async def _close(self) -> None:
        self._closing = True
        for consumer in tuple(self._consumers):
            await consumer.close()
        for task in (self._monitor, self._reconnector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._monitor = self._reconnector = None
        if self._server is not None:
            self._server.close_channels_of(self)
        self._server = None
        self._getter = None
        self._link_up = False
        self._link_ready.clear()
        await self._release_world()

    async def _watch_link(self) -> None:
        """React like the client's connection: a refused/reset path drops it at once, a silent
        one after three missed heartbeats."""
        world = self.world
        while not self._closing:
            refused = connection_refused(world, NODE)
            if refused is not None:
                self._lose_link(refused)
            elif self._link_up and connection_silent(world, NODE):
                try:
                    await within(self.heartbeat * _HEARTBEAT_MISSES, world.next_change(NODE))
                except TimeoutError:
                    self._lose_link("missed heartbeats")
                continue
            await world.next_change(NODE)

    def _lose_link(self, reason: str) -> None:
        if not self._link_up or self._closing:
            return
        self._link_up = False
        self._link_ready.clear()
        if self._server is not None:
            self._server.close_channels_of(self)
        for consumer in self._consumers:
            consumer._drop_stale()
        self._getter = None
        self.emit(
            BrokerDown(
                at=self.world.now(),
                broker=self.name,
                node=NODE,
                detail=f"connection to {self.address} lost: {reason}",
            )
        )
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = self.world.spawn(
                self._reconnect(), name=f"rabbitmq reconnect {self.namespace}"
            )

    async def _reconnect(self) -> None:
        world = self.world
        while not self._closing:
            await asyncio.sleep(self.reconnect_interval)
            if connection_refused(world, NODE) is not None or connection_silent(world, NODE):
                continue
            try:
                await within(self.connect_timeout, self._handshake())
            except (TimeoutError, NodeUnreachable):
                continue
            recovered = self._recover_topology()
            self._link_up = True
            self._link_ready.set()
            self.emit(
                BrokerUp(
                    at=world.now(),
                    broker=self.name,
                    node=NODE,
                    detail=f"reconnected to {self.address}; re-declared {recovered}",
                )
            )
            return

    def _recover_topology(self) -> str:
        """Re-declare what this adapter declared (as the official clients do) and re-subscribe
        its consumers (aio-pika's robust channels)."""
        server = self._require_server()
        for name, (kind, durable) in self._exchanges.items():
            with contextlib.suppress(BrokerError):
                server.declare_exchange(name, kind, durable)
        for declaration in self._queues.values():
            with contextlib.suppress(BrokerError):
                server.declare_queue(
                    declaration.name, declaration.durable, dict(declaration.arguments)
                )
        for binding in self._bindings:
            with contextlib.suppress(BrokerError):
                server.bind(
                    binding.queue, binding.exchange, binding.routing_key, dict(binding.arguments)
                )
        for consumer in self._consumers:
            try:
                consumer._subscribe(server)
            except NotFound:
                # Its queue did not survive and this adapter did not declare it: end this
                # consumer (next() says why), as the real adapter does.
                consumer._lost = f"rabbitmq: queue {consumer.queue!r} is gone after a reconnect"
        return (
            f"{len(self._exchanges)} exchanges, {len(self._queues)} queues, "
            f"{len(self._bindings)} bindings"
        )

    # --- topology -----------------------------------------------------------------------------

    async def declare_exchange(
        self, name: str, type: ExchangeType = "direct", *, durable: bool = True
    ) -> None:
        """Declare an exchange (idempotent for identical arguments).

        Raises:
            PreconditionFailed: it exists with another type or durability.
        """
        full = self.qualify(name)
        if not full or full.startswith("amq."):
            raise RabbitMQError(f"rabbitmq: {name!r} is predefined; declare your own exchange")
        server = self._require_server()
        await self._rpc(
            f"declare exchange {full!r}", lambda: server.declare_exchange(full, type, durable)
        )
        self._exchanges[full] = (type, durable)

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
        """Declare a queue with the ``x-*`` arguments the course teaches.

        ``dead_letter_exchange=""`` is the default exchange; then the dead-letter routing key
        names a queue and is qualified like one.

        Raises:
            PreconditionFailed: the queue exists with other arguments.
        """
        full = self._qualify_queue(name)
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
        server = self._require_server()
        await self._rpc(
            f"declare queue {full!r}", lambda: server.declare_queue(full, durable, arguments)
        )
        self._queues[full] = _QueueDeclaration(full, durable, tuple(sorted(arguments.items())))

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
        full_queue = self._qualify_queue(queue)
        full_exchange = self.qualify(exchange)
        binding_arguments = dict(arguments or {})
        server = self._require_server()
        await self._rpc(
            f"bind {full_queue!r} to {full_exchange!r}",
            lambda: server.bind(full_queue, full_exchange, routing_key, binding_arguments),
        )
        declaration = _BindingDeclaration(
            full_queue, full_exchange, routing_key, tuple(sorted(binding_arguments.items()))
        )
        self._bindings[declaration] = None

    # --- publish ------------------------------------------------------------------------------

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
        """Publish a persistent message and wait for the (simulated) confirm; returns its id.

        Emits ``Produced`` on the confirm, ``ProduceFailed`` otherwise.

        Raises:
            Unroutable: ``mandatory`` and no queue matched.
            NotFound: the exchange does not exist.
            OperationTimedOut / ConnectionLost: no confirm within ``operation_timeout``.
        """
        message_id = message_id or f"{self.namespace}-{next(self._message_ids)}"
        full_exchange = self.qualify(exchange)
        full_key = self.qualify(routing_key) if exchange == "" else routing_key
        destination = full_exchange or full_key
        try:
            if priority is not None and not 0 <= priority <= 255:
                raise RabbitMQError(f"rabbitmq: priority must be 0..255, not {priority}")
            if expiration_ms is not None and expiration_ms < 0:
                raise RabbitMQError("rabbitmq: expiration_ms must not be negative")
            message = Message(
                message_id=message_id,
                body=bytes(body),
                exchange=full_exchange,
                routing_keys=(full_key,),
                headers={**(headers or {}), MESSAGE_ID_HEADER: message_id},
                priority=priority,
                expiration_ms=expiration_ms,
            )
            server = self._require_server()
            await self._rpc(
                f"publish to {destination!r}",
                lambda: server.publish(full_exchange, full_key, message, mandatory),
                nbytes=len(message.body),
            )
        except BrokerError as error:
            self.emit(
                ProduceFailed(
                    at=self.world.now(),
                    broker=self.name,
                    destination=destination,
                    message_id=message_id,
                    error=str(error),
                    key=routing_key,
                )
            )
            raise
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=destination,
                message_id=message_id,
                key=routing_key,
            )
        )
        return message_id

    # --- get and consume ----------------------------------------------------------------------

    async def get(self, queue: str, *, no_ack: bool = False) -> RabbitDelivery | None:
        """basic.get one message, or None if the queue has no ready message.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self._qualify_queue(queue)
        server = self._require_server()
        handout = await self._rpc(
            f"get from {full!r}", lambda: server.get(full, self._getter_channel(), no_ack)
        )
        if handout is None:
            return None
        return self._delivered(handout, consumer=GET_CONSUMER, no_ack=no_ack)

    async def consume(
        self, queue: str, *, prefetch: int = 10, name: str | None = None
    ) -> RabbitConsumer:
        """Start a consumer on its own channel with at most ``prefetch`` unacked messages.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self._qualify_queue(queue)
        if prefetch < 1:
            raise RabbitMQError("rabbitmq: prefetch must be at least 1")
        consumer = SimRabbitConsumer(
            self,
            name=name or f"consumer-{next(self._consumer_ids)}",
            queue=full,
            prefetch=prefetch,
        )
        server = self._require_server()
        await self._rpc(f"consume from {full!r}", lambda: consumer._subscribe(server))
        self._consumers[consumer] = None
        return consumer

    def _delivered(self, handout: Handout, *, consumer: str, no_ack: bool = False) -> SimDelivery:
        delivery = SimDelivery(self, handout, consumer=consumer, no_ack=no_ack)
        self.emit(
            Delivered(
                at=self.world.now(),
                broker=self.name,
                destination=delivery.queue,
                message_id=delivery.message_id,
                consumer=consumer,
                key=delivery.routing_key,
                delivery_count=delivery.delivery_count,
                redelivered=delivery.redelivered,
            )
        )
        return delivery

    # --- queue operations ---------------------------------------------------------------------

    async def purge_queue(self, name: str) -> int:
        """Drop every ready message (unacked ones stay); returns how many."""
        full = self._qualify_queue(name)
        server = self._require_server()
        return await self._rpc(f"purge {full!r}", lambda: server.purge(full))

    async def delete_queue(self, name: str) -> None:
        """Delete a queue (no error if gone); this adapter's consumers on it are closed first."""
        full = self._qualify_queue(name)
        for consumer in tuple(self._consumers):
            if consumer.queue == full:
                await consumer.close()
        server = self._require_server()
        await self._rpc(f"delete queue {full!r}", lambda: server.delete_queue(full))
        self._forget_queue(full)

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange and its bindings (no error if gone)."""
        full = self.qualify(name)
        if not full or full.startswith("amq."):
            raise RabbitMQError(f"rabbitmq: {name!r} is predefined and cannot be deleted")
        server = self._require_server()
        await self._rpc(f"delete exchange {full!r}", lambda: server.delete_exchange(full))
        self._exchanges.pop(full, None)
        for binding in [b for b in self._bindings if b.exchange == full]:
            del self._bindings[binding]

    async def queue_info(self, name: str) -> QueueInfo:
        """Depth of one queue (ready / unacked / consumers) and its arguments.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self._qualify_queue(name)
        server = self._require_server()
        return await self._rpc(f"look up queue {full!r}", lambda: server.queue_info(full))

    # --- inspect and cleanup ------------------------------------------------------------------

    def peek(self) -> RabbitSnapshot | None:
        """This namespace's state straight from the server model (see :meth:`SimBroker.peek`)."""
        if self._server is None:
            return None
        return self._server.snapshot(f"{self.namespace}-")

    async def inspect(self) -> RabbitSnapshot:
        """Exchanges (with type), bindings and queues (ready / unacked / consumers and their
        arguments) of this namespace, in one consistent sample."""
        server = self._require_server()
        prefix = f"{self.namespace}-"
        return await self._rpc("inspect", lambda: server.snapshot(prefix))

    async def cleanup(self) -> None:
        """Delete every queue and exchange whose name starts with this namespace (consumers
        are closed first)."""
        for consumer in tuple(self._consumers):
            await consumer.close()
        if self._server is None:
            return
        server = self._server
        prefix = f"{self.namespace}-"

        def delete_all() -> None:
            queues, exchanges = server.names_with_prefix(prefix)
            for queue in sorted(set(queues) | set(self._queues)):
                server.delete_queue(queue)
            for exchange in sorted(set(exchanges) | set(self._exchanges)):
                server.delete_exchange(exchange)

        await self._rpc(f"clean up namespace {self.namespace!r}", delete_all)
        self._queues.clear()
        self._exchanges.clear()
        self._bindings.clear()

    # --- helpers ------------------------------------------------------------------------------

    def _require_server(self) -> SimRabbitMQServer:
        if self._server is None:
            raise RabbitMQError("rabbitmq: not connected (use `async with SimRabbitMQBroker()`)")
        return self._server

    def _getter_channel(self) -> Channel:
        if self._getter is None or not self._getter.open:
            self._getter = self._require_server().open_channel(self)
        return self._getter

    async def _rpc(self, what: str, action: Callable[[], _T], *, nbytes: int = 0) -> _T:
        """One request/response over the simulated network, bounded by ``operation_timeout``.

        While the connection is down the call waits for the reconnect (as aio-pika's robust
        connection does). A request already sent when the caller gives up still reaches the
        node (a paused node acts on it when resumed); one that a reset or a killed node loses
        on the way is retried on the new connection. A connection that breaks after the node
        acted raises :class:`ConnectionLost` (the effect happened, the answer is lost).
        """
        if self._link_up and self.world.clear_path(NODE):
            return action()  # nothing on the way: the round trip takes no virtual time
        try:
            async with asyncio.timeout(self.operation_timeout):
                while True:
                    await self._link_ready.wait()
                    try:
                        result = await outlive_caller(
                            self.world, self._send(action, nbytes), f"rabbitmq {what}"
                        )
                    except NodeUnreachable as error:
                        self._lose_link(error.reason)
                        continue
                    try:
                        await self.world.transmit(NODE, "downstream")
                    except NodeUnreachable as error:
                        self._lose_link(error.reason)
                        raise ConnectionLost(f"rabbitmq: {what}: {error.reason}") from None
                    return result
        except TimeoutError:
            state = (
                f"the connection to {self.address} is down, reconnecting"
                if not self._link_up
                else "no answer"
            )
            raise OperationTimedOut(
                f"rabbitmq: {what} did not finish within {self.operation_timeout:g}s ({state})"
            ) from None

    async def _send(self, action: Callable[[], _T], nbytes: int) -> _T:
        """The request leg (``nbytes`` of payload): travel to the node (a reset or killed node
        loses it on the way), then let the node act."""
        await self.world.transmit(NODE, "upstream", nbytes)
        return action()

    def _forget_queue(self, name: str) -> None:
        self._queues.pop(name, None)
        for binding in [b for b in self._bindings if b.queue == name]:
            del self._bindings[binding]
