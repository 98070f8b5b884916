"""``mqlab check`` killed at random points: the progress database stays intact and consistent,
and nothing the check started is left running.

The real CLI, in a workspace ``mqlab init`` made, checks an exercise on ``sim`` while this test
kills it: SIGKILL after a random delay drawn from a check's duration, SIGKILL just after the
grader's child ended (while the CLI writes progress: the attempt, then the hint), and SIGINT
to its process group the way a terminal's Ctrl-C arrives. The learner's file is the
reference solution, the starter, or an endless loop (a child that nobody stopped would run
for the exercise's whole time limit). Every choice comes from one seeded random source.

After each kill: no process that inherited this test's marker in its environment is alive
(the grader's child and anything it started), the database passes
:meth:`~mqlab.course.progress.ProgressStore.check_consistency`, and its counts lie between
what the runs that finished must have written and what the runs that started may have.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqlab.course.progress import ProgressStore, default_path
from mqlab.grader.catalog import ExerciseEntry, find_exercise
from mqlab.grader.child import RESTORE_GRACE_SECONDS
from tests.waiting import wait_until

EXERCISE = "full-jitter"
SEED = 0x5EED13
ROUNDS = 12
MARKER = "MQLAB_KILLED_CHECK_TEST"
"""An environment variable only this test's processes carry (children inherit it)."""
GONE_SECONDS = 10.0
"""How long a killed check's processes may take to go. The grader kills its child's group at
once; a child left behind would run on for the exercise's time limit (20 s) or longer."""
RUN_SECONDS = 180.0
"""A bound against hanging for one uncut CLI run (a loaded machine is slow, not stuck)."""

ENDLESS_LOOP = """\
def full_jitter(attempt, base, cap, rng):
    while True:
        attempt += 1


def decorrelated_jitter(previous, base, cap, rng):
    return base
"""


@dataclass
class Workspace:
    root: Path
    learner: Path
    environment: dict[str, str]
    token: str

    def start_check(
        self, exercise: str = EXERCISE, broker: str = "sim"
    ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        """``mqlab check EXERCISE`` as a learner runs it, in a process group of its own (so a
        Ctrl-C sent to that group reaches the CLI and not pytest)."""
        run = uuid.uuid4().hex[:8]
        stdout = self.root.parent / f"stdout-{run}.txt"
        stderr = self.root.parent / f"stderr-{run}.txt"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "mqlab", "check", exercise, "--broker", broker],
                cwd=self.root,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return process, stdout, stderr


def _alive_with(token: str, lab_pids: frozenset[int] = frozenset()) -> list[str]:
    """Every live process (zombies do not count: they run nothing) whose environment carries
    ``MARKER=token``, as "pid command", but the lab's own (``lab_pids``: a broker the check
    restarted inherits the environment, and belongs to the lab, in a session of its own)."""
    found = []
    needle = f"{MARKER}={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in lab_pids:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if state != "Z":
            found.append(f"{entry.name} {command.strip()}")
    return found


