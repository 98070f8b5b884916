"""The timeline: one line per observation, as it happens.

Bounded however fast the run goes: a frame writes at most the newest
:data:`~mqlab.tui.feed.LINES_PER_FRAME` observations (the feed keeps no more) as one block, the
rest of a burst as one "… N more" line, and the log keeps the newest :data:`KEPT_LINES`.
Writing a line renders it, so this bounds the timeline's share of a frame.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from mqlab.observe.events import Observation
from mqlab.scenarios.report import KIND_STYLES, describe
from mqlab.tui.feed import LINES_PER_FRAME, FrameBatch

KEPT_LINES = 5000
"""Older lines scroll out of the log."""

_STYLES = KIND_STYLES | {
    # The TUI's timeline is where a learner watches a run happen, so the turns that matter
    # there stand out more than in the printed one: an election, retries, sagas, checks.
    "leader_changed": "bold yellow",
    "retry_scheduled": "yellow",
    "retry_gave_up": "bold red",
    "saga_parked": "bold red",
    "compensation_started": "magenta",
    "version_conflict": "bold red",
    "check_evaluated": "bold",
}


def _shown(observations: Iterable[Observation], start: float) -> list[Text]:
    """The lines of the observations a timeline shows, timed from ``start`` and styled by
    kind."""
    lines: list[Text] = []
    for observation in observations:
        line = describe(observation)
        if line is not None:
            text = Text(f"{observation.at - start:8.3f} ", style="dim")
            text.append(line, style=_STYLES.get(observation.kind, ""))
            lines.append(text)
    return lines


class Timeline(RichLog):
    """What happened, in order, with the run's clock (virtual seconds on the simulator)."""

    DEFAULT_CSS = """
    Timeline { scrollbar-size-vertical: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=KEPT_LINES, wrap=False, markup=False, auto_scroll=True, id=id)
        self.border_title = "timeline"
        self._start: float | None = None
        self.lines_shown = 0
        self.skipped_any = False
        """Some burst was summed up instead of written line by line."""

    def add_observations(self, batch: FrameBatch) -> None:
        """Write a frame's observations (the newest :data:`LINES_PER_FRAME` of a burst, the
        rest counted in one line) as one block: the log measures, scrolls and refreshes once
        per frame, not per line."""
        if not batch.count:
            return
        if self._start is None:
            self._start = batch.first_at
        lines: list[Text] = []
        if batch.skipped:
            self.skipped_any = True
            lines.append(
                Text(f"  … {batch.skipped:,} more observations (counted in the ledger)", "dim")
            )
        lines.extend(_shown(batch.newest[-LINES_PER_FRAME:], self._start))
        if lines:
            self.write(Text("\n").join(lines))
            self.lines_shown += len(lines) - (1 if batch.skipped else 0)

    def show_all(self, observations: tuple[Observation, ...] | list[Observation]) -> None:
        """Replace what a burst summed up with the whole history (the newest
        :data:`KEPT_LINES`): at the end of a run every observation can be read back."""
        self.clear()
        self.lines_shown = 0
        if not observations:
            return
        self._start = observations[0].at
        lines = _shown(observations, self._start)[-KEPT_LINES:]
        if lines:
            self.write(Text("\n").join(lines))
        self.lines_shown = len(lines)

    def restart(self) -> None:
        """Empty it for a new run."""
        self.clear()
        self._start = None
        self.lines_shown = 0
        self.skipped_any = False
