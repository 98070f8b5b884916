"""The lanes and service locks of tests/conftest.py: which test runs where, and what it holds."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    KAFKA_FAULT_LANE,
    KAFKA_LIBRARY_LANE,
    KAFKA_LIBRARY_MODULE,
    LOCK_DIRECTORY_VARIABLE,
    PRIVATE_LAB_LANE,
    ServiceLock,
    computed_once,
    lane_of,
    needs_more_than_sim,
    service_locks,
)
from tests.waiting import wait_until

# Tries to take the resource lock without waiting, in another process (flock locks are per open
# file, so a second open in this process would not show what another worker sees).
TRY_LOCK = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
mode = fcntl.LOCK_EX if sys.argv[2] == "exclusive" else fcntl.LOCK_SH
try:
    fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
except BlockingIOError:
    print("blocked")
else:
    print("granted")
"""


@pytest.mark.parametrize(
    ("markers", "lane"),
    [
        ({"kafka"}, "kafka"),
        ({"kafka", "redis"}, "kafka"),
        ({"kafka", "toxiproxy", "lab"}, KAFKA_FAULT_LANE),
        ({"kafka", "lab"}, KAFKA_FAULT_LANE),
        ({"rabbitmq", "toxiproxy", "lab"}, "rabbitmq"),
        ({"nats", "toxiproxy"}, "nats"),
        ({"sqs"}, "sqs"),
        ({"lab"}, PRIVATE_LAB_LANE),
        ({"redis", "lab"}, PRIVATE_LAB_LANE),
        ({"postgres"}, None),
        ({"toxiproxy"}, None),
        (set(), None),
    ],
)
def test_lane_of(markers: set[str], lane: str | None) -> None:
    assert lane_of(markers) == lane


def test_kafkas_scenario_library_has_a_lane_of_its_own_but_not_its_fault_scenarios() -> None:
    assert lane_of({"kafka", "redis"}, KAFKA_LIBRARY_MODULE) == KAFKA_LIBRARY_LANE
    assert lane_of({"kafka", "toxiproxy", "lab"}, KAFKA_LIBRARY_MODULE) == KAFKA_FAULT_LANE
    assert lane_of({"nats"}, KAFKA_LIBRARY_MODULE) == "nats"
    assert lane_of({"kafka"}, "tests/brokers/test_kafka_adapter.py") == "kafka"


def test_a_lab_test_holds_what_it_breaks_exclusively_and_toxiproxy_shared() -> None:
    assert service_locks({"kafka", "toxiproxy", "lab", "redis"}) == [
        ("kafka", True),
        ("redis", True),
        ("toxiproxy", False),
    ]
    assert service_locks({"nats", "redis", "asyncio"}) == [("nats", False), ("redis", False)]
    assert service_locks({"lab"}) == []


def blocked_in_flock(pid: int) -> bool:
    """Whether ``pid`` waits for a flock (``/proc/locks`` marks waiters with ``->``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[2] == "FLOCK" and fields[5] == str(pid):
            return True
    return False


def try_lock(path: Path, mode: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(path), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.strip()


def test_an_exclusive_holder_keeps_every_other_worker_out(tmp_path: Path) -> None:
    lock = ServiceLock(tmp_path, "kafka")
    with lock.held(exclusive=True):
        assert try_lock(lock.resource, "shared") == "blocked"
        assert try_lock(lock.resource, "exclusive") == "blocked"
    assert try_lock(lock.resource, "exclusive") == "granted"


def test_shared_holders_share_and_keep_an_exclusive_one_out(tmp_path: Path) -> None:
    lock = ServiceLock(tmp_path, "redis")
    with lock.held(exclusive=False):
        assert try_lock(lock.resource, "shared") == "granted"
        assert try_lock(lock.resource, "exclusive") == "blocked"
        # The turnstile is only held on the way in, so the next worker gets through it.
        assert try_lock(lock.turnstile, "exclusive") == "granted"


def test_the_turnstile_stops_new_shared_holders_while_a_writer_waits(tmp_path: Path) -> None:
    lock = ServiceLock(tmp_path, "kafka")
    # What a waiting writer does: hold the turnstile while the readers drain.
    turnstile = os.open(lock.turnstile, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        waiting_reader = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from tests.conftest import ServiceLock\n"
                "with ServiceLock(Path(sys.argv[1]), 'kafka').held(exclusive=False):\n"
                "    print('in', flush=True)",
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        # The reader waits at the turnstile (the kernel lists it as a blocked flock waiter) ...
        wait_until(
            lambda: blocked_in_flock(waiting_reader.pid),
            30.0,
            f"reader {waiting_reader.pid} blocked in flock",
        )
        # ... and has not taken the resource: the writer would get it now.
        assert try_lock(lock.resource, "exclusive") == "granted"
    finally:
        os.close(turnstile)
    out, _ = waiting_reader.communicate(timeout=60)
    assert out.strip() == "in"


def test_a_value_computed_once_is_read_by_every_other_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_DIRECTORY_VARIABLE, str(tmp_path))
    calls: list[int] = []

    def expensive() -> dict[str, list[int]]:
        calls.append(1)
        return {"summaries": [1, 2, 3]}

    assert computed_once("experiment", expensive) == {"summaries": [1, 2, 3]}
    assert computed_once("experiment", expensive) == {"summaries": [1, 2, 3]}
    assert len(calls) == 1
    # Another worker (another process, the same run's directory) reads it and computes nothing.
    other_worker = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tests.conftest import computed_once\n"
            "print(computed_once('experiment', lambda: 'computed again'))",
        ],
        env={**os.environ, LOCK_DIRECTORY_VARIABLE: str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert other_worker.stdout.strip() == "{'summaries': [1, 2, 3]}"
    # Another name is another value.
    assert computed_once("another", lambda: "other") == "other"


def test_without_a_run_directory_every_call_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCK_DIRECTORY_VARIABLE, raising=False)
    calls: list[int] = []
    computed_once("experiment", lambda: calls.append(1))
    computed_once("experiment", lambda: calls.append(1))
    assert len(calls) == 2


def test_a_sim_test_that_needs_a_broker_is_refused() -> None:
    assert needs_more_than_sim({"sim", "kafka", "lab", "parametrize"}) == ["kafka", "lab"]
    assert needs_more_than_sim({"sim", "parametrize"}) == []
    assert needs_more_than_sim({"kafka", "lab"}) == []
