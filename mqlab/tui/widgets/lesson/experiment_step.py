"""An experiment step: run the variants the learner picks and set them side by side."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Markdown, Static

from mqlab.player.player import Comparison, ExperimentPlay, VariantOutcome
from mqlab.tui.widgets.lesson.step_view import StepView, numbered


def comparison_table(comparison: Comparison) -> Table:
    """One column per variant, one row per compared number (``·``: not run yet)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("")
    for column in comparison.columns:
        table.add_column(column, justify="right")
    for row in comparison.rows:
        table.add_row(row.label, *row.cells(missing="·"))
    return table


class ExperimentStep(StepView):
    """The variants; each number runs one, the table fills in."""

    play: ExperimentPlay

    def compose(self) -> ComposeResult:
        experiment = self.play.experiment
        yield Markdown(f"# {experiment.title}\n\n{experiment.text}")
        where = f" on {self.play.target}" if self.play.target else ""
        yield Static(
            Text(f"{experiment.vary.name}: run a variant{where} with its number", "bold"),
            classes="feedback",
        )
        yield Static(numbered(self.play.labels), classes="choices", id="variants")
        yield Static(comparison_table(self.play.comparison()), classes="feedback", id="table")
        yield Static("", classes="feedback", id="experiment-status")

    def answer(self, index: int) -> None:
        if not 0 <= index < len(self.play.labels):
            self.refuse(f"pick a variant from 1 to {len(self.play.labels)}")
            return
        self.query_one("#experiment-status", Static).update(
            Text(f"running {self.play.labels[index]}…", style="cyan")
        )
        play = self.play
        self.run_blocking(lambda: play.run(index))

    def show_outcome(self, outcome: object | None, error: str | None) -> None:
        status = self.query_one("#experiment-status", Static)
        if not isinstance(outcome, VariantOutcome):
            status.update(Text(f"the variant could not run: {error}", style="bold red"))
            return
        self.query_one("#table", Static).update(comparison_table(self.play.comparison()))
        done = dict.fromkeys(self.play.outcomes, ("✓ run", "green"))
        self.query_one("#variants", Static).update(numbered(self.play.labels, marks=done))
        if outcome.error:
            status.update(Text(f"{outcome.label}: {outcome.error}", style="red"))
        else:
            status.update(Text(f"{outcome.label} done; try another variant", style="dim"))
