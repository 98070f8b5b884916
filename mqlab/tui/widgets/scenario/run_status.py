"""The scenario screen's top line: what runs where, its pace, its clock and its state."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class RunStatus(Static):
    """``kafka-leader-failover · running · sim:kafka · 2x · t 4.10s · 123 obs``: the state
    second, so a narrow terminal still shows it."""

    def show(
        self,
        *,
        title: str,
        where: str,
        pace: str,
        clock: float,
        observations: int,
        state: str,
        state_style: str = "",
    ) -> None:
        """Draw the line (called once per frame at most, and only when it changed)."""
        line = Text(title, style="bold")
        line.append(" · ", style="dim")
        line.append(state, style=state_style)
        for part in (where, pace, f"t {clock:.2f}s", f"{observations:,} obs"):
            line.append(" · ", style="dim")
            line.append(part)
        self.update(line)
