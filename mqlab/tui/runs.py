"""Where a screen's observations come from: a live run or a recorded trace.

Both are driven from a Textual thread worker (they block) and push observations into an
:class:`~mqlab.tui.feed.ObservationFeed`, which folds them into the screen's live views on that
thread; neither imports Textual, so they are tested without a terminal. :class:`LiveRun` wraps
the one owner of a run, :class:`~mqlab.scenarios.session.RunSession` (the TUI never assembles a
run itself), and reads the ledger from the runner's own judge; :class:`TracePlayer` plays a
trace back at a chosen pace, with pause and single steps, folding it into its judge as it
plays, so its end is judged exactly as ``mqlab replay`` judges it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mqlab.course.scenario import Scenario
from mqlab.observe.events import Observation
from mqlab.observe.trace import TraceHeader, read_trace
from mqlab.scenarios.session import LiveFault, RunSession
from mqlab.scenarios.verdict import RunJudge, RunResult
from mqlab.tui.feed import ObservationFeed
from mqlab.tui.models.ledger import LedgerPicture, picture_of
from mqlab.tui.models.live import LiveModels

SPEEDS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0)
"""The paces ``+`` and ``-`` step through (virtual seconds per real second)."""
SNAPSHOT_INTERVAL_SECONDS = 0.25
"""How often the live widgets ask the run's broker for a snapshot."""
SNAPSHOT_PATIENCE_SECONDS = 5.0
"""How long one snapshot request is waited for while the run goes on (a broker that does not
answer: the next request is tried instead)."""


def faster(speed: float | None) -> float | None:
    """The next pace up (None, flat out, stays)."""
    if speed is None:
        return None
    return next((s for s in SPEEDS if s > speed), None)


def slower(speed: float | None) -> float:
    """The next pace down (from flat out: the fastest paced speed)."""
    if speed is None:
        return SPEEDS[-1]
    return next((s for s in reversed(SPEEDS) if s < speed), SPEEDS[0])


def speed_label(speed: float | None) -> str:
    """``2x``, ``0.5x``, ``paused``, ``flat out``."""
    if speed is None:
        return "flat out"
    if speed == 0:
        return "paused"
    return f"{speed:g}x"


class LiveRun:
    """A scenario run on the simulator or on the lab, fed to the UI.

    Args:
        scenario: what to run.
        broker: ``sim``, ``sim:<system>`` or a real system (as :class:`RunSession` takes it).
        seed: the simulator's seed.
        speed: the simulator's pace (None: flat out; ignored on real brokers).
        record: also write the run's trace there.
        models: the live views the run's observations are folded into (on the run's thread).

    Raises:
        UnknownBroker, ScenarioError: the scenario cannot run on that broker.
    """

    def __init__(
        self,
        scenario: Scenario,
        broker: str,
        *,
        seed: int = 0,
        speed: float | None = 1.0,
        record: Path | None = None,
        models: LiveModels | None = None,
    ) -> None:
        self.feed = ObservationFeed(models)
        self.session = RunSession(scenario, broker, seed=seed, speed=speed, record=record)
        self.final_picture: LedgerPicture | None = None
        """The ledger at the end (counted by :meth:`run` once the run is over)."""
        self.session.subscribe(self._watch)
        self.speed: float | None = speed if self.session.simulated else None
        self._lock = threading.Lock()
        self._started = False
        self._cancel_requested = False
        self._cancel_sent = False
        self._finished = threading.Event()

    @property
    def simulated(self) -> bool:
        """Whether it runs on the simulator (paced; pause and speed apply)."""
        return self.session.simulated

    @property
    def finished(self) -> bool:
        """Whether the run (and its cleanup) is over."""
        return self._finished.is_set()

    def _watch(self, observation: Observation) -> None:
        # From the run's own RunStarted on, a cancel can reach the run (before it,
        # session.cancel() would be lost). A cancel asked for in between is sent with the
        # first observation after RunStarted: by then the run is inside its steps.
        if not self._started and observation.kind != "run_started":
            with self._lock:
                self._started = True
                if self._cancel_requested and not self._cancel_sent:
                    self._cancel_sent = True
                    self.session.cancel()
        self.feed(observation)

    def run(self) -> RunResult | None:
        """Run to the end (blocking; a thread worker calls it). None when it was cancelled
        (or cancelled before it began: then it does not begin)."""
        try:
            with self._lock:
                if self._cancel_requested:
                    return None
            result = self.session.run_sync()
        except (asyncio.CancelledError, KeyboardInterrupt):
            return None
        else:
            # The run's loop is gone: nothing folds into the runner's judge any more, so it
            # is counted here, off the UI thread.
            self.final_picture = picture_of(self.session.runner.judge)
            return result
        finally:
            self._finished.set()

    def request_picture(self) -> concurrent.futures.Future[LedgerPicture | None]:
        """The ledger so far, counted from the runner's own judge on the run's thread (the UI
        polls the future; it stays pending if the run ends first)."""
        return self.session.request_judged(picture_of)

    def cancel(self) -> None:
        """Stop the run; its cleanup (restart what it killed, delete its resources) still
        runs. Sent once: a second cancel would interrupt the cleanup itself."""
        with self._lock:
            self._cancel_requested = True
            if self._started and not self._cancel_sent:
                self._cancel_sent = True
                self.session.cancel()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Block until the run and its cleanup are over."""
        return self._finished.wait(timeout)

    def set_speed(self, speed: float | None) -> None:
        """The simulator's pace (0 pauses); a real broker runs in real time anyway."""
        if self.simulated:
            self.speed = speed
            self.session.set_speed(speed)

    def inject(self, fault: LiveFault, timeout: float = 60.0) -> None:
        """Apply a fault now and wait until it was applied (blocking).

        Raises:
            ScenarioError: the run is not running, or no such consumer.
            BrokerError: the lab or the simulator refused it.
            TimeoutError: it took longer than ``timeout``.
        """
        self.session.request_fault(fault).result(timeout=timeout)

    def poll_snapshots(
        self,
        on_snapshot: Callable[[object, int | None], None],
        interval: float = SNAPSHOT_INTERVAL_SECONDS,
        *,
        stamp: Callable[[], int] | None = None,
    ) -> None:
        """Ask the broker for a snapshot every ``interval`` seconds until the run ends
        (blocking; a thread worker calls it). Each snapshot is handed over with what
        ``stamp`` said just before it was requested (None without one), so the UI can tell
        the views' changes since the request from what the snapshot already shows."""
        while not self._finished.is_set():
            requested_after = stamp() if stamp is not None else None
            try:
                snapshot = self._answer(self.session.request_snapshot())
            except Exception:  # a snapshot is a nicety: a failed one is simply not drawn
                snapshot = None
            if snapshot is not None:
                on_snapshot(snapshot, requested_after)
            self._finished.wait(interval)

    def _answer(self, request: concurrent.futures.Future[object | None]) -> object | None:
        """The snapshot ``request`` answers, None if it is not answered within
        :data:`SNAPSHOT_PATIENCE_SECONDS` or the run ends first. A run that ends before
        getting to a request never answers it (see :meth:`RunSession.request_snapshot`), so
        the end is watched too: the poller stops with the run, not up to a patience later
        (the screen's worker, and an app's quit, would wait for it)."""
        deadline = time.monotonic() + SNAPSHOT_PATIENCE_SECONDS
        while True:
            try:
                return request.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                if self._finished.is_set() or time.monotonic() >= deadline:
                    request.cancel()
                    return None


