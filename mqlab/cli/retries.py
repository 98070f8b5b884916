"""``mqlab retries ...``: the backoff formulas and the retry-under-contention experiment.

``delays`` prints one strategy's delay sequence (what a lesson shows next to the formula);
``contention`` runs the experiment behind "use jitter" on the simulator's model of a shared
row or on a real row in the lab's PostgreSQL, and prints a table, a text plot and the
ranking it measured. Bad values are one line on stderr and exit code 2; a PostgreSQL that is
not running is one line naming ``mqlab lab up postgres`` and exit code 3.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from mqlab.cli.common import EXIT_BROKER_ERROR, EXIT_CONTENT_ERROR, make_console, user_errors

if TYPE_CHECKING:
    from rich.console import Console

    from mqlab.patterns.contention import StrategySummary
    from mqlab.patterns.retry import Strategy

_Arguments = ParamSpec("_Arguments")
_Result = TypeVar("_Result")

EXIT_BAD_INPUT = EXIT_CONTENT_ERROR
"""Bad option values exit like any other bad input of the CLI (``mqlab run`` included): 2."""

SIM_CLIENTS = (10, 20, 50, 100)
POSTGRES_CLIENTS = (5, 10)
SIM_RUNS = 100
POSTGRES_RUNS = 3
PLOT_WIDTH = 40

retries_app = typer.Typer(
    help="Retries, backoff and jitter: the delay formulas and the contention experiment.",
    no_args_is_help=True,
)


class _BadInput(Exception):
    """An option value the command cannot use (reported as one line, exit code 2)."""


def _bad_input_exit(error: _BadInput | ValueError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _milliseconds(option: str, value: float) -> float:
    """A non-negative finite number of milliseconds, as seconds."""
    if not math.isfinite(value) or value < 0:
        raise _BadInput(f"{option} must be a finite number of milliseconds >= 0 (got {value})")
    return value / 1000


def _client_counts(values: list[str]) -> list[int]:
    """``["10", "20,50"]`` -> ``[10, 20, 50]`` (repeated and comma-separated, duplicates once)."""
    counts: list[int] = []
    for value in values:
        for part in value.split(","):
            text = part.strip()
            try:
                count = int(text)
            except ValueError:
                raise _BadInput(f"--clients takes whole numbers (got {text!r})") from None
            if count < 1:
                raise _BadInput(f"--clients must be at least 1 (got {count})")
            if count not in counts:
                counts.append(count)
    if not counts:
        raise _BadInput("--clients needs at least one number")
    return counts


def _strategies(values: list[str] | None) -> tuple[Strategy, ...]:
    from mqlab.patterns.contention import ALL_STRATEGIES
    from mqlab.patterns.retry import parse_strategy

    if not values:
        return ALL_STRATEGIES
    chosen: list[Strategy] = []
    for value in values:
        for part in value.split(","):
            strategy = parse_strategy(part)
            if strategy not in chosen:
                chosen.append(strategy)
    return tuple(chosen)


BaseMsOption = Annotated[
    float, typer.Option("--base-ms", help="Backoff base delay (the first retry's), in ms.")
]
CapMsOption = Annotated[float, typer.Option("--cap-ms", help="Backoff cap: no delay is longer.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@retries_app.command("contention")
@user_errors
def contention(
    clients: Annotated[
        list[str] | None,
        typer.Option(
            "--clients",
            "-n",
            help="Client counts, repeated or comma-separated (default: 10,20,50,100 on sim; "
            "5,10 on postgres).",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[
        int | None,
        typer.Option(
            help=f"Trials per strategy and client count (default {SIM_RUNS} on sim, "
            f"{POSTGRES_RUNS} on postgres).",
            show_default=False,
        ),
    ] = None,
    base_ms: BaseMsOption = 10.0,
    cap_ms: CapMsOption = 1000.0,
    delay_ms: Annotated[
        float, typer.Option("--delay-ms", help="Mean network delay of one request, in ms.")
    ] = 10.0,
    delay_sd_ms: Annotated[
        float, typer.Option("--delay-sd-ms", help="Its standard deviation, in ms.")
    ] = 2.0,
    seed: Annotated[int, typer.Option(help="Seed of the trials (same seed, same numbers).")] = 0,
    against: Annotated[
        str, typer.Option(help="sim (a model of the row, virtual time) or postgres (the lab's).")
    ] = "sim",
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy",
            "-s",
            help="Only these strategies (none, exponential, full-jitter, equal-jitter, "
            "decorrelated-jitter); default all.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """N clients each make one optimistic write to one shared row; compare the strategies.

    Every request takes |Normal(delay, sd)| ms; a write that lost the race is retried (read
    again, write again) after the strategy's delay. Prints mean calls and mean completion time
    per strategy and client count, and which strategy did least work and finished first.
    """
    target = against.strip().lower()
    try:
        if target not in ("sim", "postgres"):
            raise _BadInput(f"--against takes sim or postgres (got {against!r})")
        on_postgres = target == "postgres"
        if clients:
            counts = _client_counts(clients)
        else:
            counts = list(POSTGRES_CLIENTS if on_postgres else SIM_CLIENTS)
        trials = runs if runs is not None else (POSTGRES_RUNS if on_postgres else SIM_RUNS)
        if trials < 1:
            raise _BadInput(f"--runs must be at least 1 (got {trials})")
        base = _milliseconds("--base-ms", base_ms)
        cap = _milliseconds("--cap-ms", cap_ms)
        delay_mean = _milliseconds("--delay-ms", delay_ms)
        delay_sd = _milliseconds("--delay-sd-ms", delay_sd_ms)
        if cap < base:
            raise _BadInput(
                f"--cap-ms ({cap_ms:g}) must not be smaller than --base-ms ({base_ms:g})"
            )
        chosen = _strategies(strategy)
        if on_postgres:
            from mqlab.patterns.contention_postgres import MAX_CLIENTS

            if max(counts) > MAX_CLIENTS:
                raise _BadInput(
                    f"--clients on postgres is at most {MAX_CLIENTS} (one connection each)"
                )
    except (_BadInput, ValueError) as error:
        raise _bad_input_exit(error) from None

    from mqlab.patterns.contention import simulate

    run = simulate
    if on_postgres:
        from functools import partial

        from mqlab.lab.endpoints import Endpoints
        from mqlab.patterns.contention_postgres import run_postgres

        run = _to_completion(partial(run_postgres, dsn=Endpoints.local().postgres_dsn))
    summaries = run(
        chosen,
        counts,
        runs=trials,
        seed=seed,
        base=base,
        cap=cap,
        delay_mean=delay_mean,
        delay_sd=delay_sd,
    )

    if as_json:
        typer.echo(json.dumps([{**s.to_dict(), "against": target} for s in summaries], indent=2))
        return
    console = make_console()
    console.print(
        f"retry under contention on {target}: {trials} trial(s) per cell, backoff base "
        f"{base_ms:g} ms, cap {cap_ms:g} ms, network |Normal({delay_ms:g}, {delay_sd_ms:g})| ms "
        f"per request, seed {seed}",
        highlight=False,
    )
    _print_table(console, summaries)
    _print_plot(console, summaries)
    _print_ranking(console, summaries)


def _to_completion(
    experiment: Callable[_Arguments, Coroutine[Any, Any, _Result]],
) -> Callable[_Arguments, _Result]:
    """``experiment`` run to completion on its own event loop; a broker (PostgreSQL) that
    cannot be reached is one line on stderr and exit code 3."""
    import asyncio

    from mqlab.brokers.base import BrokerError

    def run(*arguments: _Arguments.args, **settings: _Arguments.kwargs) -> _Result:
        try:
            return asyncio.run(experiment(*arguments, **settings))
        except BrokerError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_BROKER_ERROR) from None

    return run


def _print_table(console: Console, summaries: list[StrategySummary]) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("clients", "strategy", "mean calls", "conflicts", "completion ms", "p95 ms"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for summary in summaries:
        table.add_row(
            str(summary.clients),
            summary.strategy.value,
            f"{summary.mean_calls:.1f}",
            f"{summary.mean_conflicts:.1f}",
            f"{summary.mean_completion * 1000:.1f}",
            f"{summary.p95_completion * 1000:.1f}",
        )
    console.print(table)


def bar(value: float, largest: float, width: int = PLOT_WIDTH) -> str:
    """A text bar ``value / largest`` of ``width`` long, in eighths of a character."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = round(value / largest * width * 8)
    full, rest = divmod(max(1, eighths), 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[rest]


def _print_plot(console: Console, summaries: list[StrategySummary]) -> None:
    """Two bar charts per client count: calls and completion time (bars scaled per count)."""
    from rich.text import Text

    counts = sorted({s.clients for s in summaries})
    charts: tuple[tuple[str, Callable[[StrategySummary], float], str], ...] = (
        ("mean calls (work done by the database)", lambda s: s.mean_calls, ""),
        ("mean completion time (until the last client wrote)", lambda s: s.mean_completion, "ms"),
    )
    for title, value, unit in charts:
        console.print(Text(f"\n{title}", style="bold"))
        for clients in counts:
            group = [s for s in summaries if s.clients == clients]
            largest = max(value(s) for s in group)
            console.print(Text(f"  {clients} clients", style="dim"))
            for summary in group:
                shown = value(summary) * (1000 if unit else 1)
                line = Text(f"    {summary.strategy.value:<20} ")
                line.append(bar(value(summary), largest), style="cyan")
                line.append(f" {shown:,.1f}{(' ' + unit) if unit else ''}")
                console.print(line)


def _print_ranking(console: Console, summaries: list[StrategySummary]) -> None:
    from mqlab.patterns.contention import rank

    console.print()
    for ranking in rank(summaries):
        least_work = " < ".join(s.value for s in ranking.by_calls)
        first_done = " < ".join(s.value for s in ranking.by_completion)
        label = f"{ranking.clients} clients:"
        console.print(f"{label} least work  {least_work}", highlight=False)
        console.print(f"{' ' * len(label)} first done  {first_done}", highlight=False)


@retries_app.command("delays")
@user_errors
def delays(
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            "-s",
            help="none, exponential, full-jitter, equal-jitter or decorrelated-jitter.",
        ),
    ] = "full-jitter",
    attempts: Annotated[
        int, typer.Option(help="How many retries (attempt 0 is the first retry).")
    ] = 8,
    base_ms: BaseMsOption = 100.0,
    cap_ms: CapMsOption = 10_000.0,
    seed: Annotated[int, typer.Option(help="Seed of the jitter (same seed, same delays).")] = 0,
    as_json: JsonOption = False,
) -> None:
    """One strategy's delays, retry by retry: the delay drawn, the longest it could have
    been, and the time waited so far."""
    import random

    from mqlab.patterns.retry import Backoff, parse_strategy

    try:
        chosen = parse_strategy(strategy)
        if not 1 <= attempts <= 10_000:
            raise _BadInput(f"--attempts must be between 1 and 10000 (got {attempts})")
        base = _milliseconds("--base-ms", base_ms)
        cap = _milliseconds("--cap-ms", cap_ms)
        if cap < base:
            raise _BadInput(
                f"--cap-ms ({cap_ms:g}) must not be smaller than --base-ms ({base_ms:g})"
            )
        backoff = Backoff(chosen, base, cap)
    except (_BadInput, ValueError) as error:
        raise _bad_input_exit(error) from None

    drawn = backoff.delays(attempts, random.Random(seed))
    rows = []
    waited = 0.0
    for attempt, delay in enumerate(drawn):
        waited += delay
        rows.append(
            {
                "attempt": attempt,
                "delay_ms": round(delay * 1000, 3),
                "longest_ms": round(backoff.longest_delay(attempt) * 1000, 3),
                "waited_ms": round(waited * 1000, 3),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from mqlab.cli.common import print_table

    make_console().print(
        f"{chosen.value}: base {base_ms:g} ms, cap {cap_ms:g} ms, seed {seed} "
        "(attempt 0 is the first retry)",
        highlight=False,
    )
    print_table(
        ("attempt", "delay ms", "longest ms", "waited ms"),
        [
            [
                str(row["attempt"]),
                f"{row['delay_ms']:.1f}",
                f"{row['longest_ms']:.1f}",
                f"{row['waited_ms']:.1f}",
            ]
            for row in rows
        ],
    )
