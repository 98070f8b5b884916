"""The grader's child process: ``python -m mqlab.grader.child`` runs one check of learner code.

Learner code is untrusted in the mildest sense: it may loop forever, allocate without bound,
raise, fail to import, or print. So it never runs in the grader's own process. The parent
(:mod:`mqlab.grader.run`) starts this module with a JSON request on stdin and reads JSON lines
back from the *protocol* file descriptor (the original stdout); the learner's ``print`` goes to
stderr instead, which the parent keeps and shows the end of when something goes wrong.

Limits: the address space is capped (``RLIMIT_AS``, above what the interpreter and the clients
already use), CPU time is capped as a backstop, and a watchdog thread writes the main thread's
stack to stderr shortly before the wall-clock deadline (:class:`_StuckReport`), so when the
parent has to kill an endless loop it can still point at the learner's line that was running.

The request is one line on stdin; after it the parent writes nothing more but keeps stdin
open for as long as it waits for this process: stdin is the *lifeline*. When it reaches its
end, the grader is gone (killed with SIGKILL, say, where no ``finally`` of it runs), and a
thread here kills this process's whole group at once, so a killed ``mqlab check`` never
leaves learner code running behind it (:func:`_follow_the_grader`).

Protocol lines (one JSON object each):
``{"clock_started": true}`` (the limits are armed: the learner's time starts now, not when the
interpreter started, which on a loaded machine can take seconds), ``{"clock_paused": true}``
and ``{"clock_resumed": true}`` (around the check's own waits on the lab, which are not the
learner's time), ``{"observation": {...}}``,
``{"planned_crash": point}`` (a SIGKILL is coming on purpose),
``{"learner_error": {kind, message, file, line, code}}``, ``{"check_error": text}`` (a bug in
the check or the grader, not in learner code), ``{"done": true}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from mqlab.observe.events import Observation

MEGABYTE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChildRequest:
    """What the parent asks for (the JSON on stdin)."""

    check: str
    """Path of the exercise's ``check.py``."""
    learner: str
    """Path of the learner's file."""
    system: str | None
    simulated: bool
    seed: int
    phase: int
    namespace: str
    seconds: float
    memory_mb: int
    cleanup_only: bool = False
    """Run only the check's ``cleanup(ctx)`` and sweep the namespace (after a kill)."""
    restore: list[list[str]] = field(default_factory=list)
    """Cleanup run: ``[fault, node]`` pairs an earlier child left in the lab (it died with a
    broker paused or killed); they are resumed or restarted."""


class _Protocol:
    """Writes protocol lines to the descriptor the parent reads."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def send(self, **line: Any) -> None:
        self.stream.write(json.dumps(line, sort_keys=True) + "\n")
        self.stream.flush()

    def observation(self, observation: Observation) -> None:
        self.send(observation=observation.to_dict())


def _take_stdout() -> IO[str]:
    """Keep the real stdout for the protocol and point fd 1 (and ``print``) at stderr."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


RESTORE_GRACE_SECONDS = 120.0
"""When the grader goes away in the middle of a real run, how long this process may take to
put the lab back (resume or restart a broker the check broke) before it is killed anyway."""

_restore_first: list[Callable[[], None]] = []
"""Set during a real run: cancels the check, so its ``finally`` blocks restore the lab."""


