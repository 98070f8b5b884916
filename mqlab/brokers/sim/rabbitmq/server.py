"""The simulator's RabbitMQ: exchanges, bindings, queues and acknowledgements on virtual time.

Layout (the same places as the real adapter in :mod:`mqlab.brokers.rabbitmq.client`): errors, the
server model (messages, queues, exchanges, channels, :class:`SimRabbitMQServer`), then the
delivery and consumer classes and :class:`SimRabbitMQBroker` with lifecycle, topology,
publish, get/consume, queue operations, inspect/cleanup.

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
import contextlib
import datetime
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.rabbitmq.api import (
    MESSAGE_ID_HEADER,
    AlreadySettled,
    BindingInfo,
    ConnectionLost,
    ExchangeInfo,
    ExchangeType,
    NotFound,
    PreconditionFailed,
    QueueInfo,
    RabbitConsumer,
    RabbitDelivery,
    RabbitMQAPI,
    RabbitMQError,
    RabbitSnapshot,
    Unroutable,
)
from mqlab.brokers.sim.link import (
    SIM_ADDRESS,
    connection_refused,
    connection_silent,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.world import NodeChange, NodeState, NodeUnreachable, SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import (
    Acked,
    BrokerDown,
    BrokerUp,
    DeadLettered,
    Delivered,
    Expired,
    Nacked,
    Observation,
    Produced,
    ProduceFailed,
)

_T = TypeVar("_T")

NODE = "rabbitmq"
"""The simulated node (the lab's process name) that faults target."""

GET_CONSUMER = "basic.get"
"""The consumer name observations use for messages fetched with ``get``."""

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

_EPSILON = 1e-6  # a timer set for an expiry may fire a rounding error early
_HEARTBEAT_MISSES = 3  # silent heartbeats after which a client gives a connection up


# --- errors -------------------------------------------------------------------------------


# --- the server model -----------------------------------------------------------------------


@dataclass(slots=True)
class _Message:
    """A message as one queue holds it (every queue a message is routed to gets a copy)."""

    message_id: str
    body: bytes
    exchange: str
    routing_keys: tuple[str, ...]
    headers: dict[str, Any]
    priority: int | None
    expiration_ms: int | None
    seq: int = 0
    expires_at: float | None = None
    redelivered: bool = False


@dataclass(slots=True)
class _Binding:
    queue: str
    routing_key: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class _Exchange:
    name: str
    type: str
    durable: bool
    bindings: list[_Binding] = field(default_factory=list)


@dataclass(slots=True)
class _Handout:
    """One delivery of a message on a channel (what basic.deliver / basic.get-ok carry)."""

    channel: _Channel
    tag: int
    queue: str
    message: _Message
    redelivered: bool


class _Queue:
    """A classic queue: ready messages per priority level (each a heap by arrival), counters
    and the consumers that messages are pushed to."""

    def __init__(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        self.name = name
        self.durable = durable
        self.arguments = arguments
        self.max_priority: int | None = arguments.get("x-max-priority")
        self.ttl_ms: int | None = arguments.get("x-message-ttl")
        self.dead_letter_exchange: str | None = arguments.get("x-dead-letter-exchange")
        self.dead_letter_routing_key: str | None = arguments.get("x-dead-letter-routing-key")
        self.max_length: int | None = arguments.get("x-max-length")
        self.levels: dict[int, list[tuple[int, _Message]]] = {}
        self.ready = 0
        self.unacked = 0
        self.subscriptions: list[_Subscription] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.alive = True
        self.dispatching = False

    def level_of(self, message: _Message) -> int:
        """The priority level a message waits in (all messages are level 0 without
        ``x-max-priority``; a priority above the maximum counts as the maximum)."""
        if self.max_priority is None:
            return 0
        return min(message.priority or 0, self.max_priority)

    def push(self, message: _Message) -> None:
        """Add a ready message at its position (a requeued one returns to where it was)."""
        heapq.heappush(self.levels.setdefault(self.level_of(message), []), (message.seq, message))
        self.ready += 1

    def head_level(self) -> int | None:
        """The level the next delivery comes from: the highest non-empty one."""
        levels = [level for level, heap in self.levels.items() if heap]
        return max(levels) if levels else None

    def pop_head(self) -> _Message | None:
        level = self.head_level()
        if level is None:
            return None
        _, message = heapq.heappop(self.levels[level])
        self.ready -= 1
        return message

    def pop_expired(self, now: float) -> list[_Message]:
        """Drop the messages whose time is up *at the head* of each level: one that expired
        behind a live head waits until it reaches the head, as in RabbitMQ."""
        expired: list[_Message] = []
        for level in sorted(self.levels, reverse=True):
            heap = self.levels[level]
            while heap and _expired(heap[0][1], now):
                expired.append(heapq.heappop(heap)[1])
                self.ready -= 1
        return expired

    def next_expiry(self) -> float | None:
        heads = [
            heap[0][1].expires_at
            for heap in self.levels.values()
            if heap and heap[0][1].expires_at is not None
        ]
        return min(h for h in heads if h is not None) if heads else None

    def clear(self) -> int:
        dropped = self.ready
        self.levels.clear()
        self.ready = 0
        return dropped


def _expired(message: _Message, now: float) -> bool:
    return message.expires_at is not None and message.expires_at <= now + _EPSILON


class _Channel:
    """An AMQP channel: delivery tags and the messages delivered on it but not yet settled."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.open = True
        self.unacked: dict[int, tuple[_Queue, _Message]] = {}
        self.subscriptions: list[_Subscription] = []
        self._tags = itertools.count(1)

    def track(self, queue: _Queue, message: _Message) -> _Handout:
        tag = next(self._tags)
        self.unacked[tag] = (queue, message)
        queue.unacked += 1
        return _Handout(self, tag, queue.name, message, message.redelivered)

    def untracked(self, queue: _Queue, message: _Message) -> _Handout:
        """A delivery that needs no settling (basic.get with no_ack)."""
        return _Handout(self, next(self._tags), queue.name, message, message.redelivered)


@dataclass(slots=True)
class _Subscription:
    """basic.consume: a queue pushes to ``sink`` while the channel holds fewer than
    ``prefetch`` unacknowledged messages."""

    queue: _Queue
    channel: _Channel
    prefetch: int
    sink: Callable[[_Handout], None]
    on_cancel: Callable[[str], None] | None = None
    """Told when RabbitMQ itself ends the subscription (basic.cancel: its queue was deleted)."""

    def has_credit(self) -> bool:
        return self.channel.open and len(self.channel.unacked) < self.prefetch


class SimRabbitMQServer:
    """One RabbitMQ node of a simulated world, shared by every adapter of that world.

    All methods are synchronous and run between two network legs of a client call; the node's
    own timers (message expiry) run on the world's virtual clock.
    """

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.exchanges: dict[str, _Exchange] = {
            name: _Exchange(name, kind, durable=True)
            for name, kind in PREDECLARED_EXCHANGES.items()
        }
        self.queues: dict[str, _Queue] = {}
        self.channels: list[_Channel] = []
        self._arrivals = itertools.count(1)
        world.watch(self._on_node_change)

    @property
    def up(self) -> bool:
        """The node's process runs (not killed, not paused)."""
        return self.world.is_up(NODE)

    def _emit(self, observation: Observation) -> None:
        self.world.bus.emit(observation)

    # --- topology -----------------------------------------------------------------------

    def declare_exchange(self, name: str, kind: str, durable: bool) -> None:
        existing = self.exchanges.get(name)
        if existing is None:
            self.exchanges[name] = _Exchange(name, kind, durable)
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
            self.queues[name] = _Queue(name, durable, dict(arguments))
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
        binding = _Binding(queue, routing_key, dict(arguments))
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

    def open_channel(self, owner: object) -> _Channel:
        channel = _Channel(owner)
        self.channels.append(channel)
        return channel

    def close_channel(self, channel: _Channel) -> None:
        """Close a channel: its consumers are cancelled and every message it holds unacked
        goes back to its queue, at its original position, flagged redelivered."""
        if not channel.open:
            return
        channel.open = False
        if channel in self.channels:
            self.channels.remove(channel)
        for subscription in tuple(channel.subscriptions):
            self.cancel(subscription)
        touched: dict[str, _Queue] = {}
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

    def publish(self, exchange: str, routing_key: str, message: _Message, mandatory: bool) -> int:
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

    def get(self, name: str, channel: _Channel, no_ack: bool) -> _Handout | None:
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
        channel: _Channel,
        prefetch: int,
        sink: Callable[[_Handout], None],
        on_cancel: Callable[[str], None] | None = None,
    ) -> _Subscription:
        queue = self._queue(name, f"consume from {name!r}")
        subscription = _Subscription(queue, channel, prefetch, sink, on_cancel)
        queue.subscriptions.append(subscription)
        channel.subscriptions.append(subscription)
        self._dispatch(queue)
        return subscription

    def cancel(self, subscription: _Subscription) -> None:
        if subscription in subscription.queue.subscriptions:
            subscription.queue.subscriptions.remove(subscription)
        if subscription in subscription.channel.subscriptions:
            subscription.channel.subscriptions.remove(subscription)

    def settle(self, channel: _Channel, tag: int, *, ack: bool, requeue: bool) -> None:
        """basic.ack / basic.nack on ``channel``.

        Raises:
            ConnectionLost: the channel is closed (its messages were already requeued).
            PreconditionFailed: the tag is unknown on this channel.
        """
        if not channel.open:
            raise ConnectionLost(
                "rabbitmq: the channel closed (connection lost?); unacked messages on it go "
                "back to their queue"
            )
        entry = channel.unacked.pop(tag, None)
        if entry is None:
            raise PreconditionFailed(f"rabbitmq: PRECONDITION_FAILED - unknown delivery tag {tag}")
        queue, message = entry
        queue.unacked -= 1
        if not queue.alive:
            return
        if not ack:
            if requeue:
                message.redelivered = True
                queue.push(message)
            else:
                self._dead_letter(queue, message, "rejected")
        self._dispatch(queue)

    # --- inspection ---------------------------------------------------------------------

    def queue_info(self, name: str) -> QueueInfo:
        queue = self._queue(name, f"look up queue {name!r}")
        for message in queue.pop_expired(self.world.now()):
            self._dead_letter(queue, message, "expired")
        return _queue_info(queue)

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
            _queue_info(q)
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

    def _exchange(self, name: str, what: str) -> _Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"rabbitmq: {what}: NOT_FOUND - no exchange '{name}' in vhost '/'")
        return exchange

    def _queue(self, name: str, what: str) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"rabbitmq: {what}: NOT_FOUND - no queue '{name}' in vhost '/'")
        return queue

    def _route(
        self, exchange: str, routing_keys: tuple[str, ...], headers: Mapping[str, Any]
    ) -> list[_Queue]:
        found: dict[str, _Queue] = {}
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
            if any(_binding_matches(source.type, binding, key, headers) for key in routing_keys):
                queue = self.queues.get(binding.queue)
                if queue is not None:
                    found.setdefault(queue.name, queue)
        return list(found.values())

    def _enqueue(self, queue: _Queue, message: _Message) -> None:
        now = self.world.now()
        ttls = [t for t in (queue.ttl_ms, message.expiration_ms) if t is not None]
        copy = _Message(
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

    def _dispatch(self, queue: _Queue) -> None:
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
    def _next_subscription(queue: _Queue) -> _Subscription | None:
        for index, subscription in enumerate(queue.subscriptions):
            if subscription.has_credit():
                # Round-robin: whoever just got a message goes to the back of the line.
                queue.subscriptions.append(queue.subscriptions.pop(index))
                return subscription
        return None

    def _arm_timer(self, queue: _Queue) -> None:
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
    def _cancel_timer(queue: _Queue) -> None:
        if queue.timer is not None:
            queue.timer.cancel()
        queue.timer = None
        queue.timer_at = None

    def _on_expiry_timer(self, queue: _Queue) -> None:
        queue.timer = None
        queue.timer_at = None
        if self.up:
            self._dispatch(queue)
        # While down or paused the node does nothing; _on_node_change catches up.

    def _dead_letter(self, queue: _Queue, message: _Message, reason: str) -> None:
        exchange = queue.dead_letter_exchange
        now = self.world.now()
        if exchange is None or (exchange and exchange not in self.exchanges):
            if reason == "expired":
                self._emit(
                    Expired(
                        at=now, broker=SOURCE, destination=queue.name, message_id=message.message_id
                    )
                )
            return
        headers = _record_death(message, queue.name, reason, now)
        routing_keys = (
            (queue.dead_letter_routing_key,)
            if queue.dead_letter_routing_key is not None
            else message.routing_keys
        )
        dead = _Message(
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
            if not _is_cycle(target.name, reason, deaths)
        ]
        if not targets:
            if reason == "expired":
                self._emit(
                    Expired(
                        at=now, broker=SOURCE, destination=queue.name, message_id=message.message_id
                    )
                )
            return
        self._emit(
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


def _queue_info(queue: _Queue) -> QueueInfo:
    return QueueInfo(
        name=queue.name,
        ready=queue.ready,
        unacked=queue.unacked,
        consumers=len(queue.subscriptions),
        max_priority=queue.max_priority,
        message_ttl_ms=queue.ttl_ms,
        dead_letter_exchange=queue.dead_letter_exchange,
        dead_letter_routing_key=queue.dead_letter_routing_key,
        max_length=queue.max_length,
        durable=queue.durable,
    )


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic matching: words split on ``.``; ``*`` is exactly one word, ``#`` zero
    or more. An empty key has no words (so only patterns like ``#`` match it)."""
    words = routing_key.split(".") if routing_key else []
    parts = pattern.split(".") if pattern else []
    # matches[i][j]: parts[i:] matches words[j:]
    matches = [[False] * (len(words) + 1) for _ in range(len(parts) + 1)]
    matches[len(parts)][len(words)] = True
    for i in range(len(parts) - 1, -1, -1):
        for j in range(len(words), -1, -1):
            part = parts[i]
            if part == "#":
                matches[i][j] = matches[i + 1][j] or (j < len(words) and matches[i][j + 1])
            elif j < len(words) and part in ("*", words[j]):
                matches[i][j] = matches[i + 1][j + 1]
    return matches[0][0]


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """A headers-exchange binding: ``x-match`` ``all`` (default) or ``any``; keys starting with
    ``x-`` take part only with ``all-with-x`` / ``any-with-x``. A binding value of ``None``
    matches on the key's presence alone."""
    mode = str(arguments.get("x-match", "all"))
    with_x = mode.endswith("-with-x")
    wanted = {
        key: value
        for key, value in arguments.items()
        if key != "x-match" and (with_x or not key.startswith("x-"))
    }
    results = (
        key in headers and (value is None or headers[key] == value) for key, value in wanted.items()
    )
    if mode.startswith("any"):
        return any(results)
    return all(results)


def _binding_matches(
    kind: str, binding: _Binding, routing_key: str, headers: Mapping[str, Any]
) -> bool:
    if kind == "fanout":
        return True
    if kind == "direct":
        return binding.routing_key == routing_key
    if kind == "topic":
        return topic_matches(binding.routing_key, routing_key)
    return headers_match(binding.arguments, headers)


def _record_death(message: _Message, queue: str, reason: str, now: float) -> dict[str, Any]:
    """The message's headers with this death added to ``x-death`` the way RabbitMQ does it:
    a repeat of (queue, reason) increments that entry's count and moves it to the front."""
    headers = dict(message.headers)
    deaths: list[dict[str, Any]] = [dict(entry) for entry in headers.get("x-death") or []]
    for index, entry in enumerate(deaths):
        if entry.get("queue") == queue and entry.get("reason") == reason:
            deaths.pop(index)
            entry["count"] = int(entry.get("count", 0)) + 1
            break
    else:
        entry = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC),
            "exchange": message.exchange,
            "routing-keys": list(message.routing_keys),
        }
        if message.expiration_ms is not None:
            entry["original-expiration"] = str(message.expiration_ms)
    deaths.insert(0, entry)
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", message.exchange)
    return headers


def _is_cycle(target: str, reason: str, deaths: list[dict[str, Any]]) -> bool:
    """RabbitMQ drops a dead letter that would go round a loop with no rejection in it (only
    expiries / overflows), which would otherwise circle forever."""
    if reason == "rejected":
        return False
    since: list[dict[str, Any]] = []
    for entry in deaths:  # newest first
        if entry.get("queue") == target:
            return all(e.get("reason") != "rejected" for e in (entry, *since))
        since.append(entry)
    return False


# --- deliveries and consumers ---------------------------------------------------------------


class _SimDelivery(RabbitDelivery):
    """One message handed to mqlab code, settled through the channel it arrived on."""

    def __init__(
        self, broker: SimRabbitMQBroker, handout: _Handout, *, consumer: str, no_ack: bool
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


class _SimConsumer(RabbitConsumer):
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
        self._buffer: deque[_Handout] = deque()
        self._in_transit: deque[_Handout] = deque()
        self._courier: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._channel: _Channel | None = None
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

    def _push(self, handout: _Handout) -> None:
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


# --- the adapter ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _QueueDeclaration:
    """What this adapter declared, to re-declare it identically after a reconnect."""

    name: str
    durable: bool
    arguments: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class _BindingDeclaration:
    queue: str
    exchange: str
    routing_key: str
    arguments: tuple[tuple[str, Any], ...]


class SimRabbitMQBroker(RabbitMQAPI):
    """The simulator's RabbitMQ adapter: the real adapter's interface and behaviour over the
    world's shared :class:`SimRabbitMQServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        bus, namespace, endpoints, connect_timeout: see :class:`mqlab.brokers.base.Broker`
            (``bus`` defaults to the world's; ``namespace`` to a deterministic one).
        operation_timeout, reconnect_interval, heartbeat: as for the real adapter, in virtual
            seconds.
    """

    backend = "sim"

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
        operation_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        heartbeat: int = 5,
    ) -> None:
        if world is not None and bus is not None and bus is not world.bus:
            raise BrokerError("a simulated adapter emits on its world's bus: pass one of them")
        self._owns_world = world is None
        self.world = world if world is not None else SimWorld(bus=bus)
        super().__init__(
            bus=self.world.bus,
            namespace=namespace or self.world.new_namespace(),
            endpoints=endpoints,
            connect_timeout=connect_timeout,
        )
        self.operation_timeout = operation_timeout
        self.reconnect_interval = reconnect_interval
        self.heartbeat = heartbeat
        self.address = f"{SIM_ADDRESS} ({NODE})"
        self._server: SimRabbitMQServer | None = None
        self._getter: _Channel | None = None
        # A dict, not a set: iteration order must not depend on memory addresses (same seed,
        # same run).
        self._consumers: dict[_SimConsumer, None] = {}
        self._exchanges: dict[str, tuple[str, bool]] = {}
        self._queues: dict[str, _QueueDeclaration] = {}
        self._bindings: dict[_BindingDeclaration, None] = {}
        self._message_ids = itertools.count(1)
        self._consumer_ids = itertools.count(1)
        self._link_up = False
        self._link_ready = asyncio.Event()
        self._closing = False
        self._monitor: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None

    def qualify(self, logical_name: str) -> str:
        """The broker-side name; the default exchange, ``amq.*`` and names that already carry
        this namespace are left alone (so names read back from the broker can be passed in)."""
        if (
            not logical_name
            or logical_name.startswith("amq.")
            or logical_name.startswith(f"{self.namespace}-")
        ):
            return logical_name
        return super().qualify(logical_name)

    def _qualify_queue(self, name: str) -> str:
        if not name:
            raise RabbitMQError("rabbitmq: a queue name must not be empty")
        return self.qualify(name)

    # --- lifecycle ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        world = self.world
        server = world.model("rabbitmq", lambda: SimRabbitMQServer(world))
        refused = connection_refused(world, NODE)
        if refused is not None:
            raise BrokerUnavailable(self.system, self.address, refused)
        try:
            await within(self.connect_timeout, self._handshake())
        except TimeoutError:
            raise BrokerUnavailable(self.system, self.address, "timed out") from None
        except NodeUnreachable as error:
            raise BrokerUnavailable(self.system, self.address, error.reason) from None
        self._closing = False
        self._server = server
        self._link_up = True
        self._link_ready.set()
        self._monitor = world.spawn(self._watch_link(), name=f"rabbitmq link {self.namespace}")

    async def _handshake(self) -> None:
        await self.world.transmit(NODE, "upstream")
        await self.world.transmit(NODE, "downstream")

    async def _close(self) -> None:
        self._closing = True
        for consumer in tuple(self._consumers):
            await consumer.close()
        for task in (self._monitor, self._reconnector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._monitor = self._reconnector = None
        if self._server is not None:
            self._server.close_channels_of(self)
        self._server = None
        self._getter = None
        self._link_up = False
        self._link_ready.clear()
        if self._owns_world:
            await self.world.aclose()

    async def _watch_link(self) -> None:
        """React like the client's connection: a refused/reset path drops it at once, a silent
        one after three missed heartbeats."""
        world = self.world
        while not self._closing:
            refused = connection_refused(world, NODE)
            if refused is not None:
                self._lose_link(refused)
            elif self._link_up and connection_silent(world, NODE):
                try:
                    await within(self.heartbeat * _HEARTBEAT_MISSES, world.next_change(NODE))
                except TimeoutError:
                    self._lose_link("missed heartbeats")
                continue
            await world.next_change(NODE)

    def _lose_link(self, reason: str) -> None:
        if not self._link_up or self._closing:
            return
        self._link_up = False
        self._link_ready.clear()
        if self._server is not None:
            self._server.close_channels_of(self)
        for consumer in self._consumers:
            consumer._drop_stale()
        self._getter = None
        self.emit(
            BrokerDown(
                at=self.world.now(),
                broker=self.name,
                node=NODE,
                detail=f"connection to {self.address} lost: {reason}",
            )
        )
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = self.world.spawn(
                self._reconnect(), name=f"rabbitmq reconnect {self.namespace}"
            )

    async def _reconnect(self) -> None:
        world = self.world
        while not self._closing:
            await asyncio.sleep(self.reconnect_interval)
            if connection_refused(world, NODE) is not None or connection_silent(world, NODE):
                continue
            try:
                await within(self.connect_timeout, self._handshake())
            except (TimeoutError, NodeUnreachable):
                continue
            recovered = self._recover_topology()
            self._link_up = True
            self._link_ready.set()
            self.emit(
                BrokerUp(
                    at=world.now(),
                    broker=self.name,
                    node=NODE,
                    detail=f"reconnected to {self.address}; re-declared {recovered}",
                )
            )
            return

    def _recover_topology(self) -> str:
        """Re-declare what this adapter declared (as the official clients do) and re-subscribe
        its consumers (aio-pika's robust channels)."""
        server = self._require_server()
        for name, (kind, durable) in self._exchanges.items():
            with contextlib.suppress(BrokerError):
                server.declare_exchange(name, kind, durable)
        for declaration in self._queues.values():
            with contextlib.suppress(BrokerError):
                server.declare_queue(
                    declaration.name, declaration.durable, dict(declaration.arguments)
                )
        for binding in self._bindings:
            with contextlib.suppress(BrokerError):
                server.bind(
                    binding.queue, binding.exchange, binding.routing_key, dict(binding.arguments)
                )
        for consumer in self._consumers:
            try:
                consumer._subscribe(server)
            except NotFound:
                # Its queue did not survive and this adapter did not declare it: end this
                # consumer (next() says why), as the real adapter does.
                consumer._lost = f"rabbitmq: queue {consumer.queue!r} is gone after a reconnect"
        return (
            f"{len(self._exchanges)} exchanges, {len(self._queues)} queues, "
            f"{len(self._bindings)} bindings"
        )

    # --- topology -----------------------------------------------------------------------------

    async def declare_exchange(
        self, name: str, type: ExchangeType = "direct", *, durable: bool = True
    ) -> None:
        """Declare an exchange (idempotent for identical arguments).

        Raises:
            PreconditionFailed: it exists with another type or durability.
        """
        full = self.qualify(name)
        if not full or full.startswith("amq."):
            raise RabbitMQError(f"rabbitmq: {name!r} is predefined; declare your own exchange")
        server = self._require_server()
        await self._rpc(
            f"declare exchange {full!r}", lambda: server.declare_exchange(full, type, durable)
        )
        self._exchanges[full] = (type, durable)

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        max_priority: int | None = None,
        message_ttl_ms: int | None = None,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
        max_length: int | None = None,
    ) -> None:
        """Declare a queue with the ``x-*`` arguments the course teaches.

        ``dead_letter_exchange=""`` is the default exchange; then the dead-letter routing key
        names a queue and is qualified like one.

        Raises:
            PreconditionFailed: the queue exists with other arguments.
        """
        full = self._qualify_queue(name)
        arguments: dict[str, Any] = {}
        if max_priority is not None:
            if not 1 <= max_priority <= 255:
                raise RabbitMQError(f"rabbitmq: max_priority must be 1..255, not {max_priority}")
            arguments["x-max-priority"] = max_priority
        if message_ttl_ms is not None:
            if message_ttl_ms < 0:
                raise RabbitMQError("rabbitmq: message_ttl_ms must not be negative")
            arguments["x-message-ttl"] = message_ttl_ms
        if dead_letter_exchange is not None:
            arguments["x-dead-letter-exchange"] = self.qualify(dead_letter_exchange)
        if dead_letter_routing_key is not None:
            arguments["x-dead-letter-routing-key"] = (
                self.qualify(dead_letter_routing_key)
                if dead_letter_exchange == ""
                else dead_letter_routing_key
            )
        if max_length is not None:
            if max_length < 0:
                raise RabbitMQError("rabbitmq: max_length must not be negative")
            arguments["x-max-length"] = max_length
        server = self._require_server()
        await self._rpc(
            f"declare queue {full!r}", lambda: server.declare_queue(full, durable, arguments)
        )
        self._queues[full] = _QueueDeclaration(full, durable, tuple(sorted(arguments.items())))

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind ``queue`` to ``exchange`` (``arguments`` for headers exchanges: x-match ...).

        Raises:
            NotFound: the queue or the exchange does not exist.
        """
        full_queue = self._qualify_queue(queue)
        full_exchange = self.qualify(exchange)
        binding_arguments = dict(arguments or {})
        server = self._require_server()
        await self._rpc(
            f"bind {full_queue!r} to {full_exchange!r}",
            lambda: server.bind(full_queue, full_exchange, routing_key, binding_arguments),
        )
        declaration = _BindingDeclaration(
            full_queue, full_exchange, routing_key, tuple(sorted(binding_arguments.items()))
        )
        self._bindings[declaration] = None

    # --- publish ------------------------------------------------------------------------------

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        expiration_ms: int | None = None,
        message_id: str | None = None,
        mandatory: bool = False,
    ) -> str:
        """Publish a persistent message and wait for the (simulated) confirm; returns its id.

        Emits ``Produced`` on the confirm, ``ProduceFailed`` otherwise.

        Raises:
            Unroutable: ``mandatory`` and no queue matched.
            NotFound: the exchange does not exist.
            OperationTimedOut / ConnectionLost: no confirm within ``operation_timeout``.
        """
        message_id = message_id or f"{self.namespace}-{next(self._message_ids)}"
        full_exchange = self.qualify(exchange)
        full_key = self.qualify(routing_key) if exchange == "" else routing_key
        destination = full_exchange or full_key
        try:
            if priority is not None and not 0 <= priority <= 255:
                raise RabbitMQError(f"rabbitmq: priority must be 0..255, not {priority}")
            if expiration_ms is not None and expiration_ms < 0:
                raise RabbitMQError("rabbitmq: expiration_ms must not be negative")
            message = _Message(
                message_id=message_id,
                body=bytes(body),
                exchange=full_exchange,
                routing_keys=(full_key,),
                headers={**(headers or {}), MESSAGE_ID_HEADER: message_id},
                priority=priority,
                expiration_ms=expiration_ms,
            )
            server = self._require_server()
            await self._rpc(
                f"publish to {destination!r}",
                lambda: server.publish(full_exchange, full_key, message, mandatory),
                nbytes=len(message.body),
            )
        except BrokerError as error:
            self.emit(
                ProduceFailed(
                    at=self.world.now(),
                    broker=self.name,
                    destination=destination,
                    message_id=message_id,
                    error=str(error),
                    key=routing_key,
                )
            )
            raise
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=destination,
                message_id=message_id,
                key=routing_key,
            )
        )
        return message_id

    # --- get and consume ----------------------------------------------------------------------

    async def get(self, queue: str, *, no_ack: bool = False) -> RabbitDelivery | None:
        """basic.get one message, or None if the queue has no ready message.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self._qualify_queue(queue)
        server = self._require_server()
        handout = await self._rpc(
            f"get from {full!r}", lambda: server.get(full, self._getter_channel(), no_ack)
        )
        if handout is None:
            return None
        return self._delivered(handout, consumer=GET_CONSUMER, no_ack=no_ack)

    async def consume(
        self, queue: str, *, prefetch: int = 10, name: str | None = None
    ) -> RabbitConsumer:
        """Start a consumer on its own channel with at most ``prefetch`` unacked messages.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self._qualify_queue(queue)
        if prefetch < 1:
            raise RabbitMQError("rabbitmq: prefetch must be at least 1")
        consumer = _SimConsumer(
            self,
            name=name or f"consumer-{next(self._consumer_ids)}",
            queue=full,
            prefetch=prefetch,
        )
        server = self._require_server()
        await self._rpc(f"consume from {full!r}", lambda: consumer._subscribe(server))
        self._consumers[consumer] = None
        return consumer

    def _delivered(self, handout: _Handout, *, consumer: str, no_ack: bool = False) -> _SimDelivery:
        delivery = _SimDelivery(self, handout, consumer=consumer, no_ack=no_ack)
        self.emit(
            Delivered(
                at=self.world.now(),
                broker=self.name,
                destination=delivery.queue,
                message_id=delivery.message_id,
                consumer=consumer,
                key=delivery.routing_key,
                delivery_count=delivery.delivery_count,
                redelivered=delivery.redelivered,
            )
        )
        return delivery

    # --- queue operations ---------------------------------------------------------------------

    async def purge_queue(self, name: str) -> int:
        """Drop every ready message (unacked ones stay); returns how many."""
        full = self._qualify_queue(name)
        server = self._require_server()
        return await self._rpc(f"purge {full!r}", lambda: server.purge(full))

    async def delete_queue(self, name: str) -> None:
        """Delete a queue (no error if gone); this adapter's consumers on it are closed first."""
        full = self._qualify_queue(name)
        for consumer in tuple(self._consumers):
            if consumer.queue == full:
                await consumer.close()
        server = self._require_server()
        await self._rpc(f"delete queue {full!r}", lambda: server.delete_queue(full))
        self._forget_queue(full)

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange and its bindings (no error if gone)."""
        full = self.qualify(name)
        if not full or full.startswith("amq."):
            raise RabbitMQError(f"rabbitmq: {name!r} is predefined and cannot be deleted")
        server = self._require_server()
        await self._rpc(f"delete exchange {full!r}", lambda: server.delete_exchange(full))
        self._exchanges.pop(full, None)
        for binding in [b for b in self._bindings if b.exchange == full]:
            del self._bindings[binding]

    async def queue_info(self, name: str) -> QueueInfo:
        """Depth of one queue (ready / unacked / consumers) and its arguments.

        Raises:
            NotFound: the queue does not exist.
        """
        full = self._qualify_queue(name)
        server = self._require_server()
        return await self._rpc(f"look up queue {full!r}", lambda: server.queue_info(full))

    # --- inspect and cleanup ------------------------------------------------------------------

    async def inspect(self) -> RabbitSnapshot:
        """Exchanges (with type), bindings and queues (ready / unacked / consumers and their
        arguments) of this namespace, in one consistent sample."""
        server = self._require_server()
        prefix = f"{self.namespace}-"
        return await self._rpc("inspect", lambda: server.snapshot(prefix))

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
            for queue in sorted(set(queues) | set(self._queues)):
                server.delete_queue(queue)
            for exchange in sorted(set(exchanges) | set(self._exchanges)):
                server.delete_exchange(exchange)

        await self._rpc(f"clean up namespace {self.namespace!r}", delete_all)
        self._queues.clear()
        self._exchanges.clear()
        self._bindings.clear()

    # --- helpers ------------------------------------------------------------------------------

    def _require_server(self) -> SimRabbitMQServer:
        if self._server is None:
            raise RabbitMQError("rabbitmq: not connected (use `async with SimRabbitMQBroker()`)")
        return self._server

    def _getter_channel(self) -> _Channel:
        if self._getter is None or not self._getter.open:
            self._getter = self._require_server().open_channel(self)
        return self._getter

    async def _rpc(self, what: str, action: Callable[[], _T], *, nbytes: int = 0) -> _T:
        """One request/response over the simulated network, bounded by ``operation_timeout``.

        While the connection is down the call waits for the reconnect (as aio-pika's robust
        connection does). A request already sent when the caller gives up still reaches the
        node (a paused node acts on it when resumed); one that a reset or a killed node loses
        on the way is retried on the new connection. A connection that breaks after the node
        acted raises :class:`ConnectionLost` (the effect happened, the answer is lost).
        """
        if self._link_up and self.world.clear_path(NODE):
            return action()  # nothing on the way: the round trip takes no virtual time
        try:
            async with asyncio.timeout(self.operation_timeout):
                while True:
                    await self._link_ready.wait()
                    try:
                        result = await outlive_caller(
                            self.world, self._send(action, nbytes), f"rabbitmq {what}"
                        )
                    except NodeUnreachable as error:
                        self._lose_link(error.reason)
                        continue
                    try:
                        await self.world.transmit(NODE, "downstream")
                    except NodeUnreachable as error:
                        self._lose_link(error.reason)
                        raise ConnectionLost(f"rabbitmq: {what}: {error.reason}") from None
                    return result
        except TimeoutError:
            state = (
                f"the connection to {self.address} is down, reconnecting"
                if not self._link_up
                else "no answer"
            )
            raise OperationTimedOut(
                f"rabbitmq: {what} did not finish within {self.operation_timeout:g}s ({state})"
            ) from None

    async def _send(self, action: Callable[[], _T], nbytes: int) -> _T:
        """The request leg (``nbytes`` of payload): travel to the node (a reset or killed node
        loses it on the way), then let the node act."""
        await self.world.transmit(NODE, "upstream", nbytes)
        return action()

    def _forget_queue(self, name: str) -> None:
        self._queues.pop(name, None)
        for binding in [b for b in self._bindings if b.queue == name]:
            del self._bindings[binding]
