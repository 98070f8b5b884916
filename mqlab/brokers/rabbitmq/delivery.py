"""The RabbitMQ interface's deliveries and consumers: settling a message once, batch acks with
multiple=True, the ``x-death`` history and the prefetch buffer, written once for both backends.

The adapter's own half (exchanges, queues, bindings, publishing) is in
:mod:`mqlab.brokers.rabbitmq.api`, which also re-exports these classes: code written against the
interface imports them from there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mqlab.brokers.base import Broker
from mqlab.brokers.rabbitmq.errors import AlreadySettled, RabbitMQError

SettleVerb = Literal["ack", "nack", "reject"]

MESSAGE_ID_HEADER = "mqlab-id"
"""Header that carries mqlab's message id (see :mod:`mqlab.observe.events`)."""

GET_CONSUMER = "basic.get"
"""The consumer name observations use for messages fetched with ``get`` (basic.get has no
consumer)."""


@dataclass(frozen=True, slots=True)
class XDeath:
    """One entry of the ``x-death`` header RabbitMQ adds when it dead-letters a message."""

    queue: str
    reason: str  # rejected | expired | maxlen | delivery_limit
    count: int
    exchange: str = ""
    routing_keys: tuple[str, ...] = ()


class RabbitDelivery(ABC):
    """A message delivered to a consumer, not yet settled.

    Settling is written here once for both backends: refuse a second settle, send it on the
    delivery's channel (each adapter's :meth:`_send_settle`), then report ``Acked`` /
    ``Nacked``. Adapters set the attributes below from what the broker delivered.

    Args:
        broker: the adapter the delivery came through (observations go on its bus).
        consumer: who received it, as observations name it.
        no_ack: fetched with ``no_ack``: RabbitMQ already forgot it, nothing to settle.
    """

    queue: str
    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any]
    priority: int | None
    redelivered: bool
    delivery_tag: int
    channel: object
    """The channel it arrived on: delivery tags count per channel, and a settle must go
    back on it."""

    def __init__(self, broker: Broker, *, consumer: str, no_ack: bool) -> None:
        self._reporter = broker
        self.consumer = consumer
        self.no_ack = no_ack
        self._settled = no_ack

    @property
    def message_id(self) -> str:
        """mqlab's message id from the headers (or ``queue#tag`` when missing)."""
        value = self.headers.get(MESSAGE_ID_HEADER)
        if isinstance(value, bytes):
            return value.decode()
        return str(value) if value is not None else f"{self.queue}#{self.delivery_tag}"

    @property
    def delivery_count(self) -> int:
        """Quorum queues count deliveries (x-delivery-count); classic queues only flag a
        redelivery, so 2 means "at least the second time"."""
        counted = self.headers.get("x-delivery-count")
        if isinstance(counted, int):
            return counted + 1
        return 2 if self.redelivered else 1

    @property
    def x_death(self) -> tuple[XDeath, ...]:
        """The message's dead-letter history, newest first, as RabbitMQ records it."""
        raw = self.headers.get("x-death") or []
        deaths: list[XDeath] = []
        for entry in raw:
            keys = entry.get("routing-keys") or []
            deaths.append(
                XDeath(
                    queue=_text(entry.get("queue", "")),
                    reason=_text(entry.get("reason", "")),
                    count=int(entry.get("count", 0)),
                    exchange=_text(entry.get("exchange", "")),
                    routing_keys=tuple(_text(k) for k in keys),
                )
            )
        return tuple(deaths)

    def report_delivered(self) -> None:
        """Emit the ``Delivered`` observation of this delivery."""
        self._reporter.report_delivered(
            self.queue,
            self.message_id,
            self.consumer,
            key=self.routing_key,
            delivery_count=self.delivery_count,
            redelivered=self.redelivered,
        )

    async def ack(self) -> None:
        """Settle positively on the delivery's channel: the broker forgets the message.

        Raises:
            AlreadySettled: settled before, or fetched with ``no_ack``.
            ConnectionLost: the channel closed since (RabbitMQ requeued the message).
        """
        await self._settle("ack", requeue=None)

    async def nack(self, *, requeue: bool = True) -> None:
        """Settle negatively: requeue (redelivered=True next time) or drop / dead-letter."""
        await self._settle("nack", requeue=requeue)

    async def reject(self, *, requeue: bool = False) -> None:
        """basic.reject: the single-message form of ``nack``, with the same effect."""
        await self._settle("reject", requeue=requeue)

    async def _settle(self, verb: SettleVerb, *, requeue: bool | None) -> None:
        self.check_settleable(verb)
        await self._send_settle(verb, requeue=bool(requeue))
        self._settled = True
        self._reporter.report_settled(self.queue, self.message_id, self.consumer, requeue=requeue)
        if requeue is False:
            self._rejected()

    @abstractmethod
    async def _send_settle(self, verb: SettleVerb, *, requeue: bool) -> None:
        """Send basic.ack / basic.nack / basic.reject on the channel it was delivered on.

        Raises:
            RabbitMQError: the broker refused it or the channel is gone.
        """

    @property
    def settled(self) -> bool:
        """Acked, nacked or rejected already (or fetched with ``no_ack``)."""
        return self._settled

    def check_settleable(self, verb: SettleVerb) -> None:
        """Refuse a delivery that cannot be settled (again).

        Raises:
            AlreadySettled: settled before, or fetched with ``no_ack``.
        """
        if self.no_ack:
            raise AlreadySettled(
                f"rabbitmq: cannot {verb} {self.message_id}: it was fetched with no_ack, "
                "RabbitMQ already forgot it"
            )
        if self._settled:
            raise AlreadySettled(f"rabbitmq: {self.message_id} was already settled")

    def acked_with(self) -> None:
        """Settled by a basic.ack with multiple=True sent for a later delivery of the same
        channel: remember it and report ``Acked`` as a single ack would."""
        self._settled = True
        self._reporter.report_settled(self.queue, self.message_id, self.consumer)

    @abstractmethod
    async def _send_ack_multiple(self) -> None:
        """Send basic.ack with multiple=True for this delivery's tag: RabbitMQ forgets it and
        every earlier unsettled delivery of its channel.

        Raises:
            RabbitMQError: the broker refused it or the channel is gone.
        """

    def _rejected(self) -> None:  # noqa: B027 (an optional hook: most adapters need none)
        """Called after a negative settle without requeue (an adapter that must infer the
        dead-lettering RabbitMQ does silently reports it here)."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RabbitConsumer(ABC):
    """A basic.consume subscription on its own channel with a prefetch window.

    RabbitMQ pushes up to ``prefetch`` unacknowledged messages; they wait in a local buffer
    until :meth:`next` hands them out. After a lost connection the buffered messages are
    stale (RabbitMQ requeued them when their channel died, and delivers them again): they are
    skipped, and the adapter subscribes again once it reconnects.
    """

    def __init__(self, *, name: str, queue: str, prefetch: int) -> None:
        self.name = name
        self.queue = queue
        self.prefetch = prefetch
        self.lost: str | None = None
        """Why RabbitMQ ended the subscription (its queue was deleted, or is gone after a
        reconnect); :meth:`next` raises it."""
        self._closed = False
        self._handed_out: deque[RabbitDelivery] = deque()
        """Deliveries :meth:`next` handed out on the current channel, oldest first (settled
        ones are dropped lazily): what a multiple=True ack would cover."""

    async def next(self, timeout: float = 1.0) -> RabbitDelivery | None:
        """The next delivery, or None if none arrives within ``timeout`` seconds.

        Raises:
            RabbitMQError: the consumer is closed, or RabbitMQ ended the subscription (its
                queue was deleted, or is gone after a reconnect).
        """
        if self._closed:
            raise RabbitMQError(f"rabbitmq: consumer {self.name!r} is closed")
        delivery = await self._next(max(timeout, 0.0))
        if delivery is not None:
            self._track(delivery)
        return delivery

    async def next_batch(self, max_messages: int, timeout: float = 1.0) -> list[RabbitDelivery]:
        """Up to ``max_messages`` deliveries: waits up to ``timeout`` seconds for the first,
        then takes whatever else is already buffered (``[]`` when nothing arrived).

        Raises:
            RabbitMQError: as :meth:`next`, or ``max_messages`` below 1.
        """
        if max_messages < 1:
            raise RabbitMQError("rabbitmq: next_batch needs max_messages of at least 1")
        first = await self.next(timeout)
        if first is None:
            return []
        batch = [first]
        while len(batch) < max_messages:
            more = await self.next(0.0)
            if more is None:
                break
            batch.append(more)
        return batch

    async def ack_batch(self, deliveries: Sequence[RabbitDelivery]) -> None:
        """Acknowledge ``deliveries`` (from this consumer) with one basic.ack multiple=True
        when that covers exactly them: they are every unsettled delivery of the channel up
        to the highest tag among them. Otherwise (some earlier delivery is still held, or
        they span a reconnect) each is acked on its own. Either way each is reported
        ``Acked``, so the ledger reads the same as after one ack per message.

        Raises:
            AlreadySettled: one of them was settled before (nothing is sent then).
            ConnectionLost: the channel closed since (RabbitMQ requeued them).
        """
        if not deliveries:
            return
        for delivery in deliveries:
            delivery.check_settleable("ack")
        if not self._covers_exactly(deliveries):
            for delivery in deliveries:
                await delivery.ack()
            return
        last = max(deliveries, key=lambda delivery: delivery.delivery_tag)
        await last._send_ack_multiple()
        for delivery in deliveries:
            delivery.acked_with()

    def _track(self, delivery: RabbitDelivery) -> None:
        handed_out = self._handed_out
        if handed_out and handed_out[-1].channel is not delivery.channel:
            # A new channel (a reconnect): a multiple ack on it never touches the old one's.
            handed_out.clear()
        while handed_out and handed_out[0].settled:
            handed_out.popleft()
        if len(handed_out) > 2 * self.prefetch:
            # Settled ones behind a delivery held for long; the broker bounds the others.
            self._handed_out = handed_out = deque(d for d in handed_out if not d.settled)
        handed_out.append(delivery)

    def _covers_exactly(self, deliveries: Sequence[RabbitDelivery]) -> bool:
        """Would one multiple=True ack for the highest tag settle exactly ``deliveries``?"""
        chosen = {id(delivery) for delivery in deliveries}
        if len(chosen) != len(deliveries):
            return False
        channel = deliveries[0].channel
        if any(delivery.channel is not channel for delivery in deliveries):
            return False
        top = max(delivery.delivery_tag for delivery in deliveries)
        covered = [
            delivery
            for delivery in self._handed_out
            if delivery.channel is channel and not delivery.settled and delivery.delivery_tag <= top
        ]
        return len(covered) == len(chosen) and all(id(d) in chosen for d in covered)

    async def close(self) -> None:
        """Cancel the subscription and close its channel: unacked messages go back to the
        queue with redelivered=True (exactly what happens when a consumer process dies)."""
        if self._closed:
            return
        self._closed = True
        self._handed_out.clear()
        await self._cancel()

    @abstractmethod
    async def _next(self, timeout: float) -> RabbitDelivery | None:
        """The next buffered delivery whose channel is still open (waiting up to ``timeout``);
        raise :attr:`lost` once the buffer is empty and RabbitMQ ended the subscription."""

    @abstractmethod
    async def _cancel(self) -> None:
        """Stop being re-subscribed, drop what is buffered, basic.cancel and close the
        channel."""