def _follow_the_grader() -> None:
    """End this process and everything in its group as soon as the grader goes away.

    The grader holds the other end of stdin open until this process has ended, so the end of
    stdin means it died (or gave up on this process). A thread blocked in ``read`` releases
    the GIL, so it runs beside an endless loop of learner code; the learner's ``input()``
    reads an empty file instead of the lifeline. On the simulator everything dies with the
    process at once; on a real broker the check is cancelled first, so a broker it froze or
    killed is put back, for up to :data:`RESTORE_GRACE_SECONDS` (learner code stuck in a
    loop never lets the cancellation in; then the kill comes anyway).
    """

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                continue
        if _restore_first:
            _restore_first[0]()
            threading.Event().wait(RESTORE_GRACE_SECONDS)
        # The grader starts this process as the leader of a session of its own; run by hand
        # from a shell it is not, and then only this process goes, not the shell's group.
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 (for the process's life)
    threading.Thread(target=watch, name="grader-lifeline", daemon=True).start()


def _cancel_on_lifeline_end() -> None:
    """Let the lifeline cancel the running check (real runs: see :func:`_follow_the_grader`)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        loop.call_soon_threadsafe(task.cancel)

    _restore_first.append(cancel)


def _vm_bytes() -> int:
    """This process's current virtual size (VmSize), 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class _StuckReport:
    """Writes where the main thread is when the learner's time is nearly up, in the shape of
    :mod:`faulthandler`'s dump (the grader parses that: ``mqlab.grader.run._stuck_at``).

    Not ``faulthandler.dump_traceback_later``: its watchdog walks every thread's frames
    without the GIL while they run, and on a learner's run still busy at the deadline that
    crashed this process with SIGSEGV (11 of 16 runs with the dump made to repeat; one
    fresh-clone suite run under load), which the grader then took for running out of memory.
    This thread takes the GIL and reads the frames with :func:`sys._current_frames`, which is
    safe; the price is that learner code stuck in one long C call that holds the GIL gets no
    line (the kill still comes, and the report still says it timed out).
    """

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd  # stderr, which the grader reads
        self._main = threading.get_ident()
        self._deadline: float | None = None
        self._armed_for = 0.0
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, name="grader-stuck-report", daemon=True).start()

    def arm(self, seconds: float) -> None:
        with self._changed:
            self._deadline = time.monotonic() + seconds
            self._armed_for = seconds
            self._changed.notify()

    def disarm(self) -> None:
        with self._changed:
            self._deadline = None
            self._changed.notify()

    def _watch(self) -> None:
        changed = self._changed
        while True:
            with changed:
                while self._deadline is None or time.monotonic() < self._deadline:
                    left = None if self._deadline is None else self._deadline - time.monotonic()
                    changed.wait(left)
                self._deadline = None
                armed_for = self._armed_for
            self._write(armed_for)

    def _write(self, armed_for: float) -> None:
        frame = sys._current_frames().get(self._main)
        lines = [
            f"Timeout ({datetime.timedelta(seconds=round(armed_for, 3))})!",
            f"Current thread 0x{self._main:016x} (most recent call first):",
        ]
        while frame is not None:
            code = frame.f_code
            lines.append(f'  File "{code.co_filename}", line {frame.f_lineno} in {code.co_name}')
            frame = frame.f_back
        # Straight to the descriptor: learner code may have replaced sys.stderr.
        with contextlib.suppress(OSError):
            os.write(self._fd, ("\n".join(lines) + "\n").encode("utf-8", errors="replace"))


class _LearnerClock:
    """The learner's time limit as this process keeps it: the stack dump armed for what is left
    of the limit, disarmed while the check waits on the lab (``ctx.off_the_clock()``), and the
    grader told when the clock starts, stops and runs on, so that it keeps the same time."""

    def __init__(self, seconds: float, protocol: _Protocol, stuck: _StuckReport) -> None:
        self.left = seconds
        self.since = time.monotonic()
        self.protocol = protocol
        self.stuck = stuck

    def _arm(self) -> None:
        # A quarter second before the limit (the grader kills after a grace): the stack must
        # be written first.
        self.stuck.arm(max(0.1, self.left - 0.25))

    def start(self) -> None:
        self.since = time.monotonic()
        self._arm()
        self.protocol.send(clock_started=True)

    def pause(self) -> None:
        self.stuck.disarm()
        self.left -= time.monotonic() - self.since
        self.protocol.send(clock_paused=True)

    def resume(self) -> None:
        self.since = time.monotonic()
        self._arm()
        self.protocol.send(clock_resumed=True)


def _apply_limits(request: ChildRequest) -> None:
    """Cap memory above what is already mapped and CPU as a backstop.

    Only the soft limits are lowered: a check that kills a lab broker restarts it from this
    process, and the lab lifts its processes back to the hard limits
    (:data:`mqlab.lab.process.LIFTED_LIMITS`), which it could not if these were hard too.
    """
    budget = request.memory_mb * MEGABYTE
    current = _vm_bytes()
    if current:
        _lower_soft_limit(resource.RLIMIT_AS, current + budget)
    _lower_soft_limit(resource.RLIMIT_CPU, int(request.seconds * 2) + 5)


