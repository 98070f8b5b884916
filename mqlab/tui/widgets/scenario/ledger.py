"""The ledger: every message accounted for, each number beside what the scenario expects.

It draws a :class:`~mqlab.tui.models.ledger.LedgerPicture`, counted where the run's ledger is
folded; laying it out here costs the same however many messages the run had.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from mqlab.course.scenario import Scenario
from mqlab.scenarios.ledger import LEDGER_ROWS
from mqlab.scenarios.verdict import ExpectationResult, RunResult, judge_expectations
from mqlab.tui.models.ledger import LedgerPicture, RowIds


def _ids_text(ids: RowIds) -> Text:
    shown = " ".join(ids.first)
    more = f" +{ids.total - len(ids.first)}" if ids.total > len(ids.first) else ""
    return Text(shown + more, style="dim")


def _mark(expectation: ExpectationResult | None) -> Text:
    if expectation is None:
        return Text("")
    if expectation.holds:
        return Text(f"✓ {expectation.expected}", style="green")
    return Text(f"✗ {expectation.expected}", style="bold red")


class LedgerPanel(Static):
    """The ledger of the run so far (or of its end), with the scenario's expectations."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.scenario: Scenario | None = None
        self.system = ""

    def show_intro(self, scenario: Scenario, system: str, text: RenderableType) -> None:
        """Before a run: what the scenario is about."""
        self.scenario = scenario
        self.system = system
        self.update(text)

    def show_ledger(
        self,
        picture: LedgerPicture,
        *,
        final: RunResult | None = None,
        epilogue: list[RenderableType] | None = None,
    ) -> None:
        """Draw the ledger (``final``: the judged result, once the run ended; ``epilogue``:
        what to show below it)."""
        scenario = self.scenario
        summary = final.summary if final is not None else picture.summary
        if final is not None:
            expectations = list(final.expectations)
        elif scenario is not None:
            expectations = judge_expectations(scenario.expect, self.system, summary, picture.groups)
        else:
            expectations = []
        expected = {e.name: e for e in expectations if e.group is None}
        ids = picture.ids
        table = Table(box=None, expand=True, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("ledger", no_wrap=True, ratio=3)
        table.add_column("count", justify="right", no_wrap=True)
        table.add_column("expected", no_wrap=True)
        table.add_column("message ids", no_wrap=True, overflow="ellipsis", ratio=2)
        for row in LEDGER_ROWS:
            value = summary[row.name]
            expectation = expected.get(row.name)
            if value == 0 and expectation is None and not row.always_shown:
                continue
            label = row.label
            if row.name == "lost" and final is None:
                label = "not processed (yet)"
            table.add_row(
                label, str(value), _mark(expectation), _ids_text(ids.get(row.name, RowIds()))
            )
        for expectation in expectations:
            if expectation.group is not None:
                label = f"group {expectation.group}: {expectation.name.replace('_', ' ')}"
                table.add_row(label, str(expectation.actual), _mark(expectation), "")
        parts: list[RenderableType] = [
            Text("final" if final is not None else "so far (the run is going on)", "dim"),
            table,
        ]
        if final is not None:
            parts.extend(_ending(final))
        parts.extend(epilogue or ())
        self.update(Group(*parts))


def _ending(result: RunResult) -> list[RenderableType]:
    """The verdict, the checks against the broker's own state and what failed."""
    parts: list[RenderableType] = [Text("")]
    checks = [(f"step {c.step}", c) for c in result.checks] + [("end", a) for a in result.agreement]
    if checks:
        parts.append(Text("the broker's own view", "bold"))
        for when, check in checks:
            mark = Text("✓ ", "green") if check.holds else Text("✗ ", "bold red")
            parts.append(mark + Text(f"{when}: {check.description}: {check.observed}"))
        parts.append(Text(""))
    if result.error is not None:
        parts.append(Text(f"ERROR on {result.broker}: {result.error}", "bold red"))
    elif result.passed:
        parts.append(Text(f"PASS on {result.broker}", "bold green"))
    else:
        parts.append(Text(f"FAIL on {result.broker}", "bold red"))
        parts.extend(Text(f"  {line}", "red") for line in result.failures())
    if result.restore_problem:
        parts.append(Text(f"cleanup: {result.restore_problem}", "yellow"))
    return parts
