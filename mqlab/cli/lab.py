"""``mqlab lab ...`` and ``mqlab doctor``: the local lab of real brokers."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mqlab.cli.common import (
    EXIT_USER_ERROR,
    print_status_table,
    print_table,
    show_progress,
    user_errors,
)
from mqlab.cli.options import (
    ComposeOption,
    ProcessArgument,
    ProxyArgument,
    QuietOption,
    ServicesArgument,
)
from mqlab.lab.errors import LabError

lab_app = typer.Typer(
    help="The local lab: real brokers as processes on 127.0.0.1 (start, stop, inspect, break).",
    no_args_is_help=True,
)


@lab_app.command("install")
@user_errors
def lab_install(services: ServicesArgument = None, quiet: QuietOption = False) -> None:
    """Install what the lab's services need (apt, pip, go install; Kafka jars into the cache)."""
    from mqlab.lab.supervisor import Lab

    show_progress(quiet)
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
    show_progress(quiet)
    if compose:
        from mqlab.lab.compose import compose_up

        compose_up(services or [])
        return
    from mqlab.lab.supervisor import Lab

    rows = Lab().up(services or [])
    print_status_table(rows, with_action=True)


@lab_app.command("down")
@user_errors
def lab_down(
    services: ServicesArgument = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="Also delete their data dirs.")] = False,
    compose: ComposeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Stop the processes the lab started (all, or those of the named services)."""
    show_progress(quiet)
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

    show_progress(quiet=False)
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
    print_status_table(rows)
    if any(row.process == "rabbitmq" and row.running for row in rows):
        from mqlab.lab.native.rabbitmq import RabbitMQService

        # Plain `rabbitmqctl` does not reach this node (see `mqlab lab rabbitmqctl --help`).
        shell = RabbitMQService().ctl_shell_command(Lab().paths, ["list_queues"])
        typer.echo(f"\nrabbitmqctl: mqlab lab rabbitmqctl list_queues\n  (the same: {shell})")


@lab_app.command(
    "rabbitmqctl",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@user_errors
def lab_rabbitmqctl(context: typer.Context) -> None:
    """Run rabbitmqctl against the lab's RabbitMQ node; its arguments follow (list_queues ...).

    Plain `rabbitmqctl` cannot reach the lab's private node: Debian's wrapper, run as root,
    switches to the `rabbitmq` user and its Erlang cookie. This runs
    /usr/lib/rabbitmq/bin/rabbitmqctl -n mqlab@localhost with the node's HOME (its cookie) and
    ERL_EPMD_PORT, and exits with rabbitmqctl's exit code. `mqlab lab status` prints the same
    command for a shell.
    """
    import os
    import subprocess

    from mqlab.lab.native.rabbitmq import CTL_SCRIPT, RabbitMQService
    from mqlab.lab.supervisor import Lab

    if not CTL_SCRIPT.is_file():
        raise LabError(f"{CTL_SCRIPT} not found; run: mqlab lab install rabbitmq")
    lab = Lab()
    if lab.record("rabbitmq") is None:
        raise LabError("rabbitmq is not running; run: mqlab lab up rabbitmq")
    service = RabbitMQService()
    completed = subprocess.run(
        service.ctl_command(lab.paths, context.args),
        env={**os.environ, **service.ctl_environment(lab.paths)},
        check=False,
    )
    raise typer.Exit(completed.returncode)


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

    show_progress(quiet=False)  # "stopping", "starting", "healthy after ..." on stderr
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
    print_table(("proxy", "listen", "upstream", "enabled", "toxics"), rows)


DoctorServicesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Services you need (kafka, rabbitmq, ...): each must be installed and running.",
        show_default=False,
    ),
]


@user_errors
def doctor(services: DoctorServicesArgument = None) -> None:
    """What is installed, running and reachable, and the exact command that fixes each gap.

    The simulator needs nothing and is always ready; the real brokers are optional. Exit codes:
    0 when everything asked for is ready (with no SERVICES: the simulator, and nothing the lab
    started is broken); 1 when a named service is not installed or not running, when a lab
    process crashed or does not answer, or for an unknown service name.
    """
    from mqlab.lab.doctor import diagnose, problems, requested_services

    requested_services(services or [])  # an unknown name fails before the slow checks
    report = diagnose()
    styles = {"ok": "green", "missing": "red", "down": "yellow", "broken": "red", "info": "dim"}
    print_table(
        ("check", "state", "detail", "fix"),
        [
            [finding.check, (finding.state, styles[finding.state]), finding.detail, finding.fix]
            for finding in report
        ],
    )
    failing = problems(report, services or [])
    if failing:
        names = ", ".join(dict.fromkeys(f.service or f.check for f in failing))
        typer.echo(f"not ready: {names} (the fix column says how)", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    asked = f"{', '.join(services)} and the simulator" if services else "the simulator"
    typer.echo(f"ready: {asked}")
