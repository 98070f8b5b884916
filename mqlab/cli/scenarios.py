"""``mqlab scenarios``, ``run``, ``replay``, ``compare``: the scenario library and its runs.

Presentation only: every run is a :class:`~mqlab.scenarios.session.RunSession` (a replay is
:func:`~mqlab.scenarios.session.replay_trace`); these commands subscribe a timeline to it and
print the result it returns. ``--json`` prints that result as one JSON object instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mqlab.cli.common import (
    EXIT_BROKER_ERROR,
    EXIT_CONTENT_ERROR,
    EXIT_VERDICT_FAILED,
    content_errors,
    make_console,
    user_errors,
)
from mqlab.cli.options import BrokerOption, SeedOption

if TYPE_CHECKING:
    from rich.console import Console

    from mqlab.course.scenario import Scenario, Step
    from mqlab.observe.events import Observation
    from mqlab.scenarios.verdict import RunResult

scenarios_app = typer.Typer(
    help="The scenario library: fault scripts that run on real brokers and on the simulator.",
    no_args_is_help=True,
)


@scenarios_app.command("list")
@user_errors
@content_errors
def scenarios_list(
    topic: Annotated[str | None, typer.Option(help="Only this course topic.")] = None,
    broker: Annotated[
        str | None, typer.Option(help="Only scenarios that run on this system.")
    ] = None,
) -> None:
    """List the scenario library."""
    from rich.table import Table

    from mqlab.scenarios.library import load_all

    table = Table(show_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("topic", no_wrap=True)
    table.add_column("brokers")
    table.add_column("title", overflow="fold")
    for scenario in load_all():
        if topic and scenario.topic != topic:
            continue
        if broker and broker not in scenario.brokers:
            continue
        table.add_row(scenario.id, scenario.topic, ", ".join(scenario.brokers), scenario.title)
    make_console().print(table)


@scenarios_app.command("programs")
@user_errors
def scenarios_programs(
    program: Annotated[str | None, typer.Argument(help="One program: all its details.")] = None,
) -> None:
    """The pattern programs a scenario's ``pattern:`` step can run, their parameters and
    their crash points."""
    from mqlab.patterns.programs import UnknownProgram, all_programs, find_program

    console = make_console()
    try:
        chosen = [find_program(program)] if program else list(all_programs().values())
    except UnknownProgram as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_CONTENT_ERROR) from None
    for entry in sorted(chosen, key=lambda p: p.id):
        services = f"  (real runs use: {', '.join(entry.services)})" if entry.services else ""
        console.print(f"[bold]{entry.id}[/bold]: {entry.summary}{services}", highlight=False)
        for name, spec in entry.params.items():
            choices = f" (one of: {', '.join(spec.choices)})" if spec.choices else ""
            console.print(
                f"    {name} = {json.dumps(spec.default)}: {spec.doc}{choices}", highlight=False
            )
        if entry.crash_points:
            console.print(f"    crash points: {', '.join(entry.crash_points)}", highlight=False)


@scenarios_app.command("show")
@user_errors
@content_errors
def scenarios_show(scenario: Annotated[str, typer.Argument(help="Scenario id or file.")]) -> None:
    """Show a scenario: what it does, its channel, its steps and the question it asks."""
    from mqlab.scenarios.library import find

    found = find(scenario)
    console = make_console()
    console.print(f"[bold]{found.title}[/bold]  ({found.id}, topic {found.topic})", highlight=False)
    console.print(found.summary.strip(), highlight=False)
    console.print(f"brokers: {', '.join(found.brokers)}", highlight=False)
    channel = _flatten(found.channel.model_dump(mode="json", exclude_defaults=True))
    console.print(f"channel {found.channel.name}: {channel or 'defaults'}", highlight=False)
    for number, step in enumerate(found.steps, start=1):
        console.print(f"  {number:>2}. {step_text(step)}", highlight=False)
    if found.predict:
        console.print(f"\n[bold]predict:[/bold] {found.predict.question}", highlight=False)
        for index, choice in enumerate(found.predict.choices, start=1):
            console.print(f"  {index}. {choice}", highlight=False)


def _flatten(data: object, prefix: str = "") -> str:
    """``{"producer": {"acks": "all"}, "count": 5}`` -> ``count=5 producer.acks=all``."""
    if isinstance(data, dict):
        parts = [_flatten(value, f"{prefix}{key}.") for key, value in data.items()]
        return " ".join(part for part in parts if part)
    if isinstance(data, list):
        shown = ",".join(str(item) for item in data)
        return f"{prefix.rstrip('.')}=[{shown}]"
    return f"{prefix.rstrip('.')}={data}"


def step_text(step: Step) -> str:
    """One readable line for a scenario step (``wait`` always shows its timeout)."""
    from pydantic import BaseModel

    from mqlab.course.scenario import WaitFor

    value = getattr(step, step.action)
    only = f"  [only on {', '.join(step.only)}]" if step.only else ""
    if isinstance(value, WaitFor):
        until = _flatten(value.until.model_dump(mode="json", exclude_none=True))
        return f"wait until {until} (at most {value.timeout:g}s){only}"
    if isinstance(value, BaseModel):
        return (
            f"{step.action}: {_flatten(value.model_dump(mode='json', exclude_defaults=True))}{only}"
        )
    if step.action == "wait":
        return f"wait {value:g}s{only}"
    return f"{step.action}: {value}{only}"


def _ask_prediction(scenario: Scenario) -> int | None:
    """Ask the scenario's question on an interactive terminal; None when not interactive."""
    predict = scenario.predict
    if predict is None or not sys.stdin.isatty():
        return None
    console = make_console()
    console.print(f"\n[bold]Predict:[/bold] {predict.question}", highlight=False)
    for index, choice in enumerate(predict.choices, start=1):
        console.print(f"  {index}. {choice}", highlight=False)
    while True:
        answer = typer.prompt("your answer", type=int, default=1)
        if 1 <= answer <= len(predict.choices):
            return int(answer) - 1
        console.print(f"pick a number from 1 to {len(predict.choices)}")


