"""A check's outcome as text a learner can act on (``mqlab check``; the TUI shows the same).

On a failure: the invariant that broke and its minimal counter-example, or the one line of the
learner's file where the code raised, failed to import or was stuck; the seed and the exact
command that reproduces it; the next hint. On a pass: what was proven, under which faults.
"""

from __future__ import annotations

from rich.text import Text

from mqlab.grader.run import CheckReport


def reproduce_command(report: CheckReport) -> str:
    """The command that runs the very same check again (same broker, same seed)."""
    return f"mqlab check {report.exercise_id} --broker {report.broker} --seed {report.seed}"


def report_text(report: CheckReport, *, hint: str | None = None, hint_number: int = 0) -> Text:
    """The whole report as styled text."""
    text = Text()
    where = f"on {report.broker} (seed {report.seed})"
    if report.passed:
        text.append(f"✓ {report.exercise_id} passed {where}\n", style="bold green")
        text.append(f"  under: {report.faults.strip()}\n", style="dim")
        for result in report.results:
            text.append(f"  ✓ {result.title}: {result.finding.proven}\n", style="green")
        return text
    if report.learner_error is not None:
        error = report.learner_error
        text.append(f"✗ {report.exercise_id} {where}: ", style="bold red")
        text.append(_learner_headline(error.kind) + "\n", style="bold red")
        text.append(f"  {error.one_line()}\n")
        if error.code:
            text.append(f"      {error.code}\n", style="cyan")
    elif report.check_error is not None:
        text.append(f"✗ {report.exercise_id} {where}: the check could not run\n", style="bold red")
        text.append(f"  {report.check_error.strip().splitlines()[-1]}\n")
    else:
        broken = report.broken
        assert broken is not None
        text.append(
            f"✗ {report.exercise_id} {where}: {broken.title} does NOT hold\n", style="bold red"
        )
        text.append(f"  {broken.finding.problem}\n")
        for line in broken.finding.counterexample:
            text.append(f"    {line}\n", style="yellow")
        for result in report.results:
            if result is broken:
                continue
            mark, style = ("✓", "green") if result.finding.holds else ("✗", "red")
            detail = result.finding.proven if result.finding.holds else result.finding.problem
            text.append(f"  {mark} {result.title}: {detail}\n", style=style)
    if report.stderr_tail and (report.learner_error or report.check_error):
        text.append("  your code printed (last lines):\n", style="dim")
        for line in report.stderr_tail[-6:]:
            text.append(f"    {line}\n", style="dim")
    text.append(f"  reproduce: {reproduce_command(report)}\n", style="dim")
    if hint:
        text.append(f"  hint {hint_number}: {hint.strip()}\n", style="italic")
    return text


def _learner_headline(kind: str) -> str:
    return {
        "SyntaxError": "your file does not parse",
        "ModuleNotFoundError": "your file imports something that is not installed",
        "ImportError": "your file's imports fail",
        "Timeout": "your code was stopped: it ran out of time",
        "MemoryError": "your code was stopped: it ran out of memory",
        "LearnerMistake": "your code does not do what the task asks",
    }.get(kind, f"your code raised {kind}")
