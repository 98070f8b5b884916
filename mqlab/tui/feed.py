"""The feed between a run's thread and the UI's frames: each observation folded once, where
it is produced, and only a frame's worth handed to the UI.

A run reports every observation on its own thread, synchronously, and a simulated burst is
hundreds of thousands of them a second. Posting one UI message per observation would flood
Textual's queue; even queueing them for the UI to fold would make each frame's work grow with
the broker's rate. So the session's subscriber, :meth:`ObservationFeed.__call__`, does the
folding itself on the run's thread: into the live views (:class:`~mqlab.tui.models.live.
LiveModels`) and, for a replay, into the judge (a live run's judge is the runner's own). It
keeps only the newest :data:`LINES_PER_FRAME` observations for the timeline and counts the
rest. The screen takes that 15 times a second (:meth:`ObservationFeed.take`) and repaints what
moved, so a frame costs the same however fast the broker goes, and a key press waits at most
for one of them.

Two locks, so the UI never waits for a ledger count: ``lock`` guards the live views and the
newest observations (held briefly by each fold, by :meth:`take` and while a panel is drawn),
``judge_lock`` guards the judge (held by each fold and while a
:class:`~mqlab.tui.models.ledger.LedgerPicture` is counted, in a helper thread).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from dataclasses import dataclass

from mqlab.observe.events import Observation
from mqlab.scenarios.verdict import RunJudge
from mqlab.tui.models.ledger import LedgerPicture, picture_of
from mqlab.tui.models.live import LiveModels

FRAME_SECONDS = 1 / 15
"""How often a screen takes from its feed and repaints what changed. Smooth enough for a
timeline, and each repaint under a burst costs the terminal a full redraw of the timeline:
fewer of them leave more time for the learner's keys."""
LINES_PER_FRAME = 40
"""At most this many observations reach the timeline per frame (600 a second: more than
anyone reads); the rest of a burst is counted (the ledger and the views still fold every
one)."""


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """What arrived since the previous frame: the newest observations and how many more."""

    newest: tuple[Observation, ...] = ()
    """At most :data:`LINES_PER_FRAME`, oldest first."""
    skipped: int = 0
    """Observations that arrived before ``newest`` since the previous frame (folded, not
    shown line by line)."""
    first_at: float = 0.0
    """When the first of them (shown or skipped) happened."""

    @property
    def count(self) -> int:
        """Every observation that arrived since the previous frame."""
        return len(self.newest) + self.skipped


class ObservationFeed:
    """A run's subscriber: folds on the producing thread, hands the UI one frame at a time.

    Args:
        models: the live views to fold into (None: none, the timeline only).
        judge: a judge to fold into as well, for a source without one of its own (a replay,
            a benchmark's synthetic run); a live run's judge belongs to its runner.
        keep: how many of the newest observations a frame gets.
    """

    def __init__(
        self,
        models: LiveModels | None = None,
        *,
        judge: RunJudge | None = None,
        keep: int = LINES_PER_FRAME,
    ) -> None:
        self.models = models
        self.judge = judge
        self.lock = threading.Lock()
        """Held while the views change: take it to read them (a panel's drawing)."""
        self.judge_lock = threading.Lock()
        self._newest: deque[Observation] = deque(maxlen=keep)
        self._arrived = 0
        self._first_at = 0.0
        self.folded = 0
        """Observations folded so far (producer side)."""
        self.received = 0
        """Observations handed to the UI so far (what the status bar counts)."""

    def __call__(self, observation: Observation) -> None:
        """Called on the run's thread for every observation."""
        judge = self.judge
        if judge is not None:
            with self.judge_lock:
                judge(observation)
        models = self.models
        with self.lock:
            if models is not None:
                models(observation)
            if not self._arrived:
                self._first_at = observation.at
            self._newest.append(observation)
            self._arrived += 1
            self.folded += 1

    def take(self) -> FrameBatch:
        """What arrived since the last take (UI thread, once a frame)."""
        with self.lock:
            if not self._arrived:
                return FrameBatch()
            newest = tuple(self._newest)
            self._newest.clear()
            skipped = self._arrived - len(newest)
            self._arrived = 0
            first_at = self._first_at
        self.received += len(newest) + skipped
        return FrameBatch(newest, skipped, first_at)

    def request_picture(self) -> concurrent.futures.Future[LedgerPicture | None]:
        """The judge's ledger counted in a helper thread (None without a judge). The count
        holds ``judge_lock``, which only the producer waits for, never the UI."""
        future: concurrent.futures.Future[LedgerPicture | None] = concurrent.futures.Future()
        judge = self.judge
        if judge is None:
            future.set_result(None)
            return future

        def count() -> None:
            try:
                with self.judge_lock:
                    picture = picture_of(judge)
            except BaseException as error:  # handed to whoever waits, never lost
                future.set_exception(error)
                return
            future.set_result(picture)

        threading.Thread(target=count, name="ledger-count", daemon=True).start()
        return future

    def __len__(self) -> int:
        """Observations that arrived and were not taken yet."""
        return self._arrived
