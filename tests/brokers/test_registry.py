"""The table of systems, the typed broker reference and the adapter factory (no broker needed:
the factory only builds adapters, and the simulated ones run on virtual time)."""

from __future__ import annotations

import asyncio
from typing import get_args

import pytest

from mqlab.brokers.base import Broker, BrokerUnavailable
from mqlab.brokers.faults import LabFaults
from mqlab.brokers.kafka.api import KafkaAPI
from mqlab.brokers.nats.api import NatsAPI
from mqlab.brokers.rabbitmq.api import RabbitMQAPI
from mqlab.brokers.registry import (
    SYSTEM_NAMES,
    SYSTEMS,
    BrokerOptions,
    BrokerRef,
    UnknownBroker,
    create_broker,
    get_broker_class,
    lab_nodes,
    resolve_name,
)
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.sqs.server import SimSqsServer
from mqlab.brokers.sim.world import SimWorld
from mqlab.brokers.sqs.api import SqsAPI
from mqlab.course.scenario import BrokerChoice, System
from mqlab.lab.kafka import NODES, KafkaService
from mqlab.lab.services import SERVICES
from mqlab.observe.bus import ObservationBus
from mqlab.scenarios.drivers import DRIVERS

INTERFACES: dict[str, type[Broker]] = {
    "kafka": KafkaAPI,
    "rabbitmq": RabbitMQAPI,
    "sqs": SqsAPI,
    "nats": NatsAPI,
}

# --- the table ------------------------------------------------------------------------------


def test_the_table_lists_every_system_once_in_the_course_order() -> None:
    assert tuple(SYSTEMS) == SYSTEM_NAMES == ("kafka", "rabbitmq", "sqs", "nats")
    assert all(SYSTEMS[name].name == name for name in SYSTEM_NAMES)


@pytest.mark.parametrize("name", SYSTEM_NAMES)
def test_each_row_names_adapters_that_speak_the_system(name: str) -> None:
    real = BrokerRef.of(name, simulated=False).adapter_class()
    simulated = BrokerRef.of(name, simulated=True).adapter_class()
    assert (real.system, real.backend) == (name, "real")
    assert (simulated.system, simulated.backend) == (name, "sim")
    assert issubclass(simulated, SimBroker)
    assert not issubclass(real, SimBroker)
    assert issubclass(real, INTERFACES[name])
    assert issubclass(simulated, INTERFACES[name])


@pytest.mark.parametrize("name", SYSTEM_NAMES)
def test_each_row_names_the_lab_service_and_its_processes(name: str) -> None:
    row = SYSTEMS[name]
    service = SERVICES[row.lab_service]
    proxies = {proxy.name for proxy in service.proxies()}
    assert set(row.proxy_names) == proxies
    assert set(row.node_names) >= proxies
    if name == "kafka":
        assert set(row.node_names) == {node.process for node in NODES}
        assert {proxy.name for proxy in KafkaService().proxies()} == set(row.proxy_names)


def test_the_simulated_world_has_a_node_for_every_lab_process() -> None:
    world = SimWorld()
    assert tuple(node.name for node in lab_nodes()) == world.nodes


def test_the_scenario_format_and_the_drivers_use_the_table() -> None:
    assert get_args(System) == SYSTEM_NAMES
    assert get_args(BrokerChoice) == (*SYSTEM_NAMES, "sim")
    assert tuple(DRIVERS) == SYSTEM_NAMES


# --- the broker reference -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "system", "simulated"),
    [
        ("kafka", "kafka", False),
        ("  RabbitMQ ", "rabbitmq", False),
        ("sim:nats", "nats", True),
        ("SIM:sqs", "sqs", True),
    ],
)
def test_a_name_parses_into_a_reference_and_prints_back(
    text: str, system: str, simulated: bool
) -> None:
    ref = BrokerRef.parse(text)
    assert (ref.system, ref.simulated) == (system, simulated)
    assert BrokerRef.parse(str(ref)) == ref
    assert str(ref) == (f"sim:{system}" if simulated else system)
    assert resolve_name(text) == str(ref)


