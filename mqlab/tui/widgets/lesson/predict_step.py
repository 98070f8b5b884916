"""A predict-then-run step: commit with a number, watch the scenario run, see the reveal."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markdown import Markdown as RichMarkdown
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Markdown, Static

from mqlab.player.player import PlayerError, PredictOutcome, PredictPlay
from mqlab.scenarios.verdict import RunJudge
from mqlab.tui.feed import FRAME_SECONDS, ObservationFeed
from mqlab.tui.models.ledger import LedgerPicture, picture_of
from mqlab.tui.widgets.lesson.step_view import StepView, numbered
from mqlab.tui.widgets.scenario.ledger import LedgerPanel
from mqlab.tui.widgets.scenario.timeline import Timeline


class PredictStep(StepView):
    """The question and choices; after a commit, the run's timeline, then the ledger and
    whether the prediction held."""

    play: PredictPlay

    def __init__(self, play: PredictPlay) -> None:
        super().__init__(play)
        self.feed = self._new_feed()
        self._picture: LedgerPicture | None = None
        """The run's final ledger, counted by the worker that ran it."""

    def _new_feed(self) -> ObservationFeed:
        # The player hands out observations, not its run session, so the ledger's message
        # ids are folded by a judge of the feed's own, on the run's thread (never this one).
        return ObservationFeed(judge=RunJudge(self.play.scenario))

    def compose(self) -> ComposeResult:
        play = self.play
        yield Markdown(f"# Predict, then run\n\n**{play.scenario.title}**\n\n{play.question}")
        yield Static(numbered(play.choices), classes="choices", id="predict-choices")
        yield Static(
            Text(
                f"commit with a number: the scenario then runs on {play.target} "
                "(o: open it in the scenario screen instead)",
                style="dim",
            ),
            classes="feedback",
            id="predict-status",
        )
        timeline = Timeline(id="lesson-timeline")
        timeline.display = False
        yield timeline
        ledger = LedgerPanel(id="predict-ledger")
        ledger.display = False
        yield ledger

    def on_mount(self) -> None:
        self.set_interval(FRAME_SECONDS, self._frame)

    def _frame(self) -> None:
        batch = self.feed.take()
        if batch.count:
            self.query_one(Timeline).add_observations(batch)

    def answer(self, index: int) -> None:
        if self.busy:
            self.refuse("the scenario is running: wait for the reveal")
            return
        try:
            self.play.commit(index)
        except PlayerError as error:
            self.refuse(error)
            return
        marks = {index: ("← your prediction", "bold")}
        self.query_one("#predict-choices", Static).update(numbered(self.play.choices, marks=marks))
        self.query_one("#predict-status", Static).update(
            Text(f"running {self.play.scenario.id} on {self.play.target}…", style="cyan")
        )
        timeline = self.query_one(Timeline)
        timeline.restart()
        timeline.display = True
        self.query_one(LedgerPanel).display = False
        self.feed = self._new_feed()
        self._picture = None
        feed, play = self.feed, self.play

        def run_and_count() -> PredictOutcome:
            outcome = play.run(on_observation=feed)
            judge = feed.judge
            assert judge is not None
            with feed.judge_lock:  # counted here, in the worker, not in the UI's frame
                self._picture = picture_of(judge)
            return outcome

        self.run_blocking(run_and_count)

    def show_outcome(self, outcome: object | None, error: str | None) -> None:
        self._frame()
        status = self.query_one("#predict-status", Static)
        if not isinstance(outcome, PredictOutcome):
            status.update(Text(f"the run could not start: {error}", style="bold red"))
            return
        timeline = self.query_one(Timeline)
        if timeline.skipped_any:
            timeline.show_all(outcome.result.observations)
        ledger = self.query_one(LedgerPanel)
        ledger.scenario = self.play.scenario
        ledger.system = self.play.target.removeprefix("sim:")
        ledger.show_ledger(self._picture or LedgerPicture(), final=outcome.result)
        ledger.display = True
        marks = {outcome.answer: ("✓ the answer", "bold green")}
        if not outcome.right:
            marks[outcome.choice] = ("✗ your prediction", "bold red")
        self.query_one("#predict-choices", Static).update(numbered(self.play.choices, marks=marks))
        status.update(reveal(outcome))


def reveal(outcome: PredictOutcome) -> RenderableType:
    """Whether the prediction held, the scenario's explanation and the lesson's point."""
    if outcome.held is True:
        head = Text("Your prediction held.", style="bold green")
    elif outcome.held is False:
        head = Text("Your prediction did not hold.", style="bold red")
    elif outcome.right:
        head = Text("Right answer, but this run did something else: read the ledger.", "yellow")
    else:
        head = Text("Not the expected answer; this run did something else too.", "yellow")
    # The run's verdict beside the reveal: the ledger with the same line sits below the
    # timeline, out of sight on a small terminal.
    result = outcome.result
    if result.error is not None:
        head.append(f"  (ERROR on {result.broker})", style="bold red")
    elif result.passed:
        head.append(f"  (PASS on {result.broker})", style="green")
    else:
        head.append(f"  (FAIL on {result.broker})", style="red")
    parts: list[RenderableType] = [head, RichMarkdown(outcome.explain)]
    if outcome.after:
        parts.append(RichMarkdown(outcome.after))
    return Group(*parts)
