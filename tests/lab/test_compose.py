"""The Docker Compose lab cannot run here (no Docker engine), so its files are checked instead:
well-formed, loopback-only, the native lab's port numbers and proxy names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqlab.lab.compose import COMPOSE_SERVICES, compose_environment, compose_file
from mqlab.lab.endpoints import DEFAULT_PORTS
from mqlab.lab.services import SERVICE_PATHS, SERVICES

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
# "127.0.0.1:${MQLAB_PORT_NATS:-14232}:14232"
PUBLISHED = re.compile(r"^127\.0\.0\.1:\$\{MQLAB_PORT_([A-Z0-9_]+):-(\d+)\}:(\d+)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_is_found_from_the_package() -> None:
    assert compose_file() == COMPOSE_DIR / "docker-compose.yml"


def test_every_published_port_is_loopback_with_the_lab_default(compose: dict[str, Any]) -> None:
    published = []
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            match = PUBLISHED.match(mapping)
            assert match, f"{name}: {mapping!r} is not 127.0.0.1:${{MQLAB_PORT_...:-default}}:port"
            port_name, default = match.group(1).lower(), int(match.group(2))
            assert DEFAULT_PORTS[port_name] == default, f"{name}: {port_name} default"
            published.append(port_name)
    assert len(published) == len(set(published)), "a host port is published twice"
    # Every client-facing port of the native lab exists in the compose lab too.
    client_facing = {
        "toxiproxy_api",
        "kafka_broker_1",
        "kafka_broker_2",
        "kafka_broker_3",
        "rabbitmq",
        "rabbitmq_management",
        "nats",
        "sqs",
        "redis",
        "postgres",
    }
    assert client_facing <= set(published)


def test_toxiproxy_config_has_the_native_lab_proxies(compose: dict[str, Any]) -> None:
    proxies = json.loads((COMPOSE_DIR / "toxiproxy" / "toxiproxy.json").read_text())
    native = {proxy.name: proxy for name in SERVICE_PATHS for proxy in SERVICES[name].proxies()}
    by_name = {proxy["name"]: proxy for proxy in proxies}
    assert set(native) <= set(by_name)
    toxiproxy_ports = compose["services"]["toxiproxy"]["ports"]
    for name, proxy in by_name.items():
        host, _, container_port = proxy["listen"].rpartition(":")
        assert host == "0.0.0.0"  # inside the container; the host side is 127.0.0.1
        port_name = name.replace("-", "_")
        expected = f"127.0.0.1:${{MQLAB_PORT_{port_name.upper()}:-{DEFAULT_PORTS[port_name]}}}"
        assert f"{expected}:{container_port}" in toxiproxy_ports, name
        upstream_service = proxy["upstream"].split(":")[0]
        assert upstream_service in compose["services"], name


def test_kafka_brokers_advertise_their_published_port(compose: dict[str, Any]) -> None:
    for broker in (1, 2, 3):
        environment = compose["services"][f"kafka-broker-{broker}"]["environment"]
        advertised = environment["KAFKA_ADVERTISED_LISTENERS"]
        default = DEFAULT_PORTS[f"kafka_broker_{broker}"]
        assert f"CLIENT://127.0.0.1:${{MQLAB_PORT_KAFKA_BROKER_{broker}:-{default}}}" in advertised
        assert environment["KAFKA_PROCESS_ROLES"] == "broker"
        assert environment["KAFKA_NODE_ID"] == str(broker)
    controller = compose["services"]["kafka-controller"]["environment"]
    assert controller["KAFKA_PROCESS_ROLES"] == "controller"
    assert controller["KAFKA_NODE_ID"] == "0"


def test_lab_services_map_to_compose_services(compose: dict[str, Any]) -> None:
    assert set(COMPOSE_SERVICES) == set(SERVICE_PATHS)
    for compose_services in COMPOSE_SERVICES.values():
        assert set(compose_services) <= set(compose["services"])


def test_compose_environment_carries_the_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQLAB_PORT_OFFSET", "7")
    monkeypatch.delenv("MQLAB_PORT_NATS", raising=False)
    environment = compose_environment()
    assert environment["MQLAB_PORT_NATS"] == str(DEFAULT_PORTS["nats"] + 7)
    assert len(environment) == len(DEFAULT_PORTS)
