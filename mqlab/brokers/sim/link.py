"""What the simulator's RabbitMQ, SQS and NATS adapters share.

Each of them runs inside a :class:`~mqlab.brokers.sim.world.SimWorld` (virtual clock, seeded
randomness, node faults) and reaches its node through the world's simulated network, so a
learner's call fails, waits or goes through exactly when the same call against the lab's
broker behind Toxiproxy would. The helpers here answer the questions every adapter asks about
that path: can a connection be opened right now, would an open one notice anything, and how
long may a call take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from mqlab.brokers.sim.world import NodeState, SimWorld

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
