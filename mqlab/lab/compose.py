"""``mqlab lab up|down --compose``: the same lab through Docker Compose, for Docker users.

The compose file (``compose/docker-compose.yml``) reads its published ports from the same
``MQLAB_PORT_<NAME>`` variables the native lab uses; this module exports all of them, computed
by :func:`mqlab.lab.endpoints.port` (so ``MQLAB_PORT_OFFSET`` works too), and runs
``docker compose``. It is not exercised where no Docker engine runs (the project's own machines);
the file itself is validated by the tests.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mqlab.lab.endpoints import DEFAULT_PORTS, port
from mqlab.lab.errors import LabError
from mqlab.lab.services import SERVICE_PATHS, resolve_service_name

log = logging.getLogger("mqlab.lab")

PROJECT = "mqlab"

# lab service -> compose services (a broker also needs the toxiproxy in front of it).
COMPOSE_SERVICES: dict[str, tuple[str, ...]] = {
    "toxiproxy": ("toxiproxy",),
    "kafka": (
        "kafka-controller",
        "kafka-broker-1",
        "kafka-broker-2",
        "kafka-broker-3",
        "toxiproxy",
    ),
    "rabbitmq": ("rabbitmq", "toxiproxy"),
    "nats": ("nats", "toxiproxy"),
    "sqs": ("sqs", "toxiproxy"),
    "redis": ("redis",),
    "postgres": ("postgres",),
}


def compose_file() -> Path:
    """The compose file: shipped inside the wheel, or at the top of a source checkout."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (
        package_dir / "_content" / "compose" / "docker-compose.yml",
        package_dir.parent / "compose" / "docker-compose.yml",
    ):
        if candidate.is_file():
            return candidate
    raise LabError("compose/docker-compose.yml is missing from this mqlab installation")


def compose_environment() -> dict[str, str]:
    """``MQLAB_PORT_<NAME>`` for every lab port, as the native lab would use them."""
    return {f"MQLAB_PORT_{name.upper()}": str(port(name)) for name in DEFAULT_PORTS}


def compose_services(services: Sequence[str]) -> list[str]:
    """The compose services behind lab ``services`` (all when empty), without duplicates."""
    names = [resolve_service_name(name) for name in services] or list(SERVICE_PATHS)
    result: list[str] = []
    for name in names:
        for compose_service in COMPOSE_SERVICES[name]:
            if compose_service not in result:
                result.append(compose_service)
    return result


NATIVE_HINT = "run `mqlab lab up` without --compose to use local processes"


def _docker() -> str:
    """The docker CLI, once its compose plugin and its engine answer.

    Raises:
        LabError: docker missing, no compose plugin, or no engine running (one line each).
    """
    docker = shutil.which("docker")
    if docker is None:
        raise LabError(f"--compose needs Docker, and `docker` is not installed; {NATIVE_HINT}")
    problem = _docker_problem(docker)
    if problem:
        raise LabError(f"--compose needs Docker, but {problem}; {NATIVE_HINT}")
    return docker


def _docker_problem(docker: str) -> str:
    """Why ``docker compose`` cannot work here ("" when it can)."""
    checks = (
        ([docker, "compose", "version"], "the docker compose plugin is not installed"),
        ([docker, "info", "--format", "{{.ServerVersion}}"], "no Docker engine is running"),
    )
    for argv, problem in checks:
        try:
            completed = subprocess.run(
                argv, capture_output=True, text=True, timeout=15, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return problem
        if completed.returncode != 0:
            return problem
    return ""


def docker_state() -> str:
    """One line for ``mqlab doctor``: can ``--compose`` work here?"""
    docker = shutil.which("docker")
    if docker is None:
        return "not installed"
    return _docker_problem(docker) or f"ready ({docker})"


def _run(arguments: list[str]) -> None:
    argv = [_docker(), "compose", "-f", str(compose_file()), "-p", PROJECT, *arguments]
    log.info("$ %s", shlex.join(argv))
    try:
        completed = subprocess.run(argv, env={**os.environ, **compose_environment()}, check=False)
    except OSError as error:
        raise LabError(f"cannot run docker: {error.strerror}") from None
    if completed.returncode != 0:
        raise LabError(
            f"docker compose {arguments[0]} failed with exit code {completed.returncode}"
        )


def compose_up(services: Sequence[str]) -> None:
    """``docker compose up -d --wait`` for the compose services behind ``services``."""
    _run(["up", "-d", "--wait", *compose_services(services)])


def compose_down(services: Sequence[str], *, wipe: bool = False) -> None:
    """Stop (and remove) the containers; ``wipe`` also removes their volumes."""
    if not services:
        _run(["down", *(["--volumes"] if wipe else [])])
        return
    names = [resolve_service_name(name) for name in services]
    # Only the named services themselves: a shared toxiproxy stays for the other brokers.
    targets = [
        compose_service
        for name in names
        for compose_service in COMPOSE_SERVICES[name]
        if compose_service != "toxiproxy" or name == "toxiproxy"
    ]
    _run(["rm", "--stop", "--force", *targets])
    if wipe:
        volumes = [f"{PROJECT}_{target}-data" for target in targets if target in _WITH_VOLUME]
        if volumes:
            argv = [_docker(), "volume", "rm", "--force", *volumes]
            log.info("$ %s", shlex.join(argv))
            subprocess.run(argv, check=False)


# Compose services that keep data in a named volume "<service>-data".
_WITH_VOLUME = {
    "kafka-controller",
    "kafka-broker-1",
    "kafka-broker-2",
    "kafka-broker-3",
    "rabbitmq",
    "nats",
    "postgres",
}
