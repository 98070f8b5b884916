"""Fault injection for scenarios: the run's faults, applied and undone in one vocabulary.

The runner says "kill kafka-broker-2" or "add 300 ms latency in front of rabbitmq"; the broker
adapter's :attr:`~mqlab.brokers.base.Broker.faults` carries it out: a SIGKILL or a Toxiproxy
toxic in the lab, a change of the simulated world on ``sim`` (both speak
:mod:`mqlab.brokers.faults`). The injector remembers what it broke so the runner can put the
lab back together at the end of a run, also after an error or Ctrl-C: the next scenario must
find every broker alive and every proxy clean.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mqlab.brokers.faults import Faults, NetworkFault, ProcessFault
from mqlab.course.scenario import Toxic
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import FaultHealed, FaultInjected


class FaultInjector:
    """Applies and undoes a run's faults through ``faults`` (the lab's, or the world's).

    Args:
        bus: where FaultInjected / FaultHealed go when ``faults`` does not report them itself
            (the simulated world does, at the virtual instant they happen; the lab does not).
        faults: the broker's :class:`~mqlab.brokers.faults.Faults`.
        source: the ``broker`` field of the observations this injector emits.
        announce: told ``(action, target)`` just before a kill or a pause is applied. The
            observation comes only after it was applied, so a process killed in between
            (the grader's child on Ctrl-C) would leave a broker broken that nobody knew of;
            what was announced is put back as if it had happened (a resume of a process that
            runs is harmless, a restart of one is only slow).
    """

    def __init__(
        self,
        bus: ObservationBus,
        faults: Faults,
        source: str = "lab",
        announce: Callable[[ProcessFault, str], None] | None = None,
    ) -> None:
        self.bus = bus
        self.faults = faults
        self.source = source
        self.announce = announce
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self._network: dict[str, list[NetworkFault]] = {}

    @property
    def toxic_targets(self) -> set[str]:
        """Nodes that have network faults this injector put there."""
        return set(self._network)

    async def apply(self, action: ProcessFault, target: str) -> None:
        """kill / pause / resume / restart ``target`` (and report it)."""
        breaking = action in ("kill", "pause")
        if self.announce is not None and breaking:
            self.announce(action, target)
        applying = asyncio.ensure_future(self.faults.apply(action, target))
        try:
            await asyncio.shield(applying)
        except asyncio.CancelledError:
            # Cancelled in the middle (Ctrl-C, the grader gone): the lab's kill or pause goes
            # on in its thread whatever the caller does. Wait for it and record it, so the
            # clean-up that follows restarts a broker that really was killed, instead of
            # resuming it while the kill still lands (a broker left dead, seen under load).
            # A cancelled resume or restart needs no wait: its target stays recorded as
            # broken, and restoring it again is harmless.
            if breaking:
                await asyncio.wait([applying])
                if not applying.cancelled() and applying.exception() is None:
                    self._record(action, target)
            raise
        self._record(action, target)
        if not self.faults.reports_itself:
            self.bus.emit(
                FaultInjected(at=self.bus.now(), broker=self.source, fault=action, target=target)
            )

    def _record(self, action: ProcessFault, target: str) -> None:
        """Remember what ``action`` did to ``target``, for :meth:`restore_all`."""
        if action == "kill":
            self.killed.add(target)
            self.paused.discard(target)  # a killed process is no longer paused: restart it
        elif action == "pause":
            self.paused.add(target)
        elif action == "resume":
            self.paused.discard(target)
        elif action == "restart":
            self.killed.discard(target)
            self.paused.discard(target)

    async def add_toxic(self, toxic: Toxic) -> None:
        """Add the network fault a scenario's ``toxic`` step describes."""
        await self.add_network_fault(toxic.target, toxic.network_fault())

    async def add_network_fault(self, target: str, fault: NetworkFault) -> None:
        """Put ``fault`` on the path to ``target`` (and report it)."""
        await self.faults.add_network_fault(target, fault)
        self._network.setdefault(target, []).append(fault)
        if not self.faults.reports_itself:
            self.bus.emit(
                FaultInjected(
                    at=self.bus.now(),
                    broker=self.source,
                    fault=fault.kind,
                    target=target,
                    params=fault.describe(),
                )
            )

    async def heal(self, target: str) -> None:
        """Remove every network fault in front of ``target`` (and report each one healed)."""
        await self.faults.remove_network_faults(target)
        healed = self._network.pop(target, [])
        if not self.faults.reports_itself:
            for fault in healed:
                self.bus.emit(
                    FaultHealed(
                        at=self.bus.now(), broker=self.source, fault=fault.kind, target=target
                    )
                )

    async def restore_all(self) -> list[str]:
        """Resume, restart and heal everything this injector broke; returns what it fixed.

        Errors are collected rather than raised so that one stubborn process does not stop
        the rest from being restored; the caller reports them.
        """
        restored: list[str] = []
        problems: list[str] = []
        # Paused first, then killed (a node paused and then killed is only in `killed`: it is
        # restarted, not resumed), then the network in front of them.
        repairs: list[tuple[str, list[str], Callable[[str], Awaitable[None]]]] = [
            ("resumed", sorted(self.paused), lambda target: self.apply("resume", target)),
            ("restarted", sorted(self.killed), lambda target: self.apply("restart", target)),
            ("healed", sorted(self._network), self.heal),
        ]
        for done, targets, repair in repairs:
            for target in targets:
                try:
                    await repair(target)
                    restored.append(f"{done} {target}")
                except Exception as error:
                    problems.append(f"{target}: {error}")
        if problems:
            raise RuntimeError("could not restore " + "; ".join(problems))
        return restored
