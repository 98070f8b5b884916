"""The real NATS JetStream adapter (nats-py) against the lab's nats-server.

Layout (the same in every system's package): this module is the adapter, :class:`NatsBroker`;
its pull consumers, fetched messages and core subscriptions are in
:mod:`~mqlab.brokers.nats.consumer`.

Why it looks the way it does:

- The client reconnects forever (every half second) while the adapter is open, and its
  ``disconnected`` / ``reconnected`` callbacks become ``BrokerDown`` / ``BrokerUp``
  observations. Keep-alive pings every 2 s (two may be outstanding) notice a *paused* server
  within seconds, not minutes. While the connection is down a call waits up to
  ``request_timeout`` for the reconnect (so a short cut delays an ack instead of losing it) and
  then raises :class:`~mqlab.brokers.base.BrokerUnavailable`; after the server is back the same
  adapter (and its pull consumers) works again.
- The first connection attempt is bounded by ``connect_timeout``: a refused port is retried
  every quarter second (a plain TCP check) until then, and the NATS handshake gets what is
  left. nats-py's default error handler prints tracebacks; this adapter keeps the last error
  instead, for its one-line message.
- JetStream requests (stream/consumer management, publish acks, ``ack``) are bounded by
  ``request_timeout`` and raise :class:`~mqlab.brokers.base.OperationTimedOut` when the server
  stays silent. ``ack`` waits for the server's confirmation (``ack_sync``) so that an ``Acked``
  observation means the server has it; ``nak``, ``term`` and ``in_progress`` are fire-and-forget
  in the protocol, so the adapter flushes (a PING/PONG round trip) before reporting them.
- Dead letters: JetStream has no DLQ. When a consumer gives up on a message (``max_deliver``
  reached) the server publishes an advisory on
  ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``; the adapter listens
  there and emits ``DeadLettered`` (target: that advisory subject, where a dead-letter handler
  would subscribe; the message itself stays in the stream).
- Names: stream names cannot contain dots, so streams are ``mq-3f2a9c-orders``
  (:meth:`~mqlab.brokers.base.Broker.qualify`) and subjects ``mq-3f2a9c.orders.eu``
  (:meth:`~mqlab.brokers.nats.api.NatsAPI.subject`). Every method accepts either the logical
  name or the already namespaced one, and reports the namespaced one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import Iterator
from typing import Any, Unpack
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from mqlab.brokers.base import BrokerError, BrokerUnavailable
from mqlab.brokers.nats.api import (
    MAX_DELIVERIES_ADVISORY,
    MESSAGE_ID_HEADER,
    ConsumerInfo,
    JetStreamError,
    NatsAPI,
    NatsOptions,
    NatsPullConsumer,
    NatsSnapshot,
    NatsSubscription,
    NoStreamForSubject,
    PubAck,
    PullConsumerConfig,
    StreamConfig,
    StreamInfo,
    already_acknowledged,
)
from mqlab.brokers.nats.consumer import CoreSubscription, PullConsumer
from mqlab.observe.events import (
    DeadLettered,
)

"""JetStream's deduplication header."""
_STREAM_EXISTS = 10058  # JetStream error code: stream name already in use (other config)
_RECONNECT_WAIT = 0.5
_RETRY_INTERVAL = 0.25
_PING_INTERVAL = 2
_MAX_OUTSTANDING_PINGS = 2
_STREAM_PAGE = 256  # JetStream's page size for STREAM.LIST


