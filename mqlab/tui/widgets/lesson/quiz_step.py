"""A quiz step: answer with a number; a wrong answer says why, and the learner may retry."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Markdown, Static

from mqlab.player.player import PlayerError, QuizPlay
from mqlab.tui.widgets.lesson.step_view import StepView, numbered


class QuizStep(StepView):
    """The question, its numbered choices and the feedback to the last answer."""

    play: QuizPlay

    def compose(self) -> ComposeResult:
        yield Markdown(f"# Quiz\n\n{self.play.quiz.question}")
        yield Static(numbered(self.play.choices), classes="choices", id="quiz-choices")
        yield Static(Text("answer with a number", style="dim"), classes="feedback")

    def answer(self, index: int) -> None:
        try:
            feedback = self.play.answer(index)
        except PlayerError as error:
            self.refuse(error)
            return
        mark = ("✓ right", "bold green") if feedback.right else ("✗ not this one", "bold red")
        marks = {feedback.chosen: mark}
        self.query_one("#quiz-choices", Static).update(numbered(self.play.choices, marks=marks))
        text = Text()
        if feedback.right:
            text.append("Right. ", style="bold green")
            text.append(feedback.explain)
        else:
            text.append("Not quite. ", style="bold red")
            if feedback.why:
                text.append(feedback.why)
            text.append("\nTry another answer (→ moves on).", style="dim")
        self.query_one(".feedback", Static).update(text)
