"""The ``mqlab`` command line (Typer).

Layout: one section per command group, each group a ``typer.Typer`` added to the root ``app``.
Heavy imports (broker clients, the TUI, even the lab's supervisor) happen *inside* the command
functions, so ``mqlab --help`` starts fast and never imports textual, aiokafka or boto3.

Errors a learner can cause (:class:`~mqlab.lab.errors.LabError`, ``BrokerError``) and Ctrl-C
end as one line on stderr and a non-zero exit code, never a traceback (:func:`user_errors`).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from mqlab import __version__
from mqlab.lab.errors import LabError

if TYPE_CHECKING:
    from rich.console import Console

    from mqlab.lab.supervisor import ProcessStatus

P = ParamSpec("P")
R = TypeVar("R")

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130

# ============================================================================ shared helpers


def _user_error_types() -> tuple[type[BaseException], ...]:
    """LabError always; BrokerError only if its module was imported (then it may be raised)."""
    types: list[type[BaseException]] = [LabError]
    brokers_base = sys.modules.get("mqlab.brokers.base")
    if brokers_base is not None:
        types.append(brokers_base.BrokerError)
    return tuple(types)


def _report_error(error: BaseException) -> int:
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
            if isinstance(error, _user_error_types()):
                raise typer.Exit(_report_error(error)) from None
            raise

    return wrapper


class _ProgressFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


def _show_progress(quiet: bool) -> None:
    """Print the lab's progress messages (logger ``mqlab.lab``) on stderr."""
    logger = logging.getLogger("mqlab.lab")
    if not any(getattr(handler, "_mqlab", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ProgressFormatter())
        handler._mqlab = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _console() -> Console:
    from rich.console import Console

    console = Console()
    # Piped output (tests, `| grep`) gets full rows instead of an 80-column squeeze.
    return console if console.is_terminal else Console(width=200)


def _format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _health_style(health: str) -> str:
    if health == "healthy":
        return "green"
    if health in ("stopped",):
        return "dim"
    if health == "paused":
        return "yellow"
    return "red"


def _print_table(columns: tuple[str, ...], rows: list[list[str | tuple[str, str]]]) -> None:
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
    _console().print(table)


def _print_status_table(rows: list[ProcessStatus], *, with_action: bool = False) -> None:
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
                (row.health, _health_style(row.health)),
                _format_uptime(row.uptime),
                *([row.action] if with_action else []),
            ]
        )
    _print_table((*columns, "this run") if with_action else columns, cells)


# ============================================================================ root app

