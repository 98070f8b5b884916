"""The scenario screen's top line: what runs where, its pace, its clock and its state."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class RunStatus(Static):
    """``kafka-leader-failover · sim:kafka · seed 0 · 2x · t 4.10s · 123 observations · running``"""

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
        for part in (where, pace, f"t {clock:.2f}s", f"{observations:,} observations"):
            line.append(" · ", style="dim")
            line.append(part)
        line.append(" · ", style="dim")
        line.append(state, style=state_style)
        self.update(line)
