"""An exercise step: which exercise, its grade so far, and the command that grades it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Markdown, Static

from mqlab.player.player import ExercisePlay
from mqlab.tui.widgets.lesson.step_view import StepView

_STATE = {"passed": ("passed", "bold green"), "failing": ("not passing yet", "bold red")}


class ExerciseStep(StepView):
    """A pointer to ``mqlab check``: the learner writes code in their editor."""

    play: ExercisePlay

    def compose(self) -> ComposeResult:
        play = self.play
        yield Markdown(f"# Exercise: {play.exercise_id}")
        label, style = _STATE.get(play.state, ("not checked yet", "dim"))
        text = Text("state: ")
        text.append(label, style=style)
        text.append("\n\nWrite it in your workspace (mqlab init creates one), then run\n\n  ")
        text.append(play.command, style="bold")
        text.append("\n\nin another terminal: it runs your code under faults and says what broke.")
        if not play.exists:
            text.append("\n\n(this exercise is not in this mqlab yet)", style="yellow")
        yield Static(text, classes="feedback")
