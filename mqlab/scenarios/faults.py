"""Fault injection for scenarios, one vocabulary for the lab and the simulator.

The runner says "kill kafka-broker-2" or "add 300 ms latency in front of rabbitmq"; on a real
broker that becomes a SIGKILL through the lab or a Toxiproxy toxic, on ``sim`` a call on the
simulated world. Every injector remembers what it broke so the runner can put the lab back
together at the end of a run, also after an error or Ctrl-C: the next scenario must find
every broker alive and every proxy clean.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from mqlab.course.scenario import FaultAction, Toxic
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import FaultHealed, FaultInjected


class FaultInjector(ABC):
    """Applies and undoes faults; subclasses talk to the lab or to the simulated world."""

    reports_faults = True
    """Whether this injector emits FaultInjected / FaultHealed itself (the simulated world
    reports its own faults, exactly as the lab would, so the sim injector does not)."""

    def __init__(self, bus: ObservationBus, source: str) -> None:
        self.bus = bus
        self.source = source
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.toxic_targets: set[str] = set()

    async def apply(self, action: FaultAction, target: str) -> None:
        """kill / pause / resume / restart ``target`` and record an observation."""
        await self._process_fault(action, target)
        if action == "kill":
            self.killed.add(target)
        elif action == "pause":
            self.paused.add(target)
        elif action == "resume":
            self.paused.discard(target)
        elif action == "restart":
            self.killed.discard(target)
            self.paused.discard(target)
        if self.reports_faults:
            self.bus.emit(
                FaultInjected(at=self.bus.now(), broker=self.source, fault=action, target=target)
            )

    async def add_toxic(self, toxic: Toxic) -> None:
        """Add a network fault in front of ``toxic.target``."""
        await self._toxic(toxic)
        self.toxic_targets.add(toxic.target)
        params = tuple(
            (name, str(value))
            for name, value in (
                ("latency_ms", toxic.latency_ms),
                ("jitter_ms", toxic.jitter_ms),
                ("timeout_ms", toxic.timeout_ms),
                ("rate_kb", toxic.rate_kb),
            )
            if value
        )
        if not self.reports_faults:
            return
        self.bus.emit(
            FaultInjected(
                at=self.bus.now(),
                broker=self.source,
                fault=toxic.kind,
                target=toxic.target,
                params=params,
            )
        )

    async def heal(self, target: str) -> None:
        """Remove every network fault in front of ``target``."""
        await self._heal(target)
        self.toxic_targets.discard(target)
        if self.reports_faults:
            self.bus.emit(
                FaultHealed(at=self.bus.now(), broker=self.source, fault="network", target=target)
            )

    async def restore_all(self) -> list[str]:
        """Resume, restart and heal everything this injector broke; returns what it fixed.

        Errors are collected rather than raised so that one stubborn process does not stop
        the rest from being restored; the caller reports them.
        """
        restored: list[str] = []
        problems: list[str] = []
        for target in sorted(self.paused):
            try:
                await self.apply("resume", target)
                restored.append(f"resumed {target}")
            except Exception as error:
                problems.append(f"{target}: {error}")
        for target in sorted(self.killed):
            try:
                await self.apply("restart", target)
                restored.append(f"restarted {target}")
            except Exception as error:
                problems.append(f"{target}: {error}")
        for target in sorted(self.toxic_targets):
            try:
                await self.heal(target)
                restored.append(f"healed {target}")
            except Exception as error:
                problems.append(f"{target}: {error}")
        if problems:
            raise RuntimeError("could not restore " + "; ".join(problems))
        return restored

    @abstractmethod
    async def _process_fault(self, action: FaultAction, target: str) -> None: ...

    @abstractmethod
    async def _toxic(self, toxic: Toxic) -> None: ...

    @abstractmethod
    async def _heal(self, target: str) -> None: ...


class LabFaultInjector(FaultInjector):
    """Faults on the local lab's real processes and Toxiproxy proxies."""

    def __init__(self, bus: ObservationBus) -> None:
        super().__init__(bus, "lab")

    async def _process_fault(self, action: FaultAction, target: str) -> None:
        from mqlab.lab import faults

        operation = {
            "kill": faults.kill,
            "pause": faults.pause,
            "resume": faults.resume,
            "restart": faults.restart,
        }[action]
        # The lab's calls block (signals, health polling): keep them off the event loop so
        # background consumers keep running while a broker restarts.
        await asyncio.to_thread(operation, target)

    async def _toxic(self, toxic: Toxic) -> None:
        from mqlab.lab.faults import Toxics

        toxics = Toxics()
        if toxic.kind == "cut":
            await asyncio.to_thread(toxics.disable, toxic.target)
            return
        attributes: dict[str, Any] = {}
        kind = toxic.kind
        if kind == "latency":
            attributes = {"latency": toxic.latency_ms, "jitter": toxic.jitter_ms}
        elif kind in ("timeout", "reset_peer"):
            attributes = {"timeout": toxic.timeout_ms}
        elif kind == "bandwidth":
            attributes = {"rate": toxic.rate_kb}
        await asyncio.to_thread(toxics.add, toxic.target, kind, **attributes)

    async def _heal(self, target: str) -> None:
        from mqlab.lab.faults import Toxics

        toxics = Toxics()
        await asyncio.to_thread(toxics.clear, target)
        await asyncio.to_thread(toxics.enable, target)


class SimFaultInjector(FaultInjector):
    """Faults on the simulated world (same names, virtual time)."""

    reports_faults = False

    def __init__(self, bus: ObservationBus, world: Any) -> None:
        super().__init__(bus, "sim")
        self.world = world

    async def _process_fault(self, action: FaultAction, target: str) -> None:
        result = getattr(self.world, action)(target)
        if asyncio.iscoroutine(result):
            await result

    async def _toxic(self, toxic: Toxic) -> None:
        params: dict[str, float] = {}
        kind: str = toxic.kind
        if kind == "cut":
            kind = "partition"
        elif kind == "latency":
            params = {"latency": toxic.latency_ms / 1000.0, "jitter": toxic.jitter_ms / 1000.0}
        elif kind in ("timeout", "reset_peer"):
            params = {"timeout": toxic.timeout_ms / 1000.0}
        elif kind == "bandwidth":
            params = {"rate": float(toxic.rate_kb)}
        result = self.world.add_network_fault(toxic.target, kind, **params)
        if asyncio.iscoroutine(result):
            await result

    async def _heal(self, target: str) -> None:
        result = self.world.remove_network_fault(target)
        if asyncio.iscoroutine(result):
            await result
