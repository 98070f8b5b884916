"""The simulated world one run shares: virtual clock, seeded randomness, nodes, faults.

Every simulated adapter of a run takes the same :class:`SimWorld`, so the Kafka model, the
RabbitMQ/SQS/NATS models and the scenario runner agree on "now", draw random numbers from one
seeded stream (same seed, same run) and see the same injected faults.

How a model uses the world (the API other models rely on; it stays stable):

* Time: run on :class:`mqlab.brokers.sim.clock.VirtualTimeLoop` (``run_virtual``). Wait only
  with asyncio (``asyncio.sleep``, ``wait_for``, ``Event``, ``Condition``); :meth:`SimWorld.now`
  is the loop's virtual clock, and the world's bus stamps observations with it.
* Randomness and ids: only :attr:`SimWorld.rng`, :meth:`SimWorld.next_id` and
  :meth:`SimWorld.new_namespace` (never ``uuid``, ``secrets``, ``time.time`` or ``random``):
  that is what makes the same seed give a byte-identical trace.
* Nodes: the lab's process names, from the table of systems
  (:func:`mqlab.brokers.registry.lab_nodes`: ``kafka-controller``, ``kafka-broker-1``..``3``,
  ``rabbitmq``, ``nats``, ``sqs``). Each is ``up``, ``paused``
  (SIGSTOP: connections stay open, nothing answers) or ``down`` (killed: connections refused).
  A model reads :meth:`SimWorld.state` and subscribes with :meth:`SimWorld.watch` to react in
  its own way (Kafka fences a broker after its session timeout, RabbitMQ requeues unacked
  messages, ...). :meth:`SimWorld.register_node` adds nodes beyond the lab's.
* Faults, in the one vocabulary of :mod:`mqlab.brokers.faults` (the world is a
  :class:`~mqlab.brokers.faults.Faults`): ``await world.kill(node)``, ``pause``, ``resume``,
  ``restart``; network faults on the client path to a node with
  ``await world.add_network_fault(node, NetworkFault("latency", latency=0.3))`` /
  ``remove_network_faults(node)`` (times in seconds). Each emits
  ``FaultInjected`` / ``FaultHealed`` and, for node state, ``BrokerDown`` / ``BrokerUp``
  (``broker="lab"``, as the lab reports them).
* Client traffic: a model awaits :meth:`SimWorld.transmit` for each leg of a request
  (``"upstream"`` client -> node, ``"downstream"`` node -> client). It returns at once on a
  healthy path and otherwise applies the node's state and network faults exactly as the lab's
  Toxiproxy would (delay, hang, reset). :meth:`SimWorld.clear_path` is the allocation-free
  check for hot paths. Replication between Kafka brokers does not use it: in the lab that
  traffic never passes Toxiproxy.
* Background work: start it with :meth:`SimWorld.spawn` so :meth:`SimWorld.aclose` can stop it
  and an unexpected exception lands in :attr:`SimWorld.errors` instead of vanishing.
* Shared models: :meth:`SimWorld.model` creates one instance per key and world, so two
  adapters of one run see the same brokers. Each system's server model is a :class:`SimServer`,
  whose ``of(world)`` looks its one instance up (``SimKafkaCluster.of(world)``,
  ``SimRabbitMQServer.of(world)`` ...): the world itself knows no system.
"""

from __future__ import annotations

import asyncio
import difflib
import enum
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from mqlab.brokers.base import NAMESPACE_PREFIX, BrokerError
from mqlab.brokers.faults import FaultError, Faults, NetworkFault
from mqlab.brokers.registry import lab_nodes
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import BrokerDown, BrokerUp, FaultHealed, FaultInjected, Observation

_M = TypeVar("_M")

LAB_SOURCE = "lab"
"""``broker`` field of the observations the world emits: the lab would report the same."""


class NodeState(enum.StrEnum):
    """What a node's process is doing, as its clients feel it."""

    UP = "up"
    PAUSED = "paused"  # SIGSTOP: TCP connections stay open, requests wait, nothing answers
    DOWN = "down"  # killed: connections are refused or reset


class SimFaultError(FaultError):
    """A fault the world cannot apply (unknown node, impossible transition)."""


class NodeUnreachable(BrokerError):
    """A request leg to or from ``node`` failed the way a socket does (``reason`` says how:
    ``connection refused``, ``connection reset by peer``, ``connection closed``)."""

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"{node}: {reason}")


@dataclass(frozen=True, slots=True)
class NodeChange:
    """What :meth:`SimWorld.watch` callbacks receive: ``node`` went from ``previous`` to
    ``state`` because of ``cause`` (``kill``, ``pause``, ``resume``, ``restart``, ``start``)."""

    node: str
    previous: NodeState
    state: NodeState
    cause: str


