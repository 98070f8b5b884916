"""The world a check runs in: a bus, the exercise's broker (real or simulated) and its faults.

On ``sim`` everything is in the child process on the virtual clock (a fresh simulated world per
run, seeded); on a real system it is the lab's broker in the run's namespace. The namespace
survives the child's planned SIGKILLs (a consumer crash that recovery must survive), so the
adapter closes with ``keep=True``; the grader's final cleanup run deletes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from mqlab.brokers.faults import ProcessFault
from mqlab.brokers.registry import BrokerOptions, BrokerRef, create_broker
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.scenarios.faults import FaultInjector

if TYPE_CHECKING:
    from mqlab.brokers.base import Broker
    from mqlab.grader.child import ChildRequest


@asynccontextmanager
async def open_environment(
    request: ChildRequest, announce_fault: Callable[[ProcessFault, str], None] | None = None
) -> AsyncIterator[tuple[ObservationBus, Broker | None, FaultInjector | None, Endpoints]]:
    """Yield ``(bus, broker, faults, endpoints)`` for one child run, and close them after.

    ``announce_fault`` is told of a kill or pause before it is applied (see
    :class:`~mqlab.scenarios.faults.FaultInjector`).

    Raises:
        BrokerUnavailable: the lab's broker does not answer (reported to the learner as such).
    """
    bus = ObservationBus()
    endpoints = Endpoints.local()
    if request.system is None:
        if request.simulated:
            from mqlab.brokers.sim.world import SimWorld

            SimWorld(seed=request.seed, bus=bus)  # the bus reads the virtual clock
        yield bus, None, None, endpoints
        return
    broker = create_broker(
        BrokerRef.of(request.system, simulated=request.simulated),
        bus=bus,
        seed=request.seed,
        options=BrokerOptions(namespace=request.namespace),
    )
    faults = FaultInjector(
        bus, broker.faults, source="sim" if request.simulated else "lab", announce=announce_fault
    )
    for fault, node in request.restore:
        # What a killed child broke is this run's to put back (restore_all, below).
        (faults.paused if fault == "pause" else faults.killed).add(node)
    await broker.connect()
    try:
        yield bus, broker, faults, endpoints
    finally:
        try:
            await faults.restore_all()
        finally:
            await broker.close(keep=not request.cleanup_only)
