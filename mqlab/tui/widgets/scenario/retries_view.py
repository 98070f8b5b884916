"""Retries: every client's attempts on one time axis, and the delays each strategy chose."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from mqlab.tui.models.patterns import RetryView
from mqlab.tui.widgets.common.model_panel import ModelPanel

AXIS_WIDTH = 40
"""Cells of the time axis."""
TRACKS_SHOWN = 12
"""Clients drawn (the rest are counted)."""
BINS = 8
"""Bars of the delay histogram."""


def _axis(view: RetryView) -> tuple[float, float]:
    start = view.first_at or 0.0
    return start, max(view.last_at - start, 1e-9)


def render_retries(view: RetryView) -> RenderableType:
    """Attempts per client (``✗`` failed call, ``✓`` success, ``■`` gave up) and a histogram
    of the scheduled delays per strategy."""
    if view.empty:
        return Text("no retries yet", style="dim")
    start, span = _axis(view)
    parts: list[RenderableType] = [Text(f"attempts over {span:.2f}s", style="bold")]
    label_width = min(14, max(len(name) for name in view.tracks))
    for name, track in list(view.tracks.items())[:TRACKS_SHOWN]:
        cells = [Text("·", style="dim") for _ in range(AXIS_WIDTH)]
        for at, outcome in track.calls:
            index = min(AXIS_WIDTH - 1, int((at - start) / span * (AXIS_WIDTH - 1)))
            cells[index] = (
                Text("✓", style="bold green") if outcome == "succeeded" else Text("✗", "red")
            )
        if track.gave_up is not None:
            index = min(AXIS_WIDTH - 1, int((track.gave_up[0] - start) / span * (AXIS_WIDTH - 1)))
            cells[index] = Text("■", style="bold red")
        line = Text(f"{name[:label_width]:<{label_width}} ")
        for cell in cells:
            line.append_text(cell)
        if track.gave_up is not None:
            line.append(f" gave up ({track.gave_up[1]})", style="red")
        parts.append(line)
    if len(view.tracks) > TRACKS_SHOWN:
        parts.append(Text(f"… {len(view.tracks) - TRACKS_SHOWN} more clients", style="dim"))
    for strategy, delays in sorted(view.delays.items()):
        parts.append(Text(""))
        parts.extend(_histogram(strategy, delays))
    return Group(*parts)


def _histogram(strategy: str, delays: list[float]) -> list[Text]:
    low, high = min(delays), max(delays)
    width = (high - low) / BINS or 1.0
    counts = [0] * BINS
    for delay in delays:
        counts[min(BINS - 1, int((delay - low) / width))] += 1
    tallest = max(counts)
    lines = [Text(f"delays chosen by {strategy} ({len(delays)})", style="bold")]
    for index, count in enumerate(counts):
        edge = low + index * width
        bar = "█" * (round(count * 24 / tallest) if tallest else 0)
        lines.append(Text(f"  {edge:7.2f}s ") + Text(bar, style="cyan") + Text(f" {count}"))
    return lines


class RetryPanel(ModelPanel[RetryView]):
    """The live retry view."""

    def render_view(self) -> RenderableType:
        return render_retries(self.view)
