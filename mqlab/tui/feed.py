"""The coalescing feed between a run's thread and the UI's frames.

A run reports every observation on its own thread, synchronously, and a simulated burst is
hundreds of thousands of them a second. Posting one UI message per observation would flood
Textual's queue and the interface would fall behind the run. Instead the session's subscriber
only appends to a deque (atomic, no lock), and the screen drains everything that arrived since
the previous frame, 15 times a second, folding the whole batch into its models before one
repaint. However fast the broker produces, a key press waits at most one frame plus one fold.
"""

from __future__ import annotations

from collections import deque

from mqlab.observe.events import Observation

FRAME_SECONDS = 1 / 15
"""How often a screen drains its feed and repaints what changed. Smooth enough for a
timeline, and each repaint under a burst costs the terminal a full redraw of the timeline:
fewer of them leave more time for the learner's keys."""


class ObservationFeed:
    """A session subscriber that buffers observations until the UI's next frame."""

    def __init__(self) -> None:
        self._pending: deque[Observation] = deque()
        self.received = 0
        """Observations drained so far (what the status bar counts)."""

    def __call__(self, observation: Observation) -> None:
        """Called on the run's thread: must stay cheap, so it only appends."""
        self._pending.append(observation)

    def drain(self) -> list[Observation]:
        """Everything that arrived since the last drain, oldest first (UI thread)."""
        pending = self._pending
        # Only as many as are there now: the run's thread may append while this loop runs,
        # and those wait for the next frame rather than being read half-way.
        batch = [pending.popleft() for _ in range(len(pending))]
        self.received += len(batch)
        return batch

    def __len__(self) -> int:
        return len(self._pending)
