"""Redis from the Debian package: an idempotency store for the course (``SET key NX EX``).

No persistence (``--save ''``, no AOF): the lab's Redis holds dedup keys with TTLs, and a
restart that forgets them is itself a lesson. Reached directly, not through Toxiproxy.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mqlab.lab.endpoints import HOST, port
from mqlab.lab.install import apt_command, apt_install
from mqlab.lab.spec import HealthCheck, LabPaths, Missing, ProcessSpec, Service


def server_binary() -> Path | None:
    """redis-server on PATH or where Debian installs it."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    candidate = Path("/usr/bin/redis-server")
    return candidate if candidate.is_file() else None


class RedisService(Service):
    """redis-server on 127.0.0.1:``redis``."""

    name = "redis"

    def missing(self, paths: LabPaths) -> list[Missing]:
        if server_binary() is not None:
            return []
        return [Missing("redis-server (Debian package)", apt_command(["redis-server"]))]

    def install(self, paths: LabPaths) -> None:
        apt_install(["redis-server"])

    def prepare(self, paths: LabPaths) -> None:
        paths.data_dir("redis").mkdir(parents=True, exist_ok=True)

    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        redis_port = port("redis")
        return [
            ProcessSpec(
                name="redis",
                service=self.name,
                argv=(
                    str(server_binary() or "redis-server"),
                    "--bind",
                    HOST,
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(paths.data_dir("redis")),
                    "--daemonize",
                    "no",
                    "--logfile",
                    "",
                ),
                health=HealthCheck(kind="tcp", port=redis_port, timeout=10),
                ports=(redis_port,),
                stop_timeout=5,
            )
        ]

    def version(self, paths: LabPaths) -> str:
        binary = server_binary()
        if binary is None:
            return ""
        try:
            output = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        for word in output.split():
            if word.startswith("v="):
                return word.removeprefix("v=")
        return ""