def _grader_children(token: str) -> list[str]:
    return [line for line in _alive_with(token) if "mqlab.grader.child" in line]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    if not Path("/proc/self/environ").exists():
        pytest.skip("finding leftover processes reads /proc (Linux)")
    token = uuid.uuid4().hex
    environment = {
        **os.environ,
        "MQLAB_DATA_DIR": str(tmp_path / "data"),
        MARKER: token,
    }
    environment.pop("MQLAB_WORKSPACE", None)
    root = tmp_path / "ws"
    made = subprocess.run(
        [sys.executable, "-m", "mqlab", "init", str(root)],
        env=environment,
        capture_output=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    assert made.returncode == 0, made.stderr.decode()
    entry = find_exercise(EXERCISE)
    learner = root / entry.lesson_folder / entry.id / entry.exercise.file
    assert learner.is_file()
    return Workspace(root, learner, environment, token)


@dataclass
class Tally:
    """What the runs so far must have written (finished) and may have written (started)."""

    started: int = 0
    finished: int = 0
    failing_started: int = 0
    failing_finished: int = 0
    passing_finished: int = 0
    passing_started: int = 0

    def count(self, *, failing: bool, finished: bool) -> None:
        self.started += 1
        self.failing_started += failing
        self.passing_started += not failing
        if finished:
            self.finished += 1
            self.failing_finished += failing
            self.passing_finished += not failing


def _assert_consistent(workspace: Workspace, tally: Tally) -> None:
    wait_until(
        lambda: not _alive_with(workspace.token),
        GONE_SECONDS,
        lambda: f"no process of the killed check left; alive: {_alive_with(workspace.token)}",
    )
    path = Path(workspace.environment["MQLAB_DATA_DIR"]) / default_path().name
    with ProgressStore(path) as store:
        assert store.check_consistency() == []
        record = store.exercise(EXERCISE)
    if record is None:
        assert tally.finished == 0
        return
    assert tally.finished <= record.attempts <= tally.started, (record, tally)
    # A failing check records its attempt, then shows (and records) one hint.
    assert tally.failing_finished <= record.hints_shown <= tally.failing_started, (record, tally)
    assert record.hints_shown <= record.attempts
    if tally.passing_finished:
        assert record.passed
    if record.passed:
        assert tally.passing_started
        assert record.passed_at is not None
    if record.last_result is not None:
        assert json.loads(record.last_result)["exercise"] == EXERCISE


def _wait_for_grading(workspace: Workspace, process: subprocess.Popen[bytes]) -> bool:
    """Wait until the check's grader child runs (True) or the CLI has ended (False)."""
    seen = wait_until(
        lambda: _grader_children(workspace.token) or process.poll() is not None,
        RUN_SECONDS,
        "the check's grader child to start",
    )
    return seen is not True


def _wait_for_grading_end(workspace: Workspace) -> None:
    wait_until(
        lambda: not _grader_children(workspace.token), RUN_SECONDS, "the grader child to end"
    )


def _signal_after(
    process: subprocess.Popen[bytes], delay: float, send: signal.Signals, *, group: bool = False
) -> int:
    """Send ``send`` after ``delay`` seconds unless the process ended first; its exit code.
    Time passing is the condition here: a random point of the run."""
    try:
        return process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, send)
        else:
            os.kill(process.pid, send)
        return process.wait(timeout=RUN_SECONDS)


def _finished_normally(stdout: Path, stderr: Path, code: int, *, failing: bool) -> None:
    """A run the signal missed (it had ended already) is an ordinary, complete check."""
    assert code == (1 if failing else 0), (code, stdout.read_text(), stderr.read_text())
    assert "Traceback" not in stderr.read_text()
    assert "reproduce:" in stdout.read_text() or "passed" in stdout.read_text()


@pytest.mark.sim
def test_mqlab_check_killed_anywhere_leaves_consistent_progress_and_no_process(
    workspace: Workspace,
) -> None:
    entry: ExerciseEntry = find_exercise(EXERCISE)
    chooser = random.Random(SEED)
    tally = Tally()

    # One uncut run of the starter: how long a check takes here, start to end, how long its
    # grader child lives, and how long the CLI runs on after it (the progress writes).
    started = time.monotonic()
    process, stdout, stderr = workspace.start_check()
    assert _wait_for_grading(workspace, process), "the CLI ended before its child was seen"
    child_started = time.monotonic()
    _wait_for_grading_end(workspace)
    child_ended = time.monotonic()
    code = process.wait(timeout=RUN_SECONDS)
    ended = time.monotonic()
    _finished_normally(stdout, stderr, code, failing=True)
    tally.count(failing=True, finished=True)
    _assert_consistent(workspace, tally)
    whole, child_life, tail = ended - started, child_ended - child_started, ended - child_ended

    interrupted = 0
    for _ in range(ROUNDS):
        learner = chooser.choice(["solution", "starter", "endless loop"])
        how = chooser.choice(["kill during the check", "kill at the progress write", "ctrl-c"])
        if learner == "endless loop":
            how = chooser.choice(["kill during the check", "ctrl-c"])  # it never writes
            workspace.learner.write_text(ENDLESS_LOOP)
        else:
            source = entry.solution_file if learner == "solution" else entry.starter_file
            shutil.copy(source, workspace.learner)
        failing = learner != "solution"
        process, stdout, stderr = workspace.start_check()
        try:
            if how == "kill during the check":
                code = _signal_after(process, chooser.uniform(0.0, whole), signal.SIGKILL)
            elif how == "kill at the progress write":
                if _wait_for_grading(workspace, process):
                    _wait_for_grading_end(workspace)
                code = _signal_after(process, chooser.uniform(0.0, tail), signal.SIGKILL)
            else:
                _wait_for_grading(workspace, process)
                delay = chooser.uniform(0.0, child_life)
                code = _signal_after(process, delay, signal.SIGINT, group=True)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if code == -signal.SIGKILL:
            tally.count(failing=failing, finished=False)
        elif how == "ctrl-c" and code == 130:
            # One line, no traceback; the attempt may or may not have been recorded.
            assert stderr.read_text() == "interrupted\n", stderr.read_text()
            tally.count(failing=failing, finished=False)
            interrupted += 1
        elif how == "ctrl-c" and code == -signal.SIGINT and stderr.read_text():
            # Interrupted and said so, then the interpreter's shutdown (which puts SIGINT's
            # default action back) was ended by it: seen once under load; a shell says 130.
            assert stderr.read_text() == "interrupted\n", stderr.read_text()
            tally.count(failing=failing, finished=False)
            interrupted += 1
        elif how == "ctrl-c" and code == -signal.SIGINT:
            # The check had ended and was reported: the signal came while the interpreter
            # shut down, which ends by the default action (no output; a shell says 130).
            assert "reproduce:" in stdout.read_text() or "passed" in stdout.read_text()
            tally.count(failing=failing, finished=True)
        else:
            _finished_normally(stdout, stderr, code, failing=failing)
            tally.count(failing=failing, finished=True)
        _assert_consistent(workspace, tally)
    assert tally.started - tally.finished >= ROUNDS // 2, "most rounds must really be cut"
    assert interrupted, "at least one Ctrl-C must land during a check"


