"""The world a check runs in: a bus, the exercise's broker (real or simulated) and its faults.

On ``sim`` everything is in the child process on the virtual clock (a fresh simulated world per
run, seeded); on a real system it is the lab's broker in the run's namespace. The namespace
survives the child's planned SIGKILLs (a consumer crash that recovery must survive), so the
adapter closes with ``keep=True``; the grader's final cleanup run deletes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from mqlab.brokers.registry import get_broker_class
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.scenarios.faults import FaultInjector, LabFaultInjector, SimFaultInjector

if TYPE_CHECKING:
    from mqlab.brokers.base import Broker
    from mqlab.grader.child import ChildRequest


@asynccontextmanager
async def open_environment(
    request: ChildRequest,
) -> AsyncIterator[tuple[ObservationBus, Broker | None, FaultInjector | None, Endpoints]]:
    """Yield ``(bus, broker, faults, endpoints)`` for one child run, and close them after.

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
    broker: Broker
    faults: FaultInjector
    if request.simulated:
        from mqlab.brokers.sim.world import SimWorld

        world = SimWorld(seed=request.seed, bus=bus)
        cls = get_broker_class(f"sim:{request.system}")
        broker = cls(bus=bus, world=world, namespace=request.namespace)  # type: ignore[call-arg]
        faults = SimFaultInjector(bus, world)
    else:
        broker = get_broker_class(request.system)(bus=bus, namespace=request.namespace)
        faults = LabFaultInjector(bus)
    await broker.connect()
    try:
        yield bus, broker, faults, endpoints
    finally:
        try:
            await faults.restore_all()
        finally:
            await broker.close(keep=not request.cleanup_only)
