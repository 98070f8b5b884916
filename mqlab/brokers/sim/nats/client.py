"""The simulated NATS JetStream adapter: the real adapter's interface and behaviour (names,
message ids, errors, reconnects) over the world's shared
:class:`~mqlab.brokers.sim.nats.server.SimNatsServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from mqlab.brokers.base import BrokerError, OperationTimedOut
from mqlab.brokers.nats.api import (
    MESSAGE_ID_HEADER,
    ConsumerInfo,
    DeliverPolicy,
    JetStreamError,
    NatsAPI,
    NatsPullConsumer,
    NatsSnapshot,
    NatsSubscription,
    PubAck,
    Retention,
    StreamInfo,
    check_name,
    check_start_position,
)
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.link import (
    connection_refused,
    connection_silent,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.nats import subjects as nats_subjects
from mqlab.brokers.sim.nats.consumer import SimJsMessage, SimPullConsumer, SimSubscription
from mqlab.brokers.sim.nats.server import MSG_ID_HEADER, NODE, SimNatsServer
from mqlab.brokers.sim.nats.streams import StreamConfig
from mqlab.brokers.sim.world import NodeUnreachable, SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import (
    Acked,
    BrokerDown,
    BrokerUp,
    Nacked,
    Produced,
    ProduceFailed,
)

_T = TypeVar("_T")

_RECONNECT_WAIT = 0.5
_RETRY_INTERVAL = 0.25
_PING_INTERVAL = 2.0
_MAX_OUTSTANDING_PINGS = 2


class SimNatsBroker(SimBroker, NatsAPI):
    """The simulator's NATS JetStream adapter: the real adapter's interface and behaviour over
    the world's shared :class:`SimNatsServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        bus, namespace, endpoints, connect_timeout: see :class:`mqlab.brokers.base.Broker`.
        request_timeout: seconds a JetStream request may take (defaults to ``connect_timeout``).
    """

    nodes = (NODE,)

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float | None = None,
    ) -> None:
        super().__init__(
            world=world,
            bus=bus,
            namespace=namespace,
            endpoints=endpoints,
            connect_timeout=connect_timeout,
        )
        self.request_timeout = connect_timeout if request_timeout is None else request_timeout
        self._server: SimNatsServer | None = None
        self._message_counter = itertools.count(1)
        self._pull_consumers: list[SimPullConsumer] = []
        self._subscriptions: list[SimSubscription] = []
        self._link_up = False
        self._link_ready = asyncio.Event()  # set while the client is connected
        self._closing = False
        self._monitor: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def _connect(self) -> None:
        world = self.world
        server = SimNatsServer.of(world)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        # A refused port is tried again every quarter second until connect_timeout (a lab
        # still starting, a short cut), as the real adapter does.
        while (refused := connection_refused(world, NODE)) is not None:
            if loop.time() + _RETRY_INTERVAL > deadline:
                raise self.unavailable(refused)
            await asyncio.sleep(_RETRY_INTERVAL)
        try:
            await within(max(0.5, deadline - loop.time()), self._handshake())
        except TimeoutError:
            raise self.unavailable("no answer") from None
        except NodeUnreachable as error:
            raise self.unavailable(error.reason) from None
        self._closing = False
        self._server = server
        self._link_up = True
        self._link_ready.set()
        self._monitor = world.spawn(self._watch_link(), name=f"nats link {self.namespace}")

    async def _handshake(self) -> None:
        await self.world.transmit(NODE, "upstream")
        await self.world.transmit(NODE, "downstream")

    async def _close(self) -> None:
        self._closing = True
        for consumer in list(self._pull_consumers):
            await consumer.close()
        for subscription in list(self._subscriptions):
            await subscription.close()
        for task in (self._monitor, self._reconnector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._monitor = self._reconnector = None
        self._server = None
        self._link_up = False
        self._link_ready.clear()
        await self._release_world()

    async def cleanup(self) -> None:
        """Delete every stream (with its consumers) of this namespace."""
        if self._server is None:
            return
        server = self._server
        prefix = f"{self.namespace}-"
        for name in [n for n in server.streams if n.startswith(prefix)]:
            await self.delete_stream(name)

    # --- connection events --------------------------------------------------------------

    async def _watch_link(self) -> None:
        """React like nats-py: a refused/reset connection drops at once, a silent one after
        the outstanding pings run out."""
        world = self.world
        silent_after = _PING_INTERVAL * (_MAX_OUTSTANDING_PINGS + 1)
        while not self._closing:
            refused = connection_refused(world, NODE)
            if refused is not None:
                self._lose_link(refused)
            elif self._link_up and connection_silent(world, NODE):
                try:
                    await within(silent_after, world.next_change(NODE))
                except TimeoutError:
                    self._lose_link("stale connection (no PONG)")
                continue
            await world.next_change(NODE)

    def _lose_link(self, reason: str) -> None:
        if not self._link_up or self._closing:
            return
        self._link_up = False
        self._link_ready.clear()
        self.emit(
            BrokerDown(
                at=self.world.now(),
                broker=self.name,
                node=NODE,
                detail=f"connection to {self.address} lost ({reason})",
            )
        )
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = self.world.spawn(
                self._reconnect(), name=f"nats reconnect {self.namespace}"
            )

    async def _reconnect(self) -> None:
        world = self.world
        while not self._closing:
            await asyncio.sleep(_RECONNECT_WAIT)
            if connection_refused(world, NODE) is not None or connection_silent(world, NODE):
                continue
            try:
                await within(self.connect_timeout, self._handshake())
            except (TimeoutError, NodeUnreachable):
                continue
            self._link_up = True
            self._link_ready.set()
            self.emit(
                BrokerUp(
                    at=world.now(),
                    broker=self.name,
                    node=NODE,
                    detail=f"reconnected to {self.address}",
                )
            )
            return

    # --- streams ------------------------------------------------------------------------

    async def add_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        retention: Retention = "limits",
        max_msgs: int = -1,
        max_age: float = 0.0,
        duplicate_window: float = 120.0,
        max_msgs_per_subject: int = -1,
    ) -> StreamInfo:
        """Create the stream, or update it when it exists with other settings.

        Raises:
            JetStreamError: a bad name or setting, or subjects that overlap another stream.
        """
        stream = self._stream_name(name)
        if retention not in ("limits", "interest", "workqueue"):
            raise JetStreamError(f"add stream {stream}: unknown retention {retention!r}")
        if not subjects:
            raise JetStreamError(f"add stream {stream}: a stream needs at least one subject")
        config = StreamConfig(
            subjects=tuple(self._subject(subject) for subject in subjects),
            retention=retention,
            max_msgs=max_msgs,
            max_age=max_age,
            duplicate_window=duplicate_window,
            max_msgs_per_subject=max_msgs_per_subject,
        )
        server = self._require_server()
        created = await self._request(
            "add stream", stream, lambda: server.add_stream(stream, config)
        )
        return created.info()

    async def delete_stream(self, name: str) -> None:
        """Delete the stream and its consumers; a stream that is already gone is fine."""
        stream = self._stream_name(name)
        server = self._require_server()

        def delete() -> None:
            if stream in server.streams:
                server.delete_stream(stream)

        await self._request("delete stream", stream, delete)

    async def stream_info(self, name: str) -> StreamInfo:
        """A stream's subjects, limits and state, fresh from the server."""
        stream = self._stream_name(name)
        server = self._require_server()
        return await self._request(
            "stream info", stream, lambda: server.stream(stream, "stream info").info()
        )

    # --- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> PubAck:
        """JetStream publish, waiting for the stream's PubAck.

        Raises:
            NoStreamForSubject: no stream captures ``subject``.
            OperationTimedOut: the PubAck did not come within ``request_timeout``.
        """
        target = self._subject(subject)
        mqlab_id = message_id or self._new_message_id()
        all_headers = {**(headers or {}), MESSAGE_ID_HEADER: mqlab_id}
        if msg_id is not None:
            all_headers[MSG_ID_HEADER] = msg_id
        try:
            if not nats_subjects.valid_subject(target):
                raise JetStreamError(f"publish {target}: invalid subject")
            server = self._require_server()
            stream, sequence, duplicate = await self._request(
                "publish",
                target,
                lambda: server.publish(target, data, all_headers, acked=True),
                nbytes=len(data),
            )
        except BrokerError as error:
            self.emit(
                ProduceFailed(
                    at=self.world.now(),
                    broker=self.name,
                    destination=target,
                    message_id=mqlab_id,
                    error=str(error),
                )
            )
            raise
        assert stream is not None  # an acked publish raises when no stream captures it
        result = PubAck(stream=stream.name, sequence=sequence, duplicate=duplicate)
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=target,
                message_id=mqlab_id,
                position=result.sequence,
                duplicate=result.duplicate,
            )
        )
        return result

    async def publish_core(self, subject: str, data: bytes) -> None:
        """Core NATS publish: no ack; only current subscribers see it (a stream capturing the
        subject stores it too, as nats-server does)."""
        target = self._subject(subject)
        if not nats_subjects.valid_subject(target):
            raise JetStreamError(f"publish {target}: invalid subject")
        mqlab_id = self._new_message_id()
        server = self._require_server()
        await self._request(
            "publish",
            target,
            lambda: server.publish(target, data, {MESSAGE_ID_HEADER: mqlab_id}, acked=False),
            nbytes=len(data),
        )
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=target,
                message_id=mqlab_id,
            )
        )

    # --- consumers ----------------------------------------------------------------------

    async def pull_consumer(
        self,
        stream: str,
        durable: str,
        *,
        filter_subject: str | None = None,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        deliver_policy: DeliverPolicy = "all",
        start_sequence: int | None = None,
        start_time: float | None = None,
    ) -> NatsPullConsumer:
        """Create (or bind to) a durable pull consumer with explicit acks.

        Raises:
            JetStreamError: a missing start position for ``by_start_sequence`` /
                ``by_start_time``, an unknown stream, or a durable that exists with another
                deliver policy.
        """
        stream_name = self._stream_name(stream)
        check_name("consumer", durable)
        check_start_position(deliver_policy, start_sequence, start_time)
        if ack_wait <= 0:
            raise JetStreamError(f"add consumer {stream_name}/{durable}: ack_wait must be > 0")
        full_filter = self._subject(filter_subject) if filter_subject else None
        server = self._require_server()
        await self._request(
            "add consumer",
            f"{stream_name}/{durable}",
            lambda: server.add_consumer(
                stream_name,
                durable,
                filter_subject=full_filter,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
                deliver_policy=deliver_policy,
                start_sequence=start_sequence if deliver_policy == "by_start_sequence" else None,
                start_time=start_time if deliver_policy == "by_start_time" else None,
            ),
        )
        consumer = SimPullConsumer(self, stream_name, durable)
        self._pull_consumers.append(consumer)
        return consumer

    async def consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        """A consumer's ack floor and pending / redelivered counts, fresh from the server."""
        stream_name = self._stream_name(stream)
        server = self._require_server()
        return await self._request(
            "consumer info",
            f"{stream_name}/{durable}",
            lambda: server.consumer_info(server.consumer(stream_name, durable, "consumer info")),
        )

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer; one that is already gone is fine."""
        stream_name = self._stream_name(stream)
        server = self._require_server()

        def delete() -> None:
            existing = server.streams.get(stream_name)
            if existing is not None and durable in existing.consumers:
                server.delete_consumer(stream_name, durable)

        await self._request("delete consumer", f"{stream_name}/{durable}", delete)

    async def subscribe(self, subject: str) -> NatsSubscription:
        """A core NATS subscription (at-most-once; ``*`` and ``>`` wildcards)."""
        target = self._subject(subject)
        if not nats_subjects.valid_filter(target):
            raise JetStreamError(f"subscribe {target}: invalid subject")
        server = self._require_server()
        subscription = SimSubscription(self, target)
        await self._request("subscribe", target, lambda: server.subscribe(subscription._subscriber))
        self._subscriptions.append(subscription)
        return subscription

    # --- inspection ---------------------------------------------------------------------

    def peek(self) -> NatsSnapshot | None:
        """This namespace's state straight from the server model (see :meth:`SimBroker.peek`)."""
        if self._server is None:
            return None
        return self._server.snapshot(f"{self.namespace}-")

    async def inspect(self) -> NatsSnapshot:
        """Every stream of the namespace and every consumer on them."""
        server = self._require_server()
        prefix = f"{self.namespace}-"
        return await self._request("stream list", prefix, lambda: server.snapshot(prefix))

    # --- plumbing -----------------------------------------------------------------------

    def _require_server(self) -> SimNatsServer:
        if self._server is None:
            raise BrokerError("the nats adapter is not connected (use: async with broker)")
        return self._server

    async def _await_link(self, operation: str) -> None:
        """Wait up to ``request_timeout`` for a reconnect while the connection is down (so a
        short cut delays an ack instead of losing it), as the real adapter does.

        Raises:
            BrokerUnavailable: still disconnected when the time is up.
        """
        if self._link_up:
            return
        with contextlib.suppress(TimeoutError):
            await within(self.request_timeout, self._link_ready.wait())
        if not self._link_up:
            raise self.unavailable(f"connection lost, reconnecting ({operation})")

    def _stream_name(self, name: str) -> str:
        """Streams are ``<namespace>-<name>``; an already namespaced name is kept."""
        stream = name if name.startswith(f"{self.namespace}-") else self.qualify(name)
        check_name("stream", stream)
        return stream

    def _subject(self, subject: str) -> str:
        """Subjects are ``<namespace>.<subject>``; an already namespaced subject is kept."""
        return subject if subject.startswith(f"{self.namespace}.") else self.subject(subject)

    def _new_message_id(self) -> str:
        return f"{self.namespace}-{next(self._message_counter):06d}"

    async def _request(
        self, operation: str, target: str, action: Callable[[], _T], *, nbytes: int = 0
    ) -> _T:
        async def run() -> _T:
            return action()

        return await self._request_async(operation, target, run, nbytes=nbytes)

    async def _request_async(
        self,
        operation: str,
        target: str,
        action: Callable[[], Awaitable[_T]],
        *,
        nbytes: int = 0,
    ) -> _T:
        """One request over the simulated network: refused at once while disconnected,
        bounded by ``request_timeout``."""
        self._require_server()
        await self._await_link(operation)
        world = self.world

        async def request() -> _T:
            await world.transmit(NODE, "upstream", nbytes)
            return await action()

        if world.clear_path(NODE):
            return await action()  # nothing on the way: the round trip takes no virtual time
        try:
            async with asyncio.timeout(self.request_timeout):
                # A request the client stops waiting for still reaches the server (a paused
                # one acts on it when resumed): a timed-out publish may well be stored.
                result = await outlive_caller(world, request(), f"nats {operation}")
                await world.transmit(NODE, "downstream")
                return result
        except TimeoutError:
            if not self._link_up:
                raise self.unavailable(f"connection lost during {operation}") from None
            raise OperationTimedOut(
                f"nats did not answer {operation} on {target} within "
                f"{self.request_timeout:g} s at {self.address}"
            ) from None
        except NodeUnreachable as error:
            self._lose_link(error.reason)
            raise self.unavailable(f"{operation} failed: {error.reason}") from None

    def _emit_settled(
        self,
        message: SimJsMessage,
        kind: type[Acked] | type[Nacked],
        consumer: str,
        *,
        requeue: bool = True,
    ) -> None:
        now = self.world.now()
        if kind is Acked:
            self.emit(
                Acked(
                    at=now,
                    broker=self.name,
                    destination=message.subject,
                    message_id=message.message_id,
                    consumer=consumer,
                )
            )
        else:
            self.emit(
                Nacked(
                    at=now,
                    broker=self.name,
                    destination=message.subject,
                    message_id=message.message_id,
                    consumer=consumer,
                    requeue=requeue,
                )
            )
