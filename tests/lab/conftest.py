"""Fixtures for the lab's own tests.

``isolated_lab`` gives a private lab: its own ``MQLAB_STATE_DIR`` (a temp dir) and a port
offset whose ports are all free right now, so these tests never touch the main lab (or another
developer's). It drives the real CLI in subprocesses, the way a learner does, and afterwards
stops everything with ``mqlab lab down``. It then checks that no process carrying its private
state dir in its environment survived (every server the lab starts inherits it); any such
process is killed and the test fails, because it means the lab leaked a process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from mqlab.lab.endpoints import DEFAULT_PORTS
from mqlab.lab.paths import lab_paths
from mqlab.lab.process import port_is_free
from tests.conftest import brokers_required

# Offsets tried for private labs: far from 0 (the main lab) and from the small offsets
# developers use side by side, and low enough that every port stays below 32768, where Linux
# starts handing out ports to outgoing connections. The first one whose ports are all free wins.
CANDIDATE_OFFSETS = range(1000, 3500, 37)
# Bound for one CLI call. Generous because RabbitMQ needs several seconds on two busy cores;
# a call that hangs fails the test instead of blocking the suite.
CLI_TIMEOUT = 180.0


def free_offset() -> int:
    """A port offset at which every lab port is free on 127.0.0.1."""
    for offset in CANDIDATE_OFFSETS:
        ports = [default + offset for default in DEFAULT_PORTS.values()]
        if all(port < 65536 and port_is_free(port) for port in ports):
            return offset
    pytest.fail("no free port offset for a private lab")


@dataclass
class IsolatedLab:
    """A private lab driven through the ``mqlab`` CLI."""

    state: Path
    offset: int
    env: dict[str, str] = field(default_factory=dict)

    def port(self, name: str) -> int:
        return DEFAULT_PORTS[name] + self.offset

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``mqlab ARGS`` in this lab; with ``check`` a non-zero exit fails the test."""
        completed = subprocess.run(
            [sys.executable, "-m", "mqlab.cli", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if check and completed.returncode != 0:
            pytest.fail(
                f"mqlab {' '.join(args)} exited {completed.returncode}:\n"
                f"{completed.stdout}\n{completed.stderr}"
            )
        return completed

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start ``mqlab ARGS`` without waiting (for Ctrl-C and concurrency tests)."""
        return subprocess.Popen(
            [sys.executable, "-m", "mqlab.cli", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def status(self) -> dict[str, dict[str, object]]:
        """``mqlab lab status --json`` by process name."""
        rows = json.loads(self.cli("lab", "status", "--json").stdout)
        return {row["process"]: row for row in rows}

    def pid_file(self, process: str) -> Path:
        return self.state / "run" / f"{process}.json"

    def leftovers(self) -> list[psutil.Process]:
        """Live processes this lab started: they inherited its state dir in their environment,
        or (redis-server overwrites its environment with its process title) work in it."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if process.environ().get("MQLAB_STATE_DIR") == str(self.state) or Path(
                    process.cwd()
                ).is_relative_to(self.state):
                    found.append(process)
            except psutil.Error:
                continue
        return found


def require_installed(*services: str) -> None:
    """Skip (locally) or fail (CI) when the lab cannot start ``services`` here."""
    from mqlab.lab.supervisor import Lab

    missing = Lab(lab_paths()).missing(services)
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} (run: mqlab lab install {' '.join(missing)})"
    if brokers_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def isolated_lab(tmp_path: Path) -> Iterator[IsolatedLab]:
    state = tmp_path / "state"
    offset = free_offset()
    env = {
        **os.environ,
        "MQLAB_STATE_DIR": str(state),
        "MQLAB_PORT_OFFSET": str(offset),
    }
    # Per-port overrides of the outer environment would defeat the offset.
    for name in list(env):
        if name.startswith("MQLAB_PORT_") and name != "MQLAB_PORT_OFFSET":
            del env[name]
    lab = IsolatedLab(state=state, offset=offset, env=env)
    yield lab
    lab.cli("lab", "down", check=False)
    leaked = lab.leftovers()
    descriptions = []
    for process in leaked:
        try:
            descriptions.append(f"{process.pid} ({process.name()})")
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    if leaked:
        pytest.fail(f"`mqlab lab down` left processes behind: {', '.join(descriptions)}")
