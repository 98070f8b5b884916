"""The supervisor's OS-level building blocks, on small real processes (``sleep``, ``sh``).

These need no broker: they check that identity, signals, stopping and port ownership behave as
the lab relies on, quickly and without touching anyone else's processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from mqlab.lab import process as proc
from mqlab.lab.endpoints import HOST
from mqlab.lab.errors import LabError
from mqlab.lab.process import ProcessRecord
from mqlab.lab.spec import HealthCheck, ProcessSpec
from tests.waiting import wait_until

# Bound for waiting on a signal to take effect (the kernel acts in microseconds) and on a
# small process to start (sh writing its log, forking its child): that takes a free core,
# which a loaded machine can withhold for seconds. A bound, not a speed goal (was 5 s).
SIGNAL_WAIT = 30.0


def wait_for(condition: Callable[[], object], what: str) -> None:
    wait_until(condition, SIGNAL_WAIT, what, interval=0.01)


def spec(*argv: str, name: str = "sleeper") -> ProcessSpec:
    return ProcessSpec(name=name, service="test", argv=argv, health=HealthCheck(kind="tcp", port=1))


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ProcessRecord]]:
    """Records of processes a test started; whatever is left of them is killed afterwards."""
    records: list[ProcessRecord] = []
    yield records
    for record in records:
        proc.stop(record, signal.SIGKILL, 1.0)


def test_pid_record_round_trips_and_bad_files_are_reported(tmp_path: Path) -> None:
    record = ProcessRecord("nats", "nats", 123, 1700000000.25, ("nats-server", "-js"), 1.0, "l")
    assert ProcessRecord.from_json(record.to_json()) == record
    pid_file = tmp_path / "run" / "nats.json"
    proc.write_atomically(pid_file, record.to_json())
    assert proc.read_record(pid_file) == record
    assert proc.read_record(tmp_path / "run" / "absent.json") is None
    pid_file.write_text("{not json")
    with pytest.raises(LabError, match="not a valid mqlab pid file"):
        proc.read_record(pid_file)


def test_start_pause_resume_stop(tmp_path: Path, started: list[ProcessRecord]) -> None:
    record = proc.start_detached(spec("sleep", "60"), tmp_path / "sleeper.log")
    started.append(record)
    assert proc.live_process(record) is not None
    assert os.getsid(record.pid) == record.pid  # its own session, out of reach of Ctrl-C
    assert "starting sleep 60" in (tmp_path / "sleeper.log").read_text()

    proc.signal_group(record, signal.SIGSTOP)
    wait_for(lambda: proc.process_state(record) == "paused", "paused")
    proc.signal_group(record, signal.SIGCONT)
    wait_for(lambda: proc.process_state(record) == "running", "running again")

    assert proc.stop(record, signal.SIGTERM, SIGNAL_WAIT) == "stopped"
    assert proc.process_state(record) == "gone"
    with pytest.raises(LabError, match="not running"):
        proc.signal_group(record, signal.SIGCONT)


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    # sh says when its trap is set with a line that its command does not contain: the log
    # starts with a header naming the command, so waiting for words of the command itself
    # (as this test once did, for "trap set") returned at once, and a SIGTERM that came
    # before sh installed the trap stopped it (three fresh-clone runs under load).
    ignores_term = spec(
        "sh", "-c", "trap '' TERM; printf '%s-%s\\n' trap installed; while :; do sleep 0.05; done"
    )
    log = tmp_path / "stubborn.log"
    record = proc.start_detached(ignores_term, log)
    started.append(record)
    assert "trap-installed" not in log.read_text().splitlines()[0]  # not in the header
    # The SIGTERM must come after sh installed its trap (a fixed pause is too short whenever
    # a busy machine starts sh late).
    wait_for(lambda: "trap-installed" in log.read_text().splitlines(), "sh has set its TERM trap")
    outcome = proc.stop(record, signal.SIGTERM, 0.5)
    assert outcome.startswith("killed after 0.5s")
    assert proc.process_state(record) == "gone"
    assert proc.session_members(record) == []


def test_stop_also_kills_what_the_process_left_behind(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    # The shell dies on SIGTERM; its background child would live on without the lab's cleanup,
    # like an Erlang VM behind RabbitMQ's start script.
    record = proc.start_detached(spec("sh", "-c", "sleep 300 & wait"), tmp_path / "parent.log")
    started.append(record)
    wait_for(lambda: len(proc.family(record)) == 2, "shell and its child")
    child = next(member for member in proc.family(record) if member.pid != record.pid)
    proc.stop(record, signal.SIGTERM, SIGNAL_WAIT)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_reused_pid_is_never_treated_as_ours() -> None:
    # Our own pid, but a start time that is not ours: what a pid file looks like after the
    # server died and the pid went to another process.
    me = psutil.Process()
    impostor = ProcessRecord(
        "redis", "redis", me.pid, me.create_time() - 1000.0, ("redis-server",), 0.0, "l"
    )
    assert proc.live_process(impostor) is None
    assert proc.stop(impostor, signal.SIGKILL, 0.1) == "was not running"
    assert me.is_running()  # still here: the lab did not kill a stranger


def test_a_live_process_is_ours_however_far_the_boot_time_moves(
    tmp_path: Path, started: list[ProcessRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """psutil adds the boot time it reads from /proc/stat to every start time, and the kernel
    recomputes that from the wall clock: after a clock step the same process starts seconds
    later or earlier (a CI run took a paused Kafka broker for gone and never resumed it). The
    lab's record identifies the process by its start in clock ticks, which no clock moves."""
    record = proc.start_detached(spec("sleep", "300"), tmp_path / "sleep.log")
    started.append(record)
    assert record.start_ticks is not None
    booted = psutil.boot_time()
    for step in (1.0, -1.0, 5.0, -30.0, 3600.0):
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda step=step: booted + step)
        assert proc.live_process(record) is not None, step
        assert proc.process_state(record) == "running", step
    # Read back from its pid file, it is the same record.
    assert ProcessRecord.from_json(record.to_json()) == record


