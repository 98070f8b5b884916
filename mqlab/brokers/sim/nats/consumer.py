"""The simulated NATS adapter's fetched messages, pull consumers and core subscriptions."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mqlab.brokers.base import BrokerUnavailable
from mqlab.brokers.nats.api import (
    JetStreamError,
    JsMessage,
    JsOperation,
    NatsPullConsumer,
    NatsSubscription,
    already_acknowledged,
)
from mqlab.brokers.sim.clock import TIMER_SLACK
from mqlab.brokers.sim.link import (
    first_of,
    next_signal,
    outlive_caller,
)
from mqlab.brokers.sim.nats.server import NODE, SimNatsServer
from mqlab.brokers.sim.nats.streams import Consumer, CoreSubscriber, Handout
from mqlab.brokers.sim.world import NodeState, NodeUnreachable

if TYPE_CHECKING:
    from mqlab.brokers.sim.nats.client import SimNatsBroker


class SimJsMessage(JsMessage):
    """A fetched JetStream message, settled through the simulated server."""

    def __init__(self, broker: SimNatsBroker, consumer: Consumer, handout: Handout) -> None:
        super().__init__(broker, consumer.name)
        message = handout.message
        self._broker = broker
        self._durable = consumer
        self._settled = False
        self.subject = message.subject
        self.stream = handout.stream
        self.stream_sequence = message.sequence
        self.consumer_sequence = handout.consumer_sequence
        self.num_delivered = handout.num_delivered
        self.data = message.data
        self.headers = dict(message.headers)

    @property
    def settled(self) -> bool:
        """Acked, nacked or terminated already."""
        return self._settled

    def acked_on(self, server: SimNatsServer) -> None:
        """The server's side of this message's ack (one of a batch's)."""
        server.ack(self._durable, self.stream_sequence)

    def mark_settled(self) -> None:
        self._settled = True

    async def _send(self, operation: JsOperation, *, delay: float | None = None) -> None:
        settles = operation != "in_progress"
        if settles and self._settled:
            # nats-py refuses a second ack/nak/term of one delivery before asking the server.
            raise already_acknowledged(operation)
        server, durable, sequence = (
            self._broker.require_server(),
            self._durable,
            self.stream_sequence,
        )
        if operation == "ack":
            await self._broker.request("ack", self.where, lambda: server.ack(durable, sequence))
        elif operation == "nak":
            await self._broker.request(
                "nak", self.where, lambda: server.nak(durable, sequence, delay)
            )
        elif operation == "term":
            await self._broker.request(
                "term", self.where, lambda: server.ack(durable, sequence, terminate=True)
            )
        else:
            await self._broker.request(
                "in_progress", self.where, lambda: server.in_progress(durable, sequence)
            )
        if settles:
            self._settled = True


class SimPullConsumer(NatsPullConsumer):
    """A durable pull consumer bound to its stream."""

    def __init__(self, broker: SimNatsBroker, stream: str, name: str) -> None:
        super().__init__(stream, name)
        self.broker = broker

    async def _fetch(self, batch: int, timeout: float) -> list[JsMessage]:
        broker = self.broker
        server = broker.require_server()
        await broker.await_link("fetch")
        world = broker.world

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)

        async def pull() -> list[tuple[Consumer, Handout]]:
            # The pull request: it expires at the deadline, so a server that only reads it
            # later (paused meanwhile) hands out nothing.
            await world.transmit(NODE, "upstream")
            while True:
                state = world.state(NODE)
                if state is NodeState.DOWN:
                    raise NodeUnreachable(NODE, "connection reset by peer")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                if state is NodeState.PAUSED:  # a stopped server hands nothing out
                    await first_of(remaining, world.next_change(NODE))
                    continue
                consumer = server.consumer(self.stream, self.name, "fetch")
                handouts = server.pull(consumer, batch)
                if handouts:
                    return [(consumer, handout) for handout in handouts]
                await first_of(remaining, consumer.changed(), world.next_change(NODE))

        try:
            async with asyncio.timeout(max(timeout, 0.0) + TIMER_SLACK):
                pulled = await outlive_caller(world, pull(), f"nats fetch {self.name}")
                if pulled:
                    size = sum(len(handout.message.data) for _, handout in pulled)
                    await world.transmit(NODE, "downstream", size)
        except TimeoutError:
            if not broker.link.up:
                raise BrokerUnavailable(
                    broker.system, broker.address, "connection lost during fetch"
                ) from None
            return []  # the connection is fine: simply nothing to deliver in time
        except NodeUnreachable as error:
            broker.link.lose(error.reason)
            raise BrokerUnavailable(
                broker.system, broker.address, f"fetch failed: {error.reason}"
            ) from None
        return [SimJsMessage(broker, consumer, handout) for consumer, handout in pulled]

    async def _unsubscribe(self) -> None:
        self.broker.forget(self)

    async def _send_acks(self, messages: list[JsMessage]) -> None:
        fetched = [message for message in messages if isinstance(message, SimJsMessage)]
        if len(fetched) != len(messages):
            raise JetStreamError(f"ack_batch on {self.name}: a message not fetched here")
        for message in fetched:
            if message.settled:
                raise already_acknowledged(f"ack {message.where}")
        server = self.broker.require_server()

        def ack_all() -> None:
            for message in fetched:
                message.acked_on(server)

        # One request: the acks travel together and the flush's answer comes back once.
        await self.broker.request("ack", f"{self.stream}/{self.name}", ack_all)
        for message in fetched:
            message.mark_settled()


class SimSubscription(NatsSubscription):
    """A core NATS subscription read with :meth:`next` (at-most-once)."""

    def __init__(self, broker: SimNatsBroker, subject: str) -> None:
        super().__init__(broker, subject)
        self._broker = broker
        self._buffer: deque[tuple[str, bytes, dict[str, str]]] = deque()
        self._arrived = asyncio.Event()
        self._subscriber = CoreSubscriber(subject, self._deliver)
        self._server: SimNatsServer | None = None

    def attach(self, server: SimNatsServer) -> None:
        """Subscribe on ``server`` (the request the adapter carries to it)."""
        server.subscribe(self._subscriber)
        self._server = server

    def _deliver(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        # Core NATS: a client that is disconnected right now simply misses the message.
        if self._closed or not self._broker.link.up:
            return
        self._buffer.append((subject, data, headers))
        self._arrived.set()

    async def _next(self, timeout: float) -> tuple[str, bytes, Mapping[str, str]] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while not self._buffer:
            if not await next_signal(self._arrived, deadline):
                return None
        return self._buffer.popleft()

    async def _unsubscribe(self) -> None:
        self._buffer.clear()
        if self._server is not None:
            self._server.unsubscribe(self._subscriber)
        self._broker.forget(self)
