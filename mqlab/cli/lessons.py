"""``mqlab lessons list | show ID | validate [PATH]``: the course's lessons in the terminal.

``show`` is for people who do not want the full-screen app: on a terminal it walks the lesson
step by step (answer the quizzes, predict and run on ``--broker``, walk the decision tree) and
records progress; piped, it prints the whole lesson as text. Everything a step does comes from
the headless player (:mod:`mqlab.player`); this module only renders and asks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mqlab.cli.common import EXIT_CONTENT_ERROR, content_errors, make_console, user_errors
from mqlab.cli.options import SeedOption

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from mqlab.course.lesson import Lesson
    from mqlab.course.library import LessonEntry
    from mqlab.course.progress import ProgressStore
    from mqlab.player.player import (
        Comparison,
        DecisionPlay,
        ExercisePlay,
        ExperimentPlay,
        LessonPlayer,
        PredictPlay,
        QuizPlay,
        ReadPlay,
        StepPlay,
    )

lessons_app = typer.Typer(
    help="The course's lessons: list them, take one in the terminal, validate the content.",
    no_args_is_help=True,
)

LessonBrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        help="sim (the simulator, default), sim:<system>, lab (the local lab's real brokers) "
        "or a system (kafka, rabbitmq, sqs, nats: the lab, preferring that system).",
    ),
]


def _open_progress(console: Console) -> ProgressStore | None:
    """The learner's progress, or None (with a warning) when the database cannot be used."""
    from mqlab.course.progress import ProgressError, ProgressStore

    try:
        return ProgressStore()
    except ProgressError as error:
        console.print(
            f"[yellow]warning: {error}; progress is not recorded[/yellow]", highlight=False
        )
        return None


def _esc(text: str) -> str:
    """``text`` with rich markup escaped (content may contain ``[B1,B2]`` or ``[key]``)."""
    from rich.markup import escape

    return escape(text)


def _shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when it is inside it (shorter messages)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


@lessons_app.command("list")
@user_errors
@content_errors
def lessons_list() -> None:
    """The lessons in course order, with your progress."""
    from rich.table import Table

    from mqlab.course.library import course_lessons, load_course

    console = make_console()
    course = load_course()
    entries = course_lessons()
    store = _open_progress(console)
    states = store.lessons() if store is not None else {}
    table = Table(title=course.title, show_edge=False)
    for column in ("#", "id", "title", "min", "steps", "progress"):
        table.add_column(column, justify="right" if column in ("#", "min", "steps") else "left")
    for entry in entries:
        record = states.get(entry.lesson.id)
        if record is None:
            progress = "new"
        elif record.state == "done":
            progress = "[green]done[/green]"
        else:
            progress = f"[yellow]at step {record.current_index + 1}[/yellow]"
        table.add_row(
            str(entry.number),
            entry.lesson.id,
            entry.lesson.title,
            str(entry.lesson.minutes),
            str(len(entry.lesson.steps)),
            progress,
        )
    console.print(table)
    console.print("\nTake one: mqlab lessons show <id>   (mqlab lessons show 1 --broker sim)")


@lessons_app.command("validate")
@user_errors
def lessons_validate(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A lessons folder (with course.yaml), a lesson folder, a lesson.yaml or a "
            "course.yaml; default: the course's lessons.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check the lessons and every reference they make (scenarios, exercises, brokers, pattern
    experiments, diagrams, decision trees). Exit 0 when all is well, else one line per problem
    (``path:line: message``) and exit 2."""
    from mqlab.course.library import lessons_dir
    from mqlab.player.validation import validate_lessons

    target = path if path is not None else _shown_path(lessons_dir())
    problems = validate_lessons(target)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        raise typer.Exit(EXIT_CONTENT_ERROR)
    typer.echo(f"ok: {target} is valid")


@lessons_app.command("show")
@user_errors
@content_errors
def lessons_show(
    lesson: Annotated[
        str, typer.Argument(help="Lesson id (kafka-concepts), folder, number (2) or path.")
    ],
    broker: LessonBrokerOption = "sim",
    seed: SeedOption = 0,
    step: Annotated[
        int | None,
        typer.Option("--step", min=1, help="Start at this step (default: where you stopped)."),
    ] = None,
    interactive: Annotated[
        bool | None,
        typer.Option(
            "--interactive/--text",
            help="Walk it step by step, or print it all as text (default: interactive on a "
            "terminal).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Take a lesson in the terminal, or print it as text when the output is not a terminal."""
    from mqlab.course.library import find_lesson
    from mqlab.player.player import LessonPlayer

    entry = find_lesson(lesson)
    console = make_console()
    walk = interactive if interactive is not None else sys.stdin.isatty() and sys.stdout.isatty()
    store = _open_progress(console) if walk else None
    player = LessonPlayer(
        entry.lesson, folder=entry.path.parent, broker=broker, seed=seed, progress=store
    )
    try:
        if walk:
            _walk(console, entry, player, step)
        else:
            _print_text(console, entry, player)
    finally:
        if store is not None:
            store.close()


