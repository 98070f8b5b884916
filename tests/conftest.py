"""Shared test set-up: real-broker markers and the "no silent skip in CI" rule.

A test that needs a lab service carries that service's marker (``@pytest.mark.kafka`` ...).
Before it runs, the service's public ports are probed. When a service is not reachable the
test is *skipped* on a developer machine (with the command that starts it) but *fails* in CI
(``CI`` set) or when ``MQLAB_REQUIRE_BROKERS=1``: a missing broker must never pass as green.
"""

from __future__ import annotations

import os
import socket

import pytest

from mqlab.lab.endpoints import HOST, KAFKA_BROKER_IDS, Endpoints, port

# marker -> the public ports that must accept connections
SERVICE_PORTS: dict[str, tuple[str, ...]] = {
    "kafka": tuple(f"kafka_broker_{i}" for i in KAFKA_BROKER_IDS),
    "rabbitmq": ("rabbitmq", "rabbitmq_management"),
    "sqs": ("sqs",),
    "nats": ("nats",),
    "redis": ("redis",),
    "postgres": ("postgres",),
    "toxiproxy": ("toxiproxy_api",),
}

_reachable_cache: dict[str, str | None] = {}


def _unreachable_port(service: str) -> str | None:
    """None when every port of ``service`` accepts a TCP connection, else a description."""
    if service not in _reachable_cache:
        problem = None
        for name in SERVICE_PORTS[service]:
            try:
                with socket.create_connection((HOST, port(name)), timeout=1.0):
                    pass
            except OSError:
                problem = f"{name} ({HOST}:{port(name)})"
                break
        _reachable_cache[service] = problem
    return _reachable_cache[service]


def brokers_required() -> bool:
    """True in CI (or when asked): a missing broker fails instead of skipping."""
    return bool(os.environ.get("CI")) or os.environ.get("MQLAB_REQUIRE_BROKERS") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers():
        if marker.name not in SERVICE_PORTS:
            continue
        problem = _unreachable_port(marker.name)
        if problem is None:
            continue
        message = f"{marker.name} is not reachable at {problem} (run: mqlab lab up {marker.name})"
        if brokers_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def endpoints() -> Endpoints:
    """The lab's client endpoints (honours MQLAB_PORT_OFFSET / MQLAB_PORT_<NAME>)."""
    return Endpoints.local()