def _timeline(console: Console, *, quiet: bool) -> Callable[[Observation], None]:
    """A subscriber printing each observation as one timeline line (nothing when quiet)."""
    from mqlab.scenarios.report import timeline_line

    start: list[float] = []

    def show(observation: Observation) -> None:
        if not start:
            start.append(observation.at)
        if quiet:
            return
        line = timeline_line(observation, start[0])
        if line is not None:
            console.print(line, highlight=False)

    return show


def print_result(console: Console, result: RunResult) -> None:
    """The ledger (each expectation beside its number), the broker checks and the verdict."""
    from mqlab.scenarios.ledger import LEDGER_ROWS
    from mqlab.scenarios.report import checks_table, ledger_table, verdict_text

    console.print()
    if result.error is None or any(result.summary[row.name] for row in LEDGER_ROWS):
        # A run that failed before anything happened has no ledger worth a table: the
        # error line below says all there is.
        console.print(ledger_table(result))
    checks = checks_table(result)
    if checks is not None:
        console.print(checks)
    console.print(verdict_text(result))
    if result.restore_problem:
        console.print(f"[bold red]warning: {result.restore_problem}[/bold red]", highlight=False)


def exit_code(result: RunResult) -> int:
    """0 pass, 1 the verdict failed, 3 the run could not complete (broker error)."""
    if result.error is not None:
        return EXIT_BROKER_ERROR
    return 0 if result.passed else EXIT_VERDICT_FAILED


def run_and_show(
    found: Scenario,
    broker: str,
    *,
    seed: int = 0,
    record: Path | None = None,
    predict: bool = True,
    quiet: bool = False,
) -> RunResult:
    """Predict (on a terminal), run with a live timeline, print the result and the reveal.

    Shared by ``mqlab run`` and the walkthrough: both are a session and this presentation.
    """
    from mqlab.scenarios.session import RunSession

    session = RunSession(found, broker, seed=seed, record=record)
    guess = _ask_prediction(found) if predict else None
    console = make_console()
    console.print(f"[bold]{found.title}[/bold] on {session.broker_name}", highlight=False)
    session.subscribe(_timeline(console, quiet=quiet))
    result = session.run_sync()
    if record is not None:
        console.print(f"trace written to {record}", highlight=False)
    print_result(console, result)
    if result.error is not None:
        # The prediction and the explanation are about a run that happened; this one stopped.
        return result
    if guess is not None and found.predict is not None:
        right = found.predict.choices[found.predict.answer]
        verdict = "right" if guess == found.predict.answer else "not quite"
        console.print(f"\nYour prediction was {verdict}: {right}", highlight=False)
    if found.explain:
        console.print(f"\n[italic]{found.explain.strip()}[/italic]", highlight=False)
    return result


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result (ledger, expectations, checks, verdict) as one JSON object "
        "on standard output instead of the timeline and tables.",
    ),
]

ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also write the run as one self-contained HTML page (space-time diagram, "
        "ledger, verdict) that opens in a browser without a network.",
        dir_okay=False,
    ),
]


def save_report(
    path: Path, result: RunResult, scenario: Scenario | None, *, announce: bool
) -> None:
    """Write the HTML report of a run (a one-line error and exit 2 if it cannot be written)."""
    from mqlab.scenarios.html_report import write_report

    try:
        write_report(path, result, scenario)
    except OSError as error:
        typer.echo(f"error: cannot write the report {path}: {error.strerror or error}", err=True)
        raise typer.Exit(EXIT_CONTENT_ERROR) from None
    if announce:
        make_console().print(f"report written to {path}", highlight=False)


def finish(
    result: RunResult, scenario: Scenario | None, report: Path | None, *, as_json: bool
) -> None:
    """What ``run`` and ``replay`` do last: write the HTML report when asked (said on screen
    unless the output is JSON), then exit with the verdict's code."""
    if report is not None:
        save_report(report, result, scenario, announce=not as_json)
    code = exit_code(result)
    if code:
        raise typer.Exit(code)