class NatsBroker(NatsAPI):
    """NATS JetStream streams, durable pull consumers and core pub/sub (nats-py).

    Args:
        options: see :class:`~mqlab.brokers.nats.api.NatsAPI`.
    """

    def __init__(self, **options: Unpack[NatsOptions]) -> None:
        super().__init__(**options)
        self.url = self.endpoints.nats_url
        parts = urlsplit(self.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 4222
        self.address = f"{self.host}:{self.port}"
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        self._last_error = ""
        self._link_up = asyncio.Event()  # set while the client is connected

    # --- lifecycle ----------------------------------------------------------------------

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        await self._check_port(deadline)
        client = Client()
        self._closing = False
        try:
            await asyncio.wait_for(
                client.connect(
                    servers=[self.url],
                    name=f"mqlab-{self.namespace}",
                    connect_timeout=max(1, round(self.connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=_RECONNECT_WAIT,  # type: ignore[arg-type]
                    ping_interval=_PING_INTERVAL,
                    max_outstanding_pings=_MAX_OUTSTANDING_PINGS,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                ),
                timeout=max(0.5, deadline - loop.time()),
            )
        except (TimeoutError, OSError, nats.errors.Error) as error:
            self._closing = True
            with contextlib.suppress(Exception):
                await client.close()
            detail = self._last_error or _one_line(error) or "no answer"
            raise BrokerUnavailable(self.system, self.address, detail) from None
        self._nc = client
        self._js = client.jetstream(timeout=self.request_timeout)
        self._link_up.set()
        try:
            with self.translate("account info", self.address):
                await self._js.account_info()
            await client.subscribe(f"{MAX_DELIVERIES_ADVISORY}.*.*", cb=self._on_max_deliveries)
        except BrokerError as error:
            await self._close()
            if isinstance(error, BrokerUnavailable):
                raise
            raise BrokerUnavailable(
                self.system, self.address, f"JetStream is not available: {error}"
            ) from None

    async def _check_port(self, deadline: float) -> None:
        """Wait (until ``deadline``) for the port to accept connections.

        A refused connection is retried every quarter second, so a lab that is still
        starting, or a short network cut, does not fail the connect; nats-py on its own would
        keep retrying without a bound.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port),
                    timeout=max(0.1, deadline - loop.time()),
                )
            except (TimeoutError, OSError) as error:
                if loop.time() + _RETRY_INTERVAL > deadline:
                    raise BrokerUnavailable(self.system, self.address, _one_line(error)) from None
                await asyncio.sleep(_RETRY_INTERVAL)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def _close(self) -> None:
        self._closing = True
        await self.close_clients()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = None
        self._js = None

    async def cleanup(self) -> None:
        """Delete every stream (with its consumers) of this namespace."""
        if self._nc is None:
            return
        for stream in await self._namespace_streams():
            await self.delete_stream(stream.config.name or "")

    # --- connection events --------------------------------------------------------------

    async def _on_disconnected(self) -> None:
        self._link_up.clear()
        if self._closing:
            return
        self.report_node_down(
            self.system, f"connection to {self.address} lost{self._error_suffix()}"
        )

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        self._link_up.set()
        self.report_node_up(self.system, f"reconnected to {self.address}")

    async def _on_error(self, error: Exception) -> None:
        # nats-py reports every failed reconnect attempt here; keep the latest for messages.
        self._last_error = _one_line(error)

    def _error_suffix(self) -> str:
        return f" ({self._last_error})" if self._last_error else ""

    async def _on_max_deliveries(self, message: Msg) -> None:
        """Turn JetStream's max-deliveries advisory into a DeadLettered observation."""
        try:
            advisory = json.loads(message.data)
            stream = str(advisory["stream"])
            consumer = str(advisory["consumer"])
            sequence = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", 0))
        except (ValueError, KeyError, TypeError):
            return
        if not stream.startswith(f"{self.namespace}-"):
            return  # another adapter's stream
        message_id = f"{stream}#{sequence}"
        if self._js is not None:
            with contextlib.suppress(Exception):
                stored = await self._js.get_msg(stream, sequence)
                message_id = (stored.headers or {}).get(MESSAGE_ID_HEADER) or message_id
        self.emit(
            DeadLettered(
                at=self.bus.now(),
                broker=self.name,
                source=stream,
                target=message.subject,
                message_id=message_id,
                reason=(
                    f"consumer {consumer} reached max_deliver after {deliveries} deliveries "
                    f"(stream sequence {sequence})"
                ),
            )
        )

    # --- streams (names namespaced and settings checked in NatsAPI) --------------------

    async def _add_stream(self, name: str, config: StreamConfig) -> StreamInfo:
        wire_config = js_api.StreamConfig(
            name=name,
            subjects=list(config.subjects),
            retention=js_api.RetentionPolicy(config.retention),
            max_msgs=config.max_msgs,
            max_age=config.max_age,
            duplicate_window=config.duplicate_window,
            max_msgs_per_subject=config.max_msgs_per_subject,
            storage=js_api.StorageType.FILE,
        )
        js = await self._jetstream()
        with self.translate("add stream", name):
            try:
                info = await js.add_stream(wire_config)
            except nats.js.errors.BadRequestError as error:
                if error.err_code != _STREAM_EXISTS:
                    raise
                info = await js.update_stream(wire_config)
        return _stream_info(info)

    async def _delete_stream(self, name: str) -> None:
        js = await self._jetstream()
        with (
            self.translate("delete stream", name),
            contextlib.suppress(nats.js.errors.NotFoundError),
        ):
            await js.delete_stream(name)

    async def _stream_info(self, name: str) -> StreamInfo:
        js = await self._jetstream()
        with self.translate("stream info", name):
            return _stream_info(await js.stream_info(name))

    # --- publishing ---------------------------------------------------------------------

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> PubAck:
        js = await self._jetstream()
        with self.translate("publish", subject):
            ack = await js.publish(subject, data, headers=headers)
        return PubAck(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))

    async def _publish_pipelined(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> PubAck:
        """nats-py's ``publish_async`` (2.10 and later; a plain request before): its future
        has no timeout of its own, so the wait is bounded here, and a PubAck that never
        comes is cancelled, which frees the client's pending slot for it."""
        js = await self._jetstream()
        if not hasattr(js, "publish_async"):
            return await self._publish(subject, data, headers)
        with self.translate("publish", subject):
            pending = await js.publish_async(subject, data, headers=headers)
            try:
                async with asyncio.timeout(self.request_timeout):
                    ack = await pending
            finally:
                if not pending.done():
                    pending.cancel()
        return PubAck(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))

    async def _publish_core(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish, then flush (one PING/PONG) so that ``Produced`` means the server has it."""
        nc = await self.connection()
        with self.translate("publish", subject):
            await nc.publish(subject, data, headers=headers)
            await nc.flush(timeout=self.flush_timeout())

    # --- consumers ----------------------------------------------------------------------

    async def _pull_consumer(
        self, stream: str, durable: str, config: PullConsumerConfig
    ) -> NatsPullConsumer:
        start_time = config.start_time
        wire_config = js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_deliver=config.max_deliver,
            deliver_policy=js_api.DeliverPolicy(config.deliver_policy),
            opt_start_seq=config.start_sequence,
            opt_start_time=(
                datetime.datetime.fromtimestamp(start_time, tz=datetime.UTC)
                if start_time is not None
                else None
            ),
            filter_subject=config.filter_subject,
        )
        js = await self._jetstream()
        with self.translate("add consumer", f"{stream}/{durable}"):
            await js.add_consumer(stream, wire_config)
            subscription = await js.pull_subscribe_bind(consumer=durable, stream=stream)
        return PullConsumer(self, subscription, stream, durable)

    async def _consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        js = await self._jetstream()
        with self.translate("consumer info", f"{stream}/{durable}"):
            return _consumer_info(await js.consumer_info(stream, durable))

    async def _delete_consumer(self, stream: str, durable: str) -> None:
        js = await self._jetstream()
        with (
            self.translate("delete consumer", f"{stream}/{durable}"),
            contextlib.suppress(nats.js.errors.NotFoundError),
        ):
            await js.delete_consumer(stream, durable)

    async def _subscribe(self, subject: str) -> NatsSubscription:
        nc = await self.connection()
        with self.translate("subscribe", subject):
            subscription = await nc.subscribe(subject)
            await nc.flush(timeout=self.flush_timeout())
        return CoreSubscription(self, subscription, subject)

    # --- inspection ---------------------------------------------------------------------

    async def inspect(self) -> NatsSnapshot:
        """Every stream of the namespace and every consumer on them."""
        js = await self._jetstream()
        streams = await self._namespace_streams()
        consumers: list[ConsumerInfo] = []
        for stream in streams:
            name = stream.config.name or ""
            with self.translate("consumer list", name):
                infos = await js.consumers_info(name)
            consumers.extend(sorted((_consumer_info(i) for i in infos), key=lambda c: c.name))
        return NatsSnapshot(
            streams=tuple(_stream_info(stream) for stream in streams),
            consumers=tuple(consumers),
        )

    async def _namespace_streams(self) -> list[js_api.StreamInfo]:
        js = await self._jetstream()
        prefix = f"{self.namespace}-"
        found: list[js_api.StreamInfo] = []
        offset = 0
        while True:
            with self.translate("stream list", prefix):
                page = await js.streams_info(offset=offset)
            found.extend(s for s in page if (s.config.name or "").startswith(prefix))
            offset += len(page)
            if len(page) < _STREAM_PAGE:
                break
        return sorted(found, key=lambda s: s.config.name or "")

    # --- plumbing -----------------------------------------------------------------------

    async def connection(self) -> Client:
        """The connection, waiting up to ``request_timeout`` for a reconnect when it is down.

        Waiting (rather than failing at once) lets a short network cut delay an operation,
        an ack for instance, instead of losing it; nats-py itself buffers what is sent while
        it reconnects.

        Raises:
            BrokerUnavailable: still disconnected when the time is up.
        """
        if self._nc is None:
            raise self.not_connected()
        if not self._nc.is_connected and not self._nc.is_closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._link_up.wait(), timeout=self.request_timeout)
        if self._nc is None or not self._nc.is_connected:
            raise BrokerUnavailable(
                self.system, self.address, f"connection lost, reconnecting{self._error_suffix()}"
            )
        return self._nc

    async def _jetstream(self) -> JetStreamContext:
        await self.connection()
        assert self._js is not None  # set together with _nc
        return self._js

    @contextlib.contextmanager
    def translate(self, operation: str, target: str) -> Iterator[None]:
        """Turn nats-py's exceptions into the adapter's one-line BrokerErrors."""
        try:
            yield
        except BrokerError:
            raise
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            if operation == "publish":
                raise NoStreamForSubject(
                    f"no stream captures subject {target!r} (nothing would store it)"
                ) from None
            raise JetStreamError(f"{operation} {target}: JetStream did not respond") from None
        except nats.js.errors.APIError as error:
            description = error.description or "request refused"
            raise JetStreamError(
                f"{operation} {target}: {description} (JetStream error {error.err_code})"
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            if self._nc is None or not self._nc.is_connected:
                raise self.unavailable(f"connection lost during {operation}") from None
            raise self.no_answer(operation, target, self.request_timeout) from None
        except nats.errors.MsgAlreadyAckdError:
            raise already_acknowledged(operation) from None
        except (nats.errors.Error, OSError) as error:
            raise BrokerUnavailable(
                self.system, self.address, f"{operation} failed: {_one_line(error)}"
            ) from None
        except ValueError as error:  # nats-py's own validation (names, subjects)
            raise JetStreamError(f"{operation} {target}: {_one_line(error)}") from None

    def flush_timeout(self) -> int:
        return max(1, round(self.request_timeout))


def _stream_info(info: js_api.StreamInfo) -> StreamInfo:
    config = info.config
    state = info.state
    return StreamInfo(
        name=config.name or "",
        subjects=tuple(config.subjects or ()),
        messages=state.messages,
        bytes=state.bytes,
        first_sequence=state.first_seq,
        last_sequence=state.last_seq,
        retention=_enum_value(config.retention, "limits"),
        max_msgs=config.max_msgs if config.max_msgs is not None else -1,
        max_age_seconds=float(config.max_age or 0.0),
        duplicate_window_seconds=float(config.duplicate_window or 0.0),
    )


def _consumer_info(info: js_api.ConsumerInfo) -> ConsumerInfo:
    config = info.config
    return ConsumerInfo(
        stream=info.stream_name,
        name=info.name,
        ack_floor=info.ack_floor.stream_seq if info.ack_floor else 0,
        delivered=info.delivered.stream_seq if info.delivered else 0,
        num_pending=info.num_pending or 0,
        num_ack_pending=info.num_ack_pending or 0,
        num_redelivered=info.num_redelivered or 0,
        ack_wait_seconds=float(config.ack_wait or 0.0),
        max_deliver=config.max_deliver if config.max_deliver is not None else -1,
        filter_subject=config.filter_subject,
        deliver_policy=_enum_value(config.deliver_policy, "all"),
    )


def _enum_value(value: Any, default: str) -> str:
    if value is None:
        return default
    return str(getattr(value, "value", value))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
