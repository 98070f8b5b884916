"""How long the retry-under-contention experiment takes on the simulator (a benchmark: it prints,
it asserts nothing).

The goal from the pattern issue: ``mqlab retries contention`` on sim at 10, 20, 50 and 100
clients finishes in seconds. This times the discrete-event model per client count and
strategy (the CLI's defaults: 100 trials per cell), then the asyncio clients of the same model
on the virtual-time loop (what a scenario step runs, with observations) for comparison.

    python benchmarks/bench_retries.py               # defaults
    python benchmarks/bench_retries.py --runs 1000   # "thousands of runs"
"""

from __future__ import annotations

import argparse
import time

from mqlab.brokers.sim.clock import run_virtual
from mqlab.patterns.contention import (
    ALL_STRATEGIES,
    ContentionSettings,
    MemoryRow,
    run_trial,
    simulate,
    trial_rng,
)

DEFAULTS = {"base": 0.010, "cap": 1.0, "delay_mean": 0.010, "delay_sd": 0.002}


def bench_model(client_counts: list[int], runs: int) -> float:
    """Time :func:`simulate` cell by cell; print one line per cell and the total."""
    total = 0.0
    trials = 0
    calls = 0.0
    for clients in client_counts:
        for strategy in ALL_STRATEGIES:
            started = time.perf_counter()
            (summary,) = simulate([strategy], [clients], runs=runs, seed=0, **DEFAULTS)
            elapsed = time.perf_counter() - started
            total += elapsed
            trials += runs
            calls += summary.mean_calls * runs
            print(
                f"model  {clients:>4} clients  {strategy.value:<20} {runs:>5} trials  "
                f"{elapsed:7.3f}s  ({summary.mean_calls:8.1f} calls per trial)"
            )
    print(
        f"model  TOTAL {trials} trials, {calls:,.0f} simulated calls: {total:.2f}s "
        f"({trials / total:,.0f} trials/s, {calls / total:,.0f} calls/s)"
    )
    return total


def bench_tasks(clients: int, runs: int) -> float:
    """The asyncio clients on the virtual loop, for comparison (one client count)."""
    started = time.perf_counter()
    calls = 0
    for strategy in ALL_STRATEGIES:
        settings = ContentionSettings(clients, **DEFAULTS)
        for run in range(runs):
            result = run_virtual(
                run_trial(MemoryRow(), strategy, settings, trial_rng(0, strategy, clients, run))
            )
            calls += result.calls
    elapsed = time.perf_counter() - started
    trials = runs * len(ALL_STRATEGIES)
    print(
        f"tasks  {clients:>4} clients  all strategies {trials:>5} trials  {elapsed:7.3f}s  "
        f"({calls / elapsed:,.0f} calls/s on the virtual-time loop)"
    )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="trials per cell (default 100)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[10, 20, 50, 100], help="client counts"
    )
    parser.add_argument(
        "--task-runs", type=int, default=20, help="trials per strategy for the asyncio clients"
    )
    arguments = parser.parse_args()
    bench_model(arguments.clients, arguments.runs)
    bench_tasks(min(arguments.clients), arguments.task_runs)


if __name__ == "__main__":
    main()