def test_a_reused_pid_with_a_start_time_that_matches_is_still_not_ours() -> None:
    """Only the start in ticks decides: a pid now held by a process that started in another
    tick is a stranger's, even when the wall-clock start times happen to agree."""
    me = psutil.Process()
    ticks = proc.start_ticks(me.pid)
    assert ticks is not None
    impostor = ProcessRecord(
        "redis",
        "redis",
        me.pid,
        me.create_time(),
        ("redis-server",),
        0.0,
        "l",
        "running",
        ticks - 1,
    )
    assert proc.live_process(impostor) is None
    assert proc.session_members(impostor) == []
    assert me.is_running()


def test_a_pid_file_of_an_older_mqlab_is_told_by_its_start_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pid file written before the start in ticks was recorded has a wall-clock start only: a
    second of boot-time step is tolerated, five seconds are not."""
    me = psutil.Process()
    record = ProcessRecord("redis", "redis", me.pid, me.create_time(), ("redis-server",), 0.0, "l")
    written = json.loads(record.to_json())
    del written["start_ticks"]
    assert ProcessRecord.from_json(json.dumps(written)) == record
    booted = psutil.boot_time()
    for step in (1.0, -1.0):
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda step=step: booted + step)
        assert proc.live_process(record) is not None, step
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 5.0)
    assert proc.live_process(record) is None


def test_start_ticks_reads_past_a_command_name_with_spaces_and_parentheses(
    tmp_path: Path,
) -> None:
    """The command name in /proc/PID/stat is free text in parentheses: the start is counted from
    the last ')'. A process named 'a) b (c' reads the same start as psutil sees."""
    renamed = tmp_path / "a) b (c"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", renamed)
    child = subprocess.Popen([str(renamed), "300"])
    try:
        assert psutil.Process(child.pid).name() == "a) b (c"
        ticks = proc.start_ticks(child.pid)
        assert ticks is not None
        expected = psutil.Process(child.pid).create_time() - psutil.boot_time()
        assert abs(ticks / os.sysconf("SC_CLK_TCK") - expected) < 0.05
    finally:
        child.kill()
        child.wait()
    assert proc.start_ticks(child.pid) is None


def test_a_session_whose_leader_pid_was_reused_is_not_ours(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    """A stale record's pid now leads another process's session (pids wrap): stopping the
    stale record must not kill that session's members as its leftovers."""
    stranger = proc.start_detached(spec("sh", "-c", "sleep 300 & wait"), tmp_path / "s.log")
    started.append(stranger)
    wait_for(lambda: len(proc.family(stranger)) == 2, "the stranger's shell and its child")
    stale = ProcessRecord(
        "redis", "redis", stranger.pid, stranger.create_time - 1000.0, ("redis-server",), 0.0, "l"
    )
    assert proc.session_members(stale) == []
    assert proc.stop(stale, signal.SIGKILL, 0.1) == "was not running"
    assert proc.live_process(stranger) is not None
    assert len(proc.family(stranger)) == 2


