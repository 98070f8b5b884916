"""The simulated RabbitMQ adapter: the real adapter's interface and behaviour (names, message
ids, errors, reconnects, topology recovery) over the world's shared
:class:`~mqlab.brokers.sim.rabbitmq.server.SimRabbitMQServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar, Unpack

from mqlab.brokers.base import BrokerError
from mqlab.brokers.rabbitmq.api import (
    GET_CONSUMER,
    ConnectionLost,
    NotFound,
    Publication,
    QueueInfo,
    RabbitConsumer,
    RabbitDelivery,
    RabbitMQAPI,
    RabbitMQError,
    RabbitMQOptions,
    RabbitSnapshot,
)
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.link import SimLink, outlive_caller
from mqlab.brokers.sim.rabbitmq.consumer import SimDelivery, SimRabbitConsumer
from mqlab.brokers.sim.rabbitmq.queues import Channel, Handout, Message
from mqlab.brokers.sim.rabbitmq.server import NODE, SimRabbitMQServer
from mqlab.brokers.sim.world import NodeUnreachable, SimWorld

_T = TypeVar("_T")


_HEARTBEAT_MISSES = 3  # silent heartbeats after which a client gives a connection up


class SimRabbitMQBroker(SimBroker, RabbitMQAPI):
    """The simulator's RabbitMQ adapter: the real adapter's interface and behaviour over the
    world's shared :class:`SimRabbitMQServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        options: see :class:`~mqlab.brokers.rabbitmq.api.RabbitMQAPI` (in virtual seconds;
            ``bus`` defaults to the world's, ``namespace`` to a deterministic one).
    """

    nodes = (NODE,)

    def __init__(
        self, *, world: SimWorld | None = None, **options: Unpack[RabbitMQOptions]
    ) -> None:
        super().__init__(world=world, **options)
        self._server: SimRabbitMQServer | None = None
        self._getter: Channel | None = None
        # A dict, not a set: iteration order must not depend on memory addresses (same seed,
        # same run).
        self._consumers: dict[SimRabbitConsumer, None] = {}
        self.link = SimLink(
            self,
            NODE,
            silent_after=self.heartbeat * _HEARTBEAT_MISSES,
            silence="missed heartbeats",
            reconnect_interval=self.reconnect_interval,
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
        declared = self.declared
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

    # --- topology (the checks and the record are in RabbitMQAPI) -----------------------------

    async def _declare_exchange(self, name: str, kind: str, durable: bool) -> None:
        server = self.require_server()
        await self.rpc(
            f"declare exchange {name!r}", lambda: server.declare_exchange(name, kind, durable)
        )

    async def _declare_queue(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        server = self.require_server()
        await self.rpc(
            f"declare queue {name!r}", lambda: server.declare_queue(name, durable, arguments)
        )

    async def _bind_queue(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any]
    ) -> None:
        server = self.require_server()
        await self.rpc(
            f"bind {queue!r} to {exchange!r}",
            lambda: server.bind(queue, exchange, routing_key, arguments),
        )

    async def _delete_queue(self, name: str) -> None:
        for consumer in tuple(self._consumers):
            if consumer.queue == name:
                await consumer.close()
        server = self.require_server()
        await self.rpc(f"delete queue {name!r}", lambda: server.delete_queue(name))

    async def _delete_exchange(self, name: str) -> None:
        server = self.require_server()
        await self.rpc(f"delete exchange {name!r}", lambda: server.delete_exchange(name))

    # --- publish ------------------------------------------------------------------------------

    async def _publish(self, publication: Publication) -> None:
        message = Message(
            message_id=publication.message_id,
            body=publication.body,
            exchange=publication.exchange,
            routing_keys=(publication.routing_key,),
            headers=publication.headers,
            priority=publication.priority,
            expiration_ms=publication.expiration_ms,
        )
        server = self.require_server()
        await self.rpc(
            f"publish to {publication.destination!r}",
            lambda: server.publish(
                publication.exchange, publication.routing_key, message, publication.mandatory
            ),
            nbytes=len(message.body),
        )

    # --- get and consume ----------------------------------------------------------------------

    async def _get(self, queue: str, no_ack: bool) -> RabbitDelivery | None:
        server = self.require_server()
        handout = await self.rpc(
            f"get from {queue!r}", lambda: server.get(queue, self._getter_channel(), no_ack)
        )
        if handout is None:
            return None
        return self.delivered(handout, consumer=GET_CONSUMER, no_ack=no_ack)

    async def _consume(self, queue: str, prefetch: int, name: str) -> RabbitConsumer:
        consumer = SimRabbitConsumer(self, name=name, queue=queue, prefetch=prefetch)
        server = self.require_server()
        await self.rpc(f"consume from {queue!r}", lambda: consumer.subscribe(server))
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

    async def _purge_queue(self, name: str) -> int:
        server = self.require_server()
        return await self.rpc(f"purge {name!r}", lambda: server.purge(name))

    async def _queue_info(self, name: str) -> QueueInfo:
        server = self.require_server()
        return await self.rpc(f"look up queue {name!r}", lambda: server.queue_info(name))

    # --- inspect and cleanup ------------------------------------------------------------------

    def peek(self) -> RabbitSnapshot | None:
        """This namespace's state straight from the server model (see :meth:`SimBroker.peek`)."""
        return self.peek_at(self._server)

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
            for queue in sorted(set(queues) | set(self.declared.queues)):
                server.delete_queue(queue)
            for exchange in sorted(set(exchanges) | set(self.declared.exchanges)):
                server.delete_exchange(exchange)

        await self.rpc(f"clean up namespace {self.namespace!r}", delete_all)
        self.declared.clear()

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
            raise self.call_timed_out(what, connected=link.up) from None

    async def _send(self, action: Callable[[], _T], nbytes: int) -> _T:
        """The request leg (``nbytes`` of payload): travel to the node (a reset or killed node
        loses it on the way), then let the node act."""
        await self.world.transmit(NODE, "upstream", nbytes)
        return action()
