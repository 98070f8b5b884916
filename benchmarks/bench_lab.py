"""How long ``mqlab lab up`` takes and how much memory the lab's processes use.

Runs a private lab (fresh temp state dir, a port offset where every lab port is free), so it
never touches the main lab, and prints:

- per service, the wall time of ``mqlab lab up SERVICE`` from cold (fresh state dir: data dirs
  initialised, Kafka formatted, PostgreSQL initdb) and warm (after ``down``, data kept), each
  measured as a learner sees it: the CLI in a subprocess, including Python start-up;
- ``mqlab lab up`` of all of them at once (services start side by side), cold and warm;
- the resident memory of every process (with its children) once everything runs.

Usage: ``python benchmarks/bench_lab.py [SERVICE ...]`` (default: every service). The shared
cache dir (``MQLAB_CACHE_DIR``) must already hold what ``mqlab lab install`` puts there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mqlab.lab.endpoints import DEFAULT_PORTS
from mqlab.lab.process import port_is_free, rss_bytes
from mqlab.lab.services import SERVICE_PATHS
from mqlab.lab.spec import LabPaths
from mqlab.lab.supervisor import Lab


def free_offset() -> int:
    # Every port below 32768, out of the range Linux gives to outgoing connections.
    for offset in range(2000, 3500, 41):
        if all(port_is_free(default + offset) for default in DEFAULT_PORTS.values()):
            return offset
    raise SystemExit("no free port offset")


def cli(env: dict[str, str], *args: str) -> float:
    """Run ``mqlab ARGS``; return its wall time in seconds (exit on failure)."""
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "mqlab.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if completed.returncode != 0:
        print(completed.stdout, completed.stderr, file=sys.stderr)
        raise SystemExit(f"mqlab {' '.join(args)} failed")
    return elapsed


def main() -> None:
    services = sys.argv[1:] or [name for name in SERVICE_PATHS if name != "toxiproxy"]
    state = Path(tempfile.mkdtemp(prefix="mqlab-bench-"))
    offset = free_offset()
    env = {**os.environ, "MQLAB_STATE_DIR": str(state), "MQLAB_PORT_OFFSET": str(offset)}
    for name in list(env):
        if name.startswith("MQLAB_PORT_") and name != "MQLAB_PORT_OFFSET":
            del env[name]
    print(f"private lab: state {state}, port offset {offset}, cpus {os.cpu_count()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cold: dict[str, float] = {}
    warm: dict[str, float] = {}
    try:
        # Toxiproxy first on its own: every broker's `up` would otherwise include it.
        cold["toxiproxy"] = cli(env, "lab", "up", "toxiproxy")
        for service in services:
            cold[service] = cli(env, "lab", "up", service)
        rss = measure_rss(state, env)
        cli(env, "lab", "down")
        warm["toxiproxy"] = cli(env, "lab", "up", "toxiproxy")
        for service in services:
            warm[service] = cli(env, "lab", "up", service)
        cli(env, "lab", "down", "--wipe")
        all_cold = cli(env, "lab", "up", "toxiproxy", *services)
        cli(env, "lab", "down")
        all_warm = cli(env, "lab", "up", "toxiproxy", *services)
    finally:
        cli(env, "lab", "down", "--wipe")
        shutil.rmtree(state, ignore_errors=True)

    print()
    print(f"{'service':<12}{'up cold (s)':>14}{'up warm (s)':>14}")
    for service in ["toxiproxy", *services]:
        print(f"{service:<12}{cold[service]:>14.1f}{warm[service]:>14.1f}")
    print(f"{'all at once':<12}{all_cold:>14.1f}{all_warm:>14.1f}")
    print()
    print(f"{'process':<18}{'RSS (MiB)':>10}")
    for process, size in rss.items():
        print(f"{process:<18}{size / 2**20:>10.0f}")
    print(f"{'total':<18}{sum(rss.values()) / 2**20:>10.0f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def measure_rss(state: Path, env: dict[str, str]) -> dict[str, int]:
    """RSS of every running process of the private lab (process + descendants + session)."""
    saved = {name: os.environ.get(name) for name in ("MQLAB_STATE_DIR", "MQLAB_PORT_OFFSET")}
    os.environ["MQLAB_STATE_DIR"] = env["MQLAB_STATE_DIR"]
    os.environ["MQLAB_PORT_OFFSET"] = env["MQLAB_PORT_OFFSET"]
    try:
        lab = Lab(LabPaths(state=state, cache=Lab().paths.cache))
        return {record.name: rss_bytes(record) for record in lab.records()}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


if __name__ == "__main__":
    main()
