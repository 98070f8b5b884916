"""The real NATS adapter's pull consumers, fetched JetStream messages and core subscriptions."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from mqlab.brokers.base import BrokerError, OperationTimedOut
from mqlab.brokers.nats.api import (
    MESSAGE_ID_HEADER,
    JetStreamError,
    JsMessage,
    NatsPullConsumer,
    NatsSubscription,
)
from mqlab.observe.events import (
    Acked,
    Delivered,
    Nacked,
)

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
"""Subject prefix of the advisory JetStream sends when a consumer gives up on a message."""
MSG_ID_HEADER = "Nats-Msg-Id"
"""JetStream's deduplication header."""
_STREAM_EXISTS = 10058  # JetStream error code: stream name already in use (other config)
_RECONNECT_WAIT = 0.5
_RETRY_INTERVAL = 0.25
_PING_INTERVAL = 2
_MAX_OUTSTANDING_PINGS = 2
_STREAM_PAGE = 256  # JetStream's page size for STREAM.LIST


if TYPE_CHECKING:
    from mqlab.brokers.nats.client import NatsBroker


class PullConsumer(NatsPullConsumer):
    """A durable pull consumer bound through nats-py's PullSubscription."""

    def __init__(
        self,
        broker: NatsBroker,
        subscription: JetStreamContext.PullSubscription,
        stream: str,
        name: str,
    ) -> None:
        self.broker = broker
        self.stream = stream
        self.name = name
        self._subscription = subscription
        self._closed = False

    async def fetch(self, batch: int = 1, timeout: float = 1.0) -> list[JsMessage]:
        """Up to ``batch`` messages; ``[]`` when none arrive within ``timeout``.

        Raises:
            BrokerUnavailable: the connection is down (rather than "no messages").
        """
        if self._closed:
            raise JetStreamError(f"consumer {self.name} on {self.stream} is closed")
        broker = self.broker
        await broker.connection()
        try:
            with broker.translate("fetch", f"{self.stream}/{self.name}"):
                raw_messages = await self._subscription.fetch(batch=batch, timeout=timeout)
        except OperationTimedOut:
            return []  # the connection is fine: simply nothing to deliver in time
        messages: list[JsMessage] = []
        for raw in raw_messages:
            message = Message(broker, raw, self.name)
            messages.append(message)
            broker.emit(
                Delivered(
                    at=broker.bus.now(),
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
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()
        self.broker.forget(self)


class Message(JsMessage):
    """A fetched JetStream message; settling it emits Acked / Nacked."""

    def __init__(self, broker: NatsBroker, raw: Msg, consumer: str) -> None:
        metadata = raw.metadata
        self._broker = broker
        self._raw = raw
        self._consumer = consumer
        self.subject = raw.subject
        self.stream = metadata.stream
        self.stream_sequence = metadata.sequence.stream
        self.consumer_sequence = metadata.sequence.consumer
        self.num_delivered = metadata.num_delivered
        self.data = raw.data
        self.headers = dict(raw.headers or {})

    async def ack(self) -> None:
        """Acknowledge and wait for the server to confirm it."""
        broker = self._broker
        await broker.connection()
        with broker.translate("ack", f"{self.stream}#{self.stream_sequence}"):
            await self._raw.ack_sync(timeout=broker.request_timeout)
        broker.emit(
            Acked(
                at=broker.bus.now(),
                broker=broker.name,
                destination=self.subject,
                message_id=self.message_id,
                consumer=self._consumer,
            )
        )

    async def nak(self, delay: float | None = None) -> None:
        """Negative ack: JetStream redelivers (after ``delay`` seconds when given)."""
        await self._settle("nak", partial(self._raw.nak, delay=delay))
        self._emit_nack(requeue=True)

    async def term(self) -> None:
        """Terminate: this consumer will never get the message again."""
        await self._settle("term", self._raw.term)
        self._emit_nack(requeue=False)

    async def in_progress(self) -> None:
        """Still working: restart the ack-wait timer."""
        await self._settle("in_progress", self._raw.in_progress)

    async def _settle(self, operation: str, send: Callable[[], Awaitable[None]]) -> None:
        broker = self._broker
        nc = await broker.connection()
        with broker.translate(operation, f"{self.stream}#{self.stream_sequence}"):
            await send()
            await nc.flush(timeout=broker.flush_timeout())

    def _emit_nack(self, *, requeue: bool) -> None:
        broker = self._broker
        broker.emit(
            Nacked(
                at=broker.bus.now(),
                broker=broker.name,
                destination=self.subject,
                message_id=self.message_id,
                consumer=self._consumer,
                requeue=requeue,
            )
        )


class CoreSubscription(NatsSubscription):
    """A core NATS subscription read with :meth:`next`."""

    def __init__(self, broker: NatsBroker, subscription: Subscription, subject: str) -> None:
        self._broker = broker
        self._subscription = subscription
        self.subject = subject
        self._closed = False

    async def next(self, timeout: float = 1.0) -> tuple[str, bytes] | None:
        """The next message, or None when nothing arrives within ``timeout``."""
        broker = self._broker
        if self._closed:
            raise BrokerError(f"subscription to {self.subject} is closed")
        try:
            raw = await self._subscription.next_msg(timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return None
        headers = raw.headers or {}
        broker.emit(
            Delivered(
                at=broker.bus.now(),
                broker=broker.name,
                destination=raw.subject,
                message_id=headers.get(MESSAGE_ID_HEADER) or f"{raw.subject}@core",
                consumer=f"core:{self.subject}",
            )
        )
        return raw.subject, raw.data

    async def close(self) -> None:
        """Unsubscribe (messages published afterwards are simply not delivered here)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()
        self._broker.forget(self)
