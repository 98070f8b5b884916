"""The simulated NATS JetStream adapter: the real adapter's interface and behaviour (names,
message ids, errors, reconnects) over the world's shared
:class:`~mqlab.brokers.sim.nats.server.SimNatsServer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar, Unpack

from mqlab.brokers.nats.api import (
    ConsumerInfo,
    JetStreamError,
    NatsAPI,
    NatsOptions,
    NatsPullConsumer,
    NatsSnapshot,
    NatsSubscription,
    PubAck,
    PullConsumerConfig,
    StreamConfig,
    StreamInfo,
)
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.link import (
    SimLink,
    outlive_caller,
)
from mqlab.brokers.sim.nats import subjects as nats_subjects
from mqlab.brokers.sim.nats.consumer import SimPullConsumer, SimSubscription
from mqlab.brokers.sim.nats.server import NODE, SimNatsServer
from mqlab.brokers.sim.world import NodeUnreachable, SimWorld

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
        options: see :class:`~mqlab.brokers.nats.api.NatsAPI` (in virtual seconds).
    """

    nodes = (NODE,)

    def __init__(self, *, world: SimWorld | None = None, **options: Unpack[NatsOptions]) -> None:
        super().__init__(world=world, **options)
        self._server: SimNatsServer | None = None
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
        await self.close_clients()
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

    # --- streams (names namespaced and settings checked in NatsAPI) --------------------

    async def _add_stream(self, name: str, config: StreamConfig) -> StreamInfo:
        """Add or update the stream, with the checks nats-server makes."""
        if config.retention not in ("limits", "interest", "workqueue"):
            raise JetStreamError(f"add stream {name}: unknown retention {config.retention!r}")
        if not config.subjects:
            raise JetStreamError(f"add stream {name}: a stream needs at least one subject")
        server = self.require_server()
        created = await self.request("add stream", name, lambda: server.add_stream(name, config))
        return created.info()

    async def _delete_stream(self, name: str) -> None:
        server = self.require_server()

        def delete() -> None:
            if name in server.streams:
                server.delete_stream(name)

        await self.request("delete stream", name, delete)

    async def _stream_info(self, name: str) -> StreamInfo:
        server = self.require_server()
        return await self.request(
            "stream info", name, lambda: server.stream(name, "stream info").info()
        )

    # --- publishing ---------------------------------------------------------------------

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> PubAck:
        if not nats_subjects.valid_subject(subject):
            raise JetStreamError(f"publish {subject}: invalid subject")
        server = self.require_server()
        stream, sequence, duplicate = await self.request(
            "publish",
            subject,
            lambda: server.publish(subject, data, headers, acked=True),
            nbytes=len(data),
        )
        assert stream is not None  # an acked publish raises when no stream captures it
        return PubAck(stream=stream.name, sequence=sequence, duplicate=duplicate)

    async def _publish_pipelined(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> PubAck:
        """The model has no reply machinery to save: the same request as a publish."""
        return await self._publish(subject, data, headers)

    async def _publish_core(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """A stream capturing the subject stores it too, as nats-server does."""
        if not nats_subjects.valid_subject(subject):
            raise JetStreamError(f"publish {subject}: invalid subject")
        server = self.require_server()
        await self.request(
            "publish",
            subject,
            lambda: server.publish(subject, data, headers, acked=False),
            nbytes=len(data),
        )

    # --- consumers ----------------------------------------------------------------------

    async def _pull_consumer(
        self, stream: str, durable: str, config: PullConsumerConfig
    ) -> NatsPullConsumer:
        if config.ack_wait <= 0:
            raise JetStreamError(f"add consumer {stream}/{durable}: ack_wait must be > 0")
        server = self.require_server()
        await self.request(
            "add consumer",
            f"{stream}/{durable}",
            lambda: server.add_consumer(stream, durable, config),
        )
        return SimPullConsumer(self, stream, durable)

    async def _consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        server = self.require_server()
        return await self.request(
            "consumer info",
            f"{stream}/{durable}",
            lambda: server.consumer_info(server.consumer(stream, durable, "consumer info")),
        )

    async def _delete_consumer(self, stream: str, durable: str) -> None:
        server = self.require_server()

        def delete() -> None:
            existing = server.streams.get(stream)
            if existing is not None and durable in existing.consumers:
                server.delete_consumer(stream, durable)

        await self.request("delete consumer", f"{stream}/{durable}", delete)

    async def _subscribe(self, subject: str) -> NatsSubscription:
        if not nats_subjects.valid_filter(subject):
            raise JetStreamError(f"subscribe {subject}: invalid subject")
        server = self.require_server()
        subscription = SimSubscription(self, subject)
        await self.request("subscribe", subject, lambda: subscription.attach(server))
        return subscription

    # --- inspection ---------------------------------------------------------------------

    def peek(self) -> NatsSnapshot | None:
        """This namespace's state straight from the server model (see :meth:`SimBroker.peek`)."""
        return self.peek_at(self._server)

    async def inspect(self) -> NatsSnapshot:
        """Every stream of the namespace and every consumer on them."""
        server = self.require_server()
        prefix = f"{self.namespace}-"
        return await self.request("stream list", prefix, lambda: server.snapshot(prefix))

    # --- plumbing -----------------------------------------------------------------------

    def require_server(self) -> SimNatsServer:
        """The server, once connected.

        Raises:
            BrokerError: not connected.
        """
        if self._server is None:
            raise self.not_connected()
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
            raise self.no_answer(operation, target, self.request_timeout) from None
        except NodeUnreachable as error:
            self.link.lose(error.reason)
            raise self.unavailable(f"{operation} failed: {error.reason}") from None
