"""``mqlab course``: the course in the terminal (the Textual app), or its text walkthrough.

The app is imported inside the command, only when it opens, so every other command (and
``mqlab --help``) starts without Textual. A terminal gets the app; piped output, ``--plain``
and a dumb terminal get the text walkthrough of the scenario library.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mqlab.cli.common import content_errors, make_console, user_errors
from mqlab.cli.scenarios import run_and_show

CourseBrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        help="sim (default: nothing to install), sim:<system>, a system of the lab (kafka, "
        "rabbitmq, sqs, nats) or real (each scenario on the lab's broker for its system).",
    ),
]
PlainOption = Annotated[
    bool, typer.Option("--plain", help="The text walkthrough instead of the full-screen app.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Simulator seed (same seed, same run).")]
SpeedOption = Annotated[
    float,
    typer.Option("--speed", help="Pace of simulated runs: virtual seconds per real second."),
]
ScenarioOption = Annotated[
    str | None, typer.Option("--scenario", help="Open straight on this scenario and run it.")
]
ReplayOption = Annotated[
    Path | None,
    typer.Option("--replay", help="Open straight on the replay of this trace.", dir_okay=False),
]


def wants_app(plain: bool) -> bool:
    """Whether to open the full-screen app: a real terminal on both ends, not ``--plain``."""
    if plain:
        return False
    if os.environ.get("TERM", "") == "dumb":
        return False
    return sys.stdout.isatty() and sys.stdin.isatty()


@user_errors
@content_errors
def course(
    broker: CourseBrokerOption = "sim",
    plain: PlainOption = False,
    seed: SeedOption = 0,
    speed: SpeedOption = 1.0,
    scenario: ScenarioOption = None,
    replay: ReplayOption = None,
) -> None:
    """The course: lessons, scenarios you can break while they run, replays.

    In a terminal this opens the full-screen app; with --plain (or when the output is not a
    terminal) it is a text walkthrough of the scenario library.
    """
    if seed < 0:
        raise typer.BadParameter("the seed must be 0 or more", param_hint="--seed")
    if speed <= 0:
        raise typer.BadParameter("the speed must be more than 0", param_hint="--speed")
    if wants_app(plain):
        open_app(broker=broker, seed=seed, speed=speed, scenario=scenario, replay=replay)
        return
    walkthrough("real" if broker not in ("sim",) and not broker.startswith("sim:") else "sim")


def open_app(
    *,
    broker: str = "sim",
    seed: int = 0,
    speed: float = 1.0,
    scenario: str | None = None,
    replay: Path | None = None,
) -> None:
    """Run the Textual app until the learner quits (imports Textual only now)."""
    from mqlab.brokers.registry import UnknownBroker
    from mqlab.player.runs import LearnerBroker

    try:
        LearnerBroker.parse(broker)  # a typo is a one-line error before the screen opens
    except UnknownBroker as error:
        raise typer.BadParameter(str(error), param_hint="--broker") from None
    chosen = None
    if scenario is not None:
        from mqlab.scenarios.library import find

        chosen = find(scenario)
    if replay is not None and not replay.is_file():
        raise typer.BadParameter(f"no such file: {replay}", param_hint="--replay")
    from mqlab.tui.app import make_app

    app = make_app(broker=broker, seed=seed, speed=speed, scenario=chosen, replay=replay)
    app.run()


def walkthrough(broker: str) -> None:
    """The text walkthrough of the scenario library: predict, run, compare."""
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
    for index, item in enumerate(scenarios, start=1):
        topics.setdefault(item.topic, []).append(index)
    for topic, indexes in topics.items():
        console.print(f"[bold]{topic}[/bold]")
        for index in indexes:
            item = scenarios[index - 1]
            systems = ", ".join(item.targets)
            console.print(f"  {index:>2}. {item.title}  [dim]({systems})[/dim]")
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
        item = scenarios[int(choice) - 1]
        system = item.targets[0]
        if len(item.targets) > 1:
            system = typer.prompt(
                f"which system ({', '.join(item.targets)})", default=item.targets[0]
            )
        target = f"sim:{system}" if broker == "sim" else system
        # A failed verdict is part of learning: stay in the course.
        run_and_show(item, target)
