"""Grade learner code: run its check in a child process, then judge the recorded history.

:func:`check_file` is what ``mqlab check`` (and the TUI, and the course's own tests) call. It
starts :mod:`mqlab.grader.child` with the exercise's limits, reads the observations it reports,
starts it again when the check crashed it on purpose (a real SIGKILL mid-work, on a real broker:
recovery must start from a cold process), kills it when it runs past its time, sweeps the run's
namespace off the broker afterwards, and judges the exercise's invariants on the history.

What a learner gets back (:class:`CheckReport`) is built to be acted on: the invariant that
broke with a minimal counter-example, the seed and the exact command that reproduces it; or the
one place in their file where their code raised, failed to import or was stuck when time ran
out; and on a pass, what was proven under which faults.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from mqlab.course.exercise import Exercise
from mqlab.grader.catalog import ExerciseEntry
from mqlab.grader.invariants import INVARIANTS, Finding, judge
from mqlab.observe.events import FaultInjected, Observation

MAX_PHASES = 5
"""A check may crash the learner's process on purpose this many times minus one (the Kafka
consumer exercises kill it three times: after a receive, before a commit, after one)."""
CLEANUP_SECONDS = 180.0
"""A bound on the cleanup run after a real check (delete its namespace, and put back what a
child killed mid-fault left broken). It restarts a killed broker and waits until it is healthy,
for as long as the lab itself would (a Kafka broker: up to two minutes on a loaded machine,
where a JVM starts slowly). The 30 s this was could kill the cleanup run in that wait, or
before it: a restore not yet begun (the restarted broker launches before the wait) or the
namespace's deletion was then lost. It ends as soon as its work is done."""
KILL_GRACE_SECONDS = 2.0
"""How long past its time limit the child may run before it is killed: the child's own stack
dump comes a quarter second before the limit, and must be written before the kill."""
LAB_WAIT_SECONDS = 300.0
"""A bound on one wait of the check on the lab (``ctx.off_the_clock()``), which the learner's
time limit does not count: the check's own waits are bounded, this only keeps a check that
hangs in one from hanging ``mqlab check``."""
STARTUP_SECONDS = 120.0
"""A bound on the child's start (the interpreter, mqlab, the check module) before its limits
are armed. The learner's time limit runs from then on, so a machine slow to start a process
costs the learner nothing; this only keeps a stuck start from hanging ``mqlab check``."""
STDERR_LINES_KEPT = 12
STDERR_BUFFER_LINES = 400
"""Lines of the child's stderr kept while it runs (faulthandler's dump must fit)."""
MAX_LINE_BYTES = 1 << 20


class GraderError(Exception):
    """The check could not be run as asked (a broker the exercise does not run on ...)."""


@dataclass(frozen=True, slots=True)
class LearnerError:
    """Where the learner's code failed: raised, did not import, or was stopped."""

    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    code: str = ""

    def one_line(self) -> str:
        """``jitter.py:12: ZeroDivisionError: division by zero``."""
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        if self.file and not self.line:
            where = f"{self.file}: "
        return f"{where}{self.kind}: {self.message}".rstrip(": ")


