"""The simulated NATS adapter's fetched messages, pull consumers and core subscriptions."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from mqlab.brokers.base import BrokerError, BrokerUnavailable
from mqlab.brokers.nats.api import (
    MESSAGE_ID_HEADER,
    JetStreamError,
    JsMessage,
    NatsPullConsumer,
    NatsSubscription,
)
from mqlab.brokers.sim.link import (
    first_of,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.nats.server import NODE
from mqlab.brokers.sim.nats.streams import Consumer, CoreSubscriber, Handout
from mqlab.brokers.sim.world import NodeState, NodeUnreachable
from mqlab.observe.events import (
    Acked,
    Delivered,
    Nacked,
)

if TYPE_CHECKING:
    from mqlab.brokers.sim.nats.client import SimNatsBroker


_EPSILON = 1e-6


class SimJsMessage(JsMessage):
    """A fetched JetStream message; settling it emits Acked / Nacked."""

    def __init__(self, broker: SimNatsBroker, consumer: Consumer, handout: Handout) -> None:
        message = handout.message
        self._broker = broker
        self._consumer = consumer
        self._settled = False
        self.subject = message.subject
        self.stream = handout.stream
        self.stream_sequence = message.sequence
        self.consumer_sequence = handout.consumer_sequence
        self.num_delivered = handout.num_delivered
        self.data = message.data
        self.headers = dict(message.headers)

    def _claim(self, operation: str) -> None:
        # nats-py refuses a second ack/nak/term of one delivery before asking the server.
        if self._settled:
            raise JetStreamError(f"{operation}: the message was already acknowledged")

    async def ack(self) -> None:
        """Acknowledge and wait for the server to confirm it."""
        self._claim("ack")
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "ack",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.ack(consumer, self.stream_sequence),
        )
        self._settled = True
        self._broker._emit_settled(self, Acked, consumer.name)

    async def nak(self, delay: float | None = None) -> None:
        """Negative ack: JetStream redelivers (after ``delay`` seconds when given)."""
        self._claim("nak")
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "nak",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.nak(consumer, self.stream_sequence, delay),
        )
        self._settled = True
        self._broker._emit_settled(self, Nacked, consumer.name, requeue=True)

    async def term(self) -> None:
        """Terminate: this consumer will never get the message again."""
        self._claim("term")
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "term",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.ack(consumer, self.stream_sequence, terminate=True),
        )
        self._settled = True
        self._broker._emit_settled(self, Nacked, consumer.name, requeue=False)

    async def in_progress(self) -> None:
        """Still working: restart the ack-wait timer."""
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "in_progress",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.in_progress(consumer, self.stream_sequence),
        )


class SimPullConsumer(NatsPullConsumer):
    """A durable pull consumer bound to its stream."""

    def __init__(self, broker: SimNatsBroker, stream: str, name: str) -> None:
        self.broker = broker
        self.stream = stream
        self.name = name
        self._closed = False

    async def fetch(self, batch: int = 1, timeout: float = 1.0) -> list[JsMessage]:
        """Up to ``batch`` messages; ``[]`` when none arrive within ``timeout``.

        Returns as soon as at least one message is there (with whatever else is ready).

        Raises:
            BrokerUnavailable: the connection is down (rather than "no messages").
            JetStreamError: the consumer or its stream was deleted.
        """
        if self._closed:
            raise JetStreamError(f"consumer {self.name} on {self.stream} is closed")
        if batch < 1:
            raise JetStreamError("fetch: batch must be at least 1")
        broker = self.broker
        server = broker._require_server()
        await broker._await_link("fetch")
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
            async with asyncio.timeout(max(timeout, 0.0) + _EPSILON):
                pulled = await outlive_caller(world, pull(), f"nats fetch {self.name}")
                if pulled:
                    size = sum(len(handout.message.data) for _, handout in pulled)
                    await world.transmit(NODE, "downstream", size)
        except TimeoutError:
            if not broker._link_up:
                raise BrokerUnavailable(
                    broker.system, broker.address, "connection lost during fetch"
                ) from None
            return []  # the connection is fine: simply nothing to deliver in time
        except NodeUnreachable as error:
            broker._lose_link(error.reason)
            raise BrokerUnavailable(
                broker.system, broker.address, f"fetch failed: {error.reason}"
            ) from None
        messages: list[JsMessage] = []
        for consumer, handout in pulled:
            message = SimJsMessage(broker, consumer, handout)
            messages.append(message)
            broker.emit(
                Delivered(
                    at=world.now(),
                    broker=broker.name,
                    destination=message.subject,
                    message_id=message.message_id,
                    consumer=self.name,
                    position=message.stream_sequence,
                    delivery_count=message.num_delivered,
                    redelivered=message.num_delivered > 1,
                )
            )
        return messages

    async def close(self) -> None:
        """Stop fetching; the durable consumer stays on the server."""
        if self._closed:
            return
        self._closed = True
        if self in self.broker._pull_consumers:
            self.broker._pull_consumers.remove(self)


class SimSubscription(NatsSubscription):
    """A core NATS subscription read with :meth:`next` (at-most-once)."""

    def __init__(self, broker: SimNatsBroker, subject: str) -> None:
        self._broker = broker
        self.subject = subject
        self._buffer: deque[tuple[str, bytes, dict[str, str]]] = deque()
        self._arrived = asyncio.Event()
        self._closed = False
        self._subscriber = CoreSubscriber(subject, self._deliver)

    def _deliver(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        # Core NATS: a client that is disconnected right now simply misses the message.
        if self._closed or not self._broker._link_up:
            return
        self._buffer.append((subject, data, headers))
        self._arrived.set()

    async def next(self, timeout: float = 1.0) -> tuple[str, bytes] | None:
        """The next message, or None when nothing arrives within ``timeout``."""
        if self._closed:
            raise BrokerError(f"subscription to {self.subject} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while not self._buffer:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await within(remaining, self._arrived.wait())
            except TimeoutError:
                return None
        subject, data, headers = self._buffer.popleft()
        broker = self._broker
        broker.emit(
            Delivered(
                at=broker.world.now(),
                broker=broker.name,
                destination=subject,
                message_id=headers.get(MESSAGE_ID_HEADER) or f"{subject}@core",
                consumer=f"core:{self.subject}",
            )
        )
        return subject, data

    async def close(self) -> None:
        """Unsubscribe (messages published afterwards are simply not delivered here)."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        server = self._broker._server
        if server is not None:
            server.unsubscribe(self._subscriber)
        if self in self._broker._subscriptions:
            self._broker._subscriptions.remove(self)
