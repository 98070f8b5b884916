"""``mqlab scenarios``, ``run``, ``replay``, ``compare``: the scenario library and its runs."""

from __future__ import annotations

import sys
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
    from mqlab.observe.events import Observation

scenarios_app = typer.Typer(
    help="The scenario library: fault scripts that run on real brokers and on the simulator.",
    no_args_is_help=True,
)


def _split_broker(broker: str, systems: list[str]) -> tuple[str, bool]:
    """``kafka`` -> (kafka, real); ``sim`` -> (first system, sim); ``sim:nats`` -> (nats, sim)."""
    from mqlab.scenarios.runner import ScenarioError

    name = broker.strip().lower()
    if name == "sim":
        return systems[0], True
    if name.startswith("sim:"):
        system, sim = name.removeprefix("sim:"), True
    else:
        system, sim = name, False
    if system not in ("kafka", "rabbitmq", "sqs", "nats"):
        from mqlab.brokers.registry import resolve_name

        resolve_name(broker)  # raises UnknownBroker with a "did you mean"
    if system not in systems:
        raise ScenarioError(f"this scenario runs on {', '.join(systems)} (and sim), not {system}")
    return system, sim


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
    for column in ("id", "topic", "brokers", "title"):
        table.add_column(column)
    for scenario in load_all():
        if topic and scenario.topic != topic:
            continue
        if broker and broker not in scenario.brokers:
            continue
        table.add_row(scenario.id, scenario.topic, ", ".join(scenario.brokers), scenario.title)
    make_console().print(table)


@scenarios_app.command("show")
@user_errors
@content_errors
def scenarios_show(scenario: Annotated[str, typer.Argument(help="Scenario id or file.")]) -> None:
    """Show a scenario: what it does, its steps and the question it asks."""
    from mqlab.scenarios.library import find

    found = find(scenario)
    console = make_console()
    console.print(f"[bold]{found.title}[/bold]  ({found.id}, topic {found.topic})")
    console.print(found.summary.strip())
    console.print(f"brokers: {', '.join(found.brokers)}")
    for number, step in enumerate(found.steps, start=1):
        value = getattr(step, step.action)
        shown = value.model_dump(exclude_defaults=True) if hasattr(value, "model_dump") else value
        console.print(f"  {number:>2}. {step.action}: {shown}", highlight=False)
    if found.predict:
        console.print(f"\n[bold]predict:[/bold] {found.predict.question}")


def _ask_prediction(scenario: object) -> int | None:
    """Ask the scenario's question on an interactive terminal; None when not interactive."""
    predict = getattr(scenario, "predict", None)
    if predict is None or not sys.stdin.isatty():
        return None
    console = make_console()
    console.print(f"\n[bold]Predict:[/bold] {predict.question}")
    for index, choice in enumerate(predict.choices, start=1):
        console.print(f"  {index}. {choice}")
    answer = typer.prompt("your answer", type=int, default=1)
    return int(answer) - 1


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
) -> None:
    """Run a scenario with a live timeline, then print the ledger and the verdict.

    Exit codes: 0 pass, 1 the verdict failed, 2 bad scenario or broker name, 3 broker error,
    130 interrupted.
    """
    from mqlab import __version__ as version
    from mqlab.observe.trace import TraceHeader, TraceWriter
    from mqlab.scenarios.library import find
    from mqlab.scenarios.report import checks_table, ledger_table, timeline_line, verdict_text
    from mqlab.scenarios.runner import run_scenario

    found = find(scenario)
    system, sim = _split_broker(broker, list(found.systems))
    broker_name = f"sim:{system}" if sim else system
    guess = _ask_prediction(found) if predict else None
    console = make_console()
    console.print(f"[bold]{found.title}[/bold] on {broker_name}")
    start: list[float] = []

    def show(observation: Observation) -> None:
        if not start:
            start.append(observation.at)
        if not quiet:
            console.print(timeline_line(observation, start[0]), highlight=False)

    writer: TraceWriter | None = None
    listeners = [show]
    if record is not None:
        header = TraceHeader(
            broker=broker_name, seed=seed, scenario=found.id, versions={"mqlab": version}
        )
        writer = TraceWriter(record, header)
        listeners.append(writer)

    def observe(observation: Observation) -> None:
        for listener in listeners:
            listener(observation)

    try:
        result = run_scenario(found, system, sim=sim, seed=seed, on_observation=observe)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is not None:
        writer.close()
        console.print(f"trace written to {record}")
    console.print()
    console.print(ledger_table(result))
    checks = checks_table(result)
    if checks is not None:
        console.print(checks)
    console.print(verdict_text(result))
    if result.restore_problem:
        console.print(f"[bold red]warning: {result.restore_problem}[/bold red]")
    if guess is not None and found.predict is not None:
        right = found.predict.choices[found.predict.answer]
        verdict = "right" if guess == found.predict.answer else "not quite"
        console.print(f"\nYour prediction was {verdict}: {right}")
    if found.explain:
        console.print(f"\n[italic]{found.explain.strip()}[/italic]")
    if result.error is not None:
        raise typer.Exit(EXIT_BROKER_ERROR)
    if not result.passed:
        raise typer.Exit(EXIT_VERDICT_FAILED)


@user_errors
def replay(
    trace: Annotated[Path, typer.Argument(help="A trace written by mqlab run --record.")],
    speed: Annotated[
        float, typer.Option(help="Playback speed (1 = as recorded, 0 = all at once).")
    ] = 0.0,
) -> None:
    """Play a recorded run back (no broker needed) and rebuild its ledger."""
    import time

    from mqlab.observe.trace import TraceError, read_trace
    from mqlab.scenarios.ledger import Ledger
    from mqlab.scenarios.report import LEDGER_ROWS, timeline_line

    try:
        header, observations = read_trace(trace)
    except TraceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_CONTENT_ERROR) from None
    console = make_console()
    console.print(
        f"[bold]replay[/bold] of {header.scenario or 'a run'} on {header.broker} "
        f"(seed {header.seed})"
    )
    ledger = Ledger()
    start = observations[0].at if observations else 0.0
    previous = start
    for observation in observations:
        if speed > 0:
            time.sleep(max(0.0, (observation.at - previous) / speed))
        previous = observation.at
        ledger(observation)
        console.print(timeline_line(observation, start), highlight=False)
    summary = ledger.summary()
    console.print()
    for name, label in LEDGER_ROWS:
        if summary.get(name) or name in ("produced", "lost"):
            console.print(f"  {label:<40} {summary[name]:>6}")


@user_errors
@content_errors
def compare(
    scenario: Annotated[str, typer.Argument(help="Scenario id or file.")],
    sim: Annotated[
        bool, typer.Option("--sim", help="Compare the simulated systems instead of the lab.")
    ] = False,
    seed: SeedOption = 0,
) -> None:
    """Run one fault script on every broker it applies to and print the ledgers side by side."""
    from mqlab.scenarios.library import find
    from mqlab.scenarios.report import comparison_table
    from mqlab.scenarios.runner import run_scenario

    found = find(scenario)
    console = make_console()
    results = []
    for system in found.systems:
        name = f"sim:{system}" if sim else system
        with console.status(f"running {found.id} on {name} ..."):
            results.append(run_scenario(found, system, sim=sim, seed=seed))
    console.print(comparison_table(results))
    for result in results:
        if result.error:
            console.print(f"[red]{result.broker}: {result.error}[/red]")
    if any(result.error for result in results):
        raise typer.Exit(EXIT_BROKER_ERROR)
    if not all(result.passed for result in results):
        raise typer.Exit(EXIT_VERDICT_FAILED)
