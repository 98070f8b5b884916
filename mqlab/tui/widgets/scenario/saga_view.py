"""Sagas: steps forward, compensations backward, a parked saga marked for a human."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from mqlab.tui.models.patterns import SagaState, SagaView
from mqlab.tui.widgets.common.model_panel import ModelPanel

SAGAS_SHOWN = 8

_STEP_STYLE = {
    "pending": ("○", "dim"),
    "running": ("…", "cyan"),
    "done": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "compensating": ("↺", "magenta"),
    "compensated": ("↩", "magenta"),
    "stuck": ("!", "bold red"),
}


def _saga_lines(saga: SagaState) -> list[Text]:
    head = Text(f"saga {saga.saga_id} ", style="bold")
    head.append(f"({saga.name})", style="dim")
    if saga.outcome == "parked":
        head.append("  PARKED for a human", style="bold red reverse")
    elif saga.outcome:
        head.append(
            f"  {saga.outcome}", style="green" if saga.outcome == "completed" else "magenta"
        )
    if saga.recovered:
        head.append(f"  recovered: {saga.recovered.replace('_', ' ')}", style="yellow")
    forward = Text("  → ")
    for index, step in enumerate(saga.steps):
        if index:
            forward.append(" → ", style="dim")
        mark, style = _STEP_STYLE[saga.states.get(step, "pending")]
        forward.append(f"{mark} {step}", style=style)
    lines = [head, forward]
    if saga.compensation_order:
        backward = Text("  ← ", style="magenta")
        backward.append(" ← ".join(saga.compensation_order), style="magenta")
        expected = [s for s in reversed(saga.steps) if s in saga.compensation_order]
        if saga.compensation_order != expected:
            backward.append("  (not in reverse order!)", style="bold red")
        lines.append(backward)
    if saga.parked_reason:
        lines.append(Text(f"  why: {saga.parked_reason}", style="red"))
    return lines


def render_sagas(view: SagaView) -> RenderableType:
    """Every saga (the newest :data:`SAGAS_SHOWN`), one block each."""
    if view.empty:
        return Text("no saga yet", style="dim")
    sagas = list(view.sagas.values())
    parts: list[Text] = []
    if len(sagas) > SAGAS_SHOWN:
        parts.append(Text(f"… {len(sagas) - SAGAS_SHOWN} earlier sagas", style="dim"))
    for saga in sagas[-SAGAS_SHOWN:]:
        parts.extend(_saga_lines(saga))
    return Group(*parts)


class SagaPanel(ModelPanel[SagaView]):
    """The live saga view."""

    def render_view(self) -> RenderableType:
        return render_sagas(self.view)
