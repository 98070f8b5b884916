"""The simulator's RabbitMQ: exchanges, bindings, queues and acknowledgements on virtual time.

Layout (the same in every simulated system): this module is the server model
(:class:`SimRabbitMQServer`), its data is in :mod:`~mqlab.brokers.sim.rabbitmq.queues` and its
routing and dead-lettering rules in :mod:`~mqlab.brokers.sim.rabbitmq.routing`; the simulated
adapter, :class:`~mqlab.brokers.sim.rabbitmq.client.SimRabbitMQBroker`, is in
:mod:`~mqlab.brokers.sim.rabbitmq.client` and its deliveries and consumers in
:mod:`~mqlab.brokers.sim.rabbitmq.consumer`.

What is modelled, because the course teaches it:

* Routing through direct, topic (``*`` one word, ``#`` zero or more), fanout and headers
  (``x-match`` all/any, plus RabbitMQ's ``all-with-x``/``any-with-x``) exchanges and the
  default exchange; a queue bound twice still gets one copy.
* Queues with ``x-max-priority`` (higher first, FIFO within a priority), ``x-message-ttl`` and
  per-message expiration (dropped when they reach the head, as RabbitMQ does), ``x-max-length``
  (drop-head), and dead-lettering with the ``x-death`` header (one entry per queue and reason,
  its count incremented and moved to the front on every repeat; ``x-first-death-*``), including
  RabbitMQ's cycle detection for fully automatic loops.
* Consumers get messages pushed round-robin, never more than ``prefetch`` unacknowledged; a
  closed channel (consumer close, lost connection, killed node) puts its unacked messages back
  at their original position with ``redelivered`` set.
* A killed node loses its non-durable queues and exchanges; messages in durable queues survive
  (the adapter publishes them persistent, as the real one does). Clients notice a cut or reset
  connection at once and a silent one (paused node, ``timeout`` toxic) after three missed
  heartbeats, then reconnect every ``reconnect_interval`` and re-declare what they declared.

Names and observations follow the real adapter exactly (broker-side names everywhere, the
same message-id scheme and error classes), so a scenario's ledger reads the same on both. One
deliberate difference: the simulator sees RabbitMQ's silent dead-lettering (TTL expiry,
max-length overflow) as it happens and reports ``DeadLettered`` / ``Expired`` then, whereas the
real adapter can only infer them later from ``x-death`` headers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mqlab.brokers.rabbitmq.api import (
    BindingInfo,
    ConnectionLost,
    ExchangeInfo,
    NotFound,
    PreconditionFailed,
    QueueInfo,
    RabbitMQError,
    RabbitSnapshot,
    Unroutable,
)
from mqlab.brokers.sim.rabbitmq.queues import (
    Binding,
    Channel,
    Exchange,
    Handout,
    Message,
    Queue,
    Subscription,
    describe_queue,
)
from mqlab.brokers.sim.rabbitmq.routing import binding_matches, is_cycle, record_death
from mqlab.brokers.sim.world import NodeChange, NodeState, SimServer, SimWorld
from mqlab.observe.events import (
    DeadLettered,
    Expired,
)

_T = TypeVar("_T")

NODE = "rabbitmq"
"""The simulated node (the lab's process name) that faults target."""

SOURCE = "sim:rabbitmq"
"""``broker`` field of the observations the server itself emits (dead letters, expiries)."""

PREDECLARED_EXCHANGES: dict[str, str] = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
"""Exchanges every RabbitMQ node has from the start."""


class SimRabbitMQServer(SimServer):
    """One RabbitMQ node of a simulated world, shared by every adapter of that world.

    All methods are synchronous and run between two network legs of a client call; the node's
    own timers (message expiry) run on the world's virtual clock.
    """

    model_key = "rabbitmq"

    def __init__(self, world: SimWorld) -> None:
        super().__init__(world)
        self.exchanges: dict[str, Exchange] = {
            name: Exchange(name, kind, durable=True) for name, kind in PREDECLARED_EXCHANGES.items()
        }
        self.queues: dict[str, Queue] = {}
        self.channels: list[Channel] = []
        self._arrivals = itertools.count(1)

    @property
    def up(self) -> bool:
        """The node's process runs (not killed, not paused)."""
        return self.world.is_up(NODE)

    # --- topology -----------------------------------------------------------------------

    def declare_exchange(self, name: str, kind: str, durable: bool) -> None:
        existing = self.exchanges.get(name)
        if existing is None:
            self.exchanges[name] = Exchange(name, kind, durable)
            return
        if existing.type != kind:
            raise PreconditionFailed(
                f"rabbitmq: declare exchange {name!r}: PRECONDITION_FAILED - inequivalent arg "
                f"'type' for exchange '{name}' in vhost '/': received '{kind}' but current is "
                f"'{existing.type}'"
            )
        if existing.durable != durable:
            raise PreconditionFailed(
                f"rabbitmq: declare exchange {name!r}: PRECONDITION_FAILED - inequivalent arg "
                f"'durable' for exchange '{name}' in vhost '/': received "
                f"'{str(durable).lower()}' but current is '{str(existing.durable).lower()}'"
            )

    def delete_exchange(self, name: str) -> None:
        self.exchanges.pop(name, None)

    def declare_queue(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        existing = self.queues.get(name)
        if existing is None:
            self.queues[name] = Queue(name, durable, dict(arguments))
            return
        for key in sorted(set(existing.arguments) | set(arguments)):
            if existing.arguments.get(key) != arguments.get(key):
                received = arguments.get(key, "none")
                current = existing.arguments.get(key, "none")
                raise PreconditionFailed(
                    f"rabbitmq: declare queue {name!r}: PRECONDITION_FAILED - inequivalent arg "
                    f"'{key}' for queue '{name}' in vhost '/': received {received!r} but "
                    f"current is {current!r}"
                )
        if existing.durable != durable:
            raise PreconditionFailed(
                f"rabbitmq: declare queue {name!r}: PRECONDITION_FAILED - inequivalent arg "
                f"'durable' for queue '{name}' in vhost '/': received "
                f"'{str(durable).lower()}' but current is '{str(existing.durable).lower()}'"
            )

    def bind(self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any]) -> None:
        if exchange == "":
            raise RabbitMQError(
                f"rabbitmq: bind {queue!r}: ACCESS_REFUSED - operation not permitted on the "
                "default exchange"
            )
        target = self._exchange(exchange, f"bind {queue!r} to {exchange!r}")
        self._queue(queue, f"bind {queue!r} to {exchange!r}")
        binding = Binding(queue, routing_key, dict(arguments))
        if binding not in target.bindings:
            target.bindings.append(binding)

    def delete_queue(self, name: str) -> None:
        queue = self.queues.pop(name, None)
        if queue is None:
            return
        queue.alive = False
        queue.clear()
        self._cancel_timer(queue)
        for subscription in tuple(queue.subscriptions):
            self.cancel(subscription)
            if subscription.on_cancel is not None:
                subscription.on_cancel(name)
        for exchange in self.exchanges.values():
            exchange.bindings = [b for b in exchange.bindings if b.queue != name]

    def purge(self, name: str) -> int:
        queue = self._queue(name, f"purge {name!r}")
        dropped = queue.clear()
        self._arm_timer(queue)
        return dropped

    # --- channels -----------------------------------------------------------------------

    def open_channel(self, owner: object) -> Channel:
        channel = Channel(owner)
        self.channels.append(channel)
        return channel

    def close_channel(self, channel: Channel) -> None:
        """Close a channel: its consumers are cancelled and every message it holds unacked
        goes back to its queue, at its original position, flagged redelivered."""
        if not channel.open:
            return
        channel.open = False
        if channel in self.channels:
            self.channels.remove(channel)
        for subscription in tuple(channel.subscriptions):
            self.cancel(subscription)
        touched: dict[str, Queue] = {}
        for tag in sorted(channel.unacked):
            queue, message = channel.unacked.pop(tag)
            queue.unacked -= 1
            if queue.alive:
                message.redelivered = True
                queue.push(message)
                touched[queue.name] = queue
        for queue in touched.values():
            self._dispatch(queue)

    def close_channels_of(self, owner: object) -> None:
        """What RabbitMQ does when one client's connection drops."""
        for channel in [c for c in self.channels if c.owner is owner]:
            self.close_channel(channel)

    # --- messages -----------------------------------------------------------------------

    def publish(self, exchange: str, routing_key: str, message: Message, mandatory: bool) -> int:
        """Route ``message``; returns how many queues got a copy.

        Raises:
            NotFound: the exchange does not exist.
            Unroutable: ``mandatory`` and no queue matched.
        """
        if exchange and exchange not in self.exchanges:
            raise NotFound(
                f"rabbitmq: publish to {exchange!r}: NOT_FOUND - no exchange '{exchange}' "
                "in vhost '/'"
            )
        targets = self._route(exchange, (routing_key,), message.headers)
        if not targets and mandatory:
            where = f"exchange {exchange!r}" if exchange else "the default exchange"
            raise Unroutable(
                f"rabbitmq: no queue is bound to {where} for routing key {routing_key!r} "
                "(mandatory publish returned)"
            )
        for queue in targets:
            self._enqueue(queue, message)
        return len(targets)

    def get(self, name: str, channel: Channel, no_ack: bool) -> Handout | None:
        queue = self._queue(name, f"get from {name!r}")
        for expired in queue.pop_expired(self.world.now()):
            self._dead_letter(queue, expired, "expired")
        message = queue.pop_head()
        self._arm_timer(queue)
        if message is None:
            return None
        return channel.untracked(queue, message) if no_ack else channel.track(queue, message)

    def subscribe(
        self,
        name: str,
        channel: Channel,
        prefetch: int,
        sink: Callable[[Handout], None],
        on_cancel: Callable[[str], None] | None = None,
    ) -> Subscription:
        queue = self._queue(name, f"consume from {name!r}")
        subscription = Subscription(queue, channel, prefetch, sink, on_cancel)
        queue.subscriptions.append(subscription)
        channel.subscriptions.append(subscription)
        self._dispatch(queue)
        return subscription

    def cancel(self, subscription: Subscription) -> None:
        if subscription in subscription.queue.subscriptions:
            subscription.queue.subscriptions.remove(subscription)
        if subscription in subscription.channel.subscriptions:
            subscription.channel.subscriptions.remove(subscription)

    def settle(
        self, channel: Channel, tag: int, *, ack: bool, requeue: bool, multiple: bool = False
    ) -> None:
        """basic.ack / basic.nack on ``channel``; ``multiple`` settles every unsettled tag up
        to ``tag`` of the channel too, as RabbitMQ does.

        Raises:
            ConnectionLost: the channel is closed (its messages were already requeued).
            PreconditionFailed: the tag is unknown on this channel.
        """
        if not channel.open:
            raise ConnectionLost(
                "rabbitmq: the channel closed (connection lost?); unacked messages on it go "
                "back to their queue"
            )
        if tag not in channel.unacked:
            raise PreconditionFailed(f"rabbitmq: PRECONDITION_FAILED - unknown delivery tag {tag}")
        tags = sorted(t for t in channel.unacked if t <= tag) if multiple else [tag]
        touched: dict[str, Queue] = {}
        for settled_tag in tags:
            queue, message = channel.unacked.pop(settled_tag)
            queue.unacked -= 1
            if not queue.alive:
                continue
            if not ack:
                if requeue:
                    message.redelivered = True
                    queue.push(message)
                else:
                    self._dead_letter(queue, message, "rejected")
            touched[queue.name] = queue
        for queue in touched.values():
            self._dispatch(queue)

    # --- inspection ---------------------------------------------------------------------

    def queue_info(self, name: str) -> QueueInfo:
        queue = self._queue(name, f"look up queue {name!r}")
        for message in queue.pop_expired(self.world.now()):
            self._dead_letter(queue, message, "expired")
        return describe_queue(queue)

    def snapshot(self, prefix: str) -> RabbitSnapshot:
        exchanges = tuple(
            ExchangeInfo(name=e.name, type=e.type, durable=e.durable)
            for e in sorted(self.exchanges.values(), key=lambda e: e.name)
            if e.name.startswith(prefix)
        )
        bindings = tuple(
            sorted(
                (
                    BindingInfo(
                        exchange=e.name,
                        queue=b.queue,
                        routing_key=b.routing_key,
                        arguments=dict(b.arguments),
                    )
                    for e in self.exchanges.values()
                    for b in e.bindings
                    if e.name.startswith(prefix) or b.queue.startswith(prefix)
                ),
                key=lambda b: (b.exchange, b.queue, b.routing_key),
            )
        )
        queues = tuple(
            describe_queue(q)
            for q in sorted(self.queues.values(), key=lambda q: q.name)
            if q.name.startswith(prefix)
        )
        return RabbitSnapshot(exchanges=exchanges, bindings=bindings, queues=queues)

    def names_with_prefix(self, prefix: str) -> tuple[list[str], list[str]]:
        """(queues, exchanges) whose names start with ``prefix``."""
        queues = sorted(name for name in self.queues if name.startswith(prefix))
        exchanges = sorted(name for name in self.exchanges if name.startswith(prefix))
        return queues, exchanges

    # --- internals: routing, delivery, expiry, dead letters -----------------------------

    def _exchange(self, name: str, what: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"rabbitmq: {what}: NOT_FOUND - no exchange '{name}' in vhost '/'")
        return exchange

    def _queue(self, name: str, what: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"rabbitmq: {what}: NOT_FOUND - no queue '{name}' in vhost '/'")
        return queue

    def _route(
        self, exchange: str, routing_keys: tuple[str, ...], headers: Mapping[str, Any]
    ) -> list[Queue]:
        found: dict[str, Queue] = {}
        if exchange == "":
            for key in routing_keys:
                queue = self.queues.get(key)
                if queue is not None:
                    found.setdefault(queue.name, queue)
            return list(found.values())
        source = self.exchanges.get(exchange)
        if source is None:
            return []
        for binding in source.bindings:
            if any(binding_matches(source.type, binding, key, headers) for key in routing_keys):
                queue = self.queues.get(binding.queue)
                if queue is not None:
                    found.setdefault(queue.name, queue)
        return list(found.values())

    def _enqueue(self, queue: Queue, message: Message) -> None:
        now = self.world.now()
        ttls = [t for t in (queue.ttl_ms, message.expiration_ms) if t is not None]
        copy = Message(
            message_id=message.message_id,
            body=message.body,
            exchange=message.exchange,
            routing_keys=message.routing_keys,
            headers=dict(message.headers),
            priority=message.priority,
            expiration_ms=message.expiration_ms,
            seq=next(self._arrivals),
            expires_at=now + min(ttls) / 1000.0 if ttls else None,
        )
        queue.push(copy)
        # A consumer with credit takes it at once (it never counts towards the length) ...
        self._dispatch(queue)
        # ... otherwise an overflowing queue drops its oldest ready messages (drop-head).
        if queue.max_length is not None:
            while queue.ready > queue.max_length:
                dropped = queue.pop_head()
                if dropped is None:
                    break
                self._dead_letter(queue, dropped, "maxlen")
            self._arm_timer(queue)

    def _dispatch(self, queue: Queue) -> None:
        """Expire what is due at the head, then push ready messages round-robin to consumers
        with credit. Nothing moves while the node is down or paused."""
        if not self.up or not queue.alive or queue.dispatching:
            return
        queue.dispatching = True
        try:
            for expired in queue.pop_expired(self.world.now()):
                self._dead_letter(queue, expired, "expired")
            while queue.ready and queue.alive:
                subscription = self._next_subscription(queue)
                if subscription is None:
                    break
                message = queue.pop_head()
                if message is None:
                    break
                subscription.sink(subscription.channel.track(queue, message))
        finally:
            queue.dispatching = False
        self._arm_timer(queue)

    @staticmethod
    def _next_subscription(queue: Queue) -> Subscription | None:
        for index, subscription in enumerate(queue.subscriptions):
            if subscription.has_credit():
                # Round-robin: whoever just got a message goes to the back of the line.
                queue.subscriptions.append(queue.subscriptions.pop(index))
                return subscription
        return None

    def _arm_timer(self, queue: Queue) -> None:
        when = queue.next_expiry() if queue.alive else None
        if when == queue.timer_at:
            return
        self._cancel_timer(queue)
        if when is None:
            return
        loop = asyncio.get_running_loop()
        queue.timer = loop.call_at(when, self._on_expiry_timer, queue)
        queue.timer_at = when

    @staticmethod
    def _cancel_timer(queue: Queue) -> None:
        if queue.timer is not None:
            queue.timer.cancel()
        queue.timer = None
        queue.timer_at = None

    def _on_expiry_timer(self, queue: Queue) -> None:
        queue.timer = None
        queue.timer_at = None
        if self.up:
            self._dispatch(queue)
        # While down or paused the node does nothing; _on_node_change catches up.

    def _dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        exchange = queue.dead_letter_exchange
        now = self.world.now()
        if exchange is None or (exchange and exchange not in self.exchanges):
            if reason == "expired":
                self.emit(
                    Expired(
                        at=now, broker=SOURCE, destination=queue.name, message_id=message.message_id
                    )
                )
            return
        headers = record_death(message, queue.name, reason, now)
        routing_keys = (
            (queue.dead_letter_routing_key,)
            if queue.dead_letter_routing_key is not None
            else message.routing_keys
        )
        dead = Message(
            message_id=message.message_id,
            body=message.body,
            exchange=exchange,
            routing_keys=routing_keys,
            headers=headers,
            priority=message.priority,
            expiration_ms=None,  # RabbitMQ moves it into x-death: it must not expire again
        )
        deaths = headers["x-death"]
        targets = [
            target
            for target in self._route(exchange, routing_keys, headers)
            if not is_cycle(target.name, reason, deaths)
        ]
        if not targets:
            if reason == "expired":
                self.emit(
                    Expired(
                        at=now, broker=SOURCE, destination=queue.name, message_id=message.message_id
                    )
                )
            return
        self.emit(
            DeadLettered(
                at=now,
                broker=SOURCE,
                source=queue.name,
                target=exchange or routing_keys[0],
                message_id=message.message_id,
                reason=reason,
            )
        )
        for target in targets:
            self._enqueue(target, dead)

    # --- node faults --------------------------------------------------------------------

    def _on_node_change(self, change: NodeChange) -> None:
        if change.node != NODE:
            return
        if change.state is NodeState.DOWN:
            # The process died: every connection (and so every channel) is gone, which puts
            # unacked messages back; what lived only in memory is lost.
            for channel in tuple(self.channels):
                self.close_channel(channel)
            for name in [n for n, q in self.queues.items() if not q.durable]:
                self.delete_queue(name)
            for name in [n for n, e in self.exchanges.items() if not e.durable]:
                self.delete_exchange(name)
            for queue in self.queues.values():
                self._cancel_timer(queue)
        elif change.state is NodeState.UP:
            for queue in tuple(self.queues.values()):
                self._dispatch(queue)
