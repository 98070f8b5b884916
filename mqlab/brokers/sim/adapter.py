"""What every simulated adapter adds to its system's interface: the world it lives in.

A simulated adapter implements its system's interface exactly as the real adapter does
(``class SimRabbitMQBroker(SimBroker, RabbitMQAPI)``); this base gives it the run's
:class:`~mqlab.brokers.sim.world.SimWorld`: observations on the world's bus (stamped with the
virtual clock), a deterministic namespace, background work as world tasks, the world as its
:attr:`faults` and errors that point at the injected fault rather than at the lab.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Coroutine
from typing import Any, ClassVar, Protocol, TypeVar

from mqlab.brokers.base import Broker, BrokerError, Snapshot
from mqlab.brokers.sim.world import SimWorld

SIMULATOR_ADDRESS = "the simulator"
"""How simulated adapters name their address in errors (there is no host or port)."""

_SnapshotT_co = TypeVar("_SnapshotT_co", bound=Snapshot, covariant=True)


class NamespacedServerModel(Protocol[_SnapshotT_co]):
    """A simulated server that answers a snapshot of the names that start with a prefix
    (the SQS, NATS and RabbitMQ server models)."""

    def snapshot(self, prefix: str) -> _SnapshotT_co:
        """The state of everything whose name starts with ``prefix``."""
        ...


class SimBroker(Broker):
    """Base of every simulated adapter.

    Args:
        world: the run's world; a private one (seed 0) when omitted, closed with the adapter.
        bus: must be the world's bus when both are given (observations carry its virtual
            clock); the world's bus by default.
        namespace: defaults to a deterministic one from the world (names end up in traces).
        endpoints, connect_timeout: as :class:`mqlab.brokers.base.Broker` (``endpoints`` is
            not used: the simulator has no addresses).
    """

    backend: ClassVar[str] = "sim"
    nodes: ClassVar[tuple[str, ...]]
    """The world nodes this adapter's clients talk to (what its address names)."""

    def __init__(self, *, world: SimWorld | None = None, **options: Any) -> None:
        # ``options``: the system interface's and :class:`Broker`'s, passed on along the MRO
        # (each simulated adapter's own ``__init__`` types them).
        bus = options.pop("bus", None)
        if world is not None and bus is not None and bus is not world.bus:
            raise BrokerError("a simulated adapter emits on its world's bus: pass one of them")
        self._owns_world = world is None
        self.world = world if world is not None else SimWorld(bus=bus)
        options["namespace"] = options.get("namespace") or self.world.new_namespace()
        super().__init__(bus=self.world.bus, **options)
        self.address = f"{SIMULATOR_ADDRESS} ({', '.join(self.nodes)})"

    @property
    def faults(self) -> SimWorld:
        """The run's world: its nodes are what faults on this adapter's broker act on."""
        return self.world

    @abstractmethod
    def peek(self) -> Snapshot | None:
        """This namespace's state read straight from the server model, as ``inspect()``
        would answer it but without a simulated request: no virtual time passes and nothing in
        the run changes (no timer, no reconnect, no observation), however often a UI looks.
        None while the adapter is not connected."""

    def peek_at(self, server: NamespacedServerModel[_SnapshotT_co] | None) -> _SnapshotT_co | None:
        """:meth:`peek` for an adapter with one server model: ``server``'s snapshot of this
        namespace, None while not connected (no server)."""
        return None if server is None else server.snapshot(f"{self.namespace}-")

    def start_background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` as a task of the world (stopped with it; a crash fails the run)."""
        task: asyncio.Task[None] = self.world.spawn(work, name=f"{self.name} {name}")
        return task

    async def _release_world(self) -> None:
        """Close the world if this adapter created it (call last in ``_close``)."""
        if self._owns_world:
            await self.world.aclose()