PRODUCER_STUCK_AFTER_FREEZE = """\
import asyncio

sent = 0


async def open_producer(kafka):
    return await kafka.producer(acks="all", idempotent=True)


async def publish(producer, topic, order_id, event_id, payload):
    global sent
    sent += 1
    # keyed-producer freezes a leader before the 13th to 21st send and kills it a second
    # later: from the 21st on the broker is surely broken, and it stays so while this waits.
    if sent == 21:
        await asyncio.Event().wait()
    await producer.send(topic, payload, key=order_id.encode(), message_id=event_id)
"""
"""A keyed-producer answer that sends like the reference solution, then waits for ever."""


@pytest.mark.kafka
@pytest.mark.lab
@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_a_check_stopped_while_a_kafka_broker_is_down_puts_the_broker_back(
    workspace: Workspace, how: str
) -> None:
    """keyed-producer on the lab's Kafka freezes a partition leader, then kills it. A Ctrl-C
    then kills the grader's child before it could restore the broker; the grader's cleanup
    run restores what the child reported it broke, before ``mqlab check`` exits 130. A
    SIGKILL of ``mqlab check`` runs nothing of it: the child, its lifeline cut, cancels the
    check so that the check's own clean-up restores the broker, and then goes.

    The learner's producer stops at the send after the freeze (:data:`PRODUCER_STUCK_AFTER_FREEZE`),
    so the broker stays broken until the check is stopped: with the reference solution the
    check can restart the broker and end in the moment between this test seeing it down and
    its signal (seen under load, where reading the lab's status takes a while)."""
    from mqlab.lab.supervisor import Lab

    entry = find_exercise("keyed-producer")
    learner = workspace.root / entry.lesson_folder / entry.id / entry.exercise.file
    learner.write_text(PRODUCER_STUCK_AFTER_FREEZE, encoding="utf-8")
    lab = Lab()

    def kafka_down() -> list[str]:
        return [
            f"{row.process} {row.health}"
            for row in lab.status()
            if row.service == "kafka" and row.health in ("paused", "killed", "crashed", "stopped")
        ]

    def kafka_whole() -> bool:
        rows = [row for row in lab.status() if row.service == "kafka"]
        return bool(rows) and all(row.health == "healthy" for row in rows)

    wait_until(kafka_whole, RUN_SECONDS, "every Kafka process of the lab healthy before")
    process, stdout, stderr = workspace.start_check("keyed-producer", "kafka")
    try:
        wait_until(
            lambda: kafka_down() or process.poll() is not None,
            RUN_SECONDS,
            "the check to freeze or kill a Kafka broker",
            interval=0.02,
        )
        assert process.poll() is None, stdout.read_text() + stderr.read_text()
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGKILL)
        code = process.wait(timeout=RUN_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if how == "ctrl-c":
        assert code == 130, (code, stdout.read_text(), stderr.read_text())
        assert stderr.read_text() == "interrupted\n"
    else:
        assert code == -signal.SIGKILL
    wait_until(kafka_whole, RUN_SECONDS, lambda: f"Kafka whole again; down: {kafka_down()}")
    lab_pids = frozenset(row.pid for row in lab.status() if row.pid)
    wait_until(
        lambda: not _alive_with(workspace.token, lab_pids),
        RESTORE_GRACE_SECONDS + GONE_SECONDS,
        lambda: f"no process of the check left; alive: {_alive_with(workspace.token, lab_pids)}",
    )
