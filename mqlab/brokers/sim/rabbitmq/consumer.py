"""The simulated RabbitMQ adapter's deliveries and consumers (settled through the channel they
arrived on, as the real adapter's are).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from mqlab.brokers.base import BrokerError
from mqlab.brokers.rabbitmq.api import (
    ConnectionLost,
    RabbitConsumer,
    RabbitDelivery,
    RabbitMQError,
    SettleVerb,
)
from mqlab.brokers.sim.link import (
    next_signal,
)
from mqlab.brokers.sim.rabbitmq.queues import Channel, Handout
from mqlab.brokers.sim.rabbitmq.server import NODE, SimRabbitMQServer
from mqlab.brokers.sim.world import NodeUnreachable

if TYPE_CHECKING:
    from mqlab.brokers.sim.rabbitmq.client import SimRabbitMQBroker


class SimDelivery(RabbitDelivery):
    """One message handed to mqlab code, settled through the channel it arrived on."""

    def __init__(
        self, broker: SimRabbitMQBroker, handout: Handout, *, consumer: str, no_ack: bool
    ) -> None:
        super().__init__(broker, consumer=consumer, no_ack=no_ack)
        message = handout.message
        self._broker = broker
        self._channel = handout.channel
        self.queue = handout.queue
        self.exchange = message.exchange
        self.routing_key = message.routing_keys[0] if message.routing_keys else ""
        self.body = message.body
        self.headers = dict(message.headers)
        self.priority = message.priority
        self.redelivered = handout.redelivered
        self.delivery_tag = handout.tag
        self.channel = handout.channel

    async def _send_settle(self, verb: SettleVerb, *, requeue: bool) -> None:
        await self._settle_on_channel(f"{verb} of {self.message_id}", verb == "ack", requeue)

    async def _send_ack_multiple(self) -> None:
        await self._settle_on_channel(
            f"ack of {self.message_id} and the deliveries before it", True, False, multiple=True
        )

    async def _settle_on_channel(
        self, what: str, ack: bool, requeue: bool, *, multiple: bool = False
    ) -> None:
        channel = self._channel
        server = self._broker.require_server()
        if not channel.open:  # the connection dropped since: fails at once, as in aio-pika
            raise ConnectionLost(
                f"rabbitmq: {what}: the channel closed (connection lost?); unacked messages "
                "on it go back to their queue"
            )
        await self._broker.rpc(
            what,
            lambda: server.settle(
                channel, self.delivery_tag, ack=ack, requeue=requeue, multiple=multiple
            ),
        )


class SimRabbitConsumer(RabbitConsumer):
    """A basic.consume subscription on a simulated channel (see :class:`RabbitConsumer`);
    under network latency each push travels the simulated network first."""

    def __init__(self, broker: SimRabbitMQBroker, *, name: str, queue: str, prefetch: int) -> None:
        super().__init__(name=name, queue=queue, prefetch=prefetch)
        self._broker = broker
        self._buffer: deque[Handout] = deque()
        self._in_transit: deque[Handout] = deque()
        self._courier: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._channel: Channel | None = None
        self._server: SimRabbitMQServer | None = None

    def subscribe(self, server: SimRabbitMQServer) -> None:
        channel = server.open_channel(self._broker)
        try:
            server.subscribe(self.queue, channel, self.prefetch, self._push, self._cancelled)
        except BrokerError:
            server.close_channel(channel)
            raise
        self._channel = channel
        self._server = server
        self.lost = None

    def _cancelled(self, queue: str) -> None:
        self.lost = (
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
                self._broker.link.lose(error.reason)  # drops what is still in transit
                return
            if self._in_transit and self._in_transit[0] is handout:
                self._in_transit.popleft()
                self._buffer.append(handout)
                self._arrived.set()

    def drop_stale(self) -> None:
        self._in_transit.clear()
        if self._courier is not None:
            self._courier.cancel()
            self._courier = None

    async def _next(self, timeout: float) -> RabbitDelivery | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._buffer:
                handout = self._buffer.popleft()
                if handout.channel.open:  # stale ones were requeued by RabbitMQ
                    return self._broker.delivered(handout, consumer=self.name)
            if self.lost is not None:
                raise RabbitMQError(self.lost)
            if not await next_signal(self._arrived, deadline):
                return None

    async def _cancel(self) -> None:
        self._broker.forget_consumer(self)
        self.drop_stale()
        self._buffer.clear()
        if self._server is not None and self._channel is not None:
            self._server.close_channel(self._channel)