def test_sim_alone_needs_a_system_to_stand_for() -> None:
    assert BrokerRef.parse("sim", default_system="nats") == BrokerRef("nats", simulated=True)
    with pytest.raises(UnknownBroker, match=r"'sim' needs a system here \(sim:kafka, "):
        BrokerRef.parse("sim")


@pytest.mark.parametrize(
    ("text", "hint"),
    [("kafak", "did you mean 'kafka'?"), ("sim:rabitmq", "did you mean 'sim:rabbitmq'?")],
)
def test_a_wrong_name_is_one_line_with_the_closest_one(text: str, hint: str) -> None:
    with pytest.raises(UnknownBroker) as raised:
        BrokerRef.parse(text)
    message = str(raised.value)
    assert hint in message
    assert "\n" not in message
    with pytest.raises(UnknownBroker):
        get_broker_class(text)


def test_a_name_far_from_any_broker_gets_no_guess() -> None:
    with pytest.raises(UnknownBroker) as raised:
        BrokerRef.of("postgres", simulated=True)
    assert "did you mean" not in str(raised.value)
    assert "known: kafka, rabbitmq, sqs, nats, sim, sim:kafka" in str(raised.value)


# --- the factory ----------------------------------------------------------------------------


def test_a_real_adapter_is_built_unconnected_and_faults_the_lab() -> None:
    bus = ObservationBus()
    broker = create_broker("kafka", bus=bus, options=BrokerOptions(namespace="mq-test01"))
    assert isinstance(broker, get_broker_class("kafka"))
    assert (broker.bus, broker.namespace, broker.name) == (bus, "mq-test01", "kafka")
    assert isinstance(broker.faults, LabFaults)


def test_a_simulated_adapter_comes_with_its_seeded_world() -> None:
    bus = ObservationBus()
    options = BrokerOptions(sqs_duplicate_rate=0.0, sqs_reorder_rate=0.5)
    broker = create_broker(BrokerRef("sqs", simulated=True), bus=bus, seed=7, options=options)
    assert isinstance(broker, SimBroker)
    world = broker.faults
    assert world is broker.world
    assert (world.seed, world.bus, broker.bus) == (7, bus, bus)
    assert broker.namespace == "mq-sim001"  # deterministic: names end up in traces
    server = SimSqsServer.of(world)
    assert (server.duplicate_rate, server.reorder_rate) == (0.0, 0.5)

    async def clock_is_virtual() -> float:
        await broker.connect()
        await asyncio.sleep(120)
        now = bus.now()
        await broker.close()
        return now

    assert run_virtual(clock_is_virtual()) == pytest.approx(120)


def test_a_bad_simulated_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate_rate must be between 0 and 1"):
        create_broker("sim:sqs", options=BrokerOptions(sqs_duplicate_rate=2.0))


# --- where "unreachable" points ---------------------------------------------------------------


def test_unreachable_points_at_the_lab_or_at_the_injected_fault() -> None:
    real = BrokerUnavailable("kafka", "127.0.0.1:19091", "connection refused")
    assert str(real) == (
        "kafka is not reachable at 127.0.0.1:19091: connection refused (run: mqlab lab up kafka)"
    )
    simulated = BrokerUnavailable("kafka", "somewhere", simulated=True)
    assert "mqlab lab up" not in str(simulated)
    assert "a fault injected in this simulated run" in str(simulated)


def test_a_simulated_adapter_that_cannot_connect_names_the_injected_fault() -> None:
    async def connect_to_a_killed_node() -> str:
        broker: Broker = create_broker("sim:rabbitmq")
        assert isinstance(broker, SimBroker)
        await broker.world.kill("rabbitmq")
        with pytest.raises(BrokerUnavailable) as raised:
            await broker.connect()
        await broker.world.aclose()
        return str(raised.value)

    message = run_virtual(connect_to_a_killed_node())
    assert message == (
        "rabbitmq is not reachable at the simulator (rabbitmq): connection refused "
        "(a fault injected in this simulated run; it lasts until the node is healed)"
    )