@dataclass(frozen=True, slots=True)
class InvariantResult:
    """One invariant judged on the history."""

    id: str
    title: str
    finding: Finding


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The outcome of one ``mqlab check``."""

    exercise_id: str
    broker: str
    seed: int
    results: tuple[InvariantResult, ...]
    faults: str
    """What the check did to the code (the exercise's ``faults`` sentence)."""
    learner_error: LearnerError | None = None
    check_error: str | None = None
    """A failure of the check itself or of the broker, not of learner code."""
    stderr_tail: tuple[str, ...] = ()
    """The last lines the learner's code printed (shown when something went wrong)."""
    phases: int = 1
    seconds: float = 0.0
    observations: tuple[Observation, ...] = ()

    @property
    def passed(self) -> bool:
        """Every invariant holds and nothing went wrong on the way."""
        return (
            self.learner_error is None
            and self.check_error is None
            and bool(self.results)
            and all(r.finding.holds for r in self.results)
        )

    @property
    def broken(self) -> InvariantResult | None:
        """The first invariant that does not hold (what the learner should look at)."""
        return next((r for r in self.results if not r.finding.holds), None)

    def to_json_dict(self) -> dict[str, Any]:
        """The report as JSON data (stored in progress, printed by ``--json``)."""
        return {
            "exercise": self.exercise_id,
            "broker": self.broker,
            "seed": self.seed,
            "passed": self.passed,
            "learner_error": asdict(self.learner_error) if self.learner_error else None,
            "check_error": self.check_error,
            "invariants": [
                {
                    "id": r.id,
                    "holds": r.finding.holds,
                    "proven": r.finding.proven,
                    "problem": r.finding.problem,
                    "counterexample": list(r.finding.counterexample),
                }
                for r in self.results
            ],
            "phases": self.phases,
            "seconds": round(self.seconds, 3),
        }


LAB_TARGET = "lab"
"""The real target of an exercise that uses several lab services and no broker."""


def real_targets(exercise: Exercise) -> list[str]:
    """What ``--broker`` names for a real run of ``exercise``: its systems; for an exercise
    that needs no broker but lab services (PostgreSQL, Redis), one run on the lab, named after
    its service (``postgres``), or ``lab`` when it uses several."""
    if exercise.systems:
        return list(exercise.systems)
    if len(exercise.services) == 1:
        return [exercise.services[0]]
    return [LAB_TARGET] if exercise.services else []


def resolve_grading_broker(entry: ExerciseEntry, broker: str) -> tuple[str | None, bool, str]:
    """``sim`` / ``sim:kafka`` / ``kafka`` (or, for an exercise with lab services and no
    broker, ``postgres`` / ``redis`` / ``lab``) -> (system, simulated, display name).

    Raises:
        GraderError: the exercise does not run on that broker.
    """
    exercise = entry.exercise
    systems = exercise.systems
    name = broker.strip().lower()
    if name == "sim":
        system = systems[0] if systems else None
        return system, True, f"sim:{system}" if system else "sim"
    if not systems and exercise.services and name in (*exercise.services, LAB_TARGET):
        return None, False, real_targets(exercise)[0]
    simulated = name.startswith("sim:")
    system = name.removeprefix("sim:")
    if system not in systems:
        runs_on = ", ".join(["sim", *real_targets(exercise)])
        raise GraderError(f"exercise {entry.id!r} runs on {runs_on}, not {broker}")
    return system, simulated, f"sim:{system}" if simulated else system


def check_file(
    entry: ExerciseEntry,
    learner_file: Path,
    *,
    broker: str = "sim",
    seed: int = 0,
) -> CheckReport:
    """Grade ``learner_file`` against ``entry``'s check and invariants.

    Raises:
        GraderError: a broker the exercise does not run on, or a learner file that is missing.
    """
    if not learner_file.is_file():
        raise GraderError(f"{learner_file}: no such file (mqlab init creates the workspace)")
    system, simulated, display = resolve_grading_broker(entry, broker)
    if simulated:
        namespace = "mq-grade"
    else:
        from mqlab.brokers.base import new_namespace

        namespace = new_namespace()
    request: dict[str, Any] = {
        "check": str(entry.check_file),
        "learner": str(learner_file.resolve()),
        "system": system,
        "simulated": simulated,
        "seed": seed,
        "phase": 1,
        "namespace": namespace,
        "seconds": entry.exercise.limits.seconds,
        "memory_mb": entry.exercise.limits.memory_mb,
    }
    started = time.perf_counter()
    observations: list[Observation] = []
    learner_error: LearnerError | None = None
    check_error: str | None = None
    stderr: list[str] = []
    phase = 1
    heard: list[bytes] = []
    try:
        for phase in range(1, MAX_PHASES + 1):
            outcome = _run_child({**request, "phase": phase}, entry.exercise.limits.seconds, heard)
            observations += outcome.observations
            stderr = outcome.stderr
            learner_error = outcome.learner_error
            check_error = outcome.check_error
            if not (outcome.planned_crash and outcome.killed):
                break
    finally:
        if not simulated:
            # Also after Ctrl-C or a kill: what a child that died mid-fault left broken in the
            # lab (a broker it froze or killed) is put back by the cleanup run.
            restore = [list(pair) for pair in left_broken(heard)]
            _run_child({**request, "cleanup_only": True, "restore": restore}, CLEANUP_SECONDS)
    results: tuple[InvariantResult, ...] = ()
    if learner_error is None and check_error is None:
        results = tuple(_judge(entry, observations))
    return CheckReport(
        exercise_id=entry.id,
        broker=display,
        seed=seed,
        results=results,
        faults=entry.exercise.faults,
        learner_error=learner_error,
        check_error=check_error,
        stderr_tail=tuple(stderr[-STDERR_LINES_KEPT:]),
        phases=phase,
        seconds=time.perf_counter() - started,
        observations=tuple(observations),
    )


def left_broken(protocol_lines: list[bytes]) -> list[tuple[str, str]]:
    """``(fault, node)`` for every lab process the children paused or killed and did not
    resume or restart, from the protocol lines they sent: their ``FaultInjected`` reports,
    and the ``breaking`` line each sends just before it pauses or kills (a child killed
    between the signal and its report has still said what it may have broken)."""
    state: dict[str, str] = {}
    for raw in protocol_lines:
        if b'"breaking"' in raw:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                fault, target = json.loads(raw)["breaking"]
                if fault in ("pause", "kill") and isinstance(target, str):
                    state[target] = fault
            continue
        if b'"observation"' not in raw:
            continue
        try:
            observation = Observation.from_dict(json.loads(raw)["observation"])
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(observation, FaultInjected) or observation.broker != "lab":
            continue
        if observation.fault in ("pause", "kill"):
            state[observation.target] = observation.fault
        elif observation.fault == "restart" or (
            observation.fault == "resume" and state.get(observation.target) == "pause"
        ):
            state.pop(observation.target, None)
    return sorted((fault, target) for target, fault in state.items())


def _judge(entry: ExerciseEntry, observations: list[Observation]) -> list[InvariantResult]:
    results = []
    for use in entry.exercise.invariants:
        invariant = INVARIANTS[use.id]
        try:
            finding = judge(use.id, observations, use.params)
        except (ValueError, TypeError) as error:
            finding = Finding(False, problem=f"the invariant could not be judged: {error}")
        results.append(InvariantResult(invariant.id, invariant.title, finding))
    return results


@dataclass
class _ChildOutcome:
    observations: list[Observation]
    stderr: list[str]
    learner_error: LearnerError | None
    check_error: str | None
    planned_crash: bool
    killed: bool


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<function>\S+)')
_STACK_DUMP = re.compile(
    r"^(Timeout \(\d+:\d\d:\d\d(\.\d+)?\)!"
    r"|(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):"
    r"|\s*<no Python frame>)$"
)
"""The lines of faulthandler's dump (its header, thread headers, frames): the grader's, not
something the learner printed."""