NodeWatcher = Callable[[NodeChange], None]


class SimWorld(Faults):
    """Shared state of one simulated run (see the module docstring for how models use it).

    Args:
        seed: seeds :attr:`rng`, the only source of randomness the simulator may use.
        bus: observation bus; its clock is replaced by the virtual clock.
        startup_seconds: per-node restart durations overriding the table of systems'
            (:attr:`mqlab.brokers.registry.Node.startup_seconds`).
    """

    reports_itself = True
    """The world emits FaultInjected / FaultHealed itself, at the virtual instant they happen."""

    def __init__(
        self,
        seed: int = 0,
        bus: ObservationBus | None = None,
        *,
        startup_seconds: Mapping[str, float] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.bus = bus if bus is not None else ObservationBus()
        self.bus.clock = self.now
        self.errors: list[BaseException] = []
        """Unexpected exceptions of background tasks (a model bug); tests assert it is empty."""
        self._id_counter = 0
        self._namespace_counter = 0
        self._states: dict[str, NodeState] = {}
        self._startup: dict[str, float] = {}
        self._faults: dict[str, list[NetworkFault]] = {}
        self._watchers: list[NodeWatcher] = []
        self._changed: dict[str, asyncio.Event] = {}
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._models: dict[str, object] = {}
        for lab_node in lab_nodes():
            self.register_node(lab_node.name, lab_node.startup_seconds)
        for node, seconds in (startup_seconds or {}).items():
            self._node(node)
            self._startup[node] = seconds

    # -- time, randomness, ids -------------------------------------------------------------

    def now(self) -> float:
        """Virtual seconds (the running loop's clock; 0.0 outside a loop)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0

    def next_id(self, prefix: str) -> str:
        """A deterministic unique id (``prefix-000001``): no uuid4 in the simulator."""
        self._id_counter += 1
        return f"{prefix}-{self._id_counter:06d}"

    def new_namespace(self) -> str:
        """A namespace for a simulated adapter (``mq-sim001``): deterministic, unlike
        :func:`mqlab.brokers.base.new_namespace`, because topic names end up in traces."""
        self._namespace_counter += 1
        return f"{NAMESPACE_PREFIX}-sim{self._namespace_counter:03d}"

    # -- nodes -----------------------------------------------------------------------------

    def register_node(self, node: str, startup_seconds: float = 1.0) -> None:
        """Add a node (up) that faults can target; registering twice changes nothing."""
        if node not in self._states:
            self._states[node] = NodeState.UP
            self._startup[node] = startup_seconds

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node faults can target, in registration order."""
        return tuple(self._states)

    def state(self, node: str) -> NodeState:
        """``node``'s current state.

        Raises:
            SimFaultError: ``node`` is unknown (with a "did you mean").
        """
        return self._states[self._node(node)]

    def is_up(self, node: str) -> bool:
        """True when ``node``'s process runs (not paused, not killed)."""
        return self._states.get(node) is NodeState.UP

    @property
    def paused_nodes(self) -> frozenset[str]:
        """Nodes currently paused."""
        return frozenset(n for n, s in self._states.items() if s is NodeState.PAUSED)

    @property
    def killed_nodes(self) -> frozenset[str]:
        """Nodes currently down."""
        return frozenset(n for n, s in self._states.items() if s is NodeState.DOWN)

    def watch(self, watcher: NodeWatcher) -> Callable[[], None]:
        """Call ``watcher`` (synchronously, in subscription order) on every node state change.

        Returns:
            A function that unsubscribes again.
        """
        self._watchers.append(watcher)

        def unwatch() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return unwatch

    async def until_state(self, node: str, *states: NodeState) -> NodeState:
        """Wait (virtual time) until ``node`` is in one of ``states``; returns that state."""
        self._node(node)
        while self._states[node] not in states:
            await self._change_event(node).wait()
        return self._states[node]

    async def next_change(self, node: str) -> None:
        """Wait (virtual time) for the next change of ``node``'s state *or* of the network
        faults on its path (what a client's connection monitor reacts to: a proxy that cuts
        the connection changes no node state)."""
        self._node(node)
        await self._change_event(node).wait()

    # -- process faults (the lab's vocabulary) ---------------------------------------------

    async def kill(self, node: str) -> None:
        """SIGKILL ``node``: it stops at once, clients get connection refused. A node that is
        already down stays down (nothing is emitted)."""
        name = self._node(node)
        if self._states[name] is NodeState.DOWN:
            return
        self._emit_fault("kill", name)
        self._set_state(name, NodeState.DOWN, "kill", "killed (SIGKILL)")
        await asyncio.sleep(0)

    async def pause(self, node: str) -> None:
        """SIGSTOP ``node``: connections stay open but nothing answers until :meth:`resume`.

        Raises:
            SimFaultError: ``node`` is down (restart it instead) or already paused.
        """
        name = self._node(node)
        current = self._states[name]
        if current is not NodeState.UP:
            raise SimFaultError(f"cannot pause {name}: it is {current.value}")
        self._emit_fault("pause", name)
        self._set_state(name, NodeState.PAUSED, "pause", "paused (SIGSTOP)")
        await asyncio.sleep(0)

    async def resume(self, node: str) -> None:
        """SIGCONT a paused ``node``: it carries on where it stopped.

        Raises:
            SimFaultError: ``node`` is not paused.
        """
        name = self._node(node)
        current = self._states[name]
        if current is not NodeState.PAUSED:
            raise SimFaultError(f"cannot resume {name}: it is {current.value}, not paused")
        self._emit_fault("resume", name)
        self.bus.emit(FaultHealed(at=self.now(), broker=LAB_SOURCE, fault="pause", target=name))
        self._set_state(name, NodeState.UP, "resume", "resumed (SIGCONT)")
        await asyncio.sleep(0)

    async def restart(self, node: str) -> None:
        """Stop ``node`` (if it runs or is paused) and start it again; returns once it is up,
        after its start-up time in virtual seconds (the table of systems says how long)."""
        name = self._node(node)
        self._emit_fault("restart", name)
        was_killed = self._states[name] is NodeState.DOWN
        if not was_killed:
            self._set_state(name, NodeState.DOWN, "restart", "stopped for restart")
        await asyncio.sleep(self._startup[name])
        if self._states[name] is not NodeState.DOWN:
            return  # somebody else started it meanwhile
        if was_killed:
            self.bus.emit(FaultHealed(at=self.now(), broker=LAB_SOURCE, fault="kill", target=name))
        self._set_state(name, NodeState.UP, "start", "started")
        await asyncio.sleep(0)

    # -- network faults --------------------------------------------------------------------

    async def add_network_fault(self, node: str, fault: NetworkFault) -> None:
        """Put ``fault`` on the client path to ``node`` (a toxic on its proxy in the lab).

        What each kind does here (settings in seconds, rates in KB/s): ``latency`` delays each
        leg by ``latency`` (+- ``jitter``, drawn from the seeded rng); ``timeout`` stops the
        data and closes the connection after ``timeout`` (0: never, and the data is dropped);
        ``reset_peer`` resets the connection after ``timeout`` (0: at once); ``bandwidth``
        lets ``rate`` KB/s through (0: nothing); ``cut`` refuses connections until removed.

        Raises:
            SimFaultError: an unknown node.
        """
        name = self._node(node)
        self._faults.setdefault(name, []).append(fault)
        self.bus.emit(
            FaultInjected(
                at=self.now(),
                broker=LAB_SOURCE,
                fault=fault.kind,
                target=name,
                params=fault.describe(),
            )
        )
        self._notify(name)
        await asyncio.sleep(0)

    async def remove_network_faults(self, node: str) -> None:
        """Remove every network fault on the path to ``node`` (a cut node is reachable again)."""
        name = self._node(node)
        removed = self._faults.pop(name, [])
        for fault in removed:
            self.bus.emit(
                FaultHealed(at=self.now(), broker=LAB_SOURCE, fault=fault.kind, target=name)
            )
        if removed:
            self._notify(name)
        await asyncio.sleep(0)

    @property
    def network_faults(self) -> dict[str, tuple[NetworkFault, ...]]:
        """Active network faults per node (a copy)."""
        return {node: tuple(faults) for node, faults in self._faults.items()}

    def faults_on(self, node: str) -> tuple[NetworkFault, ...]:
        """Active network faults on the path to ``node``."""
        return tuple(self._faults.get(node, ()))

    # -- client traffic --------------------------------------------------------------------

    def clear_path(self, node: str) -> bool:
        """True when ``node`` is up and no network fault is on its path: a request leg would
        pass at once, so a hot path may skip :meth:`transmit`."""
        return self._states.get(node) is NodeState.UP and node not in self._faults

    async def transmit(self, node: str, stream: str = "upstream", nbytes: int = 0) -> None:
        """One leg of a client request to (``upstream``) or from (``downstream``) ``node``.

        Returns when the bytes got through: at once on a clear path, later under latency,
        bandwidth limits or a paused node. Wrap it in the client's own timeout: a ``timeout``
        fault without timeout or a paused node can hold it indefinitely.

        Raises:
            NodeUnreachable: the node is down (refused) or a fault closed/reset the connection.
        """
        if self.clear_path(node):
            return
        if self._states[node] is NodeState.DOWN:
            raise NodeUnreachable(node, "connection refused")
        for fault in tuple(self._faults.get(node, ())):
            if fault.applies_to(stream):
                await self._suffer(node, fault, nbytes)
        if self._states[node] is NodeState.PAUSED:
            # The kernel buffers the bytes; the stopped process reads them once resumed.
            await self.until_state(node, NodeState.UP, NodeState.DOWN)
        if self._states[node] is NodeState.DOWN:
            raise NodeUnreachable(node, "connection reset by peer")

    async def _suffer(self, node: str, fault: NetworkFault, nbytes: int) -> None:
        kind = fault.kind
        if kind == "latency":
            jitter = fault.jitter or 0.0
            delay = (fault.latency or 0.0) + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
            await asyncio.sleep(max(0.0, delay))
        elif kind == "bandwidth":
            rate = fault.rate or 0.0
            if rate <= 0:
                await asyncio.Future()  # nothing flows: hang until the client gives up
            await asyncio.sleep(nbytes / (rate * 1000.0))
        elif kind == "reset_peer":
            await asyncio.sleep(fault.timeout or 0.0)
            raise NodeUnreachable(node, "connection reset by peer")
        elif kind == "timeout" and (fault.timeout or 0.0) > 0:
            await asyncio.sleep(fault.timeout or 0.0)
            raise NodeUnreachable(node, "connection closed")
        elif kind == "cut":
            # The lab cuts the node off by disabling its proxy: connections are refused.
            raise NodeUnreachable(node, "connection refused")
        else:  # a timeout toxic without timeout: data is dropped, and dropped data stays lost
            await asyncio.Future()

    # -- background tasks and shared models ------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, tracked so :meth:`aclose` can cancel it and its
        unexpected exceptions are kept in :attr:`errors`."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = None
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Cancel every background task the models started and wait for them to end."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def model(self, key: str, factory: Callable[[], _M]) -> _M:
        """The world's one instance of a shared model, created by ``factory`` on first use."""
        if key not in self._models:
            self._models[key] = factory()
        return self._models[key]  # type: ignore[return-value]

    # -- internals -------------------------------------------------------------------------

    def _node(self, node: str) -> str:
        if node in self._states:
            return node
        close = difflib.get_close_matches(node, self._states, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SimFaultError(f"unknown node {node!r}{hint} (known: {', '.join(self._states)})")

    def _change_event(self, node: str) -> asyncio.Event:
        event = self._changed.get(node)
        if event is None:
            event = self._changed[node] = asyncio.Event()
        return event

    def _notify(self, node: str) -> None:
        # Wake the waiters of this change, then give later waits a fresh event.
        event = self._changed.pop(node, None)
        if event is not None:
            event.set()

    def _emit_fault(self, fault: str, node: str) -> None:
        self.bus.emit(FaultInjected(at=self.now(), broker=LAB_SOURCE, fault=fault, target=node))

    def _set_state(self, node: str, state: NodeState, cause: str, detail: str) -> None:
        previous = self._states[node]
        if previous is state:
            return
        self._states[node] = state
        if previous is NodeState.UP:
            self.bus.emit(BrokerDown(at=self.now(), broker=LAB_SOURCE, node=node, detail=detail))
        elif state is NodeState.UP:
            self.bus.emit(BrokerUp(at=self.now(), broker=LAB_SOURCE, node=node, detail=detail))
        self._notify(node)
        change = NodeChange(node=node, previous=previous, state=state, cause=cause)
        for watcher in tuple(self._watchers):
            watcher(change)


class SimServer(ABC):
    """Base of every system's server model: the node (or cluster) one world runs, shared by
    every adapter of that world, as every client of a lab broker talks to the same process.
    It watches the world's nodes from the start (:meth:`_on_node_change`).

    Args:
        world: the world the model lives in (its clock, nodes, faults and bus).
    """

    model_key: ClassVar[str]
    """The key of the world's one instance (the system's name)."""

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        world.watch(self._on_node_change)

    @classmethod
    def of(cls, world: SimWorld, **options: Any) -> Self:
        """The world's one instance: created with ``options`` (the model's own arguments) on
        first use, then shared by every adapter of ``world`` (later ``options`` are ignored)."""
        return world.model(cls.model_key, lambda: cls(world, **options))

    def emit(self, observation: Observation) -> None:
        """Publish on the world's bus (every simulated adapter of the run listens there)."""
        self.world.bus.emit(observation)

    @abstractmethod
    def _on_node_change(self, change: NodeChange) -> None:
        """A node of the world changed state: the model reacts as its system does (RabbitMQ
        drops its connections and non-durable queues when killed, a Kafka controller fences a
        broker after its session timeout, ...). Called for every node, not only the model's."""
