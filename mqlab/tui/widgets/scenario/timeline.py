"""The timeline: one line per observation, as it happens."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from mqlab.observe.events import Observation
from mqlab.scenarios.report import describe

LINES_PER_FRAME = 40
"""At most this many lines are written per frame (600 a second: more than anyone reads);
the rest of a burst is summed up in one line (the ledger still counts every observation).
Writing a line to the log renders it, which is the frame's largest cost under a burst."""
KEPT_LINES = 5000
"""Older lines scroll out of the log."""

_STYLES = {
    "produced": "green",
    "produce_failed": "bold red",
    "delivered": "cyan",
    "processed": "bold green",
    "acked": "green",
    "nacked": "yellow",
    "committed": "green",
    "dead_lettered": "magenta",
    "consumer_crashed": "bold red",
    "fault_injected": "bold red",
    "fault_healed": "bold green",
    "broker_down": "bold red",
    "broker_up": "bold green",
    "leader_changed": "bold yellow",
    "rebalanced": "yellow",
    "retry_scheduled": "yellow",
    "retry_gave_up": "bold red",
    "saga_parked": "bold red",
    "compensation_started": "magenta",
    "version_conflict": "bold red",
    "check_evaluated": "bold",
    "note": "italic",
}


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

    def add_observations(self, batch: list[Observation]) -> None:
        """Write a frame's observations (the newest :data:`LINES_PER_FRAME` of a burst), as
        one block: the log measures, scrolls and refreshes once per frame, not per line."""
        if not batch:
            return
        if self._start is None:
            self._start = batch[0].at
        skipped = max(0, len(batch) - LINES_PER_FRAME)
        lines: list[Text] = []
        if skipped:
            self.skipped_any = True
            lines.append(Text(f"  … {skipped:,} more observations (counted in the ledger)", "dim"))
        for observation in batch[skipped:]:
            line = describe(observation)
            if line is None:
                continue
            text = Text(f"{observation.at - self._start:8.3f} ", style="dim")
            text.append(line, style=_STYLES.get(observation.kind, ""))
            lines.append(text)
        if lines:
            self.write(Text("\n").join(lines))
            self.lines_shown += len(lines) - (1 if skipped else 0)

    def show_all(self, observations: tuple[Observation, ...] | list[Observation]) -> None:
        """Replace what a burst summed up with the whole history (the newest
        :data:`KEPT_LINES`): at the end of a run every observation can be read back."""
        self.clear()
        self.lines_shown = 0
        if not observations:
            return
        self._start = observations[0].at
        lines: list[Text] = []
        for observation in observations:
            line = describe(observation)
            if line is None:
                continue
            text = Text(f"{observation.at - self._start:8.3f} ", style="dim")
            text.append(line, style=_STYLES.get(observation.kind, ""))
            lines.append(text)
        lines = lines[-KEPT_LINES:]
        if lines:
            self.write(Text("\n").join(lines))
        self.lines_shown = len(lines)

    def restart(self) -> None:
        """Empty it for a new run."""
        self.clear()
        self._start = None
        self.lines_shown = 0
        self.skipped_any = False