def test_port_owner_and_port_is_free() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not proc.port_is_free(taken)
        owner = proc.port_owner(taken)
        assert owner is not None
        assert owner.startswith(f"pid {os.getpid()} (")
    assert proc.port_is_free(taken)
    assert proc.port_owner(taken) is None


def test_probe_kinds() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        assert proc.probe(HealthCheck(kind="tcp", port=open_port)) is None
    failure = proc.probe(HealthCheck(kind="tcp", port=open_port), timeout=0.5)
    assert failure is not None
    assert str(open_port) in failure
    # A command probe starts a process: the bound is generous for a loaded machine (the
    # default gives it 5 s), and the answer does not depend on it.
    true, false = (HealthCheck(kind="command", argv=(name,)) for name in ("true", "false"))
    assert proc.probe(true, timeout=SIGNAL_WAIT) is None
    assert proc.probe(false, timeout=SIGNAL_WAIT) == "false exited 1"
    http_failure = proc.probe(
        HealthCheck(kind="http", url=f"http://user:secret@{HOST}:{open_port}/"), timeout=0.5
    )
    assert http_failure is not None
    assert "secret" not in http_failure  # never print credentials


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {number}\n" for number in range(20000)))
    assert proc.tail(log, 3) == ["line 19997", "line 19998", "line 19999"]
    assert proc.tail(tmp_path / "absent.log", 3) == []


def test_a_big_log_is_rotated_when_its_process_starts_again(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    log = tmp_path / "chatty.log"
    log.write_text("old line\n" * (proc.LOG_ROTATE_BYTES // 9 + 1))  # just over the limit
    started.append(proc.start_detached(spec("true"), log))
    assert (tmp_path / "chatty.log.1").read_text().startswith("old line\n")
    assert log.read_text().startswith("--- mqlab ")  # a fresh log for the new start
    # A small log is appended to, as before.
    started.append(proc.start_detached(spec("true"), log))
    assert log.read_text().count("--- mqlab ") == 2
    assert proc.rotate_log(tmp_path / "absent.log") is False


def test_missing_executable_is_a_lab_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="cannot start sleeper"):
        proc.start_detached(spec(str(tmp_path / "no-such-server")), tmp_path / "x.log")


def test_exit_code_of_a_process_that_died(tmp_path: Path, started: list[ProcessRecord]) -> None:
    record = proc.start_detached(spec("sh", "-c", "exit 3"), tmp_path / "dies.log")
    started.append(record)
    wait_for(lambda: proc.live_process(record) is None, "exit")
    assert proc.exit_code(record) == 3
    subprocess.run(["true"], check=True)  # unrelated children do not confuse the bookkeeping