# --- interactive ----------------------------------------------------------------------------


class _Quit(Exception):
    """The learner typed q."""


class _Back(Exception):
    """The learner typed b."""


def _ask(label: str) -> str:
    """One line of input; end of input counts as quitting."""
    import click

    try:
        answer: str = typer.prompt(label, default="", show_default=False)
    except (click.exceptions.Abort, typer.Abort):
        raise _Quit from None
    answer = answer.strip().lower()
    if answer in ("q", "quit"):
        raise _Quit
    return answer


def _number(answer: str, count: int) -> int | None:
    """A 1-based number typed by the learner, as a 0-based index (None if it is not one)."""
    if answer.isdigit() and 1 <= int(answer) <= count:
        return int(answer) - 1
    return None


def _continue() -> None:
    """Wait for enter (b goes back, q quits)."""
    if _ask("[enter] next · b back · q quit") == "b":
        raise _Back


def _walk(console: Console, entry: LessonEntry, player: LessonPlayer, step: int | None) -> None:
    from rich.markdown import Markdown

    lesson = entry.lesson
    console.print(f"\n[bold]{_esc(lesson.title)}[/bold]  ({lesson.id}, about {lesson.minutes} min)")
    console.print(Markdown(lesson.summary))
    current = player.go(step - 1) if step is not None else player.resume()
    if step is None and current.index > 0:
        console.print(f"[dim]resuming at step {current.index + 1}[/dim]")
    while True:
        current = player.current
        _heading(console, player, current)
        try:
            _play(console, current)
        except _Back:
            player.back()
            continue
        except _Quit:
            console.print("[dim]stopped; `mqlab lessons show` resumes here[/dim]")
            return
        if player.next() is None:
            console.rule("[green]lesson done[/green]")
            _print_sources(console, lesson)
            return


def _heading(console: Console, player: LessonPlayer, step: StepPlay) -> None:
    total = len(player.steps)
    console.print()
    title = f" · {step.title}" if step.title != step.kind else ""
    console.rule(f"step {step.index + 1}/{total} · {step.kind}{_esc(title)}", align="left")


def _play(console: Console, step: StepPlay) -> None:
    """Render ``step`` and take the learner's answers until they move on."""
    handlers: dict[str, Callable[[Console, Any], None]] = {
        "read": _play_read,
        "quiz": _play_quiz,
        "predict": _play_predict,
        "experiment": _play_experiment,
        "decision": _play_decision,
        "exercise": _play_exercise,
    }
    handlers[step.kind](console, step)


def _play_read(console: Console, step: ReadPlay) -> None:
    _show_read(console, step)
    _continue()


def _play_exercise(console: Console, step: ExercisePlay) -> None:
    _show_exercise(console, step)
    _continue()


def _show_read(console: Console, step: ReadPlay) -> None:
    from rich.markdown import Markdown
    from rich.panel import Panel
    from rich.text import Text

    console.print(Markdown(step.read.text))
    if step.read.diagram is None:
        return
    with console.status(f"drawing {step.read.diagram} ..."):
        view = step.diagram()
    if view is not None:
        console.print(
            Panel(Text("\n".join(view.lines)), title=view.name, subtitle=view.note, expand=False)
        )


def _choices(console: Console, choices: tuple[str, ...]) -> None:
    for number, text in enumerate(choices, start=1):
        console.print(f"  {number}. {text}", highlight=False, markup=False)


def _pick(what: str, count: int) -> int:
    """Ask for ``what`` until the answer is one of ``count`` choices' numbers; the 0-based
    index. ``b`` goes back a step."""
    while True:
        answer = _ask(f"your {what} (1-{count}, b back, q quit)")
        if answer == "b":
            raise _Back
        index = _number(answer, count)
        if index is not None:
            return index


def _play_quiz(console: Console, step: QuizPlay) -> None:
    from rich.markdown import Markdown

    console.print(Markdown(step.quiz.question))
    _choices(console, step.choices)
    while True:
        feedback = step.answer(_pick("answer", len(step.choices)))
        if feedback.right:
            console.print("[bold green]right.[/bold green]")
        else:
            console.print(
                f"[bold red]not quite:[/bold red] {_esc(feedback.why or '')}", highlight=False
            )
            console.print(f"the answer: {feedback.answer + 1}. {feedback.right_text}", markup=False)
        console.print(Markdown(feedback.explain))
        again = _ask("[enter] next · a answer again · b back · q quit")
        if again == "b":
            raise _Back
        if again != "a":
            return


