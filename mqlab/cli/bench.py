"""``mqlab bench`` and ``mqlab compare --table``: the brokers measured, the table verified.

Presentation only: the runs are :mod:`mqlab.bench` (the harness, the native tools, the
experiments), the verdicts :mod:`mqlab.bench.table`. Exit codes: 0 done, 2 bad input, 3 a
broker could not be reached or a run failed, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Annotated

import typer

from mqlab.cli.common import EXIT_BROKER_ERROR, EXIT_CONTENT_ERROR, make_console, user_errors

if TYPE_CHECKING:
    from mqlab.bench.native import NativeResult
    from mqlab.bench.workload import BenchResult, BenchTarget, Workload

TABLE_MESSAGES = 5_000
"""Messages of the throughput runs behind ``compare --table`` (a tenth on SQS: moto is slow)."""


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _workload(messages: int, size: int, in_flight: int) -> Workload:
    from mqlab.bench.workload import BenchInputError, Workload

    try:
        return Workload(messages=messages, size=size, in_flight=in_flight)
    except BenchInputError as error:
        raise _fail(str(error), EXIT_CONTENT_ERROR) from None


def _native_or_note(
    target: BenchTarget, workload: Workload, notes: list[str]
) -> NativeResult | None:
    """The native tool's run, or None with a note saying why there is none."""
    import asyncio

    from mqlab.bench.native import NATIVE_TOOLS, NativeToolError, run_native
    from mqlab.lab.paths import lab_paths
    from mqlab.lab.perftools import status

    if target not in NATIVE_TOOLS:
        return None
    tool = next((tool for tool in status(lab_paths()) if tool.system == target), None)
    if tool is not None and not tool.ready:
        notes.append(f"{target}: {tool.tool} is not installed (run: {tool.fix})")
        return None
    try:
        return asyncio.run(run_native(target, workload))
    except NativeToolError as error:
        notes.append(f"{target}: {error}")
        return None


def _run_all(
    targets: list[BenchTarget],
    workload: Workload,
    *,
    sim: bool,
    native: bool,
    show_progress: bool,
    notes: list[str],
) -> tuple[list[BenchResult], dict[BenchTarget, NativeResult]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mqlab.bench.harness import run_bench_sync

    results: list[BenchResult] = []
    natives: dict[BenchTarget, NativeResult] = {}
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        console=make_console(),
        disable=not show_progress,
        transient=False,
    )
    with progress:
        for target in targets:
            task = progress.add_task(
                f"{target}{' (sim)' if sim else ''}: mqlab",
                total=workload.messages * 2,
                detail="",
            )

            def advance(sent: int, received: int, task_id: object = task) -> None:
                progress.update(
                    task_id,  # type: ignore[arg-type]
                    completed=sent + received,
                    detail=f"sent {sent:,} received {received:,}",
                )

            results.append(run_bench_sync(target, workload, simulated=sim, progress=advance))
            progress.update(task, completed=workload.messages * 2)
            if native and not sim:
                tool_task = progress.add_task(
                    f"{target}: native tool", total=None, detail="running"
                )
                found = _native_or_note(target, workload, notes)
                progress.update(tool_task, total=1, completed=1, detail="" if found else "none")
                if found is not None:
                    natives[target] = found
    return results, natives


