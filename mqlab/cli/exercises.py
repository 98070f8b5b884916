"""``mqlab init | check | hint | progress | next | reset`` and ``mqlab dev check``: exercises.

Presentation only: the grader (:mod:`mqlab.grader`) runs and judges; progress lives in
:mod:`mqlab.course.progress`. Exit codes of ``check``: 0 pass, 1 the code does not pass yet
(an invariant broke, it raised, it ran out of time), 2 a bad exercise name or file, 3 the
broker the check needs is down.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mqlab.cli.common import (
    EXIT_BROKER_ERROR,
    EXIT_CONTENT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_VERDICT_FAILED,
    content_errors,
    make_console,
    user_errors,
)
from mqlab.cli.options import SeedOption

if TYPE_CHECKING:
    from rich.console import Console

    from mqlab.course.progress import ProgressStore
    from mqlab.grader.catalog import ExerciseEntry
    from mqlab.grader.run import CheckReport
    from mqlab.grader.workspace import Workspace

ExerciseArgument = Annotated[
    str | None,
    typer.Argument(
        help="Exercise id (or number); the current exercise when omitted.", show_default=False
    ),
]
GradingBrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        help="sim (default: nothing to install) or a real system the exercise lists "
        "(kafka, rabbitmq, sqs, nats: the local lab's broker; postgres or redis for an "
        "exercise that uses only the lab's database or Redis).",
    ),
]


def _workspace() -> Workspace:
    from mqlab.grader.workspace import WorkspaceError, find_workspace

    try:
        return find_workspace()
    except WorkspaceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_CONTENT_ERROR) from None


def _progress() -> ProgressStore:
    from mqlab.course.progress import ProgressStore

    return ProgressStore()


def _current(entries: list[ExerciseEntry], store: ProgressStore) -> ExerciseEntry | None:
    """The first exercise in course order that has not passed yet."""
    records = store.exercises()
    for entry in entries:
        record = records.get(entry.id)
        if record is None or not record.passed:
            return entry
    return None


def _pick(exercise: str | None, store: ProgressStore) -> ExerciseEntry:
    from mqlab.grader.catalog import all_exercises, find_exercise

    if exercise is not None:
        return find_exercise(exercise)
    current = _current(all_exercises(), store)
    if current is None:
        typer.echo("every exercise has passed: nothing left to check (mqlab progress)")
        raise typer.Exit(0)
    return current


def _next_hint(entry: ExerciseEntry, store: ProgressStore) -> tuple[str, int]:
    """Show one more hint (the last one again once all are shown); returns it and its number."""
    shown = store.record_hint(entry.id, lesson_id=entry.exercise.lesson)
    hints = entry.exercise.hints
    number = min(shown, len(hints))
    return hints[number - 1], number


def _print_report(console: Console, report: CheckReport, hint: tuple[str, int] | None) -> None:
    from mqlab.grader.report import report_text

    text = report_text(report, hint=hint[0] if hint else None, hint_number=hint[1] if hint else 0)
    console.print(text, highlight=False, end="")


def _check_once(
    entry: ExerciseEntry,
    workspace: Workspace,
    store: ProgressStore,
    *,
    broker: str,
    seed: int,
    as_json: bool,
) -> int:
    """One check: grade, record progress, print; returns the exit code."""
    import json

    from mqlab.grader.run import GraderError, check_file, resolve_grading_broker

    console = make_console()
    learner_file = workspace.learner_file(entry)
    try:
        _, _, display = resolve_grading_broker(entry, broker)
        if not as_json:
            console.print(f"checking {entry.id} ({learner_file}) on {display} ...", highlight=False)
        report = check_file(entry, learner_file, broker=broker, seed=seed)
    except GraderError as error:
        typer.echo(f"error: {error}", err=True)
        return EXIT_CONTENT_ERROR
    unreachable = report.check_error is not None and "not reachable" in report.check_error
    if unreachable:
        # The code was not graded: no attempt, no hint spent; say what to start.
        _print_report(console, report, None)
        return EXIT_BROKER_ERROR
    store.record_check(
        entry.id,
        passed=report.passed,
        result=report.to_json_dict(),
        lesson_id=entry.exercise.lesson,
        broker=report.broker,
        seed=seed,
    )
    if as_json:
        typer.echo(json.dumps(report.to_json_dict(), sort_keys=True))
    else:
        hint = None if report.passed else _next_hint(entry, store)
        _print_report(console, report, hint)
    return 0 if report.passed else EXIT_VERDICT_FAILED


@user_errors
@content_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the workspace.")] = Path(
        "mqlab-exercises"
    ),
) -> None:
    """Create a workspace with every exercise's starter file and a README."""
    from mqlab.grader.catalog import all_exercises
    from mqlab.grader.workspace import WorkspaceError, init_workspace

    entries = all_exercises()
    try:
        workspace, added = init_workspace(directory, entries)
    except WorkspaceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_CONTENT_ERROR) from None
    console = make_console()
    kept = len(entries) - len(added)
    console.print(
        f"workspace {workspace.root}: {len(added)} exercise files created"
        + (f", {kept} kept as they were" if kept else ""),
        highlight=False,
    )
    console.print(f"start with: cd {workspace.root} && mqlab next", highlight=False)


