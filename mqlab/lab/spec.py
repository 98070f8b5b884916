"""How a lab service is described: the contract between the supervisor and each service.

A *service* is what a learner names on the command line (``kafka``, ``rabbitmq``, ``nats``,
``sqs``, ``redis``, ``postgres``, ``toxiproxy``). It knows how to check and install what it
needs, and it expands into one or more *processes* (Kafka: a controller and three brokers) plus
the Toxiproxy *proxies* in front of its client listeners. The supervisor (``mqlab.lab.supervisor``)
only ever deals with these descriptions: it starts processes, records their pids, waits for
health, and stops exactly what it started.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class LabPaths:
    """Directories of one lab (under the platform state dir; the cache holds downloads)."""

    state: Path
    cache: Path

    def data_dir(self, process: str) -> Path:
        """Where ``process`` keeps its data (wiped by ``mqlab lab down --wipe``)."""
        return self.state / "data" / process

    def log_file(self, process: str) -> Path:
        """The file ``process``'s stdout and stderr go to."""
        return self.state / "logs" / f"{process}.log"

    def pid_file(self, process: str) -> Path:
        """The JSON record of a running process (pid, start time, command)."""
        return self.state / "run" / f"{process}.json"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How to tell a process is ready.

    ``kind``: "tcp" (``port`` accepts connections), "http" (``url`` answers 2xx) or
    "command" (``argv`` exits 0). ``timeout``: seconds before start-up counts as failed.
    """

    kind: Literal["tcp", "http", "command"]
    port: int | None = None
    url: str | None = None
    argv: tuple[str, ...] = ()
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One OS process the lab starts.

    Attributes:
        name: unique within the lab, used for pid/log files and fault targets
            (``kafka-broker-2``, ``rabbitmq``).
        service: the service it belongs to.
        argv: the command; it must run in the foreground (the supervisor daemonises it).
        ports: every port it binds (checked free before start; their owner is reported).
        user: run as this OS user (PostgreSQL refuses to run as root).
        stop_signal: what asks it to shut down cleanly (PostgreSQL: SIGINT, a "fast"
            shutdown that does not wait for clients to disconnect).
    """

    name: str
    service: str
    argv: tuple[str, ...]
    health: HealthCheck
    ports: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    stop_timeout: float = 15.0
    stop_signal: int = signal.SIGTERM


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """A Toxiproxy proxy: clients connect to ``listen``, traffic goes to ``upstream``."""

    name: str
    service: str
    listen_port: int
    upstream_port: int


@dataclass(frozen=True, slots=True)
class Missing:
    """Something a service needs that is not installed, and the exact command that fixes it."""

    what: str
    fix: str


class Service(ABC):
    """A service of the lab (see the module docstring)."""

    name: str
    depends_on: tuple[str, ...] = ()

    @abstractmethod
    def missing(self, paths: LabPaths) -> list[Missing]:
        """What is not installed yet (empty when ready to start)."""

    @abstractmethod
    def install(self, paths: LabPaths) -> None:
        """Install what :meth:`missing` reports, where mqlab can do it itself (jars into the
        cache dir, a pip package); otherwise raise ``LabError`` naming the fix command."""

    @abstractmethod
    def prepare(self, paths: LabPaths) -> None:
        """Write config files and initialise data dirs (idempotent; before first start)."""

    @abstractmethod
    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        """The processes to start, in start order."""

    def proxies(self) -> list[ProxySpec]:
        """Toxiproxy proxies in front of this service's client listeners."""
        return []

    def on_healthy(self, paths: LabPaths) -> None:
        """Run once all processes answer their health checks, on every start (idempotent):
        what needs the server running, such as creating PostgreSQL's role and database."""
        return None

    def data_dirs(self, paths: LabPaths) -> list[Path]:
        """Everything ``mqlab lab down --wipe`` deletes (default: each process's data dir)."""
        return [paths.data_dir(spec.name) for spec in self.processes(paths)]

    def version(self, paths: LabPaths) -> str:
        """The installed version, for ``lab status`` and trace headers ("" if unknown)."""
        return ""