@user_errors
def bench(
    systems: Annotated[
        list[str] | None,
        typer.Argument(
            help="kafka, rabbitmq, sqs, sqs-fifo, nats (none = all).", show_default=False
        ),
    ] = None,
    messages: Annotated[int, typer.Option("--messages", "-n", help="Messages per system.")] = (
        10_000
    ),
    size: Annotated[int, typer.Option("--size", help="Bytes per message.")] = 100,
    in_flight: Annotated[
        int, typer.Option("--in-flight", help="Sends awaiting their acknowledgement at once.")
    ] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    sim: Annotated[
        bool, typer.Option("--sim", help="On the simulator (virtual time: tests the harness).")
    ] = False,
    native: Annotated[
        bool,
        typer.Option(
            "--native/--no-native",
            help="Also run the broker's own perf tool on the same broker (when installed).",
        ),
    ] = True,
    install: Annotated[
        bool,
        typer.Option("--install", help="Install the native perf tools (PerfTest, nats bench)."),
    ] = False,
) -> None:
    """Throughput and latency (p50, p99) of the same workload on every system, beside the
    brokers' own perf tools: what is the broker, and what is the client.

    Exit codes: 0 done, 2 bad input, 3 a broker is not reachable or a run failed.
    """
    from mqlab.bench.report import bar_chart, results_table, settings_text
    from mqlab.bench.workload import BenchInputError, parse_targets
    from mqlab.brokers.base import BrokerError

    if install:
        from mqlab.cli.common import show_progress
        from mqlab.lab.paths import lab_paths
        from mqlab.lab.perftools import install as install_tools

        show_progress(quiet=as_json)
        install_tools(lab_paths())
        typer.echo("installed: ProducerPerformance (with Kafka's jars), PerfTest, nats bench")
        if not systems:
            return
    try:
        targets = parse_targets(systems or [])
    except BenchInputError as error:
        raise _fail(str(error), EXIT_CONTENT_ERROR) from None
    workload = _workload(messages, size, in_flight)
    notes: list[str] = []
    try:
        results, natives = _run_all(
            targets, workload, sim=sim, native=native, show_progress=not as_json, notes=notes
        )
    except BrokerError as error:
        raise _fail(str(error).splitlines()[0], EXIT_BROKER_ERROR) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "results": [result.to_json_dict() for result in results],
                    "native": {t: n.to_json_dict() for t, n in natives.items()},
                    "notes": notes,
                },
                sort_keys=True,
            )
        )
        return
    console = make_console()
    console.print()
    console.print(results_table(results, natives))
    console.print()
    console.print(bar_chart(results, natives))
    for result in results:
        console.print(settings_text(result))
    for target, tool in natives.items():
        console.print(f"[bold]{tool.tool}[/bold] ({target}):", highlight=False)
        for name, value in tool.settings:
            console.print(f"  {name}: {value}", highlight=False)
    for note in notes:
        console.print(f"[yellow]note: {note}[/yellow]", highlight=False)


def verified_table(*, sim: bool, as_json: bool, messages: int) -> None:
    """``mqlab compare --table``: run every experiment, measure throughput, print the table.

    Raises:
        typer.Exit: 3 when a run could not complete (its cells say so too).
    """
    from mqlab.bench.experiments import collect
    from mqlab.bench.harness import run_bench_sync
    from mqlab.bench.report import comparison_view
    from mqlab.bench.table import Experiment, build_table, table_json
    from mqlab.bench.workload import TARGETS
    from mqlab.brokers.base import BrokerError

    console = make_console()
    notes: list[str] = []
    failures: list[str] = []

    def measure(target: BenchTarget) -> BenchResult | None:
        if messages <= 0 or sim:
            return None
        count = max(1, messages // 10) if target.startswith("sqs") else messages
        try:
            return run_bench_sync(target, _workload(count, 100, 256))
        except BrokerError as error:
            failures.append(f"bench {target}: {str(error).splitlines()[0]}")
            return None

    def native_tool(target: BenchTarget) -> NativeResult | None:
        if messages <= 0 or sim:
            return None
        return _native_or_note(target, _workload(messages, 100, 256), notes)

    status = None if as_json else console.status("running the table's experiments ...")

    def announce(experiment: Experiment) -> None:
        if status is not None:
            status.update(f"{experiment.scenario} for {experiment.target} ...")

    with status if status is not None else contextlib.nullcontext():
        evidence = collect(
            simulated=sim, targets=list(TARGETS), bench=measure, native=native_tool, on_run=announce
        )
    cells = build_table(
        evidence.runs,
        bench=evidence.bench,
        native=evidence.native,
        footprints=evidence.footprints,
    )
    failures += [
        f"{run.scenario} on {run.broker}: {run.error}"
        for run in evidence.runs.values()
        if run.error is not None
    ]
    if as_json:
        typer.echo(json.dumps({**table_json(cells), "notes": notes, "errors": failures}))
    else:
        console.print(comparison_view(cells))
        for note in notes:
            console.print(f"[yellow]note: {note}[/yellow]", highlight=False)
        for failure in failures:
            console.print(f"[red]{failure}[/red]", highlight=False)
    if failures:
        raise typer.Exit(EXIT_BROKER_ERROR)