@user_errors
@content_errors
def run(
    scenario: Annotated[
        str, typer.Argument(help="Scenario id (see: mqlab scenarios list) or file.")
    ],
    broker: BrokerOption = "sim",
    seed: SeedOption = 0,
    record: Annotated[
        Path | None, typer.Option("--record", help="Write the observations to a JSONL trace.")
    ] = None,
    predict: Annotated[
        bool, typer.Option("--predict/--no-predict", help="Ask the scenario's question first.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live timeline.")] = False,
    as_json: JsonOption = False,
    report: ReportOption = None,
) -> None:
    """Run a scenario with a live timeline, then print the ledger and the verdict.

    Exit codes: 0 pass, 1 the verdict failed, 2 bad scenario or broker name, 3 broker error,
    130 interrupted.
    """
    from mqlab.scenarios.library import find
    from mqlab.scenarios.session import RunSession

    found = find(scenario)
    if as_json:
        result = RunSession(found, broker, seed=seed, record=record).run_sync()
        typer.echo(result.to_json())
    else:
        result = run_and_show(found, broker, seed=seed, record=record, predict=predict, quiet=quiet)
    finish(result, found, report, as_json=as_json)


@user_errors
def replay(
    trace: Annotated[Path, typer.Argument(help="A trace written by mqlab run --record.")],
    speed: Annotated[
        float,
        typer.Option(help="Playback speed (1 = as recorded, 0 = all at once).", min=0.0),
    ] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No timeline.")] = False,
    as_json: JsonOption = False,
    report: ReportOption = None,
) -> None:
    """Play a recorded run back (no broker needed): its timeline, ledger, checks and verdict,
    judged exactly as the live run was.

    Exit codes as for ``mqlab run`` (the recorded run's verdict); 2 for a file that is not a
    readable trace.
    """
    from mqlab.observe.trace import TraceError
    from mqlab.scenarios.session import replay_trace

    console = make_console()
    timeline = _timeline(console, quiet=quiet or as_json)
    try:
        header, result = replay_trace(trace, timeline, speed=speed)
    except (TraceError, ValueError) as error:
        message = str(error).strip().splitlines()
        typer.echo(f"error: {message[0] if message else type(error).__name__}", err=True)
        raise typer.Exit(EXIT_CONTENT_ERROR) from None
    if as_json:
        typer.echo(result.to_json())
    else:
        console.print(
            f"[bold]replay[/bold] of {result.scenario_id} on {header.broker} (seed {header.seed})",
            highlight=False,
        )
        print_result(console, result)
    finish(result, None, report, as_json=as_json)


@user_errors
@content_errors
def compare(
    scenario: Annotated[
        str | None, typer.Argument(help="Scenario id or file (not with --table).")
    ] = None,
    sim: Annotated[
        bool, typer.Option("--sim", help="Compare the simulated systems instead of the lab.")
    ] = False,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
    table: Annotated[
        bool,
        typer.Option(
            "--table",
            help="The cheat sheet's comparison table, every testable cell run here and marked "
            "verified, contradicted or not testable here, with its evidence.",
        ),
    ] = False,
    messages: Annotated[
        int,
        typer.Option(
            "--messages", help="--table: messages of its throughput runs (0: do not measure)."
        ),
    ] = 5_000,
) -> None:
    """Run one fault script on every broker it applies to and print the ledgers side by side;
    with --table, verify the broker comparison table live."""
    import json

    if table:
        if scenario is not None:
            typer.echo("error: --table runs its own experiments; name no scenario", err=True)
            raise typer.Exit(EXIT_CONTENT_ERROR)
        from mqlab.cli.bench import verified_table

        verified_table(sim=sim, as_json=as_json, messages=messages)
        return
    if scenario is None:
        typer.echo("error: name a scenario (mqlab scenarios list), or use --table", err=True)
        raise typer.Exit(EXIT_CONTENT_ERROR)
    from mqlab.scenarios.library import find
    from mqlab.scenarios.report import comparison_table
    from mqlab.scenarios.session import RunSession

    found = find(scenario)
    console = make_console()
    results = []
    for system in found.systems:
        session = RunSession(found, f"sim:{system}" if sim else system, seed=seed)
        if as_json:
            results.append(session.run_sync())
            continue
        with console.status(f"running {found.id} on {session.broker_name} ..."):
            results.append(session.run_sync())
    if as_json:
        typer.echo(json.dumps([r.to_json_dict() for r in results], sort_keys=True))
    else:
        console.print(comparison_table(results))
        for result in results:
            if result.error:
                console.print(f"[red]{result.broker}: {result.error}[/red]", highlight=False)
            elif not result.passed:
                failures = "; ".join(result.failures())
                console.print(f"[red]{result.broker}: {failures}[/red]", highlight=False)
    if any(result.error for result in results):
        raise typer.Exit(EXIT_BROKER_ERROR)
    if not all(result.passed for result in results):
        raise typer.Exit(EXIT_VERDICT_FAILED)
