"""Bad situations end cleanly: a broker that is down, Ctrl-C in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.lab.endpoints import Endpoints


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


def _scenario_queues() -> set[str]:
    endpoints = Endpoints.local()
    response = httpx.get(
        f"{endpoints.rabbitmq_management_url}/api/queues", auth=("guest", "guest"), timeout=5
    )
    response.raise_for_status()
    return {queue["name"] for queue in response.json() if queue["name"].startswith("mq-")}


def _workers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "mqlab.scenarios.worker" in cmdline:
            found.append(process)
    return found


@pytest.mark.rabbitmq
def test_ctrl_c_mid_run_leaves_nothing_behind() -> None:
    before = _scenario_queues()
    workers_before = {p.pid for p in _workers()}
    run = subprocess.Popen(
        [sys.executable, "-m", "mqlab.cli", "run", "rabbitmq-consumer-death-requeues",
         "-b", "rabbitmq", "--no-predict"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )  # fmt: skip
    assert run.stdout is not None
    deadline = time.monotonic() + 60
    for line in run.stdout:
        if "received" in line or time.monotonic() > deadline:
            break
    run.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    output = run.communicate(timeout=60)[0]
    assert run.returncode == 130, output
    assert "Traceback" not in output
    assert _scenario_queues() <= before, "the run's queues must be deleted"
    leftover = [p for p in _workers() if p.pid not in workers_before and p.status() != "zombie"]
    assert not leftover, f"worker processes left behind: {leftover}"