app = typer.Typer(
    name="mqlab",
    help="Learn message queues and event-driven architecture against real brokers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mqlab {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """mqlab: message queues and event-driven architecture, hands-on."""


# ============================================================================ lab

lab_app = typer.Typer(
    help="The local lab: real brokers as processes on 127.0.0.1 (start, stop, inspect, break).",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")

ServicesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Services (kafka, rabbitmq, nats, sqs, redis, postgres, toxiproxy); none = all.",
        show_default=False,
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors and results.")]
ComposeOption = Annotated[
    bool,
    typer.Option("--compose", help="Use docker compose (compose/docker-compose.yml) instead."),
]


@lab_app.command("install")
@user_errors
def lab_install(services: ServicesArgument = None, quiet: QuietOption = False) -> None:
    """Install what the lab's services need (apt, pip, go install; Kafka jars into the cache)."""
    from mqlab.lab.supervisor import Lab

    _show_progress(quiet)
    Lab().install(services or [])
    typer.echo("installed: ready for `mqlab lab up`")


@lab_app.command("up")
@user_errors
def lab_up(
    services: ServicesArgument = None,
    compose: ComposeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Start services (all when none are named) and wait until they are healthy."""
    _show_progress(quiet)
    if compose:
        from mqlab.lab.compose import compose_up

        compose_up(services or [])
        return
    from mqlab.lab.supervisor import Lab

    rows = Lab().up(services or [])
    _print_status_table(rows, with_action=True)


@lab_app.command("down")
@user_errors
def lab_down(
    services: ServicesArgument = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="Also delete their data dirs.")] = False,
    compose: ComposeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Stop the processes the lab started (all, or those of the named services)."""
    _show_progress(quiet)
    if compose:
        from mqlab.lab.compose import compose_down

        compose_down(services or [], wipe=wipe)
        return
    from mqlab.lab.supervisor import Lab

    messages = Lab().down(services or [], wipe=wipe)
    for message in messages:
        typer.echo(message)
    if not messages:
        typer.echo("nothing to stop")


@lab_app.command("status")
@user_errors
def lab_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every lab process: address, pid, version, health (probed now) and uptime."""
    from mqlab.lab.supervisor import Lab

    _show_progress(quiet=False)
    rows = Lab().status()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "service": row.service,
                        "process": row.process,
                        "address": row.address,
                        "pid": row.pid,
                        "version": row.version,
                        "health": row.health,
                        "uptime": row.uptime,
                    }
                    for row in rows
                ],
                indent=2,
            )
        )
        return
    _print_status_table(rows)


@lab_app.command("logs")
@user_errors
def lab_logs(
    name: Annotated[str, typer.Argument(help="A service (kafka) or process (kafka-broker-2).")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 50,
) -> None:
    """Show the end of a service's or process's log."""
    from mqlab.lab.supervisor import Lab

    lab = Lab()
    logs = lab.log_lines(name, lines)
    for process, text in logs.items():
        if len(logs) > 1:
            typer.echo(f"==> {process} ({lab.paths.log_file(process)}) <==")
        for line in text:
            typer.echo(line)


# ---------------------------------------------------------------------------- lab fault

fault_app = typer.Typer(
    help="Break things on purpose: kill, pause, restart processes; add network toxics.",
    no_args_is_help=True,
)
lab_app.add_typer(fault_app, name="fault")

ProcessArgument = Annotated[
    str, typer.Argument(help="A lab process: kafka-broker-2, rabbitmq, nats, sqs, redis ...")
]
ProxyArgument = Annotated[
    str, typer.Argument(help="A proxy: rabbitmq, nats, sqs, kafka-broker-1 .. kafka-broker-3.")
]


@fault_app.command("kill")
@user_errors
def fault_kill(process: ProcessArgument) -> None:
    """kill -9 a process (and its children): a crash, no clean shutdown."""
    from mqlab.lab import faults

    faults.kill(process)
    typer.echo(f"{process}: killed (bring it back: mqlab lab fault restart {process})")


@fault_app.command("pause")
@user_errors
def fault_pause(process: ProcessArgument) -> None:
    """Freeze a process (SIGSTOP): connections stay open, nothing answers."""
    from mqlab.lab import faults

    faults.pause(process)
    typer.echo(f"{process}: paused (mqlab lab fault resume {process})")


@fault_app.command("resume")
@user_errors
def fault_resume(process: ProcessArgument) -> None:
    """Let a paused process run again (SIGCONT)."""
    from mqlab.lab import faults

    faults.resume(process)
    typer.echo(f"{process}: resumed")


@fault_app.command("restart")
@user_errors
def fault_restart(process: ProcessArgument) -> None:
    """Restart a process with the same data and wait until it is healthy."""
    from mqlab.lab import faults

    _show_progress(quiet=False)
    faults.restart(process)
    typer.echo(f"{process}: restarted")


@fault_app.command("disable")
@user_errors
def fault_disable(proxy: ProxyArgument) -> None:
    """Cut the network to a broker: its proxy closes connections and refuses new ones."""
    from mqlab.lab.faults import Toxics

    Toxics().disable(proxy)
    typer.echo(f"{proxy}: proxy disabled (mqlab lab fault enable {proxy})")


@fault_app.command("enable")
@user_errors
def fault_enable(proxy: ProxyArgument) -> None:
    """Restore a proxy cut with `fault disable`."""
    from mqlab.lab.faults import Toxics

    Toxics().enable(proxy)
    typer.echo(f"{proxy}: proxy enabled")


toxic_app = typer.Typer(
    help="Network toxics on a broker's proxy (latency, timeout, reset_peer, bandwidth ...).",
    no_args_is_help=True,
)
fault_app.add_typer(toxic_app, name="toxic")


@toxic_app.command("add")
@user_errors
def toxic_add(
    proxy: ProxyArgument,
    kind: Annotated[
        str,
        typer.Argument(help="latency, timeout, reset_peer, bandwidth, slow_close or limit_data."),
    ],
    latency: Annotated[int | None, typer.Option(help="latency: delay in ms.")] = None,
    jitter: Annotated[int | None, typer.Option(help="latency: +- random ms.")] = None,
    timeout: Annotated[
        int | None, typer.Option(help="timeout / reset_peer: ms before closing (0 = never).")
    ] = None,
    rate: Annotated[int | None, typer.Option(help="bandwidth: KB/s.")] = None,
    delay: Annotated[int | None, typer.Option(help="slow_close: ms before closing.")] = None,
    bytes_: Annotated[
        int | None, typer.Option("--bytes", help="limit_data: bytes before closing.")
    ] = None,
    stream: Annotated[
        str, typer.Option(help="downstream (broker -> client) or upstream (client -> broker).")
    ] = "downstream",
    toxicity: Annotated[float, typer.Option(help="Share of connections affected (0..1).")] = 1.0,
) -> None:
    """Add a toxic to a proxy; prints its name (for `toxic remove`)."""
    from mqlab.lab.faults import TOXIC_ATTRIBUTES, Toxics

    given = {
        "latency": latency,
        "jitter": jitter,
        "timeout": timeout,
        "rate": rate,
        "delay": delay,
        "bytes": bytes_,
    }
    attributes = {key: value for key, value in given.items() if value is not None}
    if kind in TOXIC_ATTRIBUTES:
        wrong = sorted(set(attributes) - set(TOXIC_ATTRIBUTES[kind]))
        if wrong:
            takes = ", ".join(f"--{name}" for name in TOXIC_ATTRIBUTES[kind])
            raise LabError(f"a {kind} toxic takes {takes}, not --{wrong[0]}")
    name = Toxics().add(proxy, kind, stream=stream, toxicity=toxicity, **attributes)  # type: ignore[arg-type]
    typer.echo(name)


@toxic_app.command("remove")
@user_errors
def toxic_remove(
    proxy: ProxyArgument,
    toxic: Annotated[str, typer.Argument(help="The name `toxic add` printed.")],
) -> None:
    """Remove one toxic from a proxy."""
    from mqlab.lab.faults import Toxics

    Toxics().remove(proxy, toxic)
    typer.echo(f"{proxy}: removed {toxic}")


@toxic_app.command("clear")
@user_errors
def toxic_clear(
    proxy: Annotated[str | None, typer.Argument(help="One proxy; all when omitted.")] = None,
) -> None:
    """Remove every toxic (of one proxy, or of all) and re-enable the proxies."""
    from mqlab.lab.faults import Toxics

    Toxics().clear(proxy)
    typer.echo(f"{proxy or 'all proxies'}: toxics cleared")


@toxic_app.command("list")
@user_errors
def toxic_list() -> None:
    """Every proxy with its upstream, state and toxics."""
    from mqlab.lab.faults import Toxics

    rows: list[list[str | tuple[str, str]]] = []
    for name, proxy in sorted(Toxics().proxies().items()):
        toxics = ", ".join(
            f"{toxic['name']} {toxic.get('attributes', {})}" for toxic in proxy.get("toxics", [])
        )
        rows.append(
            [
                name,
                str(proxy.get("listen", "")),
                str(proxy.get("upstream", "")),
                str(proxy.get("enabled")),
                toxics,
            ]
        )
    _print_table(("proxy", "listen", "upstream", "enabled", "toxics"), rows)


# ============================================================================ doctor


@app.command("doctor")
@user_errors
def doctor() -> None:
    """What is installed, running and reachable, and the exact command that fixes each gap."""
    from mqlab.lab.doctor import diagnose

    report = diagnose()
    styles = {"ok": "green", "missing": "red", "down": "yellow", "info": "dim"}
    _print_table(
        ("check", "state", "detail", "fix"),
        [
            [finding.check, (finding.state, styles[finding.state]), finding.detail, finding.fix]
            for finding in report
        ],
    )
    if any(finding.state == "missing" for finding in report):
        raise typer.Exit(EXIT_USER_ERROR)


# ============================================================================ later groups
# scenarios, run, replay, compare, check and course are added here by their own modules, each
# as a `typer.Typer` group or command in its own section, importing its heavy parts lazily.


# ============================================================================ entry point


def main() -> None:
    """Console-script entry point (``mqlab``)."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if isinstance(error, _user_error_types()):
            sys.exit(_report_error(error))
        raise


if __name__ == "__main__":
    main()
