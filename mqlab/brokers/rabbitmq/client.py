"""The real RabbitMQ adapter: aio-pika over AMQP 0-9-1, plus the management HTTP API.

Layout (the same in every system's package): this module is the adapter,
:class:`RabbitMQBroker`, with lifecycle, topology, publish, get/consume, queue operations,
inspect/cleanup and its helpers at the end; its deliveries and consumers are in
:mod:`~mqlab.brokers.rabbitmq.consumer`.

Names. Methods take *logical* names (``"work"``) and qualify them with the adapter's namespace
(``"mq-3f2a9c-work"``); a name that already carries the namespace, the default exchange ``""``
and the predefined ``amq.*`` exchanges are used as they are. Everything that comes back from the
broker (deliveries, ``x-death`` entries, :class:`QueueInfo`, :class:`RabbitSnapshot`,
observations) uses the broker-side name, exactly what ``rabbitmqctl`` and the management UI
show; :meth:`Broker.unqualify` shortens it for display. When a routing key names a queue (the
default exchange, or a dead-letter routing key towards the default exchange) it is qualified
too.

Channels. One aio-pika robust connection (what ``connect_robust`` builds; created directly so
that a connect timeout can close it) reconnects by itself and carries plain channels:

* a publisher channel with confirms: ``publish`` returns only once RabbitMQ confirmed;
* a ``basic.get`` channel (a fetched message must be settled on the channel it came from);
* one channel per consumer with its own prefetch;
* short-lived scratch channels for declarations, deletions and passive declares, because a
  failing AMQP method (404, 406) closes the channel it ran on and must not take the others down.

After a reconnect the adapter re-declares the exchanges, queues and bindings it declared
(topology recovery, as the official clients do), re-subscribes its consumers, then emits
``BrokerUp``. Doing this itself rather than through aio-pika's robust channels keeps the order
right (queues before consumers) and lets a consumer whose queue is gone end with a clear error
instead of the connection retrying forever. So after a broker
restart a durable queue comes back with its persistent messages, while a non-durable queue comes
back *empty*: its messages died with the broker process.

Dead-letter observations. RabbitMQ dead-letters silently, so the adapter infers them from two
sources and never reports the same death twice: (1) ``nack``/``reject`` without requeue on a
queue this adapter declared with a dead-letter exchange is reported at once (reason
``rejected``); (2) a delivery whose ``x-death`` header carries an entry with a higher count than
this adapter has seen for that message is reported when it is delivered (this is how TTL
expiry and max-length overflow show up; they are only seen once someone consumes from the
dead-letter target).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import struct
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, Unpack
from urllib.parse import quote

import aio_pika
import aiormq
import httpx
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from yarl import URL

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.rabbitmq.api import (
    GET_CONSUMER,
    BindingInfo,
    ConnectionLost,
    ExchangeInfo,
    NotFound,
    PreconditionFailed,
    Publication,
    PublishRejected,
    QueueInfo,
    RabbitConsumer,
    RabbitDelivery,
    RabbitMQAPI,
    RabbitMQError,
    RabbitMQOptions,
    RabbitSnapshot,
    Unroutable,
)
from mqlab.brokers.rabbitmq.consumer import Consumer, Delivery
from mqlab.observe.events import (
    DeadLettered,
)

_T = TypeVar("_T")

# aio-pika and aiormq log every failed reconnect attempt (with tracebacks) at WARNING; with no
# logging configured Python prints those to stderr, in the middle of a learner's terminal. The
# adapter reports the same facts as BrokerDown/BrokerUp observations, so their records only go
# where the application's own logging config sends them.
for _client_logger in ("aio_pika", "aiormq"):
    logging.getLogger(_client_logger).addHandler(logging.NullHandler())

NODE = "rabbitmq"
"""The node name in BrokerDown/BrokerUp observations (the lab's process name)."""

PERSISTENT = 2
"""AMQP delivery mode 2: written to disk in a durable queue, so it survives a broker restart."""


_SEEN_DEATHS_LIMIT = 100_000  # bounded memory for x-death attribution on long runs


# --- the adapter ------------------------------------------------------------------------------


class RabbitMQBroker(RabbitMQAPI):
    """RabbitMQ through aio-pika (AMQP) and the management HTTP API (inspect, cleanup).

    Args:
        options: see :class:`~mqlab.brokers.rabbitmq.api.RabbitMQAPI`.
    """

    def __init__(self, **options: Unpack[RabbitMQOptions]) -> None:
        super().__init__(**options)
        url = URL(self.endpoints.rabbitmq_url)
        self.address = f"{url.host}:{url.port}"
        self.vhost = url.path[1:] or "/"
        self._url = url
        self._connection: aio_pika.RobustConnection | None = None
        self._publisher: aiormq.abc.AbstractChannel | None = None
        self._getter: aiormq.abc.AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._consumers: set[Consumer] = set()
        self._seen_deaths: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self.link_up = False
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        self._closing = False
        connection = aio_pika.RobustConnection(
            self._url.update_query(heartbeat=str(self.heartbeat)),
            reconnect_interval=self.reconnect_interval,
            client_properties={"connection_name": f"mqlab {self.namespace}"},
        )
        try:
            async with asyncio.timeout(self.connect_timeout):
                await connection.connect(timeout=self.connect_timeout)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as error:
            with contextlib.suppress(Exception):
                await connection.close()
            raise BrokerUnavailable(self.system, self.address, _describe(error)) from None
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connection = connection
        self.link_up = True
        user, password = self._url.user or "guest", self._url.password or "guest"
        self._http = httpx.AsyncClient(
            base_url=self.endpoints.rabbitmq_management_url,
            auth=(user, password),
            timeout=httpx.Timeout(self.operation_timeout, connect=self.connect_timeout),
        )

    async def _close(self) -> None:
        self._closing = True
        for consumer in tuple(self._consumers):
            with contextlib.suppress(Exception):
                await consumer.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.operation_timeout):
                    await connection.close()
        self._publisher = self._getter = None
        self.link_up = False

    def _on_connection_lost(self, _sender: object, error: BaseException | None) -> None:
        if self._closing or not self.link_up:
            return
        self.link_up = False
        self.report_node_down(NODE, f"connection to {self.address} lost: {_describe(error)}")

    async def _on_reconnected(self, _sender: object) -> None:
        if self._closing:
            return
        detail = f"reconnected to {self.address}"
        try:
            recovered = await self._recover_topology()
            detail += f"; re-declared {recovered}"
        except Exception as error:  # never let a recovery problem break the reconnect loop
            detail += f"; topology recovery failed: {_describe(error)}"
        self.link_up = True
        self.report_node_up(NODE, detail)

    async def _recover_topology(self) -> str:
        """Declare again what this adapter declared, and re-subscribe its consumers.

        Each request has its own ``operation_timeout`` (:meth:`bounded`), as it has in normal
        use: a node slow after its restart, or a slow network, answers each in time, where one
        bound for the whole recovery cut a namespace of many declarations off halfway (what
        was not declared again stayed missing, while ``BrokerUp`` said the link was back).
        """
        declared = self.declared
        async with contextlib.AsyncExitStack() as scratch:
            channel = await self.bounded(
                "open a channel to recover the topology",
                scratch.enter_async_context(self._scratch()),
            )
            for name, (kind, durable) in declared.exchanges.items():
                await self.bounded(
                    f"declare exchange {name!r} again",
                    channel.exchange_declare(name, exchange_type=kind, durable=durable),
                )
            for declaration in declared.queues.values():
                await self.bounded(
                    f"declare queue {declaration.name!r} again",
                    channel.queue_declare(
                        declaration.name,
                        durable=declaration.durable,
                        arguments=dict(declaration.arguments),
                    ),
                )
            for binding in declared.bindings:
                await self.bounded(
                    f"bind {binding.queue!r} to {binding.exchange!r} again",
                    channel.queue_bind(
                        binding.queue,
                        binding.exchange,
                        routing_key=binding.routing_key,
                        arguments=dict(binding.arguments),
                    ),
                )
        resubscribed = 0
        for consumer in tuple(self._consumers):
            try:
                await self.bounded(f"re-subscribe to {consumer.queue!r}", consumer.subscribe())
                resubscribed += 1
            except NotFound:
                # Its queue did not survive and this adapter did not declare it: end this
                # consumer (next() says why) instead of retrying forever.
                consumer.lost = f"rabbitmq: queue {consumer.queue!r} is gone after a reconnect"
        return f"{declared.summary()}, re-subscribed {resubscribed} consumers"

    # --- topology (the checks and the record are in RabbitMQAPI) -----------------------------

    async def _declare_exchange(self, name: str, kind: str, durable: bool) -> None:
        await self._admin(
            f"declare exchange {name!r}",
            lambda channel: channel.exchange_declare(name, exchange_type=kind, durable=durable),
        )

    async def _declare_queue(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        await self._admin(
            f"declare queue {name!r}",
            lambda channel: channel.queue_declare(name, durable=durable, arguments=arguments),
        )

    async def _bind_queue(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any]
    ) -> None:
        await self._admin(
            f"bind {queue!r} to {exchange!r}",
            lambda channel: channel.queue_bind(
                queue, exchange, routing_key=routing_key, arguments=arguments
            ),
        )

    async def _delete_queue(self, name: str) -> None:
        for consumer in tuple(self._consumers):
            if consumer.queue == name:
                await consumer.close()
        await self._admin(f"delete queue {name!r}", lambda channel: channel.queue_delete(name))

    async def _delete_exchange(self, name: str) -> None:
        await self._admin(
            f"delete exchange {name!r}", lambda channel: channel.exchange_delete(name)
        )

    # --- publish ------------------------------------------------------------------------------

    async def _publish(self, publication: Publication) -> None:
        """basic.publish on the confirming channel; waits for the confirm within
        ``operation_timeout``."""
        properties = spec.Basic.Properties(
            headers=publication.headers,
            priority=publication.priority,
            expiration=(
                str(publication.expiration_ms) if publication.expiration_ms is not None else None
            ),
            message_id=publication.message_id,
            delivery_mode=PERSISTENT,
        )

        async def send() -> object:
            channel = await self._channel("publisher")
            try:
                return await channel.basic_publish(
                    publication.body,
                    exchange=publication.exchange,
                    routing_key=publication.routing_key,
                    properties=properties,
                    mandatory=publication.mandatory,
                )
            except (TypeError, ValueError, struct.error) as error:
                # Raised while encoding, before anything was sent (e.g. a set in headers).
                raise RabbitMQError(
                    f"rabbitmq: cannot encode message {publication.message_id}: {_describe(error)}"
                ) from None

        result = await self.bounded(f"publish to {publication.destination!r}", send())
        if isinstance(result, DeliveredMessage):
            where = (
                f"exchange {publication.exchange!r}"
                if publication.exchange
                else "the default exchange"
            )
            raise Unroutable(
                f"rabbitmq: no queue is bound to {where} for routing key "
                f"{publication.routing_key!r} (mandatory publish returned)"
            )

    # --- get and consume ----------------------------------------------------------------------

    async def _get(self, queue: str, no_ack: bool) -> RabbitDelivery | None:
        async def fetch() -> DeliveredMessage:
            channel = await self._channel("getter")
            return await channel.basic_get(queue, no_ack=no_ack)

        raw = await self.bounded(f"get from {queue!r}", fetch())
        if isinstance(raw.delivery, spec.Basic.GetEmpty):
            return None
        message = aio_pika.IncomingMessage(raw, no_ack=no_ack)
        return self.delivered(message, queue=queue, consumer=GET_CONSUMER, no_ack=no_ack)

    async def _consume(self, queue: str, prefetch: int, name: str) -> RabbitConsumer:
        consumer = Consumer(self, name=name, queue=queue, prefetch=prefetch)
        await self.bounded(f"consume from {queue!r}", consumer.subscribe())
        self._consumers.add(consumer)
        return consumer

    def delivered(
        self,
        message: AbstractIncomingMessage,
        *,
        queue: str,
        consumer: str,
        no_ack: bool = False,
    ) -> Delivery:
        delivery = Delivery(self, message, queue=queue, consumer=consumer, no_ack=no_ack)
        self._report_deaths(delivery)
        delivery.report_delivered()
        return delivery

    # --- queue operations ---------------------------------------------------------------------

    async def _purge_queue(self, name: str) -> int:
        result = await self._admin(f"purge {name!r}", lambda channel: channel.queue_purge(name))
        return int(result.message_count or 0)

    async def _queue_info(self, name: str) -> QueueInfo:
        """``ready`` and ``consumers`` come from a passive declare (exact, now); ``unacked``
        and the arguments come from the management API, whose counters lag by up to the
        node's ``collect_statistics_interval``."""
        declared = await self._admin(
            f"look up queue {name!r}",
            lambda channel: channel.queue_declare(name, passive=True),
        )
        stats = await self._management(f"/api/queues/{quote(self.vhost, safe='')}/{quote(name)}")
        if not isinstance(stats, dict):
            raise RabbitMQError(f"rabbitmq: unexpected management answer for queue {name!r}")
        return dataclasses.replace(
            _queue_info(stats),
            name=name,
            ready=int(declared.message_count or 0),
            consumers=int(declared.consumer_count or 0),
        )

    # --- inspect and cleanup ------------------------------------------------------------------

    async def inspect(self) -> RabbitSnapshot:
        """Exchanges (with type), bindings and queues (ready / unacked / consumers and their
        arguments) of this namespace, from the management API in one sample. Counters lag
        the broker by up to ``collect_statistics_interval``; use :meth:`queue_info` for an
        exact ready count."""
        vhost = quote(self.vhost, safe="")
        exchanges, bindings, queues = await asyncio.gather(
            self._management(f"/api/exchanges/{vhost}?columns=name,type,durable"),
            self._management(f"/api/bindings/{vhost}"),
            self._management(
                f"/api/queues/{vhost}?columns=name,durable,arguments,consumers,"
                "messages_ready,messages_unacknowledged"
            ),
        )
        prefix = f"{self.namespace}-"
        return RabbitSnapshot(
            exchanges=tuple(
                sorted(
                    (
                        ExchangeInfo(
                            name=str(item["name"]),
                            type=str(item["type"]),
                            durable=bool(item["durable"]),
                        )
                        for item in _items(exchanges)
                        if str(item["name"]).startswith(prefix)
                    ),
                    key=lambda exchange: exchange.name,
                )
            ),
            bindings=tuple(
                BindingInfo(
                    exchange=str(item["source"]),
                    queue=str(item["destination"]),
                    routing_key=str(item["routing_key"]),
                    arguments=dict(item.get("arguments") or {}),
                )
                for item in _items(bindings)
                # The default exchange's implicit binding to every queue is left out.
                if item["source"]
                and item.get("destination_type") == "queue"
                and (
                    str(item["source"]).startswith(prefix)
                    or str(item["destination"]).startswith(prefix)
                )
            ),
            queues=tuple(
                sorted(
                    (
                        _queue_info(item)
                        for item in _items(queues)
                        if str(item["name"]).startswith(prefix)
                    ),
                    key=lambda queue: queue.name,
                )
            ),
        )

    async def cleanup(self) -> None:
        """Delete every queue and exchange whose name starts with this namespace: those listed
        by the management API plus those this adapter declared (so cleanup still works when
        only the management API is down). Consumers are closed first."""
        for consumer in tuple(self._consumers):
            with contextlib.suppress(BrokerError):
                await consumer.close()
        queues = set(self.declared.queues)
        exchanges = set(self.declared.exchanges)
        with contextlib.suppress(BrokerError):
            snapshot = await self.inspect()
            queues.update(queue.name for queue in snapshot.queues)
            exchanges.update(exchange.name for exchange in snapshot.exchanges)
        failures: list[str] = []

        async def delete_all(channel: aiormq.abc.AbstractChannel) -> None:
            for queue in sorted(queues):
                await channel.queue_delete(queue)
                self.declared.queue_deleted(queue)
            for exchange in sorted(exchanges):
                await channel.exchange_delete(exchange)
                self.declared.exchange_deleted(exchange)

        if queues or exchanges:
            try:
                await self._admin(f"clean up namespace {self.namespace!r}", delete_all)
            except BrokerError as error:
                failures.append(str(error))
        self.declared.bindings.clear()
        if failures:
            raise RabbitMQError(
                f"rabbitmq: could not delete everything in {self.namespace!r}: {failures[0]}"
            )

    # --- helpers ------------------------------------------------------------------------------

    def _require_connection(self) -> aio_pika.RobustConnection:
        if self._connection is None:
            raise RabbitMQError("rabbitmq: not connected (use `async with RabbitMQBroker()`)")
        return self._connection

    async def bounded(self, what: str, operation: Awaitable[_T]) -> _T:
        """Run one broker call within ``operation_timeout`` and translate client errors into
        one-line :class:`BrokerError` subclasses."""
        try:
            async with asyncio.timeout(self.operation_timeout):
                return await operation
        except TimeoutError:
            raise self.call_timed_out(what, connected=self.link_up) from None
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            raise NotFound(f"rabbitmq: {what}: {_describe(error)}") from None
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            raise PreconditionFailed(f"rabbitmq: {what}: {_describe(error)}") from None
        except aiormq.exceptions.DeliveryError as error:
            raise PublishRejected(f"rabbitmq: {what}: broker refused it ({error})") from None
        except aiormq.exceptions.ChannelInvalidStateError:
            raise ConnectionLost(
                f"rabbitmq: {what}: the channel closed (connection lost?); "
                "unacked messages on it go back to their queue"
            ) from None
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError) as error:
            raise ConnectionLost(f"rabbitmq: {what}: {_describe(error)}") from None

    def transport_is_open(self) -> bool:
        connection = self._connection
        transport = connection.transport if connection is not None else None
        return transport is not None and not transport.connection.is_closed

    async def transport(self) -> aiormq.abc.AbstractConnection:
        """The live AMQP connection under the robust one (waits while it reconnects)."""
        connection = self._require_connection()
        await connection.ready()
        transport = connection.transport
        if transport is None:
            raise aiormq.exceptions.ChannelInvalidStateError("no connection")
        return transport.connection

    @contextlib.asynccontextmanager
    async def _scratch(self) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        """A short-lived plain channel: an AMQP error closes it and nothing else."""
        channel = await (await self.transport()).channel(publisher_confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _admin(
        self, what: str, action: Callable[[aiormq.abc.AbstractChannel], Awaitable[_T]]
    ) -> _T:
        """Run ``action(channel)`` on a scratch channel, bounded and with mapped errors."""

        async def run() -> _T:
            async with self._scratch() as channel:
                return await action(channel)

        return await self.bounded(what, run())

    async def _channel(self, slot: str) -> aiormq.abc.AbstractChannel:
        """The long-lived publisher or getter channel, reopened when an error or a reconnect
        closed it."""
        current = self._publisher if slot == "publisher" else self._getter
        if current is not None and not current.is_closed:
            return current  # the common case, without a round through the lock
        async with self._channel_lock:
            current = self._publisher if slot == "publisher" else self._getter
            if current is not None and not current.is_closed:
                return current
            transport = await self.transport()
            # on_return_raises=False: a returned mandatory message comes back as the publish
            # result, which publish() turns into Unroutable.
            channel = await transport.channel(
                publisher_confirms=slot == "publisher", on_return_raises=False
            )
            if slot == "publisher":
                self._publisher = channel
            else:
                self._getter = channel
            return channel

    async def _management(self, path: str) -> Any:
        """GET a management API resource as JSON."""
        if self._http is None:
            raise RabbitMQError("rabbitmq: not connected (use `async with RabbitMQBroker()`)")
        url = self.endpoints.rabbitmq_management_url
        try:
            response = await self._http.get(path)
        except httpx.TimeoutException:
            raise OperationTimedOut(
                f"rabbitmq: management API at {url} did not answer within "
                f"{self.operation_timeout:g}s"
            ) from None
        except httpx.HTTPError as error:
            raise BrokerUnavailable(
                self.system, url, f"management API: {_describe(error)}"
            ) from None
        if response.status_code == 404:
            raise NotFound(f"rabbitmq: {path.split('?', maxsplit=1)[0]} does not exist")
        if response.status_code >= 400:
            raise RabbitMQError(
                f"rabbitmq: management API answered {response.status_code} for {path}"
            )
        return response.json()

    def forget_consumer(self, consumer: Consumer) -> None:
        """A consumer closed: it is no longer re-subscribed after a reconnect."""
        self._consumers.discard(consumer)

    def _dead_letter_target(self, source: str, fallback: str) -> str:
        arguments = self.declared.queue_arguments(source)
        exchange = arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return fallback
        if exchange == "":
            return str(arguments.get("x-dead-letter-routing-key", fallback))
        return str(exchange)

    def _dead_lettered(self, delivery: Delivery, source: str, reason: str, count: int) -> None:
        """Report ``delivery`` dead-lettered from ``source`` for ``reason``, and remember it as
        its ``count``-th death there so the x-death header never reports it again."""
        key = (delivery.message_id, source, reason)
        self._seen_deaths[key] = count
        self._seen_deaths.move_to_end(key)
        while len(self._seen_deaths) > _SEEN_DEATHS_LIMIT:
            self._seen_deaths.popitem(last=False)
        self.emit(
            DeadLettered(
                at=self.bus.now(),
                broker=self.name,
                source=source,
                target=self._dead_letter_target(source, delivery.queue),
                message_id=delivery.message_id,
                reason=reason,
            )
        )

    def _report_deaths(self, delivery: Delivery) -> None:
        """Emit DeadLettered for x-death entries newer than what this adapter has seen."""
        for death in reversed(delivery.x_death):  # oldest first, as they happened
            key = (delivery.message_id, death.queue, death.reason)
            if death.count <= self._seen_deaths.get(key, 0):
                continue
            self._dead_lettered(delivery, death.queue, death.reason, death.count)

    def report_rejection(self, delivery: Delivery) -> None:
        """A nack/reject without requeue on a queue declared with a dead-letter exchange."""
        if "x-dead-letter-exchange" not in self.declared.queue_arguments(delivery.queue):
            return
        previous = next(
            (
                death.count
                for death in delivery.x_death
                if death.queue == delivery.queue and death.reason == "rejected"
            ),
            0,
        )
        self._dead_lettered(delivery, delivery.queue, "rejected", previous + 1)


def _items(payload: Any) -> list[dict[str, Any]]:
    return [item for item in payload if isinstance(item, dict)] if isinstance(payload, list) else []


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _queue_info(item: Mapping[str, Any]) -> QueueInfo:
    arguments = item.get("arguments") or {}
    dead_letter_exchange = arguments.get("x-dead-letter-exchange")
    dead_letter_key = arguments.get("x-dead-letter-routing-key")
    return QueueInfo(
        name=str(item["name"]),
        ready=int(item.get("messages_ready") or 0),
        unacked=int(item.get("messages_unacknowledged") or 0),
        consumers=int(item.get("consumers") or 0),
        max_priority=_optional_int(arguments.get("x-max-priority")),
        message_ttl_ms=_optional_int(arguments.get("x-message-ttl")),
        dead_letter_exchange=None if dead_letter_exchange is None else str(dead_letter_exchange),
        dead_letter_routing_key=None if dead_letter_key is None else str(dead_letter_key),
        max_length=_optional_int(arguments.get("x-max-length")),
        durable=bool(item.get("durable", True)),
    )


def _describe(error: BaseException | None) -> str:
    """One line for a client exception (aiormq puts the broker's reply text in args)."""
    if error is None:
        return "closed"
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error).strip() or type(error).__name__
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return text.splitlines()[0]
