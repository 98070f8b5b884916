"""The ``mqlab`` command line (Typer).

Layout: one section per command group, each group a ``typer.Typer`` added to the root ``app``.
Heavy imports (broker clients, the TUI, even the lab's supervisor) happen *inside* the command
functions, so ``mqlab --help`` starts fast and never imports textual, aiokafka or boto3.

Errors a learner can cause (:class:`~mqlab.lab.errors.LabError`, ``BrokerError``) and Ctrl-C
end as one line on stderr and a non-zero exit code, never a traceback (:func:`user_errors`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from mqlab import __version__
from mqlab.lab.errors import LabError

if TYPE_CHECKING:
    from rich.console import Console

    from mqlab.lab.supervisor import ProcessStatus
    from mqlab.observe.events import Observation

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

    Without a command, opens the course (on the simulator).
    """
    if context.invoked_subcommand is None:
        course(broker="sim")


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


# ============================================================================ scenarios

scenarios_app = typer.Typer(
    help="The scenario library: fault scripts that run on real brokers and on the simulator.",
    no_args_is_help=True,
)
app.add_typer(scenarios_app, name="scenarios")

EXIT_VERDICT_FAILED = 1
EXIT_CONTENT_ERROR = 2
EXIT_BROKER_ERROR = 3

BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        help="kafka, rabbitmq, sqs, nats (the lab's real brokers), sim (the simulator, "
        "for the scenario's first system) or sim:<system>.",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Simulator seed (same seed, same run).")]


def _content_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Bad content files and unknown scenarios: one line, exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from mqlab.brokers.registry import UnknownBroker
        from mqlab.course.loader import ContentError
        from mqlab.scenarios.runner import ScenarioError

        try:
            return command(*args, **kwargs)
        except (ContentError, ScenarioError, UnknownBroker) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_CONTENT_ERROR) from None

    return wrapper


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
@_content_errors
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
    _console().print(table)


@scenarios_app.command("show")
@user_errors
@_content_errors
def scenarios_show(scenario: Annotated[str, typer.Argument(help="Scenario id or file.")]) -> None:
    """Show a scenario: what it does, its steps and the question it asks."""
    from mqlab.scenarios.library import find

    found = find(scenario)
    console = _console()
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
    console = _console()
    console.print(f"\n[bold]Predict:[/bold] {predict.question}")
    for index, choice in enumerate(predict.choices, start=1):
        console.print(f"  {index}. {choice}")
    answer = typer.prompt("your answer", type=int, default=1)
    return int(answer) - 1


@app.command("run")
@user_errors
@_content_errors
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
    console = _console()
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


@app.command("replay")
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
    console = _console()
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


@app.command("compare")
@user_errors
@_content_errors
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
    console = _console()
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


# ============================================================================ course


@app.command("course")
@user_errors
@_content_errors
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
    console = _console()
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
        with contextlib.suppress(typer.Exit):
            run(scenario.id, broker=target, seed=0, record=None, predict=True, quiet=False)


# ============================================================================ later groups
# check (exercises) and the full-screen course (TUI) are added here, each in its own section,
# importing its heavy parts lazily.


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
