"""The simulated RabbitMQ adapter: the real adapter's interface and behaviour (names, message
ids, errors, reconnects, topology recovery) over the world's shared
:class:`~mqlab.brokers.sim.rabbitmq.server.SimRabbitMQServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping
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
from mqlab.brokers.rabbitmq.topology import Topology
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.link import SimLink, outlive_caller
from mqlab.brokers.sim.rabbitmq.consumer import SimDelivery, SimRabbitConsumer
from mqlab.brokers.sim.rabbitmq.queues import Channel, Handout, Message
from mqlab.brokers.sim.rabbitmq.server import NODE, SimRabbitMQServer
from mqlab.brokers.sim.world import NodeUnreachable, SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus

_T = TypeVar("_T")

GET_CONSUMER = "basic.get"
"""The consumer name observations use for messages fetched with ``get``."""

_HEARTBEAT_MISSES = 3  # silent heartbeats after which a client gives a connection up


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
        self._declared = Topology()
        self._consumer_ids = itertools.count(1)
        self.link = SimLink(
            self,
            NODE,
            silent_after=heartbeat * _HEARTBEAT_MISSES,
            silence="missed heartbeats",
            reconnect_interval=reconnect_interval,
            on_lost=self._connection_lost,
            on_restored=self._recover_topology,
        )
        """The client connection (shared by the consumers' channels)."""

    # --- lifecycle ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        server = SimRabbitMQServer.of(self.world)
        await self.link.open()
        self._server = server

    async def _close(self) -> None:
        for consumer in tuple(self._consumers):
            await consumer.close()
        await self.link.close()
        if self._server is not None:
            self._server.close_channels_of(self)
        self._server = None
        self._getter = None
        await self._release_world()

    def _connection_lost(self, reason: str) -> None:
        """What the client loses with its connection: every channel (the node requeues their
        unacked messages) and what was in transit to its consumers."""
        if self._server is not None:
            self._server.close_channels_of(self)
        for consumer in self._consumers:
            consumer.drop_stale()
        self._getter = None

    def _recover_topology(self) -> str:
        """Re-declare what this adapter declared (as the official clients do) and re-subscribe
        its consumers (aio-pika's robust channels)."""
        server = self.require_server()
        declared = self._declared
        for name, (kind, durable) in declared.exchanges.items():
            with contextlib.suppress(BrokerError):
                server.declare_exchange(name, kind, durable)
        for declaration in declared.queues.values():
            with contextlib.suppress(BrokerError):
                server.declare_queue(
                    declaration.name, declaration.durable, dict(declaration.arguments)
                )
        for binding in declared.bindings:
            with contextlib.suppress(BrokerError):
                server.bind(
                    binding.queue, binding.exchange, binding.routing_key, dict(binding.arguments)
                )
        for consumer in self._consumers:
            try:
                consumer.subscribe(server)
            except NotFound:
                # Its queue did not survive and this adapter did not declare it: end this
                # consumer (next() says why), as the real adapter does.
                consumer.lost = f"rabbitmq: queue {consumer.queue!r} is gone after a reconnect"
        return f"; re-declared {declared.summary()}"

    # --- topology -----------------------------------------------------------------------------

    async def declare_exchange(
        self, name: str, type: ExchangeType = "direct", *, durable: bool = True
    ) -> None:
        """Declare an exchange (idempotent for identical arguments).

        Raises:
            PreconditionFailed: it exists with another type or durability.
        """
        full = self.own_exchange(name, "declared")
        server = self.require_server()
        await self.rpc(
            f"declare exchange {full!r}", lambda: server.declare_exchange(full, type, durable)
        )
        self._declared.exchange_declared(full, type, durable)

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
        qualified by :meth:`RabbitMQAPI.queue_arguments`).

        Raises:
            PreconditionFailed: the queue exists with other arguments.
        """
        full = self.qualify_queue(name)
        arguments = self.queue_arguments(
            max_priority=max_priority,
            message_ttl_ms=message_ttl_ms,
            dead_letter_exchange=dead_letter_exchange,
            dead_letter_routing_key=dead_letter_routing_key,
            max_length=max_length,
        )
        server = self.require_server()
        await self.rpc(
            f"declare queue {full!r}", lambda: server.declare_queue(full, durable, arguments)
        )
        self._declared.queue_declared(full, durable, arguments)

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
        server = self.require_server()
        await self.rpc(
            f"bind {full_queue!r} to {full_exchange!r}",
            lambda: server.bind(full_queue, full_exchange, routing_key, binding_arguments),
        )
        self._declared.bound(full_queue, full_exchange, routing_key, binding_arguments)

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
        full_exchange, full_key = self.publish_target(
            exchange, routing_key, priority=priority, expiration_ms=expiration_ms
        )
        message_id = message_id or self.new_message_id()
        destination = full_exchange or full_key
        message = Message(
            message_id=message_id,
            body=bytes(body),
            exchange=full_exchange,
            routing_keys=(full_key,),
            headers={**(headers or {}), MESSAGE_ID_HEADER: message_id},
            priority=priority,
            expiration_ms=expiration_ms,
        )

        async def confirmed() -> int:
            server = self.require_server()
            return await self.rpc(
                f"publish to {destination!r}",
                lambda: server.publish(full_exchange, full_key, message, mandatory),
                nbytes=len(message.body),
            )

        await self.send_reported(
            confirmed(), destination=destination, message_id=message_id, key=routing_key
        )
        return message_id

    # --- get and consume ----------------------------------------------------------------------

    async def get(self, queue: str, *, no_ack: bool = False) -> RabbitDelivery | None:
        """basic.get one message, or None if the queue has no ready message.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self.qualify_queue(queue)
        server = self.require_server()
        handout = await self.rpc(
            f"get from {full!r}", lambda: server.get(full, self._getter_channel(), no_ack)
        )
        if handout is None:
            return None
        return self.delivered(handout, consumer=GET_CONSUMER, no_ack=no_ack)

    async def consume(
        self, queue: str, *, prefetch: int = 10, name: str | None = None
    ) -> RabbitConsumer:
        """Start a consumer on its own channel with at most ``prefetch`` unacked messages.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self.qualify_queue(queue)
        if prefetch < 1:
            raise RabbitMQError("rabbitmq: prefetch must be at least 1")
        consumer = SimRabbitConsumer(
            self,
            name=name or f"consumer-{next(self._consumer_ids)}",
            queue=full,
            prefetch=prefetch,
        )
        server = self.require_server()
        await self.rpc(f"consume from {full!r}", lambda: consumer.subscribe(server))
        self._consumers[consumer] = None
        return consumer

    def delivered(self, handout: Handout, *, consumer: str, no_ack: bool = False) -> SimDelivery:
        """A delivery as the client hands it out (and its ``Delivered`` observation)."""
        delivery = SimDelivery(self, handout, consumer=consumer, no_ack=no_ack)
        delivery.report_delivered()
        return delivery

    def forget_consumer(self, consumer: SimRabbitConsumer) -> None:
        """A consumer closed: it is no longer re-subscribed after a reconnect."""
        self._consumers.pop(consumer, None)

    # --- queue operations ---------------------------------------------------------------------

    async def purge_queue(self, name: str) -> int:
        """Drop every ready message (unacked ones stay); returns how many."""
        full = self.qualify_queue(name)
        server = self.require_server()
        return await self.rpc(f"purge {full!r}", lambda: server.purge(full))

    async def delete_queue(self, name: str) -> None:
        """Delete a queue (no error if gone); this adapter's consumers on it are closed first."""
        full = self.qualify_queue(name)
        for consumer in tuple(self._consumers):
            if consumer.queue == full:
                await consumer.close()
        server = self.require_server()
        await self.rpc(f"delete queue {full!r}", lambda: server.delete_queue(full))
        self._declared.queue_deleted(full)

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange and its bindings (no error if gone)."""
        full = self.own_exchange(name, "deleted")
        server = self.require_server()
        await self.rpc(f"delete exchange {full!r}", lambda: server.delete_exchange(full))
        self._declared.exchange_deleted(full)

    async def queue_info(self, name: str) -> QueueInfo:
        """Depth of one queue (ready / unacked / consumers) and its arguments.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self.qualify_queue(name)
        server = self.require_server()
        return await self.rpc(f"look up queue {full!r}", lambda: server.queue_info(full))

    # --- inspect and cleanup ------------------------------------------------------------------

    def peek(self) -> RabbitSnapshot | None:
        """This namespace's state straight from the server model (see :meth:`SimBroker.peek`)."""
        if self._server is None:
            return None
        return self._server.snapshot(f"{self.namespace}-")

    async def inspect(self) -> RabbitSnapshot:
        """Exchanges (with type), bindings and queues (ready / unacked / consumers and their
        arguments) of this namespace, in one consistent sample."""
        server = self.require_server()
        prefix = f"{self.namespace}-"
        return await self.rpc("inspect", lambda: server.snapshot(prefix))

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
            for queue in sorted(set(queues) | set(self._declared.queues)):
                server.delete_queue(queue)
            for exchange in sorted(set(exchanges) | set(self._declared.exchanges)):
                server.delete_exchange(exchange)

        await self.rpc(f"clean up namespace {self.namespace!r}", delete_all)
        self._declared.clear()

    # --- helpers ------------------------------------------------------------------------------

    def require_server(self) -> SimRabbitMQServer:
        """The node, once connected.

        Raises:
            RabbitMQError: not connected.
        """
        if self._server is None:
            raise RabbitMQError("rabbitmq: not connected (use `async with SimRabbitMQBroker()`)")
        return self._server

    def _getter_channel(self) -> Channel:
        if self._getter is None or not self._getter.open:
            self._getter = self.require_server().open_channel(self)
        return self._getter

    async def rpc(self, what: str, action: Callable[[], _T], *, nbytes: int = 0) -> _T:
        """One request/response over the simulated network, bounded by ``operation_timeout``.

        While the connection is down the call waits for the reconnect (as aio-pika's robust
        connection does). A request already sent when the caller gives up still reaches the
        node (a paused node acts on it when resumed); one that a reset or a killed node loses
        on the way is retried on the new connection. A connection that breaks after the node
        acted raises :class:`ConnectionLost` (the effect happened, the answer is lost).
        """
        link = self.link
        if link.up and self.world.clear_path(NODE):
            return action()  # nothing on the way: the round trip takes no virtual time
        try:
            async with asyncio.timeout(self.operation_timeout):
                while True:
                    await link.ready.wait()
                    try:
                        result = await outlive_caller(
                            self.world, self._send(action, nbytes), f"rabbitmq {what}"
                        )
                    except NodeUnreachable as error:
                        link.lose(error.reason)
                        continue
                    try:
                        await self.world.transmit(NODE, "downstream")
                    except NodeUnreachable as error:
                        link.lose(error.reason)
                        raise ConnectionLost(f"rabbitmq: {what}: {error.reason}") from None
                    return result
        except TimeoutError:
            state = (
                f"the connection to {self.address} is down, reconnecting"
                if not link.up
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