def _stuck_at(stderr: list[str], learner: str) -> tuple[int | None, str]:
    """The learner's innermost frame in faulthandler's dump (most recent call first)."""
    for text in stderr:
        match = _FRAME.match(text)
        if match and match.group("file") == learner:
            return int(match.group("line")), match.group("function")
    return None, ""


class _LearnerClock:
    """The learner's time as the grader keeps it, from the child's protocol lines: it starts at
    ``clock_started`` and stands still between ``clock_paused`` and ``clock_resumed`` (the
    check waiting on the lab). Fed by the reader thread, read by the waiting one."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self._lock = threading.Lock()
        self._started_at = 0.0
        self._paused_at: float | None = None
        self._paused_total = 0.0

    def hear(self, line: bytes) -> None:
        """Take note of a protocol line (only the clock's lines matter here)."""
        now = time.monotonic()
        with self._lock:
            if line.startswith(CLOCK_STARTED):
                self._started_at = now
                self.started.set()
            elif line.startswith(CLOCK_PAUSED) and self._paused_at is None:
                self._paused_at = now
            elif line.startswith(CLOCK_RESUMED) and self._paused_at is not None:
                self._paused_total += now - self._paused_at
                self._paused_at = None

    @property
    def running(self) -> bool:
        """The child has started the clock (its limits are armed)."""
        with self._lock:
            return self._started_at > 0

    def used(self) -> float:
        """Seconds of the learner's time used so far."""
        now = time.monotonic()
        with self._lock:
            paused = self._paused_total
            if self._paused_at is not None:
                paused += now - self._paused_at
            return now - self._started_at - paused

    def paused_for(self) -> float:
        """Seconds the current pause has lasted (0 when the clock runs)."""
        with self._lock:
            return 0.0 if self._paused_at is None else time.monotonic() - self._paused_at


def _run_child(
    request: dict[str, Any], seconds: float, heard: list[bytes] | None = None
) -> _ChildOutcome:
    """Run one child to its end, its time limit, or Ctrl-C (which kills it and re-raises).

    The time limit is the learner's time (:class:`_LearnerClock`): it starts when the child
    reports its limits armed, not when it was started, so how long the interpreter took to
    start on a loaded machine is not charged; and it stands still while the check waits on
    the lab (``ctx.off_the_clock()``), each such wait bounded by :data:`LAB_WAIT_SECONDS`.
    Both pipes are drained by threads while the child runs; of stderr (where the learner's
    prints go) only the last lines are kept, so a print in an endless loop cannot fill the
    grader's memory. stdin stays open until the child has ended: it is the child's lifeline
    (see :mod:`mqlab.grader.child`), which ends with this process however it ends, so a
    killed grader leaves no child behind. ``heard`` collects the protocol lines as they come,
    so a caller interrupted meanwhile still knows what the child reported.
    """
    environment = {
        **os.environ,
        "MALLOC_ARENA_MAX": "2",  # fewer malloc arenas: the address-space cap means heap
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "mqlab.grader.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        start_new_session=True,  # Ctrl-C reaches the grader only; it decides what to kill
    )
    timed_out = False
    stuck: str | None = None
    readers: list[threading.Thread] = []
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        protocol: list[bytes] = []
        tail: collections.deque[bytes] = collections.deque(maxlen=STDERR_BUFFER_LINES)
        clock = _LearnerClock()

        def keep_protocol(line: bytes) -> None:
            protocol.append(line)
            if heard is not None:
                heard.append(line)
            clock.hear(line)

        readers = [
            threading.Thread(
                target=_drain,
                # The end of its output also ends the wait for its start: it is gone.
                args=(process.stdout, keep_protocol, clock.started.set),
                daemon=True,
            ),
            threading.Thread(target=_drain, args=(process.stderr, tail.append), daemon=True),
        ]
        for reader in readers:
            reader.start()
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
        if not clock.started.wait(STARTUP_SECONDS) and process.poll() is None:
            stuck = f"did not start within {STARTUP_SECONDS:g}s (is the machine overloaded?)"
        elif not clock.running:  # it closed its output before arming its limits: it is ending
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STARTUP_SECONDS)
        while stuck is None and process.poll() is None:
            left = seconds + KILL_GRACE_SECONDS - clock.used()
            if left <= 0:
                timed_out = True
                break
            if clock.paused_for() > LAB_WAIT_SECONDS:
                stuck = f"waited on the lab for more than {LAB_WAIT_SECONDS:g}s"
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=min(left, WAIT_SLICE_SECONDS))
        if process.poll() is None:
            _kill_group(process)
            process.wait()
    except BaseException:
        _kill_group(process)
        process.wait()
        # What the child wrote before it died is still in the pipe: the caller's clean-up
        # reads ``heard`` to learn what it left broken, so it must all be read first.
        for reader in readers:
            reader.join(timeout=5.0)
        raise
    finally:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
    for reader in readers:
        reader.join(timeout=5.0)
    stdout = b"".join(protocol).decode("utf-8", errors="replace")
    stderr_text = b"".join(tail).decode("utf-8", errors="replace")
    outcome = _parse(request, stdout, stderr_text, process.returncode, timed_out, seconds)
    if stuck is not None:
        outcome.check_error = f"the grader's child process {stuck}"
    return outcome


