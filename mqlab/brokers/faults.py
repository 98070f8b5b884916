"""One vocabulary of injected faults, for the lab's brokers and the simulator alike.

A fault targets a *node*: a broker process as the lab names it (``kafka-broker-2``,
``rabbitmq``, ``nats``, ``sqs``, ``kafka-controller``), which the simulator's nodes are named
after, so a scenario that says "pause kafka-broker-2" means the same process on both.

* **Process faults** (:data:`PROCESS_FAULTS`): ``kill`` (SIGKILL: no shutdown, no flush),
  ``pause`` (SIGSTOP: connections stay open, nothing answers), ``resume`` (SIGCONT) and
  ``restart`` (a clean stop and start with the same data, waiting until it is up).
* **Network faults** (:data:`NETWORK_FAULT_KINDS`) on the clients' path to a node (a Toxiproxy
  toxic in the lab, the simulated network on ``sim``): ``latency``, ``timeout`` (data stops;
  the connection closes after a while, or never), ``reset_peer`` (connections are reset),
  ``bandwidth`` and ``cut`` (the node is cut off: connections are refused; the lab disables
  its proxy). One name for the cut: "partition" would read as a Kafka partition here.

Times are seconds and rates KB/s everywhere in this vocabulary. The scenario format's
``latency_ms``-style keys are converted by :meth:`NetworkFault.from_milliseconds` and the
lab's Toxiproxy integers by :meth:`NetworkFault.toxiproxy_attributes`: one place each.

:class:`Faults` is what can inject them. :class:`LabFaults` does it to the local lab (the lab's
own functions in :mod:`mqlab.lab.faults`, run off the event loop); the simulator's world is the
other implementation (:class:`mqlab.brokers.sim.world.SimWorld`). Every adapter names its own
through :attr:`mqlab.brokers.base.Broker.faults`, so code that injects faults never needs to
know which kind of broker it has.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, cast, get_args

from mqlab.brokers.base import BrokerError

if TYPE_CHECKING:
    from mqlab.lab.faults import ToxicKind

ProcessFault = Literal["kill", "pause", "resume", "restart"]
PROCESS_FAULTS: tuple[ProcessFault, ...] = get_args(ProcessFault)

NetworkFaultKind = Literal["latency", "timeout", "reset_peer", "bandwidth", "cut"]
NETWORK_FAULT_KINDS: tuple[NetworkFaultKind, ...] = get_args(NetworkFaultKind)

Stream = Literal["upstream", "downstream", "both"]
"""Which direction a network fault applies to: client -> node, node -> client, or both."""
STREAMS: tuple[Stream, ...] = get_args(Stream)

# What each kind takes: (settings it allows, settings it needs).
_SETTINGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "latency": (frozenset({"latency", "jitter"}), frozenset({"latency"})),
    "timeout": (frozenset({"timeout"}), frozenset()),
    "reset_peer": (frozenset({"timeout"}), frozenset()),
    "bandwidth": (frozenset({"rate"}), frozenset({"rate"})),
    "cut": (frozenset(), frozenset()),
}


class FaultError(BrokerError):
    """A fault that cannot be applied: an unknown node or kind, a bad setting, an impossible
    transition (pausing a node that is down)."""


@dataclass(frozen=True, slots=True)
class NetworkFault:
    """A network fault on the clients' path to a node.

    Attributes:
        kind: one of :data:`NETWORK_FAULT_KINDS`.
        stream: the direction it applies to (``both`` by default: the whole path).
        latency: ``latency``: added delay per leg, seconds.
        jitter: ``latency``: up to this many seconds more or less, at random.
        timeout: ``timeout``: seconds until the connection closes (0: never, the data is
            dropped); ``reset_peer``: seconds until the reset (0: at once).
        rate: ``bandwidth``: KB/s (0: nothing flows).

    Raises:
        FaultError: an unknown kind or stream, a setting the kind does not take or needs and
            lacks, or a negative or infinite number.
    """

    kind: NetworkFaultKind
    stream: Stream = "both"
    latency: float | None = None
    jitter: float | None = None
    timeout: float | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _SETTINGS:
            known = ", ".join(NETWORK_FAULT_KINDS)
            raise FaultError(f"unknown network fault {self.kind!r} (known: {known})")
        if self.stream not in STREAMS:
            raise FaultError(f"unknown stream {self.stream!r} (known: {', '.join(STREAMS)})")
        allowed, needed = _SETTINGS[self.kind]
        given = self.settings()
        unexpected = sorted(set(given) - allowed)
        if unexpected:
            takes = ", ".join(sorted(allowed)) or "nothing"
            raise FaultError(f"{self.kind}: unexpected setting(s) {unexpected} (it takes: {takes})")
        missing = sorted(needed - set(given))
        if missing:
            raise FaultError(f"{self.kind}: missing setting(s) {missing}")
        for name, value in given.items():
            if value < 0 or not math.isfinite(value):
                raise FaultError(f"{self.kind}: {name} must be a finite number >= 0, not {value}")

    def settings(self) -> dict[str, float]:
        """The settings given (seconds, KB/s), by name."""
        values = {
            "latency": self.latency,
            "jitter": self.jitter,
            "timeout": self.timeout,
            "rate": self.rate,
        }
        return {name: value for name, value in values.items() if value is not None}

    def applies_to(self, stream: str) -> bool:
        """True when this fault affects traffic flowing in ``stream``."""
        return self.stream in ("both", stream)

    def describe(self) -> tuple[tuple[str, str], ...]:
        """The fault's settings as observations show them (``FaultInjected.params``)."""
        shown = {"stream": self.stream, **{k: f"{v:g}" for k, v in sorted(self.settings().items())}}
        return tuple(shown.items())

    @classmethod
    def from_milliseconds(
        cls,
        kind: NetworkFaultKind,
        *,
        latency_ms: int = 0,
        jitter_ms: int = 0,
        timeout_ms: int = 0,
        rate_kb: int = 0,
        stream: Stream = "both",
    ) -> NetworkFault:
        """The fault a scenario file's ``toxic`` step describes (milliseconds, KB/s; settings
        the kind does not take are ignored, as the format always had them)."""
        if kind == "latency":
            return cls(kind, stream, latency=latency_ms / 1000.0, jitter=jitter_ms / 1000.0)
        if kind in ("timeout", "reset_peer"):
            return cls(kind, stream, timeout=timeout_ms / 1000.0)
        if kind == "bandwidth":
            return cls(kind, stream, rate=float(rate_kb))
        return cls(kind, stream)

    def toxiproxy_attributes(self) -> dict[str, int]:
        """The Toxiproxy toxic's attributes (whole milliseconds and KB/s). Not for ``cut``,
        which the lab does by disabling the proxy."""
        if self.kind == "latency":
            return {
                "latency": round((self.latency or 0.0) * 1000),
                "jitter": round((self.jitter or 0.0) * 1000),
            }
        if self.kind in ("timeout", "reset_peer"):
            return {"timeout": round((self.timeout or 0.0) * 1000)}
        if self.kind == "bandwidth":
            return {"rate": round(self.rate or 0.0)}
        raise FaultError(f"a {self.kind} fault is not a Toxiproxy toxic")


