"""The one table of systems, the typed broker reference, and the factory that builds adapters.

:data:`SYSTEMS` says, per system, what it is called, where its real and simulated adapters
live (imported lazily: importing this module imports no client library), which lab service
runs it and which broker processes it has (the nodes faults target, in the lab and on ``sim``).
The scenario format, the CLI, the scenario drivers and the simulator read it rather than
listing the systems again.

A :class:`BrokerRef` names one broker to run on: ``kafka`` (the lab's real broker) or
``sim:kafka`` (the simulator's model of it); ``sim`` alone means the simulator for a system the
caller chooses (a scenario's first one). :func:`create_broker` builds the adapter for one,
the simulated world included, so no caller assembles a simulator run by hand. An unknown name
answers with the closest known one ("did you mean ...").
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from mqlab.brokers.base import Broker, BrokerError
from mqlab.lab.endpoints import KAFKA_BROKER_IDS

if TYPE_CHECKING:
    from mqlab.lab.endpoints import Endpoints
    from mqlab.observe.bus import ObservationBus

SystemName = Literal["kafka", "rabbitmq", "sqs", "nats"]
"""The systems mqlab teaches, as the scenario format, the CLI and observations name them."""
SYSTEM_NAMES: tuple[SystemName, ...] = get_args(SystemName)

SIM = "sim"
"""The prefix (and the bare name) that means the simulator."""


@dataclass(frozen=True, slots=True)
class Node:
    """A broker process of the lab, which the simulator has a node of the same name for.

    Attributes:
        name: the lab's process name (``kafka-broker-2``); faults target it.
        startup_seconds: how long the process takes to be up again after a restart, close to
            what the lab measures (a JVM broker needs seconds, nats-server milliseconds); the
            simulator takes as long in virtual time, so a sim timeline reads like a real one.
        proxied: clients reach it through a Toxiproxy proxy of the same name, so network
            faults can target it (the Kafka controller has none: clients never talk to it).
    """

    name: str
    startup_seconds: float
    proxied: bool = True


@dataclass(frozen=True, slots=True)
class System:
    """One row of the table of systems.

    Attributes:
        name: the system's name (``kafka``).
        title: how a learner reads it (``Apache Kafka``).
        adapter: ``module:Class`` of the real adapter.
        simulated_adapter: ``module:Class`` of the simulator's adapter.
        lab_service: the lab service that runs it (``mqlab lab up <service>``).
        nodes: its broker processes, in the lab's order.
    """

    name: SystemName
    title: str
    adapter: str
    simulated_adapter: str
    lab_service: str
    nodes: tuple[Node, ...]

    @property
    def node_names(self) -> tuple[str, ...]:
        """The processes process faults may target."""
        return tuple(node.name for node in self.nodes)

    @property
    def proxy_names(self) -> tuple[str, ...]:
        """The proxies network faults may target."""
        return tuple(node.name for node in self.nodes if node.proxied)


SYSTEMS: dict[SystemName, System] = {
    "kafka": System(
        name="kafka",
        title="Apache Kafka",
        adapter="mqlab.brokers.kafka.client:KafkaBroker",
        simulated_adapter="mqlab.brokers.sim.kafka.client:SimKafkaBroker",
        lab_service="kafka",
        nodes=(
            Node("kafka-controller", 2.0, proxied=False),
            *(Node(f"kafka-broker-{n}", 3.0) for n in KAFKA_BROKER_IDS),
        ),
    ),
    "rabbitmq": System(
        name="rabbitmq",
        title="RabbitMQ",
        adapter="mqlab.brokers.rabbitmq.client:RabbitMQBroker",
        simulated_adapter="mqlab.brokers.sim.rabbitmq.client:SimRabbitMQBroker",
        lab_service="rabbitmq",
        nodes=(Node("rabbitmq", 4.5),),
    ),
    "sqs": System(
        name="sqs",
        title="Amazon SQS (and SNS)",
        adapter="mqlab.brokers.sqs.client:SqsBroker",
        simulated_adapter="mqlab.brokers.sim.sqs.client:SimSqsBroker",
        lab_service="sqs",
        nodes=(Node("sqs", 0.5),),
    ),
    "nats": System(
        name="nats",
        title="NATS JetStream",
        adapter="mqlab.brokers.nats.client:NatsBroker",
        simulated_adapter="mqlab.brokers.sim.nats.client:SimNatsBroker",
        lab_service="nats",
        nodes=(Node("nats", 0.05),),
    ),
}
"""Every system, by name, in the order the course presents them."""


def lab_nodes() -> tuple[Node, ...]:
    """Every system's broker processes (the simulated world's nodes), in table order."""
    return tuple(node for system in SYSTEMS.values() for node in system.nodes)


class UnknownBroker(BrokerError):
    """A broker name that is not in the registry."""


@dataclass(frozen=True, slots=True)
class BrokerRef:
    """One broker to run on: a system, on the lab's real broker or on the simulator.

    ``str()`` gives the name results, traces and the CLI use: ``kafka`` or ``sim:kafka``.
    """

    system: SystemName
    simulated: bool = False

    @classmethod
    def parse(cls, text: str, *, default_system: str | None = None) -> BrokerRef:
        """``kafka`` -> real Kafka; ``sim:kafka`` -> simulated Kafka; ``sim`` -> the simulator
        for ``default_system`` (a scenario's first system). Case and spaces do not matter.

        Raises:
            UnknownBroker: not a broker name (with a "did you mean"), or ``sim`` without a
                default system.
        """
        name = text.strip().lower()
        if name == SIM:
            if default_system is None:
                systems = ", ".join(f"{SIM}:{s}" for s in SYSTEM_NAMES)
                raise UnknownBroker(f"'sim' needs a system here ({systems})")
            name = f"{SIM}:{default_system}"
        simulated = name.startswith(f"{SIM}:")
        system = name.removeprefix(f"{SIM}:")
        for known in SYSTEM_NAMES:
            if system == known:
                return cls(known, simulated)
        names = [*SYSTEM_NAMES, SIM, *(f"{SIM}:{s}" for s in SYSTEM_NAMES)]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownBroker(f"unknown broker {text!r}{hint} (known: {', '.join(names)})")

    @classmethod
    def of(cls, system: str, *, simulated: bool) -> BrokerRef:
        """The broker of ``system`` (a name to check), real or simulated.

        Raises:
            UnknownBroker: ``system`` is not a system (with a "did you mean").
        """
        return cls(cls.parse(system).system, simulated)

    def __str__(self) -> str:
        return f"{SIM}:{self.system}" if self.simulated else self.system

    @property
    def info(self) -> System:
        """The system's row of :data:`SYSTEMS`."""
        return SYSTEMS[self.system]

    def adapter_class(self) -> type[Broker]:
        """Import and return this broker's adapter class."""
        info = self.info
        path = info.simulated_adapter if self.simulated else info.adapter
        module_name, _, attribute = path.partition(":")
        cls = getattr(importlib.import_module(module_name), attribute)
        if not (isinstance(cls, type) and issubclass(cls, Broker)):
            raise TypeError(f"{path} is not a Broker")
        return cls


def resolve_name(name: str) -> str:
    """Check ``name`` (a system or ``sim:<system>``) and return it normalised.

    Raises:
        UnknownBroker: with a "did you mean" suggestion when one is close.
    """
    return str(BrokerRef.parse(name))


def get_broker_class(name: str | BrokerRef) -> type[Broker]:
    """Import and return the adapter class of ``name`` (``kafka``, ``sim:kafka``).

    Raises:
        UnknownBroker: ``name`` is not a broker.
    """
    ref = name if isinstance(name, BrokerRef) else BrokerRef.parse(name)
    return ref.adapter_class()


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Settings a run gives its adapter beyond the defaults (all optional).

    Attributes:
        namespace: the adapter's namespace (a fresh one when None).
        endpoints: the lab's addresses (real adapters; the local lab when None).
        sqs_duplicate_rate: simulated SQS only: share of standard-queue receives that leave a
            duplicate behind (None: the simulator's default; 0 for an exact outcome).
        sqs_reorder_rate: simulated SQS only: chance that neighbouring messages swap places.
    """

    namespace: str | None = None
    endpoints: Endpoints | None = None
    sqs_duplicate_rate: float | None = None
    sqs_reorder_rate: float | None = None


def create_broker(
    ref: BrokerRef | str,
    *,
    bus: ObservationBus | None = None,
    seed: int = 0,
    options: BrokerOptions | None = None,
) -> Broker:
    """A new, unconnected adapter for ``ref`` that emits on ``bus``.

    For the simulator it also creates the run's world (seeded with ``seed``, on ``bus``, whose
    clock becomes the virtual one); the adapter's :attr:`~mqlab.brokers.base.Broker.faults`
    reaches that world, and a real adapter's reaches the lab.

    Raises:
        UnknownBroker: ``ref`` is not a broker.
    """
    ref = ref if isinstance(ref, BrokerRef) else BrokerRef.parse(ref)
    chosen = options or BrokerOptions()
    if not ref.simulated:
        return ref.adapter_class()(bus=bus, namespace=chosen.namespace, endpoints=chosen.endpoints)
    from mqlab.brokers.sim.world import SimWorld

    world = SimWorld(seed=seed, bus=bus)
    if ref.system == "sqs":
        from mqlab.brokers.sim.sqs.server import configure_sqs

        configure_sqs(
            world,
            duplicate_rate=chosen.sqs_duplicate_rate,
            reorder_rate=chosen.sqs_reorder_rate,
        )
    from mqlab.brokers.sim.adapter import SimBroker

    cls = ref.adapter_class()
    if not issubclass(cls, SimBroker):
        raise TypeError(f"{ref.info.simulated_adapter} is not a simulated adapter")
    return cls(world=world, namespace=chosen.namespace, endpoints=chosen.endpoints)
