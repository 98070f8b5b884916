"""Bad situations end cleanly: a broker that is down, Ctrl-C in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.lab.endpoints import Endpoints
from tests.waiting import wait_until


def test_broker_down_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Move every port somewhere nothing listens: the run must fail fast and say what to do.
    monkeypatch.setenv("MQLAB_PORT_OFFSET", "7321")
    result = CliRunner().invoke(
        app, ["run", "at-most-once-crash", "-b", "nats", "--no-predict", "-q"]
    )
    assert result.exit_code == 3, result.output
    assert "nats is not reachable at 127.0.0.1:21553" in result.output
    assert "mqlab lab up nats" in result.output
    assert "Traceback" not in result.output
    # Nothing ran: no ledger of zeros marked as failed, no explanation of a run that never was.
    assert "ledger" not in result.output
    assert "At-most-once" not in result.output


def _scenario_queues() -> set[str]:
    endpoints = Endpoints.local()
    # The management API lists every queue with its statistics: on a loaded machine, with
    # other lanes' queues on the node, one listing has taken seconds.
    response = httpx.get(
        f"{endpoints.rabbitmq_management_url}/api/queues", auth=("guest", "guest"), timeout=30
    )
    response.raise_for_status()
    return {queue["name"] for queue in response.json() if queue["name"].startswith("mq-")}


def _workers_of(run: subprocess.Popen[str]) -> list[psutil.Process]:
    """The worker processes ``run`` started. Only its own: other lanes of the suite run
    scenarios (and their workers) at the same time."""
    try:
        descendants = psutil.Process(run.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in descendants:
        try:
            if "mqlab.scenarios.worker" in process.cmdline():
                found.append(process)
        except psutil.Error:
            continue
    return found


def _orphaned_workers() -> list[psutil.Process]:
    """Worker processes whose parent is gone (adopted by init): what a run that died without
    cleaning up leaves. Workers of runs in other lanes still have their parent."""
    found = []
    for process in psutil.process_iter(["cmdline", "ppid"]):
        is_worker = "mqlab.scenarios.worker" in (process.info["cmdline"] or [])
        if is_worker and process.info["ppid"] in (0, 1):
            found.append(process)
    return found


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


SLOW_RUN = """\
format_version: 1
id: ctrl-c-mid-run
title: A slow consumer that a Ctrl-C interrupts
topic: rabbitmq
summary: Ten messages that take three seconds each, read by a consumer in a worker process.
brokers: [rabbitmq]
steps:
  - produce: {count: 10}
  - consume: {name: slow, processing_time: 3, crash: {after: 9, point: after_receive}}
explain: A run to interrupt.
"""
"""A run that is surely still going when its first delivery is printed: its consumer (a worker
process: it has a crash point) takes three seconds a message. A library scenario ends seconds
after its first delivery, and on a loaded machine the Ctrl-C once came after the end."""


@pytest.mark.rabbitmq
def test_ctrl_c_mid_run_leaves_nothing_behind(tmp_path: Path) -> None:
    before = _scenario_queues()
    orphans_before = {p.pid for p in _orphaned_workers()}
    scenario = tmp_path / "ctrl-c-mid-run.yaml"
    scenario.write_text(SLOW_RUN, encoding="utf-8")
    run = subprocess.Popen(
        [sys.executable, "-m", "mqlab.cli", "run", str(scenario), "-b", "rabbitmq",
         "--no-predict"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )  # fmt: skip
    assert run.stdout is not None
    deadline = time.monotonic() + 60
    for line in run.stdout:
        if "received" in line or time.monotonic() > deadline:
            break
    workers = _workers_of(run)  # the consumer's worker is running by now
    assert workers, "the slow consumer's worker process was not found"
    run.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    output = run.communicate(timeout=60)[0]
    assert run.returncode == 130, output
    assert "Traceback" not in output
    # Both were cleaned up before the run exited; the waits only absorb the kernel reaping a
    # killed worker and the management API catching up (bounds, not speed goals: a loaded
    # machine's management API and process table answer late).
    wait_until(
        lambda: _scenario_queues() <= before,
        60.0,
        "the run's queues deleted",
        interval=0.2,
        retry_on=(httpx.TransportError,),
    )

    def left_behind() -> list[psutil.Process]:
        orphans = [p for p in _orphaned_workers() if p.pid not in orphans_before]
        return [p for p in [*workers, *orphans] if _alive(p)]

    wait_until(
        lambda: not left_behind(),
        60.0,
        lambda: f"no worker process left behind (alive: {left_behind()})",
        interval=0.1,
    )