class Faults(ABC):
    """What can be done to the nodes of a run (see the module docstring).

    ``reports_itself`` tells whether the implementation emits ``FaultInjected`` /
    ``FaultHealed`` observations on its own (the simulated world does, at the virtual instant
    the fault happens); when it does not, the caller reports them.
    """

    reports_itself: ClassVar[bool] = False

    @abstractmethod
    async def kill(self, node: str) -> None:
        """SIGKILL ``node``: it stops at once, without shutting down.

        Raises:
            FaultError: an unknown node (the lab raises its own LabError).
        """

    @abstractmethod
    async def pause(self, node: str) -> None:
        """SIGSTOP ``node``: its connections stay open, nothing answers until :meth:`resume`."""

    @abstractmethod
    async def resume(self, node: str) -> None:
        """SIGCONT a paused ``node``."""

    @abstractmethod
    async def restart(self, node: str) -> None:
        """Stop ``node`` (if it runs) and start it again; returns once it is up."""

    @abstractmethod
    async def add_network_fault(self, node: str, fault: NetworkFault) -> None:
        """Put ``fault`` on the clients' path to ``node``."""

    @abstractmethod
    async def remove_network_faults(self, node: str) -> None:
        """Remove every network fault on the path to ``node`` (a cut node is reachable again)."""

    async def apply(self, action: ProcessFault, node: str) -> None:
        """Apply the process fault named ``action`` to ``node``.

        Raises:
            FaultError: ``action`` is not a process fault.
        """
        if action == "kill":
            await self.kill(node)
        elif action == "pause":
            await self.pause(node)
        elif action == "resume":
            await self.resume(node)
        elif action == "restart":
            await self.restart(node)
        else:
            known = ", ".join(PROCESS_FAULTS)
            raise FaultError(f"unknown process fault {action!r} (known: {known})")


_LAB_STREAMS: dict[Stream, tuple[Literal["upstream", "downstream"], ...]] = {
    "upstream": ("upstream",),
    "downstream": ("downstream",),
    "both": ("upstream", "downstream"),
}
"""Toxiproxy puts a toxic on one direction: a fault on the whole path is one toxic each way."""


class LabFaults(Faults):
    """Faults on the local lab: its processes by their pid records, its Toxiproxy proxies.

    The lab's calls block (signals, health polling), so they run in a thread: background
    consumers keep running while a broker restarts.
    """

    async def kill(self, node: str) -> None:
        from mqlab.lab import faults

        await asyncio.to_thread(faults.kill, node)

    async def pause(self, node: str) -> None:
        from mqlab.lab import faults

        await asyncio.to_thread(faults.pause, node)

    async def resume(self, node: str) -> None:
        from mqlab.lab import faults

        await asyncio.to_thread(faults.resume, node)

    async def restart(self, node: str) -> None:
        from mqlab.lab import faults

        await asyncio.to_thread(faults.restart, node)

    async def add_network_fault(self, node: str, fault: NetworkFault) -> None:
        from mqlab.lab.faults import Toxics

        toxics = Toxics()
        if fault.kind == "cut":
            await asyncio.to_thread(toxics.disable, node)
            return
        kind = cast("ToxicKind", fault.kind)  # every network fault but the cut is a toxic
        attributes = fault.toxiproxy_attributes()
        for stream in _LAB_STREAMS[fault.stream]:
            await asyncio.to_thread(toxics.add, node, kind, stream=stream, **attributes)

    async def remove_network_faults(self, node: str) -> None:
        from mqlab.lab.faults import Toxics

        toxics = Toxics()
        await asyncio.to_thread(toxics.clear, node)  # removes every toxic, enables the proxy
