"""The real NATS adapter's pull consumers, fetched JetStream messages and core subscriptions."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from mqlab.brokers.base import OperationTimedOut
from mqlab.brokers.nats.api import (
    JetStreamError,
    JsMessage,
    JsOperation,
    NatsPullConsumer,
    NatsSubscription,
    already_acknowledged,
)

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
        super().__init__(stream, name)
        self.broker = broker
        self._subscription = subscription

    async def _fetch(self, batch: int, timeout: float) -> list[JsMessage]:
        broker = self.broker
        await broker.connection()
        try:
            with broker.translate("fetch", f"{self.stream}/{self.name}"):
                raw_messages = await self._subscription.fetch(batch=batch, timeout=timeout)
        except OperationTimedOut:
            return []  # the connection is fine: simply nothing to deliver in time
        return [Message(broker, raw, self.name) for raw in raw_messages]

    async def _unsubscribe(self) -> None:
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()
        self.broker.forget(self)

    async def _send_acks(self, messages: list[JsMessage]) -> None:
        raws = [message.raw for message in messages if isinstance(message, Message)]
        if len(raws) != len(messages):
            raise JetStreamError(f"ack_batch on {self.name}: a message not fetched through NATS")
        for message, raw in zip(messages, raws, strict=True):
            if raw.is_acked:  # nats-py would refuse it, after the others went out
                raise already_acknowledged(f"ack {message.where}")
        broker = self.broker
        nc = await broker.connection()
        with broker.translate("ack", f"{self.stream}/{self.name}"):
            for raw in raws:
                await raw.ack()  # a publish to the reply subject; nothing waits for an answer
            await nc.flush(timeout=broker.flush_timeout())


class Message(JsMessage):
    """A fetched JetStream message, settled through nats-py.

    ``ack`` waits for the server's confirmation (``ack_sync``) so that an ``Acked``
    observation means the server has it; ``nak``, ``term`` and ``in_progress`` are
    fire-and-forget in the protocol, so they are followed by a flush (a PING/PONG round trip).
    """

    def __init__(self, broker: NatsBroker, raw: Msg, consumer: str) -> None:
        super().__init__(broker, consumer)
        metadata = raw.metadata
        self._broker = broker
        self._raw = raw
        self.subject = raw.subject
        self.stream = metadata.stream
        self.stream_sequence = metadata.sequence.stream
        self.consumer_sequence = metadata.sequence.consumer
        self.num_delivered = metadata.num_delivered
        self.data = raw.data
        self.headers = dict(raw.headers or {})

    @property
    def raw(self) -> Msg:
        """nats-py's message, which carries the reply subject its ack goes to."""
        return self._raw

    async def _send(self, operation: JsOperation, *, delay: float | None = None) -> None:
        broker = self._broker
        nc = await broker.connection()
        with broker.translate(operation, self.where):
            if operation == "ack":
                await self._raw.ack_sync(timeout=broker.request_timeout)
                return
            if operation == "nak":
                await self._raw.nak(delay=delay)
            elif operation == "term":
                await self._raw.term()
            else:
                await self._raw.in_progress()
            await nc.flush(timeout=broker.flush_timeout())


class CoreSubscription(NatsSubscription):
    """A core NATS subscription read with :meth:`next`."""

    def __init__(self, broker: NatsBroker, subscription: Subscription, subject: str) -> None:
        super().__init__(broker, subject)
        self._broker = broker
        self._subscription = subscription

    async def _next(self, timeout: float) -> tuple[str, bytes, Mapping[str, str]] | None:
        try:
            raw = await self._subscription.next_msg(timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return None
        return raw.subject, raw.data, raw.headers or {}

    async def _unsubscribe(self) -> None:
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()
        self._broker.forget(self)