def _play_predict(console: Console, step: PredictPlay) -> None:
    from rich.markdown import Markdown

    from mqlab.scenarios.report import ledger_table, verdict_text

    console.print(f"[bold]{_esc(step.scenario.title)}[/bold]", highlight=False)
    console.print(step.scenario.summary.strip(), highlight=False, markup=False)
    console.print(f"\n[bold]Predict:[/bold] {_esc(step.question)}", highlight=False)
    _choices(console, step.choices)
    step.commit(_pick("prediction", len(step.choices)))
    with console.status(f"running {step.scenario.id} on {step.target} ..."):
        outcome = step.run()
    console.print(ledger_table(outcome.result))
    console.print(verdict_text(outcome.result))
    if outcome.held is True:
        console.print("[bold green]Your prediction held.[/bold green]")
    elif outcome.held is False:
        right = step.choices[outcome.answer]
        console.print(
            f"[bold red]Your prediction did not hold:[/bold red] {_esc(right)}", highlight=False
        )
    else:
        console.print(
            "[yellow]This run did not show the expected outcome, so it cannot settle your "
            f"prediction; the expected answer is: {_esc(step.choices[outcome.answer])}[/yellow]",
            highlight=False,
        )
    if outcome.explain:
        console.print(f"\n[italic]{_esc(outcome.explain.strip())}[/italic]", highlight=False)
    if outcome.after:
        console.print(Markdown(outcome.after))
    _continue()


def _comparison_table(comparison: Comparison) -> RenderableType:
    from rich.table import Table

    table = Table(show_edge=False)
    table.add_column("")
    for column in comparison.columns:
        table.add_column(column, justify="right")
    for row in comparison.rows:
        table.add_row(row.label, *row.cells(missing=""))
    return table


def _play_experiment(console: Console, step: ExperimentPlay) -> None:
    from rich.markdown import Markdown

    if step.experiment.text:
        console.print(Markdown(step.experiment.text))
    where = f" on {step.target}" if step.target else ""
    console.print(f"[bold]{_esc(step.experiment.vary.name)}[/bold]: pick a variant to run{where}")
    _choices(console, step.labels)
    while True:
        answer = _ask(f"run (1-{len(step.labels)}, a all, enter next, b back, q quit)")
        if answer == "b":
            raise _Back
        if answer == "":
            return
        indexes = list(range(len(step.labels))) if answer == "a" else []
        chosen = _number(answer, len(step.labels))
        if chosen is not None:
            indexes = [chosen]
        for index in indexes:
            with console.status(f"running {step.labels[index]} ..."):
                outcome = step.run(index)
            if outcome.error:
                console.print(f"[red]{_esc(outcome.label)}: {_esc(outcome.error)}[/red]")
        if indexes:
            console.print(_comparison_table(step.comparison()))


def _show_leaf(console: Console, step: DecisionPlay) -> None:
    from rich.markdown import Markdown
    from rich.panel import Panel

    view = step.view()
    assert view.leaf is not None
    lines = [f"[bold]{_esc(view.leaf.recommend)}[/bold]", "", "why:"]
    lines += [f"  + {_esc(reason)}" for reason in view.leaf.reasons]
    lines += ["", "trade-offs:"]
    lines += [f"  - {_esc(tradeoff)}" for tradeoff in view.leaf.tradeoffs]
    title = _esc(" > ".join(view.path))
    console.print(Panel("\n".join(lines), title=title, expand=False))
    if step.decision.too_simple and len(step.reached) == 1:
        console.print(Markdown(step.decision.too_simple))


def _play_decision(console: Console, step: DecisionPlay) -> None:
    from rich.markdown import Markdown

    if step.decision.text:
        console.print(Markdown(step.decision.text))
    view = step.restart()
    while True:
        if view.at_leaf:
            _show_leaf(console, step)
            answer = _ask("r start again · b back · [enter] next · q quit")
            if answer == "":
                return
            view = step.restart() if answer == "r" else step.back() if answer == "b" else view
            continue
        console.print(f"\n[bold]{_esc(view.question or '')}[/bold]", highlight=False)
        _choices(console, view.options)
        answer = _ask(f"choose (1-{len(view.options)}, b back, q quit)")
        if answer == "b":
            if not view.path:
                raise _Back
            view = step.back()
            continue
        index = _number(answer, len(view.options))
        if index is not None:
            view = step.choose(index)


