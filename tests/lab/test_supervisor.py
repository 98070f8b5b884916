"""The supervisor's robustness, through the real CLI, in a private lab per test.

Each test gets its own state dir and port offset (``isolated_lab``), so it never touches the
main lab, and uses cheap services (toxiproxy, nats, redis; RabbitMQ only where a slow start is
the point). The fixture fails the test if any process of the private lab survives ``down``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import psutil
import pytest

from mqlab.lab import faults
from mqlab.lab.endpoints import HOST
from mqlab.lab.process import ProcessRecord
from mqlab.lab.supervisor import Lab
from tests.conftest import healthy_processes, repair
from tests.lab.conftest import CLI_TIMEOUT, IsolatedLab, require_installed
from tests.waiting import wait_until

pytestmark = pytest.mark.lab


def status_once_healthy(lab: IsolatedLab, process: str) -> dict[str, dict[str, object]]:
    """``lab status`` once it reports ``process`` healthy. Its probe of an HTTP health check
    has 1 s (a paused server must not stall the table), which a healthy server on a loaded
    machine can miss now and then: one "unhealthy" row is no failure, a lasting one is."""

    def healthy() -> dict[str, dict[str, object]] | None:
        status = lab.status()
        return status if status[process]["health"] == "healthy" else None

    found = wait_until(healthy, CLI_TIMEOUT, f"lab status showing {process} healthy")
    assert found is not None
    return found


def running_pids(lab: IsolatedLab) -> dict[str, int]:
    return {
        process: int(row["pid"])  # type: ignore[call-overload]
        for process, row in lab.status().items()
        if row["pid"] is not None
    }


def test_up_twice_starts_nothing_twice(isolated_lab: IsolatedLab) -> None:
    require_installed("nats", "redis")
    first = isolated_lab.cli("lab", "up", "nats", "redis")
    assert "nats: starting" in first.stderr
    before = running_pids(isolated_lab)
    assert set(before) == {"toxiproxy", "nats", "redis"}

    second = isolated_lab.cli("lab", "up", "nats", "redis")
    assert "starting" not in second.stderr
    for process in ("toxiproxy", "nats", "redis"):
        assert f"{process}: already running (pid {before[process]})" in second.stderr
    assert running_pids(isolated_lab) == before
    assert len(isolated_lab.leftovers()) == 3

    status = status_once_healthy(isolated_lab, "nats")
    assert status["nats"]["address"] == f"{HOST}:{isolated_lab.port('nats')}"  # the proxy
    assert status["redis"]["address"] == f"{HOST}:{isolated_lab.port('redis')}"

    down = isolated_lab.cli("lab", "down")
    for process in ("toxiproxy", "nats", "redis"):
        assert f"{process}: stopped (pid {before[process]})" in down.stdout
    assert isolated_lab.leftovers() == []
    assert not any((isolated_lab.state / "run").glob("*.json"))


def test_concurrent_ups_are_serialised_by_the_lock(isolated_lab: IsolatedLab) -> None:
    require_installed("nats", "redis")
    racers = [isolated_lab.popen("lab", "up", "nats", "redis") for _ in range(2)]
    outputs = [racer.communicate(timeout=CLI_TIMEOUT) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    stderr = "".join(error for _, error in outputs)
    assert stderr.count("nats: starting") == 1
    assert stderr.count("nats: already running") == 1
    assert len(isolated_lab.leftovers()) == 3  # toxiproxy, nats, redis: once each


def test_down_after_a_crash(isolated_lab: IsolatedLab) -> None:
    require_installed("redis")
    isolated_lab.cli("lab", "up", "redis")
    pid = running_pids(isolated_lab)["redis"]
    os.kill(pid, signal.SIGKILL)  # a crash the lab did not cause

    def gone() -> bool:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    wait_until(gone, 10.0, "redis gone after SIGKILL", retry_on=(psutil.NoSuchProcess,))
    assert isolated_lab.status()["redis"]["health"] == "crashed"
    # The lab started it and it broke: the doctor fails, whatever was asked for.
    doctor = isolated_lab.cli("doctor", check=False)
    assert doctor.returncode == 1
    assert ["redis", "running", "broken", "redis:", "crashed"] in [
        line.split()[:5] for line in doctor.stdout.splitlines()
    ]
    assert doctor.stderr.strip() == "not ready: redis (the fix column says how)"

    down = isolated_lab.cli("lab", "down", "redis")
    assert f"redis: was not running (stale pid file for pid {pid} removed)" in down.stdout
    assert not isolated_lab.pid_file("redis").exists()
    assert isolated_lab.status()["redis"]["health"] == "stopped"


def test_port_in_use_is_reported_with_its_owner(isolated_lab: IsolatedLab) -> None:
    require_installed("redis")
    with socket.socket() as squatter:
        squatter.bind((HOST, isolated_lab.port("redis")))
        squatter.listen()
        failed = isolated_lab.cli("lab", "up", "redis", check=False)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [
        f"error: port {isolated_lab.port('redis')} needed by redis is already in use by "
        f"pid {os.getpid()} ({psutil.Process().name()}); stop it, or move the lab's ports "
        "with MQLAB_PORT_OFFSET"
    ]
    assert not isolated_lab.pid_file("redis").exists()


def test_stale_pid_files_are_reported_and_removed(isolated_lab: IsolatedLab) -> None:
    require_installed("redis")
    # A pid that is gone ...
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = ProcessRecord("redis", "redis", finished.pid, 1.0, ("redis-server",), 1.0, "log")
    # ... and a live pid that is not ours any more (this test process, wrong start time).
    me = psutil.Process()
    reused = ProcessRecord(
        "nats", "nats", me.pid, me.create_time() - 50, ("nats-server",), 1.0, "log"
    )
    run_dir = isolated_lab.state / "run"
    run_dir.mkdir(parents=True)
    isolated_lab.pid_file("redis").write_text(dead.to_json())
    isolated_lab.pid_file("nats").write_text(reused.to_json())

    up = isolated_lab.cli("lab", "up", "redis")
    assert f"redis: stale pid file (pid {finished.pid} is gone" in up.stderr
    assert isolated_lab.status()["redis"]["health"] == "healthy"

    down = isolated_lab.cli("lab", "down", "nats")
    assert f"nats: was not running (stale pid file for pid {me.pid} removed)" in down.stdout
    assert me.is_running()  # the lab did not signal a process it had not started
    assert not isolated_lab.pid_file("nats").exists()


def test_a_server_that_fails_to_start_is_reported_with_its_log(
    isolated_lab: IsolatedLab,
) -> None:
    require_installed("nats")
    # Monitor port == client port: both are free, but nats-server cannot bind it twice.
    clash = {"MQLAB_PORT_NATS_MONITOR": str(isolated_lab.port("nats_upstream"))}
    failed = isolated_lab.cli("lab", "up", "nats", check=False, env=clash)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "error: nats exited during start-up with exit code 1; it was stopped again" in (
        failed.stderr
    )
    assert "address already in use" in failed.stderr  # the log tail names the cause
    assert not isolated_lab.pid_file("nats").exists()
    # Toxiproxy, started by the same command, is healthy and stays.
    assert running_pids(isolated_lab).keys() == {"toxiproxy"}


def test_ctrl_c_during_up_stops_what_that_up_started(isolated_lab: IsolatedLab) -> None:
    require_installed("rabbitmq")
    up = isolated_lab.popen("lab", "up", "rabbitmq")
    assert up.stderr is not None
    seen = ""
    # RabbitMQ takes seconds to become healthy: interrupt while `up` waits for it.
    while "rabbitmq: starting" not in seen:
        line = up.stderr.readline()
        assert line, f"up ended early: {seen}"
        seen += line
    up.send_signal(signal.SIGINT)
    _, rest = up.communicate(timeout=CLI_TIMEOUT)
    assert up.returncode == 130, seen + rest
    assert "Traceback" not in rest
    assert "error: interrupted; stopped what this command started: " in rest
    for process in ("rabbitmq", "rabbitmq-epmd", "toxiproxy"):
        assert process in rest
    assert isolated_lab.leftovers() == []
    assert not any((isolated_lab.state / "run").glob("*.json"))


def test_status_logs_and_restarting_toxiproxy_keeps_the_proxies(
    isolated_lab: IsolatedLab,
) -> None:
    require_installed("nats")
    isolated_lab.cli("lab", "up", "nats")
    table = isolated_lab.cli("lab", "status").stdout
    header = table.splitlines()[0].split()
    assert header == ["service", "process", "address", "pid", "version", "health", "uptime"]
    logs = isolated_lab.cli("lab", "logs", "nats", "-n", "5").stdout.splitlines()
    assert len(logs) == 5
    assert any("Server is ready" in line for line in logs)

    restarted = isolated_lab.cli("lab", "fault", "restart", "toxiproxy")
    assert (restarted.stdout + restarted.stderr).count("restarted") == 1
    assert restarted.stdout.strip() == "toxiproxy: restarted"
    proxies = isolated_lab.cli("lab", "fault", "toxic", "list").stdout
    assert f"{HOST}:{isolated_lab.port('nats')}" in proxies
    with socket.create_connection((HOST, isolated_lab.port("nats")), timeout=5) as client:
        assert client.recv(4).startswith(b"INFO")  # NATS greets through the new proxy
    # Toxiproxy logs warnings and errors only: not every API call and client connection.
    toxiproxy_log = (isolated_lab.state / "logs" / "toxiproxy.log").read_text()
    levels = {json.loads(line)["level"] for line in toxiproxy_log.splitlines() if line[:1] == "{"}
    assert levels <= {"warn", "error"}, levels


def test_fault_kill_then_up_brings_it_back(isolated_lab: IsolatedLab) -> None:
    require_installed("redis")
    isolated_lab.cli("lab", "up", "redis")
    first_pid = running_pids(isolated_lab)["redis"]
    isolated_lab.cli("lab", "fault", "kill", "redis")
    assert isolated_lab.status()["redis"]["health"] == "killed"
    again = isolated_lab.cli("lab", "fault", "kill", "redis", check=False)
    assert again.returncode == 1
    assert "redis was killed by a fault" in again.stderr
    up = isolated_lab.cli("lab", "up", "redis")
    assert "was killed by a fault" in up.stderr
    status = isolated_lab.status()["redis"]
    assert status["health"] == "healthy"
    assert status["pid"] != first_pid


def test_down_wipe_removes_data(isolated_lab: IsolatedLab) -> None:
    require_installed("nats")
    isolated_lab.cli("lab", "up", "nats")
    data = isolated_lab.state / "data" / "nats"
    assert data.is_dir()
    down = isolated_lab.cli("lab", "down", "nats", "--wipe")
    assert f"nats: wiped {data}" in down.stdout
    assert not data.exists()
    # toxiproxy was not named: it keeps running until the fixture's `down`.
    status_once_healthy(isolated_lab, "toxiproxy")


def test_what_a_test_left_broken_is_repaired_and_named(
    isolated_lab: IsolatedLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's guard (tests/conftest.py) for a test that breaks a service and does not
    repair it: exercised here on a private lab, in this process, as the guard runs."""
    require_installed("nats", "redis")
    isolated_lab.cli("lab", "up", "nats", "redis")
    monkeypatch.setenv("MQLAB_STATE_DIR", str(isolated_lab.state))
    monkeypatch.setenv("MQLAB_PORT_OFFSET", str(isolated_lab.offset))
    lab = Lab()
    before = healthy_processes(["nats", "redis"], lab)
    assert before == {"nats", "redis"}
    assert repair(["nats", "redis"], before, lab) == []  # nothing broken: nothing to say

    faults.pause("nats", lab)
    faults.kill("redis", lab)
    faults.Toxics(lab=lab).add("nats", "latency", latency=100)
    assert repair(["nats", "redis"], before, lab) == [
        "nats was paused",
        "redis was killed",
        "proxy nats was cut or had toxics",
    ]
    assert healthy_processes(["nats", "redis"], lab) == before
    assert faults.Toxics(lab=lab).list("nats") == []
