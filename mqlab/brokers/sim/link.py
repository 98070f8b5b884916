"""A simulated client's path to its node, and the connection that runs over it.

Every simulated adapter runs inside a :class:`~mqlab.brokers.sim.world.SimWorld` (virtual
clock, seeded randomness, node faults) and reaches its node through the world's simulated
network, so a learner's call fails, waits or goes through exactly when the same call against
the lab's broker behind Toxiproxy would. The functions here answer the questions every adapter
asks about that path: can a connection be opened right now, would an open one notice anything,
and how long may a call take.

:class:`SimLink` is the connection a RabbitMQ or NATS client keeps open (SQS is HTTP, Kafka
connects per broker): it opens with a handshake, notices a cut or reset at once and a silent
node after the client's heartbeats run out, reports ``BrokerDown``, reconnects on the client's
schedule and reports ``BrokerUp``. Written once; each adapter says what its client does on
losing and on regaining the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from mqlab.brokers.sim.world import NodeState, NodeUnreachable, SimWorld

if TYPE_CHECKING:
    from mqlab.brokers.sim.adapter import SimBroker

_T = TypeVar("_T")


def connection_refused(world: SimWorld, node: str) -> str | None:
    """Why a connection to ``node`` is refused or reset right now (``None`` if it is not).

    A killed node refuses connections; a ``cut`` (the lab disables the node's proxy) refuses
    them too and ``reset_peer`` resets every connection through it.
    """
    if world.state(node) is NodeState.DOWN:
        return "connection refused"
    for fault in world.faults_on(node):
        if fault.kind == "cut":
            return "connection refused"
        if fault.kind == "reset_peer":
            return "connection reset by peer"
    return None


def connection_silent(world: SimWorld, node: str) -> bool:
    """True when ``node`` would not answer an open connection (paused, or a ``timeout``
    toxic that drops the data): only a client heartbeat notices this, after a while."""
    if world.state(node) is NodeState.PAUSED:
        return True
    return any(
        fault.kind == "timeout" or (fault.kind == "bandwidth" and fault.rate == 0)
        for fault in world.faults_on(node)
    )


async def within(seconds: float, operation: Awaitable[_T]) -> _T:
    """Await ``operation`` for at most ``seconds`` (virtual); raises ``TimeoutError``."""
    async with asyncio.timeout(max(seconds, 0.0)):
        return await operation


@dataclass(slots=True)
class _Outcome(Generic[_T]):
    value: _T | None = None
    error: BaseException | None = None


async def outlive_caller(world: SimWorld, work: Awaitable[_T], name: str) -> _T:
    """Await ``work`` as a task of the world that keeps running if the caller stops waiting.

    This is what a request written to a socket does: when the client's timeout fires while the
    node is paused (or the network is slow), the bytes are already on their way and the node
    acts on them once it gets to them. So a publish whose confirm timed out may still be
    stored, and a retry then duplicates it, exactly the lesson the real brokers teach.
    Exceptions of ``work`` reach the caller (and never count as a crashed world task).
    """

    async def guarded() -> _Outcome[_T]:
        try:
            return _Outcome(value=await work)
        except Exception as error:  # handed to the caller below
            return _Outcome(error=error)

    outcome: _Outcome[_T] = await asyncio.shield(world.spawn(guarded(), name=name))
    if outcome.error is not None:
        raise outcome.error
    return cast(_T, outcome.value)


async def first_of(timeout: float, *waits: Awaitable[object]) -> None:
    """Wait until one of ``waits`` completes or ``timeout`` (virtual) seconds pass, whichever
    comes first; the others are cancelled. (A server-side wait that must also notice a node
    being killed or paused waits for its own event *and* the node's next change.)"""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def next_signal(event: asyncio.Event, deadline: float) -> bool:
    """Wait until ``event`` is set again or the loop's clock reaches ``deadline``: True for a
    signal, False when time ran out. (How a client-side buffer waits for its next arrival: the
    caller looks at the buffer again after each signal.)"""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        return False
    event.clear()
    try:
        await within(remaining, event.wait())
    except TimeoutError:
        return False
    return True


def _nothing(reason: str) -> None:
    """What a client does on losing its connection when nothing is tied to it."""


def _nothing_to_restore() -> str:
    return ""


class SimLink:
    """One simulated client connection to ``node`` (see the module docstring).

    Args:
        adapter: the adapter whose bus gets BrokerDown / BrokerUp and whose connect timeout
            bounds every handshake.
        node: the world node the client talks to.
        silent_after: seconds a silent connection (paused node, ``timeout`` toxic) lasts
            before the client gives it up: its heartbeats or pings run out.
        silence: how the client says why it gave a silent connection up.
        reconnect_interval: seconds between two reconnection attempts.
        on_lost: what the client does when the connection drops (RabbitMQ: its channels close,
            so the node requeues their unacked messages), told why.
        on_restored: what the client does once reconnected (RabbitMQ: re-declare what it
            declared); returns words for the BrokerUp observation (may be empty).
    """

    def __init__(
        self,
        adapter: SimBroker,
        node: str,
        *,
        silent_after: float,
        silence: str,
        reconnect_interval: float,
        on_lost: Callable[[str], None] = _nothing,
        on_restored: Callable[[], str] = _nothing_to_restore,
    ) -> None:
        self._adapter = adapter
        self._world = adapter.world
        self.node = node
        self._silent_after = silent_after
        self._silence = silence
        self._reconnect_interval = reconnect_interval
        self._on_lost = on_lost
        self._on_restored = on_restored
        self.ready = asyncio.Event()
        """Set while the connection is up (a call waits on it during a reconnect)."""
        self._closing = False
        self._monitor: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """True while the connection is open."""
        return self.ready.is_set()

    async def open(self, *, retry_refused: float | None = None) -> None:
        """Connect: a handshake within the adapter's connect timeout.

        Args:
            retry_refused: try a refused connection again after this many seconds until the
                connect timeout (NATS's client does, for a lab still starting); None refuses
                at once (RabbitMQ's).

        Raises:
            BrokerUnavailable: refused, reset, or no answer within the connect timeout.
        """
        world, adapter = self._world, self._adapter
        loop = asyncio.get_running_loop()
        deadline = loop.time() + adapter.connect_timeout
        while (refused := connection_refused(world, self.node)) is not None:
            if retry_refused is None or loop.time() + retry_refused > deadline:
                raise adapter.unavailable(refused)
            await asyncio.sleep(retry_refused)
        try:
            await within(max(0.5, deadline - loop.time()), self._handshake())
        except TimeoutError:
            raise adapter.unavailable("no answer") from None
        except NodeUnreachable as error:
            raise adapter.unavailable(error.reason) from None
        self._closing = False
        self.ready.set()
        self._monitor = adapter.start_background(self._watch(), f"link to {self.node}")

    async def close(self) -> None:
        """Close the connection and stop watching it (nothing is reported)."""
        self._closing = True
        for task in (self._monitor, self._reconnector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._monitor = self._reconnector = None
        self.ready.clear()

    def lose(self, reason: str) -> None:
        """The connection dropped (``reason`` says how): report it and start reconnecting.
        Calls on a connection already down change nothing."""
        if not self.up or self._closing:
            return
        self.ready.clear()
        self._on_lost(reason)
        adapter = self._adapter
        adapter.report_node_down(self.node, f"connection to {adapter.address} lost: {reason}")
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = adapter.start_background(
                self._reconnect(), f"reconnect to {self.node}"
            )

    async def wait_up(self, timeout: float) -> bool:
        """Wait up to ``timeout`` (virtual) seconds for the connection; True when it is up."""
        if not self.up:
            with contextlib.suppress(TimeoutError):
                await within(timeout, self.ready.wait())
        return self.up

    async def _handshake(self) -> None:
        await self._world.transmit(self.node, "upstream")
        await self._world.transmit(self.node, "downstream")

    async def _watch(self) -> None:
        """React like the client's connection: a refused or reset path drops it at once, a
        silent one once the heartbeats run out."""
        world, node = self._world, self.node
        while not self._closing:
            refused = connection_refused(world, node)
            if refused is not None:
                self.lose(refused)
            elif self.up and connection_silent(world, node):
                try:
                    await within(self._silent_after, world.next_change(node))
                except TimeoutError:
                    self.lose(self._silence)
                continue
            await world.next_change(node)

    async def _reconnect(self) -> None:
        world, node, adapter = self._world, self.node, self._adapter
        while not self._closing:
            await asyncio.sleep(self._reconnect_interval)
            if connection_refused(world, node) is not None or connection_silent(world, node):
                continue
            try:
                await within(adapter.connect_timeout, self._handshake())
            except (TimeoutError, NodeUnreachable):
                continue
            restored = self._on_restored()
            self.ready.set()
            adapter.report_node_up(node, f"reconnected to {adapter.address}{restored}")
            return