def _show_exercise(console: Console, step: ExercisePlay) -> None:
    console.print(f"[bold]{_esc(step.exercise_id)}[/bold]: {step.state}", highlight=False)
    if step.exists:
        console.print(f"Work on it in your workspace, then run: {step.command}", markup=False)
    else:
        console.print("(this exercise is not part of this mqlab yet)")


# --- as text --------------------------------------------------------------------------------


def _print_text(console: Console, entry: LessonEntry, player: LessonPlayer) -> None:
    from rich.markdown import Markdown

    printers: dict[str, Callable[[Console, Any], None]] = {
        "read": _show_read,
        "quiz": _print_quiz,
        "predict": _print_predict,
        "experiment": _print_experiment,
        "decision": _print_decision,
        "exercise": _show_exercise,
    }
    lesson = entry.lesson
    console.print(f"# {lesson.title}", highlight=False, markup=False)
    console.print(f"({lesson.id}, about {lesson.minutes} min)\n", highlight=False, markup=False)
    console.print(Markdown(lesson.summary))
    for step in player.steps:
        _heading(console, player, step)
        printers[step.kind](console, step)
    _print_sources(console, lesson)


def _print_sources(console: Console, lesson: Lesson) -> None:
    console.print("\nSources:")
    for source in lesson.sources:
        console.print(f"  - {source}", highlight=False, markup=False)


def _print_quiz(console: Console, step: QuizPlay) -> None:
    from rich.markdown import Markdown
    from rich.padding import Padding

    console.print(Markdown(step.quiz.question))
    for number, choice in enumerate(step.quiz.choices, start=1):
        mark = "*" if number - 1 == step.quiz.answer else " "
        console.print(f" {mark}{number}. {choice.text}", highlight=False, markup=False)
        if choice.why:
            console.print(Padding(Markdown(f"wrong: {choice.why}"), (0, 0, 0, 6)))
    console.print(Markdown(step.quiz.explain))


def _print_predict(console: Console, step: PredictPlay) -> None:
    from rich.markdown import Markdown

    console.print(f"[bold]{_esc(step.scenario.title)}[/bold]", highlight=False)
    console.print(step.scenario.summary.strip(), highlight=False, markup=False)
    console.print(f"\nPredict: {step.question}", highlight=False, markup=False)
    for number, text in enumerate(step.choices, start=1):
        mark = "*" if number - 1 == step.answer_index else " "
        console.print(f" {mark}{number}. {text}", highlight=False, markup=False)
    console.print(f"Run it: mqlab run {step.scenario.id} --broker {step.target}", markup=False)
    if step.scenario.explain:
        console.print(f"[italic]{_esc(step.scenario.explain.strip())}[/italic]", highlight=False)
    if step.predict.after:
        console.print(Markdown(step.predict.after))


def _print_experiment(console: Console, step: ExperimentPlay) -> None:
    from rich.markdown import Markdown

    if step.experiment.text:
        console.print(Markdown(step.experiment.text))
    subject = step.experiment.scenario or step.experiment.pattern
    console.print(
        f"Varies {step.experiment.vary.name} of {subject}:", highlight=False, markup=False
    )
    for variant in step.experiment.vary.choices:
        settings = [f"{key}={value}" for key, value in variant.overrides.items()]
        if variant.broker is not None:
            settings.append(f"on {variant.broker}")
        changes = ", ".join(settings)
        console.print(f"  - {variant.label}: {changes}", highlight=False, markup=False)
    compared = ", ".join(label for _, label in step.compared)
    console.print(f"Compares: {compared}", highlight=False, markup=False)


def _print_decision(console: Console, step: DecisionPlay) -> None:
    from rich.markdown import Markdown

    decision = step.decision
    if decision.text:
        console.print(Markdown(decision.text))

    def outline(node: str, depth: int) -> None:
        console.print(f"{'  ' * depth}{decision.nodes[node].question}", markup=False)
        for option in decision.nodes[node].options:
            if option.leaf is not None:
                leaf = decision.leaves[option.leaf]
                console.print(
                    f"{'  ' * (depth + 1)}{option.label} -> {leaf.recommend}", markup=False
                )
            elif option.next is not None:
                console.print(f"{'  ' * (depth + 1)}{option.label}:", markup=False)
                outline(option.next, depth + 2)

    outline(decision.start, 0)
    for leaf in decision.leaves.values():
        console.print(f"\n[bold]{_esc(leaf.recommend)}[/bold]", highlight=False)
        for reason in leaf.reasons:
            console.print(f"  + {reason}", highlight=False, markup=False)
        for tradeoff in leaf.tradeoffs:
            console.print(f"  - {tradeoff}", highlight=False, markup=False)
    if decision.too_simple:
        console.print(Markdown(decision.too_simple))
