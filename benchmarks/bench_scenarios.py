"""Wall time of the whole scenario library, per broker (a benchmark: it prints, it asserts nothing).

Goals from the scenario issue: every scenario on the real brokers in under 5 minutes in total
on 2 cores, and on the simulator in under 10 seconds.

    python benchmarks/bench_scenarios.py sim            # every scenario, every system, simulated
    python benchmarks/bench_scenarios.py kafka nats     # the lab's real brokers (mqlab lab up)
    python benchmarks/bench_scenarios.py all
"""

from __future__ import annotations

import argparse
import time

from mqlab.course.scenario import SYSTEMS
from mqlab.scenarios.library import load_all
from mqlab.scenarios.session import run_scenario


def bench(target: str) -> float:
    """Run every scenario that applies to ``target``; print one line each and the total."""
    scenarios = load_all()
    total = 0.0
    failures = 0
    for scenario in scenarios:
        systems = (
            scenario.systems if target == "sim" else [s for s in scenario.systems if s == target]
        )
        for system in systems:
            started = time.perf_counter()
            broker = f"sim:{system}" if target == "sim" else system
            result = run_scenario(scenario, broker, seed=0)
            elapsed = time.perf_counter() - started
            total += elapsed
            verdict = "pass" if result.passed else f"FAIL ({result.error or 'verdict'})"
            failures += not result.passed
            print(f"{result.broker:<14} {scenario.id:<36} {elapsed:8.2f}s  {verdict}")
    print(f"{target:<14} {'TOTAL':<36} {total:8.2f}s  ({failures} failed)")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("targets", nargs="+", choices=["sim", *SYSTEMS, "all"])
    targets = parser.parse_args().targets
    if "all" in targets:
        targets = ["sim", *SYSTEMS]
    totals = {target: bench(target) for target in targets}
    print()
    for target, seconds in totals.items():
        print(f"{target:<10} {seconds:8.2f}s")
    real = sum(seconds for target, seconds in totals.items() if target != "sim")
    if real:
        print(f"{'real total':<10} {real:8.2f}s  (goal: under 300 s)")


if __name__ == "__main__":
    main()