CLOCK_STARTED = b'{"clock_started": true}'
CLOCK_PAUSED = b'{"clock_paused": true}'
CLOCK_RESUMED = b'{"clock_resumed": true}'
"""The child's protocol lines that start, stop and restart the learner's time."""
WAIT_SLICE_SECONDS = 0.25
"""How often the waiting thread looks at the learner's clock while the child runs."""


def _drain(
    stream: IO[bytes], keep: Callable[[bytes], None], at_end: Callable[[], None] = lambda: None
) -> None:
    """Read ``stream`` to its end in bounded lines (a line without end is cut up), then call
    ``at_end``."""
    try:
        while True:
            line = stream.readline(MAX_LINE_BYTES)
            if not line:
                return
            keep(line)
    finally:
        at_end()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _parse(
    request: dict[str, Any],
    stdout: str,
    stderr_text: str,
    returncode: int,
    timed_out: bool,
    seconds: float,
) -> _ChildOutcome:
    observations: list[Observation] = []
    learner_error: LearnerError | None = None
    check_error: str | None = None
    planned = False
    finished = False
    for raw in stdout.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if "observation" in line:
            observations.append(Observation.from_dict(line["observation"]))
        elif "learner_error" in line:
            learner_error = LearnerError(**line["learner_error"])
        elif "check_error" in line:
            check_error = str(line["check_error"])
        elif "planned_crash" in line:
            planned = True
        elif line.get("done"):
            finished = True
    stderr = stderr_text.splitlines()
    learner = str(request["learner"])
    killed = returncode == -signal.SIGKILL
    if timed_out:
        line_number, function = _stuck_at(stderr, learner)
        where = f" (in {function})" if function else ""
        learner_error = LearnerError(
            "Timeout",
            f"did not finish within {seconds:g}s{where}: an endless loop, or a wait that "
            "never ends?",
            learner,
            line_number,
        )
    elif returncode not in (0, None) and not (planned and killed) and learner_error is None:
        reason = "it ran out of memory" if returncode in (-signal.SIGKILL, -signal.SIGSEGV) else ""
        check_error = check_error or (
            f"the grader's child process stopped with code {returncode} {reason}".rstrip()
        )
    elif not finished and not planned and learner_error is None and check_error is None:
        check_error = "the check ended without reporting its end"
    stderr = [text for text in stderr if not (_FRAME.match(text) or _STACK_DUMP.match(text))]
    return _ChildOutcome(observations, stderr, learner_error, check_error, planned, killed)
