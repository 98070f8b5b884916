"""Wall time of the whole scenario library, per broker (a benchmark: it prints, it asserts nothing).

Each real broker runs its scenarios in a process of its own, all brokers at the same time: a
run mostly waits on its broker (a group settling, a visibility timeout, a killed broker being
fenced), so the brokers can do that side by side. Within one broker, the scenarios that break
nothing (no fault, toxic or heal step) run two at a time, each in its own namespace, and the
ones that kill, freeze or cut the broker run after them, one after another, alone: a killed
broker would fail a run beside it. ``--serial`` runs one broker after the other and one
scenario at a time, as a learner runs them, for comparison. Goal: the whole real library in
under 3 minutes of wall time on the 2-core project machine; the simulator's in under 10
seconds.

The exit code is 1 when any scenario failed (its verdict, or an error), so the benchmark can
also serve as a smoke test of the library; the times are only printed.

    python benchmarks/bench_scenarios.py sim            # every scenario, every system, simulated
    python benchmarks/bench_scenarios.py kafka nats     # the lab's real brokers (mqlab lab up)
    python benchmarks/bench_scenarios.py all            # sim, then every real broker at once
    python benchmarks/bench_scenarios.py all --serial   # ... one real broker after the other
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from mqlab.course.scenario import SYSTEMS, Scenario
from mqlab.scenarios.library import load_all
from mqlab.scenarios.session import run_scenario

REAL_GOAL_SECONDS = 180
SIDE_BY_SIDE_RUNS = 2
"""How many of one broker's scenarios that break nothing run at the same time."""
BREAKING_ACTIONS = {"fault", "toxic", "heal"}


@dataclass(frozen=True)
class Totals:
    """What one target's runs added up to."""

    target: str
    seconds: float  # the runs' own times, added up
    runs: int
    failures: int


def _breaks_the_broker(scenario: Scenario) -> bool:
    return any(step.action in BREAKING_ACTIONS for step in scenario.steps)


def _run_one(target: str, scenario: Scenario, system: str) -> tuple[float, bool]:
    """One run; prints its line and returns ``(seconds, passed)``."""
    started = time.perf_counter()
    broker = f"sim:{system}" if target == "sim" else system
    result = run_scenario(scenario, broker, seed=0)
    elapsed = time.perf_counter() - started
    verdict = "pass" if result.passed else f"FAIL ({result.error or 'verdict'})"
    # One write per line, flushed: the brokers' processes share this terminal.
    print(f"{result.broker:<14} {scenario.id:<36} {elapsed:8.2f}s  {verdict}", flush=True)
    return elapsed, result.passed


def bench(target: str, *, side_by_side: bool = False) -> Totals:
    """Run every scenario that applies to ``target``; print one line each and the total.

    ``side_by_side``: the scenarios that break nothing run :data:`SIDE_BY_SIDE_RUNS` at a
    time, before the breaking ones (see the module docstring)."""
    runs: list[tuple[Scenario, str]] = []
    for scenario in load_all():
        systems = (
            scenario.systems if target == "sim" else [s for s in scenario.systems if s == target]
        )
        runs += [(scenario, system) for system in systems]
    outcomes: list[tuple[float, bool]] = []
    if side_by_side:
        quiet = [run for run in runs if not _breaks_the_broker(run[0])]
        runs = [run for run in runs if _breaks_the_broker(run[0])]
        with ThreadPoolExecutor(max_workers=SIDE_BY_SIDE_RUNS) as pool:
            outcomes += pool.map(lambda run: _run_one(target, *run), quiet)
    outcomes += [_run_one(target, scenario, system) for scenario, system in runs]
    total = sum(seconds for seconds, _ in outcomes)
    failures = sum(not passed for _, passed in outcomes)
    print(f"{target:<14} {'TOTAL':<36} {total:8.2f}s  ({failures} failed)", flush=True)
    return Totals(target, total, len(outcomes), failures)


def bench_side_by_side(targets: list[str]) -> list[Totals]:
    """Every target in a process of its own, all at once."""
    # spawn: a fresh interpreter per broker, nothing inherited from this one's event loops.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(targets), mp_context=context) as pool:
        return list(pool.map(partial(bench, side_by_side=True), targets))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("targets", nargs="+", choices=["sim", *SYSTEMS, "all"])
    parser.add_argument(
        "--serial", action="store_true", help="run the real brokers one after the other"
    )
    arguments = parser.parse_args()
    targets: list[str] = arguments.targets
    if "all" in targets:
        targets = ["sim", *SYSTEMS]
    targets = list(dict.fromkeys(targets))  # each once, in the order given

    results: list[Totals] = []
    if "sim" in targets:
        results.append(bench("sim"))
    real = [target for target in targets if target != "sim"]
    real_wall = 0.0
    if real:
        started = time.perf_counter()
        if arguments.serial:
            results += [bench(target) for target in real]
        else:
            results += bench_side_by_side(real)
        real_wall = time.perf_counter() - started

    print()
    for totals in results:
        print(
            f"{totals.target:<10} {totals.seconds:8.2f}s  "
            f"{totals.runs} runs, {totals.failures} failed"
        )
    if real:
        how = "one after the other" if arguments.serial else "side by side"
        summed = sum(totals.seconds for totals in results if totals.target != "sim")
        print(
            f"{'real wall':<10} {real_wall:8.2f}s  ({how}; the runs add up to {summed:.2f}s; "
            f"goal: under {REAL_GOAL_SECONDS} s)"
        )
    failures = sum(totals.failures for totals in results)
    if failures:
        print(f"{failures} scenario run(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
