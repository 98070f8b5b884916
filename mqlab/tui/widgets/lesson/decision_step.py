"""A decision step: walk the tree with numbers, back with backspace, to a recommendation."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markdown import Markdown as RichMarkdown
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Markdown, Static

from mqlab.player.player import DecisionPlay, DecisionView, PlayerError
from mqlab.tui.widgets.lesson.step_view import StepView, numbered


def render_walk(view: DecisionView, too_simple: str | None) -> RenderableType:
    """The path so far, then the question and its options, or the leaf."""
    parts: list[RenderableType] = []
    if view.path:
        trail = Text("so far: ", style="dim")
        trail.append(" → ".join(view.path))
        parts.append(trail)
    if view.leaf is not None:
        leaf = view.leaf
        parts.append(Text(f"Recommendation: {leaf.recommend}", style="bold green"))
        parts.append(Text("why it fits", style="bold"))
        parts.extend(Text(f"  • {reason}") for reason in leaf.reasons)
        parts.append(Text("what it costs", style="bold"))
        parts.extend(Text(f"  • {tradeoff}") for tradeoff in leaf.tradeoffs)
        if too_simple:
            parts.append(Text("where this tree is too simple", style="bold yellow"))
            parts.append(RichMarkdown(too_simple))
        parts.append(Text("backspace: one choice back · 0: start again · →: next step", "dim"))
        return Group(*parts)
    parts.append(Text(view.question or "", style="bold"))
    parts.append(numbered(view.options))
    back = " · backspace: one choice back" if view.path else ""
    parts.append(Text(f"choose with a number{back}", style="dim"))
    return Group(*parts)


class DecisionStep(StepView):
    """The decision tree, one question at a time."""

    play: DecisionPlay

    def compose(self) -> ComposeResult:
        decision = self.play.decision
        yield Markdown(f"# {decision.title}\n\n{decision.text}")
        yield Static(render_walk(self.play.view(), None), classes="choices", id="walk")

    def _show(self, view: DecisionView) -> None:
        too_simple = self.play.decision.too_simple if view.at_leaf else None
        self.query_one("#walk", Static).update(render_walk(view, too_simple))

    def answer(self, index: int) -> None:
        try:
            self._show(self.play.choose(index))
        except PlayerError as error:
            self.refuse(error)

    def back(self) -> None:
        self._show(self.play.back())

    def restart(self) -> None:
        self._show(self.play.restart())