class TracePlayer:
    """A recorded trace played back at a chosen pace, with pause and single steps.

    Args:
        path: a trace written by ``mqlab run --record`` (or the TUI's own recording).
        speed: recorded seconds per real second (None: everything at once; 0: paused).

    The trace has no runner to judge it: the player's feed folds every observation into
    :attr:`judge` as well as into the live views (:meth:`draw_into`), once, on the player's
    thread.

    Raises:
        TraceError: not a readable trace.
    """

    def __init__(self, path: Path, *, speed: float | None = 1.0) -> None:
        self.path = path
        header, observations = read_trace(path)
        self.header: TraceHeader = header
        self.observations: list[Observation] = list(observations)
        self.judge = RunJudge()
        self.feed = ObservationFeed(judge=self.judge)
        self.final_picture: LedgerPicture | None = None
        """The ledger at the end of the trace (counted by :meth:`run`)."""
        self.speed = speed
        self.position = 0
        """How many observations were played so far."""
        self._condition = threading.Condition()
        self._steps = 0
        self._cancelled = False
        self._finished = threading.Event()

    @property
    def finished(self) -> bool:
        """Whether the whole trace was played (or the replay was stopped)."""
        return self._finished.is_set()

    def draw_into(self, models: LiveModels) -> None:
        """Fold what is played into ``models`` too (before :meth:`run`)."""
        self.feed.models = models

    def request_picture(self) -> concurrent.futures.Future[LedgerPicture | None]:
        """The ledger played so far, counted in a helper thread."""
        return self.feed.request_picture()

    def run(self) -> RunResult | None:
        """Play every observation into the feed, then judge the trace (blocking). None when
        stopped before the end.

        Raises:
            ValueError: the trace carries no run to judge.
        """
        try:
            previous = self.observations[0].at if self.observations else 0.0
            for observation in self.observations:
                self._wait(observation.at - previous)
                if self._cancelled:
                    return None
                previous = observation.at
                self.feed(observation)
                self.position += 1
            with self.feed.judge_lock:
                self.final_picture = picture_of(self.judge)
                return self.judge.result(observations=tuple(self.observations))
        finally:
            self._finished.set()

    def _wait(self, gap: float) -> None:
        """Wait ``gap`` recorded seconds at the current pace; a step or a new pace ends or
        shortens the wait, a pause holds it."""
        remaining = gap
        with self._condition:
            while not self._cancelled:
                if self._steps > 0:
                    self._steps -= 1
                    return
                speed = self.speed
                if speed is None or (speed > 0 and remaining <= 0):
                    return
                if speed == 0:
                    self._condition.wait()
                    continue
                started = time.monotonic()
                self._condition.wait(remaining / speed)
                remaining -= (time.monotonic() - started) * speed

    def set_speed(self, speed: float | None) -> None:
        """A new pace (0 pauses), taking effect in the middle of a wait."""
        with self._condition:
            self.speed = speed
            self._condition.notify_all()

    def step(self) -> None:
        """Play the next observation now (the way to walk a paused replay)."""
        with self._condition:
            self._steps += 1
            self._condition.notify_all()

    def cancel(self) -> None:
        """Stop the replay."""
        with self._condition:
            self._cancelled = True
            self._condition.notify_all()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Block until the replay is over."""
        return self._finished.wait(timeout)
