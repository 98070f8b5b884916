"""The real RabbitMQ adapter's deliveries and consumers: each delivery is settled on the
channel it arrived on, each consumer has its own channel and prefetch window.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from mqlab.brokers.base import BrokerError
from mqlab.brokers.rabbitmq.api import (
    NotFound,
    RabbitConsumer,
    RabbitDelivery,
    RabbitMQError,
    SettleVerb,
)

if TYPE_CHECKING:
    from mqlab.brokers.rabbitmq.client import RabbitMQBroker


class Delivery(RabbitDelivery):
    """One message handed to mqlab code, settled through the channel it arrived on."""

    def __init__(
        self,
        broker: RabbitMQBroker,
        message: AbstractIncomingMessage,
        *,
        queue: str,
        consumer: str,
        no_ack: bool,
    ) -> None:
        super().__init__(broker, consumer=consumer, no_ack=no_ack)
        self._broker = broker
        self._message = message
        self.queue = queue
        self.exchange = message.exchange or ""
        self.routing_key = message.routing_key or ""
        self.body = message.body
        self.headers = dict(message.headers or {})
        self.priority = message.priority
        self.redelivered = bool(message.redelivered)
        self.delivery_tag = int(message.delivery_tag or 0)
        self.channel = _channel_of(message)

    async def _send_settle(self, verb: SettleVerb, *, requeue: bool) -> None:
        message = self._message
        if verb == "ack":
            sending = message.ack()
        elif verb == "nack":
            sending = message.nack(requeue=requeue)
        else:
            sending = message.reject(requeue=requeue)
        await self._broker.bounded(f"{verb} of {self.message_id}", sending)

    async def _send_ack_multiple(self) -> None:
        await self._broker.bounded(
            f"ack of {self.message_id} and the deliveries before it",
            self._message.ack(multiple=True),
        )

    def _rejected(self) -> None:
        # RabbitMQ dead-letters it silently: the adapter reports it itself.
        self._broker.report_rejection(self)


class Consumer(RabbitConsumer):
    """A basic.consume subscription through aio-pika (see :class:`RabbitConsumer`)."""

    def __init__(self, broker: RabbitMQBroker, *, name: str, queue: str, prefetch: int) -> None:
        super().__init__(name=name, queue=queue, prefetch=prefetch)
        self._broker = broker
        self._tag = broker.qualify(name)
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._subscribe_lock = asyncio.Lock()

    async def subscribe(self) -> None:
        """Open a channel, set the prefetch and basic.consume (again after a reconnect)."""
        async with self._subscribe_lock:
            if self._channel is not None and not self._channel.is_closed:
                return
            connection = await self._broker.transport()
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.basic_qos(prefetch_count=self.prefetch)
                channel.on_consumer_cancel_callbacks.add(self._on_cancelled)
                await channel.basic_consume(self.queue, self._on_message, consumer_tag=self._tag)
            except BaseException:
                if not channel.is_closed:
                    with contextlib.suppress(Exception):
                        await channel.close()
                raise
            self._channel = channel
            self.lost = None

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._buffer.put_nowait(aio_pika.IncomingMessage(message, no_ack=False))

    async def _on_cancelled(self, _frame: object) -> None:
        self.lost = (
            f"rabbitmq: RabbitMQ cancelled consumer {self.name!r} "
            f"(queue {self.queue!r} was deleted)"
        )

    async def _next(self, timeout: float) -> RabbitDelivery | None:
        await self._resubscribe_if_channel_died()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                message = self._buffer.get_nowait()
            except asyncio.QueueEmpty:
                if self.lost is not None:
                    raise RabbitMQError(self.lost) from None
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    message = await asyncio.wait_for(self._buffer.get(), remaining)
                except TimeoutError:
                    return None
            if channel_is_closed(message):
                continue  # RabbitMQ requeued it when the channel died; it comes back
            return self._broker.delivered(message, queue=self.queue, consumer=self.name)

    async def _resubscribe_if_channel_died(self) -> None:
        """A channel error (not a lost connection, which the reconnect handles) closed the
        channel: subscribe again so one bad settle does not end the consumer for good."""
        channel = self._channel
        if channel is None or not channel.is_closed or self.lost is not None:
            return
        if not self._broker.link_up or not self._broker.transport_is_open():
            return  # the connection itself is down: the reconnect re-subscribes
        try:
            await self._broker.bounded(f"re-subscribe {self.name!r}", self.subscribe())
        except NotFound:
            self.lost = f"rabbitmq: queue {self.queue!r} no longer exists"
        except BrokerError:
            return  # the connection went down meanwhile: the reconnect re-subscribes

    async def _cancel(self) -> None:
        self._broker.forget_consumer(self)
        channel, self._channel = self._channel, None
        while not self._buffer.empty():
            self._buffer.get_nowait()
        # With the connection down there is nothing to cancel or close (RabbitMQ already
        # dropped the subscription and requeued its messages).
        if channel is None or channel.is_closed or not self._broker.link_up:
            return
        with contextlib.suppress(BrokerError):
            await self._broker.bounded(
                f"cancel of consumer {self.name!r}", channel.basic_cancel(self._tag)
            )
        with contextlib.suppress(BrokerError):
            await self._broker.bounded(f"close of consumer {self.name!r}", channel.close())


def _channel_of(message: AbstractIncomingMessage) -> object:
    """The channel a message arrived on; a fresh placeholder when it closed already (aio-pika
    refuses to hand out a closed one), which no other delivery shares, so a batch ack never
    treats the message as one of a live channel's."""
    try:
        return message.channel
    except aiormq.exceptions.ChannelInvalidStateError:
        return object()


def channel_is_closed(message: AbstractIncomingMessage) -> bool:
    try:
        return bool(message.channel.is_closed)
    except aiormq.exceptions.ChannelInvalidStateError:
        return True
