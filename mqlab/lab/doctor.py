"""``mqlab doctor``: what is installed, running and reachable, and the command that fixes each gap.

It only looks; it never installs or starts anything.

The simulator needs nothing, so it is always ready, and every real broker is optional: a
machine without Kafka is a fine machine for the course. So the doctor's verdict
(:func:`problems`) counts only what the learner asked for: the services named on its command
line (installed and running), and whatever the lab started that is now broken (a process that
crashed or does not answer). A service that was never installed or never started is reported,
with its fix, but it is not a failure.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mqlab.lab.compose import docker_state
from mqlab.lab.endpoints import HOST
from mqlab.lab.errors import LabError
from mqlab.lab.install import apt_command, find_go, go_version
from mqlab.lab.services import SERVICE_PATHS, SERVICES, get_service
from mqlab.lab.supervisor import Lab, ProcessStatus

FindingState = Literal["ok", "missing", "down", "broken", "info"]

# Process health that means "the lab started it and it is not working": not a state the learner
# chose (stopped, or killed / paused by a fault on purpose).
_BROKEN_HEALTH = ("crashed", "unhealthy", "unavailable")


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's report.

    Attributes:
        state: "ok"; "missing" (not installed: the lab cannot start it); "down" (installed,
            not running: stopped, or killed or paused by a fault); "broken" (the lab started
            it and it crashed or does not answer); "info" (context, nothing to fix).
        fix: the exact command that fixes it ("" when nothing needs fixing).
        service: the lab service the finding is about ("" for general lines).
    """

    check: str
    state: FindingState
    detail: str
    fix: str = ""
    service: str = ""


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
                "broken",
                f"proxy port {closed[0]} does not answer",
                f"mqlab lab up {name}",
                service=name,
            )
        addresses = ", ".join(sorted({row.address for row in mine if row.address}))
        return Finding(f"{name} running", "ok", addresses, service=name)
    # The worst first: a crash explains more than a sibling that is merely stopped.
    row = min(unhealthy, key=lambda row: not row.health.startswith(_BROKEN_HEALTH))
    fix = {
        "paused": f"mqlab lab fault resume {row.process}",
        "killed": f"mqlab lab fault restart {row.process}",
    }.get(row.health, f"mqlab lab up {name}")
    state: FindingState = "broken" if row.health.startswith(_BROKEN_HEALTH) else "down"
    return Finding(f"{name} running", state, f"{row.process}: {row.health}", fix, service=name)


def requested_services(names: Sequence[str]) -> set[str]:
    """The services the learner named, with what they depend on (every broker needs Toxiproxy).

    Raises:
        LabError: an unknown name (with "did you mean").
    """
    wanted: set[str] = set()
    for name in names:
        service = get_service(name)
        wanted.add(service.name)
        wanted.update(service.depends_on)
    return wanted


def problems(report: list[Finding], requested: Sequence[str] = ()) -> list[Finding]:
    """The findings that make ``mqlab doctor`` fail (exit 1); empty means ready.

    Args:
        report: what :func:`diagnose` found.
        requested: the services the learner named (see :func:`requested_services`): each must
            be installed and running. Nothing named asks only for the simulator, which is
            always ready.

    Raises:
        LabError: an unknown service name.
    """
    wanted = requested_services(requested)
    return [
        finding
        for finding in report
        if finding.state == "broken"
        or (finding.service in wanted and finding.state in ("missing", "down"))
    ]


def diagnose(lab: Lab | None = None) -> list[Finding]:
    """Everything the doctor reports, in display order."""
    lab = lab or Lab()
    findings = [
        # Always true: the simulator is part of mqlab, with nothing to install or start.
        Finding("simulator", "ok", "ready: every scenario runs on it (--broker sim)"),
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
            findings.append(Finding(f"{name} installed", "missing", str(error), service=name))
            continue
        if gaps:
            findings.extend(
                Finding(f"{name} installed", "missing", gap.what, gap.fix, service=name)
                for gap in gaps
            )
        else:
            installed.append(name)
            findings.append(
                Finding(f"{name} installed", "ok", service.version(lab.paths), service=name)
            )
    if "toxiproxy" not in installed:
        go = find_go()
        if go is None:
            findings.append(
                Finding(
                    "go (builds toxiproxy)",
                    "missing",
                    "not found",
                    apt_command(["golang-go"]),
                    service="toxiproxy",
                )
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
