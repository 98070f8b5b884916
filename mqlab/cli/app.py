"""The root ``mqlab`` command: every command group is registered here.

Layout: one module per command group (``lab``, ``scenarios``, ``course`` ...), each defining a
``typer.Typer`` or plain command functions that this module adds to the root ``app``. Heavy
imports (broker clients, the TUI, even the lab's supervisor) happen *inside* the command
functions, so ``mqlab --help`` starts fast and never imports textual, aiokafka or boto3.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mqlab import __version__
from mqlab.cli import bench as bench_commands
from mqlab.cli import course as course_commands
from mqlab.cli import exercises as exercise_commands
from mqlab.cli import lab as lab_commands
from mqlab.cli import lessons as lesson_commands
from mqlab.cli import retries as retry_commands
from mqlab.cli import scenarios as scenario_commands
from mqlab.cli.common import EXIT_INTERRUPTED, report_error, user_error_types

app = typer.Typer(
    name="mqlab",
    help="Learn message queues and event-driven architecture against real brokers.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mqlab {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """mqlab: message queues and event-driven architecture, hands-on.

    Without a command, opens the course on the simulator: the full-screen app in a terminal,
    the text walkthrough otherwise (``mqlab course --plain``).
    """
    if context.invoked_subcommand is None:
        course_commands.course(broker="sim", plain=False, seed=0, speed=1.0)


app.add_typer(lab_commands.lab_app, name="lab")
app.command("doctor")(lab_commands.doctor)
app.add_typer(scenario_commands.scenarios_app, name="scenarios")
app.add_typer(lesson_commands.lessons_app, name="lessons")
app.command("run")(scenario_commands.run)
app.command("replay")(scenario_commands.replay)
app.command("compare")(scenario_commands.compare)
app.command("bench")(bench_commands.bench)
app.command("course")(course_commands.course)
app.add_typer(retry_commands.retries_app, name="retries")
app.command("init")(exercise_commands.init)
app.command("check")(exercise_commands.check)
app.command("hint")(exercise_commands.hint)
app.command("progress")(exercise_commands.progress)
app.command("next")(exercise_commands.next_exercise)
app.command("reset")(exercise_commands.reset)
app.add_typer(exercise_commands.dev_app, name="dev")


def main() -> None:
    """Console-script entry point (``mqlab``)."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if isinstance(error, user_error_types()):
            sys.exit(report_error(error))
        raise
