"""What every command module shares: one-line errors, exit codes, the console, tables.

Errors a learner can cause (:class:`~mqlab.lab.errors.LabError`, ``BrokerError``, a bad
content file) and Ctrl-C end as one line on stderr and a non-zero exit code, never a traceback
(:func:`user_errors`, :func:`content_errors`).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer

from mqlab.lab.errors import LabError

if TYPE_CHECKING:
    from rich.console import Console

    from mqlab.lab.supervisor import ProcessStatus

P = ParamSpec("P")
R = TypeVar("R")

EXIT_USER_ERROR = 1
EXIT_VERDICT_FAILED = 1
EXIT_CONTENT_ERROR = 2
EXIT_BROKER_ERROR = 3
EXIT_INTERRUPTED = 130


def user_error_types() -> tuple[type[BaseException], ...]:
    """LabError always; BrokerError only if its module was imported (then it may be raised)."""
    types: list[type[BaseException]] = [LabError]
    brokers_base = sys.modules.get("mqlab.brokers.base")
    if brokers_base is not None:
        types.append(brokers_base.BrokerError)
    return tuple(types)


def report_error(error: BaseException) -> int:
    """Print ``error`` as one line (plus its details, if any) and return the exit code."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    typer.echo(f"error: {message}", err=True)
    details = getattr(error, "details", "")
    if details:
        typer.echo(details, err=True)
    interrupted = type(error).__name__ == "LabInterrupted"
    return EXIT_INTERRUPTED if interrupted else EXIT_USER_ERROR


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn user errors and Ctrl-C inside ``command`` into one stderr line and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as error:
            if isinstance(error, user_error_types()):
                raise typer.Exit(report_error(error)) from None
            raise

    return wrapper


class _ProgressFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


def show_progress(quiet: bool) -> None:
    """Print the lab's progress messages (logger ``mqlab.lab``) on stderr."""
    logger = logging.getLogger("mqlab.lab")
    if not any(getattr(handler, "_mqlab", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ProgressFormatter())
        handler._mqlab = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def make_console() -> Console:
    from rich.console import Console

    terminal = Console()
    # Piped output (tests, `| grep`) gets full rows instead of an 80-column squeeze.
    return terminal if terminal.is_terminal else Console(width=200)


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def health_style(health: str) -> str:
    if health == "healthy":
        return "green"
    if health in ("stopped",):
        return "dim"
    if health == "paused":
        return "yellow"
    return "red"


def print_table(columns: tuple[str, ...], rows: list[list[str | tuple[str, str]]]) -> None:
    """A plain table; a cell is text or (text, style). Cells are never read as rich markup:
    ``moto[server]`` in a fix command must print as it is."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                Text(cell[0], style=cell[1]) if isinstance(cell, tuple) else Text(cell)
                for cell in row
            )
        )
    make_console().print(table)


def print_status_table(rows: list[ProcessStatus], *, with_action: bool = False) -> None:
    columns = ("service", "process", "address", "pid", "version", "health", "uptime")
    cells: list[list[str | tuple[str, str]]] = []
    for row in rows:
        cells.append(
            [
                row.service,
                row.process,
                row.address,
                str(row.pid) if row.pid else "",
                row.version,
                (row.health, health_style(row.health)),
                format_uptime(row.uptime),
                *([row.action] if with_action else []),
            ]
        )
    print_table((*columns, "this run") if with_action else columns, cells)


def content_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Bad content files and unknown scenarios: one line, exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Exception as error:
            # Imported only when something went wrong: the runner module costs more than half
            # a second, which every command (and the course's first frame) would pay first.
            from mqlab.brokers.registry import UnknownBroker
            from mqlab.course.loader import ContentError
            from mqlab.scenarios.runner import ScenarioError

            if not isinstance(error, ContentError | ScenarioError | UnknownBroker):
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_CONTENT_ERROR) from None

    return wrapper
