"""The simulated RabbitMQ adapter's deliveries and consumers (settled through the channel they
arrived on, as the real adapter's are).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from mqlab.brokers.base import BrokerError
from mqlab.brokers.rabbitmq.api import (
    AlreadySettled,
    ConnectionLost,
    RabbitConsumer,
    RabbitDelivery,
    RabbitMQError,
)
from mqlab.brokers.sim.link import (
    within,
)
from mqlab.brokers.sim.rabbitmq.queues import Channel, Handout
from mqlab.brokers.sim.rabbitmq.server import NODE, SimRabbitMQServer
from mqlab.brokers.sim.world import NodeUnreachable
from mqlab.observe.events import (
    Acked,
    Nacked,
)

if TYPE_CHECKING:
    from mqlab.brokers.sim.rabbitmq.client import SimRabbitMQBroker


class SimDelivery(RabbitDelivery):
    """One message handed to mqlab code, settled through the channel it arrived on."""

    def __init__(
        self, broker: SimRabbitMQBroker, handout: Handout, *, consumer: str, no_ack: bool
    ) -> None:
        message = handout.message
        self._broker = broker
        self._channel = handout.channel
        self._consumer = consumer
        self._settled = no_ack
        self._no_ack = no_ack
        self.queue = handout.queue
        self.exchange = message.exchange
        self.routing_key = message.routing_keys[0] if message.routing_keys else ""
        self.body = message.body
        self.headers = dict(message.headers)
        self.priority = message.priority
        self.redelivered = handout.redelivered
        self.delivery_tag = handout.tag

    @property
    def delivery_count(self) -> int:
        """Classic queues only flag a redelivery, so 2 means "at least the second time"."""
        return 2 if self.redelivered else 1

    def _claim(self, verb: str) -> None:
        if self._no_ack:
            raise AlreadySettled(
                f"rabbitmq: cannot {verb} {self.message_id}: it was fetched with no_ack, "
                "RabbitMQ already forgot it"
            )
        if self._settled:
            raise AlreadySettled(f"rabbitmq: {self.message_id} was already settled")

    async def ack(self) -> None:
        """Settle positively on the delivery's channel; emits ``Acked``."""
        self._claim("ack")
        await self._settle(f"ack of {self.message_id}", ack=True, requeue=False)
        self._broker.emit(
            Acked(
                at=self._broker.world.now(),
                broker=self._broker.name,
                destination=self.queue,
                message_id=self.message_id,
                consumer=self._consumer,
            )
        )

    async def nack(self, *, requeue: bool = True) -> None:
        """Settle negatively; without requeue RabbitMQ dead-letters or drops the message."""
        await self._settle_negatively("nack", requeue=requeue)

    async def reject(self, *, requeue: bool = False) -> None:
        """basic.reject: the single-message form of ``nack``, with the same effect."""
        await self._settle_negatively("reject", requeue=requeue)

    async def _settle_negatively(self, verb: str, *, requeue: bool) -> None:
        self._claim(verb)
        await self._settle(f"{verb} of {self.message_id}", ack=False, requeue=requeue)
        self._broker.emit(
            Nacked(
                at=self._broker.world.now(),
                broker=self._broker.name,
                destination=self.queue,
                message_id=self.message_id,
                consumer=self._consumer,
                requeue=requeue,
            )
        )

    async def _settle(self, what: str, *, ack: bool, requeue: bool) -> None:
        channel = self._channel
        server = self._broker._require_server()
        if not channel.open:  # the connection dropped since: fails at once, as in aio-pika
            raise ConnectionLost(
                f"rabbitmq: {what}: the channel closed (connection lost?); unacked messages "
                "on it go back to their queue"
            )
        await self._broker._rpc(
            what, lambda: server.settle(channel, self.delivery_tag, ack=ack, requeue=requeue)
        )
        self._settled = True


class SimRabbitConsumer(RabbitConsumer):
    """A basic.consume subscription on its own channel.

    RabbitMQ pushes up to ``prefetch`` unacknowledged messages; they wait in a local buffer
    until :meth:`next` hands them out. Under network latency each push travels the simulated
    network first. After a lost connection the buffered messages are stale (RabbitMQ requeued
    them) and are skipped; the consumer re-subscribes when the adapter reconnects.
    """

    def __init__(self, broker: SimRabbitMQBroker, *, name: str, queue: str, prefetch: int) -> None:
        self._broker = broker
        self.name = name
        self.queue = queue
        self.prefetch = prefetch
        self._buffer: deque[Handout] = deque()
        self._in_transit: deque[Handout] = deque()
        self._courier: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._channel: Channel | None = None
        self._closed = False
        self._lost: str | None = None

    def _subscribe(self, server: SimRabbitMQServer) -> None:
        channel = server.open_channel(self._broker)
        try:
            server.subscribe(self.queue, channel, self.prefetch, self._push, self._cancelled)
        except BrokerError:
            server.close_channel(channel)
            raise
        self._channel = channel
        self._lost = None

    def _cancelled(self, queue: str) -> None:
        self._lost = (
            f"rabbitmq: RabbitMQ cancelled consumer {self.name!r} (queue {queue!r} was deleted)"
        )
        self._arrived.set()

    def _push(self, handout: Handout) -> None:
        world = self._broker.world
        if not self._in_transit and world.clear_path(NODE):
            self._buffer.append(handout)
            self._arrived.set()
            return
        self._in_transit.append(handout)
        if self._courier is None or self._courier.done():
            self._courier = world.spawn(self._carry(), name=f"rabbitmq push to {self.name}")

    async def _carry(self) -> None:
        """Move pushed messages across the simulated network, in order."""
        world = self._broker.world
        while self._in_transit:
            handout = self._in_transit[0]
            try:
                await world.transmit(NODE, "downstream", len(handout.message.body))
            except NodeUnreachable as error:
                self._broker._lose_link(error.reason)  # drops what is still in transit
                return
            if self._in_transit and self._in_transit[0] is handout:
                self._in_transit.popleft()
                self._buffer.append(handout)
                self._arrived.set()

    def _drop_stale(self) -> None:
        self._in_transit.clear()
        if self._courier is not None:
            self._courier.cancel()
            self._courier = None

    async def next(self, timeout: float = 1.0) -> RabbitDelivery | None:
        """The next delivery, or None if none arrives within ``timeout`` seconds.

        Raises:
            RabbitMQError: the consumer is closed, or RabbitMQ ended the subscription (its
                queue was deleted, or is gone after a reconnect).
        """
        if self._closed:
            raise RabbitMQError(f"rabbitmq: consumer {self.name!r} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            while self._buffer:
                handout = self._buffer.popleft()
                if handout.channel.open:  # stale ones were requeued by RabbitMQ
                    return self._broker._delivered(handout, consumer=self.name)
            if self._lost is not None:
                raise RabbitMQError(self._lost)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await within(remaining, self._arrived.wait())
            except TimeoutError:
                return None

    async def close(self) -> None:
        """Cancel the subscription and close the channel; unacked messages are requeued
        (redelivered=True), exactly what happens when a consumer process dies."""
        if self._closed:
            return
        self._closed = True
        self._broker._consumers.pop(self, None)
        self._drop_stale()
        self._buffer.clear()
        server = self._broker._server
        if server is not None and self._channel is not None:
            server.close_channel(self._channel)
