"""``mqlab doctor``: what is installed, running and reachable, and the command that fixes each gap.

It only looks; it never installs or starts anything.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import Literal

from mqlab.lab.compose import docker_state
from mqlab.lab.endpoints import HOST
from mqlab.lab.errors import LabError
from mqlab.lab.install import apt_command, find_go, go_version
from mqlab.lab.services import SERVICE_PATHS, SERVICES
from mqlab.lab.supervisor import Lab, ProcessStatus

FindingState = Literal["ok", "missing", "down", "info"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's report.

    Attributes:
        state: "ok"; "missing" (not installed: the lab cannot start it); "down" (installed,
            not running or not reachable); "info" (context, nothing to fix).
        fix: the exact command that fixes it ("" when nothing needs fixing).
    """

    check: str
    state: FindingState
    detail: str
    fix: str = ""


def _reachable(port_number: int) -> bool:
    try:
        with socket.create_connection((HOST, port_number), timeout=0.5):
            return True
    except OSError:
        return False


def _service_running(name: str, rows: list[ProcessStatus]) -> Finding:
    mine = [row for row in rows if row.service == name]
    unhealthy = [row for row in mine if row.health != "healthy"]
    if not unhealthy:
        public = [proxy.listen_port for proxy in SERVICES[name].proxies()]
        closed = [port_number for port_number in public if not _reachable(port_number)]
        if closed:
            return Finding(
                f"{name} reachable",
                "down",
                f"proxy port {closed[0]} does not answer",
                f"mqlab lab up {name}",
            )
        addresses = ", ".join(sorted({row.address for row in mine if row.address}))
        return Finding(f"{name} running", "ok", addresses)
    row = unhealthy[0]
    fix = {
        "paused": f"mqlab lab fault resume {row.process}",
        "killed": f"mqlab lab fault restart {row.process}",
    }.get(row.health, f"mqlab lab up {name}")
    return Finding(f"{name} running", "down", f"{row.process}: {row.health}", fix)


def diagnose(lab: Lab | None = None) -> list[Finding]:
    """Everything the doctor reports, in display order."""
    lab = lab or Lab()
    findings = [
        Finding("python", "info", f"{sys.version.split()[0]} ({sys.executable})"),
        Finding("lab state dir", "info", str(lab.paths.state)),
        Finding("lab cache dir", "info", str(lab.paths.cache)),
    ]
    installed: list[str] = []
    for name in SERVICE_PATHS:
        try:
            service = SERVICES[name]
            gaps = service.missing(lab.paths)
        except LabError as error:
            findings.append(Finding(f"{name} installed", "missing", str(error)))
            continue
        if gaps:
            findings.extend(
                Finding(f"{name} installed", "missing", gap.what, gap.fix) for gap in gaps
            )
        else:
            installed.append(name)
            findings.append(Finding(f"{name} installed", "ok", service.version(lab.paths)))
    if "toxiproxy" not in installed:
        go = find_go()
        if go is None:
            findings.append(
                Finding("go (builds toxiproxy)", "missing", "not found", apt_command(["golang-go"]))
            )
        else:
            major, minor = go_version(go)
            findings.append(Finding("go (builds toxiproxy)", "ok", f"{go} (go{major}.{minor})"))
    rows = lab.status()
    findings.extend(_service_running(name, rows) for name in installed)
    findings.append(
        Finding(
            "docker (only for --compose)",
            "info",
            f"{docker_state()}; the native lab does not need it",
        )
    )
    return findings
