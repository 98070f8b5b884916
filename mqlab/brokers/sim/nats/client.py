"""The simulated NATS JetStream adapter: the real adapter's interface and behaviour (names,
message ids, errors, reconnects) over the world's shared
:class:`~mqlab.brokers.sim.nats.server.SimNatsServer`.
"""

from __future__ import annotations

import asyncio
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
    SimLink,
    outlive_caller,
)
from mqlab.brokers.sim.nats import subjects as nats_subjects
from mqlab.brokers.sim.nats.consumer import SimPullConsumer, SimSubscription
from mqlab.brokers.sim.nats.server import MSG_ID_HEADER, NODE, SimNatsServer
from mqlab.brokers.sim.nats.streams import StreamConfig
from mqlab.brokers.sim.world import NodeUnreachable, SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus

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
        self._pull_consumers: list[SimPullConsumer] = []
        self._subscriptions: list[SimSubscription] = []
        self.link = SimLink(
            self,
            NODE,
            silent_after=_PING_INTERVAL * (_MAX_OUTSTANDING_PINGS + 1),
            silence="stale connection (no PONG)",
            reconnect_interval=_RECONNECT_WAIT,
        )
        """The client connection (nats-py's: pings, reconnects every half second)."""

    # --- lifecycle ----------------------------------------------------------------------

    async def _connect(self) -> None:
        server = SimNatsServer.of(self.world)
        # A refused port is tried again every quarter second until connect_timeout (a lab
        # still starting, a short cut), as the real adapter does.
        await self.link.open(retry_refused=_RETRY_INTERVAL)
        self._server = server

    async def _close(self) -> None:
        for consumer in list(self._pull_consumers):
            await consumer.close()
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self.link.close()
        self._server = None
        await self._release_world()

    async def cleanup(self) -> None:
        """Delete every stream (with its consumers) of this namespace."""
        if self._server is None:
            return
        server = self._server
        prefix = f"{self.namespace}-"
        for name in [n for n in server.streams if n.startswith(prefix)]:
            await self.delete_stream(name)

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
        stream = self.stream_name(name)
        if retention not in ("limits", "interest", "workqueue"):
            raise JetStreamError(f"add stream {stream}: unknown retention {retention!r}")
        if not subjects:
            raise JetStreamError(f"add stream {stream}: a stream needs at least one subject")
        config = StreamConfig(
            subjects=tuple(self.full_subject(subject) for subject in subjects),
            retention=retention,
            max_msgs=max_msgs,
            max_age=max_age,
            duplicate_window=duplicate_window,
            max_msgs_per_subject=max_msgs_per_subject,
        )
        server = self.require_server()
        created = await self.request(
            "add stream", stream, lambda: server.add_stream(stream, config)
        )
        return created.info()

    async def delete_stream(self, name: str) -> None:
        """Delete the stream and its consumers; a stream that is already gone is fine."""
        stream = self.stream_name(name)
        server = self.require_server()

        def delete() -> None:
            if stream in server.streams:
                server.delete_stream(stream)

        await self.request("delete stream", stream, delete)

    async def stream_info(self, name: str) -> StreamInfo:
        """A stream's subjects, limits and state, fresh from the server."""
        stream = self.stream_name(name)
        server = self.require_server()
        return await self.request(
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
        target = self.full_subject(subject)
        mqlab_id = message_id or self.new_message_id()
        all_headers = {**(headers or {}), MESSAGE_ID_HEADER: mqlab_id}
        if msg_id is not None:
            all_headers[MSG_ID_HEADER] = msg_id

        async def acknowledged() -> PubAck:
            if not nats_subjects.valid_subject(target):
                raise JetStreamError(f"publish {target}: invalid subject")
            server = self.require_server()
            stream, sequence, duplicate = await self.request(
                "publish",
                target,
                lambda: server.publish(target, data, all_headers, acked=True),
                nbytes=len(data),
            )
            assert stream is not None  # an acked publish raises when no stream captures it
            return PubAck(stream=stream.name, sequence=sequence, duplicate=duplicate)

        return await self.send_reported(
            acknowledged(), destination=target, message_id=mqlab_id, placed=PubAck.placement
        )

    async def publish_core(self, subject: str, data: bytes) -> None:
        """Core NATS publish: no ack; only current subscribers see it (a stream capturing the
        subject stores it too, as nats-server does)."""
        target = self.full_subject(subject)
        if not nats_subjects.valid_subject(target):
            raise JetStreamError(f"publish {target}: invalid subject")
        mqlab_id = self.new_message_id()
        server = self.require_server()
        await self.request(
            "publish",
            target,
            lambda: server.publish(target, data, {MESSAGE_ID_HEADER: mqlab_id}, acked=False),
            nbytes=len(data),
        )
        self.report_produced(target, mqlab_id)

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
        stream_name = self.stream_name(stream)
        check_name("consumer", durable)
        check_start_position(deliver_policy, start_sequence, start_time)
        if ack_wait <= 0:
            raise JetStreamError(f"add consumer {stream_name}/{durable}: ack_wait must be > 0")
        full_filter = self.full_subject(filter_subject) if filter_subject else None
        server = self.require_server()
        await self.request(
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
        stream_name = self.stream_name(stream)
        server = self.require_server()
        return await self.request(
            "consumer info",
            f"{stream_name}/{durable}",
            lambda: server.consumer_info(server.consumer(stream_name, durable, "consumer info")),
        )

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer; one that is already gone is fine."""
        stream_name = self.stream_name(stream)
        server = self.require_server()

        def delete() -> None:
            existing = server.streams.get(stream_name)
            if existing is not None and durable in existing.consumers:
                server.delete_consumer(stream_name, durable)

        await self.request("delete consumer", f"{stream_name}/{durable}", delete)

    async def subscribe(self, subject: str) -> NatsSubscription:
        """A core NATS subscription (at-most-once; ``*`` and ``>`` wildcards)."""
        target = self.full_subject(subject)
        if not nats_subjects.valid_filter(target):
            raise JetStreamError(f"subscribe {target}: invalid subject")
        server = self.require_server()
        subscription = SimSubscription(self, target)
        await self.request("subscribe", target, lambda: subscription.attach(server))
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
        server = self.require_server()
        prefix = f"{self.namespace}-"
        return await self.request("stream list", prefix, lambda: server.snapshot(prefix))

    # --- plumbing -----------------------------------------------------------------------

    def forget(self, closed: SimPullConsumer | SimSubscription) -> None:
        """A pull consumer or subscription closed: the adapter no longer closes it itself."""
        if closed in self._pull_consumers:
            self._pull_consumers.remove(closed)
        if closed in self._subscriptions:
            self._subscriptions.remove(closed)

    def require_server(self) -> SimNatsServer:
        """The server, once connected.

        Raises:
            BrokerError: not connected.
        """
        if self._server is None:
            raise BrokerError("the nats adapter is not connected (use: async with broker)")
        return self._server

    async def await_link(self, operation: str) -> None:
        """Wait up to ``request_timeout`` for a reconnect while the connection is down (so a
        short cut delays an ack instead of losing it), as the real adapter does.

        Raises:
            BrokerUnavailable: still disconnected when the time is up.
        """
        if not await self.link.wait_up(self.request_timeout):
            raise self.unavailable(f"connection lost, reconnecting ({operation})")

    async def request(
        self, operation: str, target: str, action: Callable[[], _T], *, nbytes: int = 0
    ) -> _T:
        """:meth:`request_async` for an action the server carries out at once."""

        async def run() -> _T:
            return action()

        return await self.request_async(operation, target, run, nbytes=nbytes)

    async def request_async(
        self,
        operation: str,
        target: str,
        action: Callable[[], Awaitable[_T]],
        *,
        nbytes: int = 0,
    ) -> _T:
        """One request over the simulated network: refused at once while disconnected,
        bounded by ``request_timeout``."""
        self.require_server()
        await self.await_link(operation)
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
            if not self.link.up:
                raise self.unavailable(f"connection lost during {operation}") from None
            raise OperationTimedOut(
                f"nats did not answer {operation} on {target} within "
                f"{self.request_timeout:g} s at {self.address}"
            ) from None
        except NodeUnreachable as error:
            self.link.lose(error.reason)
            raise self.unavailable(f"{operation} failed: {error.reason}") from None