@user_errors
@content_errors
def check(
    exercise: ExerciseArgument = None,
    broker: GradingBrokerOption = "sim",
    seed: SeedOption = 0,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Check again on every save.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Grade your code for an exercise: run it under faults and judge what happened."""
    workspace = _workspace()
    with _progress() as store:
        entry = _pick(exercise, store)
        code = _check_once(entry, workspace, store, broker=broker, seed=seed, as_json=as_json)
        if not watch:
            if code:
                raise typer.Exit(code)
            return
        path = workspace.learner_file(entry)
        console = make_console()
        try:
            while True:
                console.print(f"watching {path} (Ctrl-C to stop)", style="dim", highlight=False)
                _wait_for_change(path)
                _check_once(entry, workspace, store, broker=broker, seed=seed, as_json=as_json)
        except KeyboardInterrupt:
            typer.echo("stopped watching", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _wait_for_change(path: Path, poll: float = 0.3) -> None:
    """Block until ``path``'s modification time or size changes."""

    def stamp() -> tuple[int, int]:
        try:
            stat = path.stat()
        except OSError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_size)

    before = stamp()
    while stamp() == before:
        time.sleep(poll)


@user_errors
@content_errors
def hint(exercise: ExerciseArgument = None) -> None:
    """Show the next hint for an exercise (the current one by default)."""
    with _progress() as store:
        entry = _pick(exercise, store)
        text, number = _next_hint(entry, store)
    total = len(entry.exercise.hints)
    last = " (the last one)" if number == total else ""
    make_console().print(
        f"hint {number}/{total} for {entry.id}{last}:\n{text.strip()}", highlight=False
    )


@user_errors
@content_errors
def progress() -> None:
    """Every exercise with its state (new, failing, passed), attempts and hints."""
    from rich.table import Table

    from mqlab.grader.catalog import all_exercises

    entries = all_exercises()
    with _progress() as store:
        records = store.exercises()
        lessons = store.lessons()
        current = _current(entries, store)
    table = Table(show_edge=False)
    for column in ("#", "exercise", "lesson", "state", "checks", "hints"):
        table.add_column(column, no_wrap=column != "exercise")
    styles = {"passed": "green", "failing": "yellow", "new": "dim"}
    for entry in entries:
        record = records.get(entry.id)
        state = record.state if record else "new"
        marker = " <- next" if current is not None and entry.id == current.id else ""
        table.add_row(
            str(entry.number),
            entry.exercise.title + marker,
            entry.exercise.lesson,
            f"[{styles[state]}]{state}[/]",
            str(record.attempts if record else 0),
            f"{record.hints_shown if record else 0}/{len(entry.exercise.hints)}",
        )
    console = make_console()
    console.print(table)
    passed = sum(1 for r in records.values() if r.passed)
    done = sum(1 for lesson in lessons.values() if lesson.state == "done")
    console.print(
        f"{passed} of {len(entries)} exercises passed; {done} lessons done", highlight=False
    )


@user_errors
@content_errors
def next_exercise() -> None:
    """The next exercise to do: its task and the file to edit."""
    from mqlab.grader.catalog import all_exercises

    workspace = _workspace()
    with _progress() as store:
        current = _current(all_exercises(), store)
    console = make_console()
    if current is None:
        console.print("every exercise has passed. Well done.")
        return
    exercise = current.exercise
    console.print(f"[bold]{current.number}. {exercise.title}[/bold]  ({exercise.id})")
    console.print(exercise.summary.strip(), highlight=False)
    console.print(f"\nedit:  {workspace.learner_file(current)}", highlight=False)
    console.print(f"check: mqlab check {exercise.id}", highlight=False)


@user_errors
@content_errors
def reset(exercise: Annotated[str, typer.Argument(help="Exercise id (or number).")]) -> None:
    """Start an exercise again: the starter file comes back (yours is backed up)."""
    from mqlab.grader.catalog import find_exercise
    from mqlab.grader.workspace import reset_exercise

    entry = find_exercise(exercise)
    workspace = _workspace()
    backup = reset_exercise(workspace, entry)
    with _progress() as store:
        store.reset_exercise(entry.id)
    console = make_console()
    console.print(
        f"{entry.id}: starter restored at {workspace.learner_file(entry)}", highlight=False
    )
    if backup is not None:
        console.print(f"your previous file: {backup}", highlight=False)


dev_app = typer.Typer(help="Course authors' tools.", no_args_is_help=True)


@dev_app.command("check")
@user_errors
@content_errors
def dev_check(
    exercise: ExerciseArgument = None,
    real: Annotated[
        bool, typer.Option("--real", help="Also on every real broker each exercise lists.")
    ] = False,
) -> None:
    """Every exercise: metadata valid, hints non-empty, the reference solution passes, the
    starter fails, and every wrong solution fails with the invariant it names."""
    from mqlab.grader.authoring import audit_exercise
    from mqlab.grader.catalog import all_exercises, find_exercise
    from mqlab.grader.run import real_targets

    entries = [find_exercise(exercise)] if exercise else all_exercises()
    console = make_console()
    failures = 0
    for entry in entries:
        brokers = ["sim"] + (real_targets(entry.exercise) if real else [])
        for broker in brokers:
            problems = audit_exercise(entry, broker=broker)
            if problems:
                failures += 1
                for problem in problems:
                    console.print(
                        f"[red]✗[/red] {entry.id} on {broker}: {problem}", highlight=False
                    )
            else:
                console.print(f"[green]✓[/green] {entry.id} on {broker}", highlight=False)
    if failures:
        raise typer.Exit(EXIT_VERDICT_FAILED)
