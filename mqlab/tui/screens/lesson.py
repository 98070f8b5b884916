"""The lesson screen: one step at a time, driven by the headless lesson player.

The player (:class:`~mqlab.player.player.LessonPlayer`) is the state machine: which step is
current, what an answer gets back, what a run revealed, where the learner resumes. This screen
shows the current step with the widget of its kind and turns keys into the player's actions;
progress is recorded by the player as the learner goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from mqlab.course.library import LessonEntry
from mqlab.player.player import (
    DecisionPlay,
    ExercisePlay,
    ExperimentPlay,
    LessonPlayer,
    PredictPlay,
    QuizPlay,
    ReadPlay,
    StepPlay,
)
from mqlab.tui.widgets.lesson.decision_step import DecisionStep
from mqlab.tui.widgets.lesson.exercise_step import ExerciseStep
from mqlab.tui.widgets.lesson.experiment_step import ExperimentStep
from mqlab.tui.widgets.lesson.predict_step import PredictStep
from mqlab.tui.widgets.lesson.quiz_step import QuizStep
from mqlab.tui.widgets.lesson.read_step import ReadStep
from mqlab.tui.widgets.lesson.step_view import StepView

if TYPE_CHECKING:
    from mqlab.tui.app import MqlabApp


def step_view(play: StepPlay) -> StepView:
    """The widget for a step of any kind."""
    if isinstance(play, ReadPlay):
        return ReadStep(play)
    if isinstance(play, QuizPlay):
        return QuizStep(play)
    if isinstance(play, PredictPlay):
        return PredictStep(play)
    if isinstance(play, ExperimentPlay):
        return ExperimentStep(play)
    if isinstance(play, ExercisePlay):
        return ExerciseStep(play)
    if isinstance(play, DecisionPlay):
        return DecisionStep(play)
    raise TypeError(f"no view for a {play.kind} step")


class LessonStatus(Static):
    """``2 · Kafka concepts · step 3 of 12 · quiz · on sim``"""


class LessonScreen(Screen[None]):
    """A lesson, resumed where the learner stopped.

    Raises:
        ContentError, PlayerError: the lesson names something this mqlab does not have.
    """

    BINDINGS = [
        Binding("right,n", "next", "next"),
        Binding("left", "previous", "previous"),
        Binding("backspace", "step_back", "back a choice", show=False),
        Binding("0", "restart_step", "start the tree again", show=False),
        Binding("o", "open_scenario", "scenario screen", show=False),
        Binding("escape", "leave", "course map"),
        *(Binding(str(n), f"answer({n})", show=False) for n in range(1, 10)),
    ]

    def __init__(self, entry: LessonEntry, *, player: LessonPlayer | None = None) -> None:
        super().__init__()
        self.entry = entry
        self._player = player

    @property
    def mqlab(self) -> MqlabApp:
        return cast("MqlabApp", self.app)

    def compose(self) -> ComposeResult:
        yield LessonStatus(id="lesson-status")
        yield VerticalScroll(id="step")
        yield Footer()

    async def on_mount(self) -> None:
        if self._player is None:
            app = self.mqlab
            self._player = LessonPlayer(
                self.entry.lesson,
                folder=self.entry.path.parent,
                broker=app.broker,
                seed=app.seed,
                progress=app.progress_store(),
            )
        self.player.resume()
        await self.show_step()

    @property
    def player(self) -> LessonPlayer:
        """The lesson's player (made on mount)."""
        assert self._player is not None
        return self._player

    @property
    def view(self) -> StepView | None:
        """The current step's widget."""
        views = self.query(StepView)
        return views.first() if views else None

    async def show_step(self) -> None:
        """Replace the step widget with the current step's."""
        body = self.query_one("#step", VerticalScroll)
        await body.remove_children()
        play = self.player.current
        await body.mount(step_view(play))
        body.scroll_home(animate=False)
        self._status()

    def _status(self) -> None:
        player = self.player
        text = Text(f"step {player.index + 1} of {len(player.steps)}", style="bold")
        text.append(" · ", style="dim")
        text.append(player.current.kind)
        text.append(" · ", style="dim")
        text.append(f"on {player.broker.label}")
        text.append(" · ", style="dim")
        text.append(f"{self.entry.number}. {self.entry.lesson.title}")
        self.query_one(LessonStatus).update(text)

    # --- keys -------------------------------------------------------------------------------

    def _idle(self) -> bool:
        view = self.view
        if view is not None and view.busy:
            self.notify("a run is going on: wait for it to finish", timeout=3)
            return False
        return True

    async def action_next(self) -> None:
        if not self._idle():
            return
        if self.player.next() is None:
            self.notify(f"lesson {self.entry.lesson.title!r} done", timeout=4)
            self.app.pop_screen()
            return
        await self.show_step()

    async def action_previous(self) -> None:
        if self._idle():
            self.player.back()
            await self.show_step()

    def action_answer(self, number: int) -> None:
        view = self.view
        if view is not None:
            view.answer(number - 1)

    def action_step_back(self) -> None:
        if self.view is not None:
            self.view.back()

    def action_restart_step(self) -> None:
        if self.view is not None:
            self.view.restart()

    def action_open_scenario(self) -> None:
        play = self.player.current
        scenario = getattr(play, "scenario", None)
        if scenario is None:
            self.notify("this step runs no scenario", timeout=3)
            return
        self.mqlab.open_scenario(scenario)

    def action_leave(self) -> None:
        if self._idle():
            self.app.pop_screen()