def _lower_soft_limit(limit: int, value: int) -> None:
    hard = resource.getrlimit(limit)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, hard))


def _load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def learner_error(error: BaseException, learner_path: str) -> dict[str, Any]:
    """Where in the learner's file an error happened (the innermost frame there)."""
    if isinstance(error, SyntaxError) and error.filename == learner_path:
        return {
            "kind": "SyntaxError",
            "message": error.msg,
            "file": learner_path,
            "line": error.lineno,
            "code": (error.text or "").strip(),
        }
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == learner_path]
    frame = frames[-1] if frames else None
    return {
        "kind": type(error).__name__,
        "message": str(error).strip().splitlines()[0] if str(error).strip() else "",
        "file": learner_path if frame else None,
        "line": frame.lineno if frame else None,
        "code": (frame.line or "").strip() if frame else "",
    }


def _raised_in(error: BaseException, path: str) -> bool:
    if isinstance(error, SyntaxError) and error.filename == path:
        return True
    return any(f.filename == path for f in traceback.extract_tb(error.__traceback__))


async def _drive(
    request: ChildRequest, check: ModuleType, protocol: _Protocol, clock: _LearnerClock
) -> None:
    """Build the context (bus, broker, faults) and run the check's ``drive``."""
    from mqlab.grader.context import GradingContext
    from mqlab.grader.environment import open_environment

    if not request.simulated:
        _cancel_on_lifeline_end()

    def announce_fault(action: str, node: str) -> None:
        # Before the lab is touched: killed right after it, this process has told the grader.
        protocol.send(breaking=[action, node])

    async with open_environment(request, announce_fault) as (bus, broker, faults, endpoints):
        bus.subscribe(protocol.observation)
        context = GradingContext(
            bus=bus,
            seed=request.seed,
            simulated=request.simulated,
            phase=request.phase,
            namespace=request.namespace,
            endpoints=endpoints,
            system=request.system,
            broker=broker,
            faults=faults,
        )
        context.announce_crash = lambda point: protocol.send(planned_crash=point)
        context.pause_clock = clock.pause
        context.resume_clock = clock.resume
        try:
            if request.cleanup_only:
                cleanup = getattr(check, "cleanup", None)
                if cleanup is not None:
                    await cleanup(context)
                return
            learner = _load(request.learner, "learner_solution")
            await check.drive(learner, context)
        finally:
            await context.run_cleanups()


def main() -> int:
    """Run the request on stdin; the exit code is 0 even when learner code failed (that is
    reported on the protocol), 2 for a request that could not be read."""
    protocol = _Protocol(_take_stdout())
    try:
        request = ChildRequest(**json.loads(sys.stdin.readline()))
    except (ValueError, TypeError) as error:
        protocol.send(check_error=f"bad request: {error}")
        return 2
    _follow_the_grader()
    stuck = _StuckReport()
    try:
        check = _load(request.check, "mqlab_exercise_check")
        _apply_limits(request)
        clock = _LearnerClock(request.seconds, protocol, stuck)
        clock.start()
        if request.simulated:
            from mqlab.brokers.sim.clock import run_virtual

            run_virtual(_drive(request, check, protocol, clock))
        else:
            asyncio.run(_drive(request, check, protocol, clock))
    except MemoryError as error:
        stuck.disarm()
        where: dict[str, Any] = {"file": None, "line": None, "code": ""}
        with contextlib.suppress(MemoryError):  # finding the line needs a little memory too
            found = learner_error(error, request.learner)
            where = {key: found[key] for key in where}
        protocol.send(
            learner_error={
                "kind": "MemoryError",
                "message": f"used more than the {request.memory_mb} MB it may use",
                **where,
            }
        )
        return 0
    except BaseException as error:
        stuck.disarm()
        from mqlab.grader.context import LearnerMistake

        if isinstance(error, LearnerMistake):
            protocol.send(
                learner_error={
                    "kind": "LearnerMistake",
                    "message": str(error),
                    "file": request.learner,
                    "line": None,
                    "code": "",
                }
            )
            return 0
        if _raised_in(error, request.learner):
            protocol.send(learner_error=learner_error(error, request.learner))
            return 0
        text = "".join(traceback.format_exception(error)).strip()
        protocol.send(check_error=text)
        return 0
    stuck.disarm()
    protocol.send(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
