"""``mqlab course``: the text walkthrough of the scenario library."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mqlab.cli.common import content_errors, make_console, user_errors
from mqlab.cli.scenarios import run_and_show


@user_errors
@content_errors
def course(
    broker: Annotated[
        str,
        typer.Option(
            "--broker", "-b", help="sim (default: nothing to install) or real (the local lab)."
        ),
    ] = "sim",
) -> None:
    """Walk through the scenario library: predict, run, compare with what happened.

    This is the course's entry point until the full-screen course (lessons and the TUI) lands;
    it runs on the simulator unless ``--broker real`` is given.
    """
    from mqlab.scenarios.library import load_all

    scenarios = load_all()
    console = make_console()
    console.print(
        "[bold]mqlab[/bold]: message queues and event-driven architecture, hands-on.\n"
        "Each scenario asks you to predict what a broker does under a failure, then runs it "
        f"({'on the simulator' if broker == 'sim' else 'on the local lab'}) and shows the "
        "ledger: every message produced, processed, duplicated, lost or dead-lettered.\n"
    )
    topics: dict[str, list[int]] = {}
    for index, scenario in enumerate(scenarios, start=1):
        topics.setdefault(scenario.topic, []).append(index)
    for topic, indexes in topics.items():
        console.print(f"[bold]{topic}[/bold]")
        for index in indexes:
            scenario = scenarios[index - 1]
            systems = ", ".join(scenario.systems)
            console.print(f"  {index:>2}. {scenario.title}  [dim]({systems})[/dim]")
    if not sys.stdin.isatty():
        console.print("\nRun one with: mqlab run <id> --broker sim   (ids: mqlab scenarios list)")
        return
    while True:
        choice = typer.prompt("\nscenario number (q to quit)", default="q")
        if choice.strip().lower() in ("q", "quit", ""):
            return
        if not choice.isdigit() or not 1 <= int(choice) <= len(scenarios):
            console.print(f"pick a number from 1 to {len(scenarios)}")
            continue
        scenario = scenarios[int(choice) - 1]
        system = scenario.systems[0]
        if len(scenario.systems) > 1:
            system = typer.prompt(
                f"which system ({', '.join(scenario.systems)})", default=scenario.systems[0]
            )
        target = f"sim:{system}" if broker == "sim" else system
        # A failed verdict is part of learning: stay in the course.
        run_and_show(scenario, target)
