"""mqlab's harness against each broker's own perf tool, on the same lab broker, in one run.

Prints the machine (cores, memory, load), then per system the harness's produce and
end-to-end rates with their latencies, the native tool's rate, and the ratio. This is the
run docs/bench.md records. Speed goals live here, never in the test suite.

    mqlab bench --install                       # PerfTest and nats bench, once
    python benchmarks/bench_brokers.py                      # every system, 20,000 messages
    python benchmarks/bench_brokers.py kafka nats -n 50000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mqlab.bench.harness import run_bench_sync
from mqlab.bench.native import NATIVE_TOOLS, NativeToolError, run_native
from mqlab.bench.report import ratio
from mqlab.bench.workload import TARGETS, BenchInputError, BenchTarget, Workload, parse_targets
from mqlab.brokers.base import BrokerError


def machine() -> str:
    """Cores, memory and load average, as the docs record them."""
    import psutil

    memory = psutil.virtual_memory().total / 2**30
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} cores, {memory:.0f} GiB, load average {load}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("systems", nargs="*", help=f"of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument(
        "--sqs-messages", type=int, default=2_000, help="SQS targets (moto is slow)"
    )
    options = parser.parse_args(argv)
    try:
        targets: list[BenchTarget] = parse_targets(options.systems)
        workload = Workload(options.messages, options.size, options.in_flight)
        sqs_workload = Workload(options.sqs_messages, options.size, options.in_flight)
    except BenchInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"machine: {machine()}", flush=True)
    for target in targets:
        chosen = sqs_workload if target.startswith("sqs") else workload
        try:
            result = run_bench_sync(target, chosen)
        except BrokerError as error:
            print(f"{target}: {error}", file=sys.stderr)
            return 3
        print(
            f"{target:9} mqlab   {chosen.messages:>7,} x {chosen.size} B  in flight "
            f"{chosen.in_flight}  produce {result.produce_rate or 0:>9,.0f} msg/s  "
            f"end-to-end {result.end_to_end_rate or 0:>9,.0f} msg/s  "
            f"ack p50 {result.ack_latency.p50_ms:.1f} p99 {result.ack_latency.p99_ms:.1f} ms  "
            f"e2e p50 {result.end_to_end.p50_ms:.1f} p99 {result.end_to_end.p99_ms:.1f} ms",
            flush=True,
        )
        if target not in NATIVE_TOOLS:
            continue
        try:
            tool = asyncio.run(run_native(target, chosen))
        except (NativeToolError, BrokerError) as error:
            print(f"{target:9} native: {error}", flush=True)
            continue
        latency = (
            f"  {tool.latency_kind} p50 {tool.latency_p50_ms:.1f} p99 {tool.latency_p99_ms:.1f} ms"
            if tool.latency_p50_ms is not None and tool.latency_p99_ms is not None
            else ""
        )
        consumed = f"  consume {tool.consume_rate:,.0f} msg/s" if tool.consume_rate else ""
        share = ratio(result, tool)
        shown = f"  harness/native {share:.2f}x" if share is not None else ""
        print(
            f"{target:9} {tool.tool:<20} produce {tool.produce_rate:>9,.0f} msg/s{consumed}"
            f"{latency}{shown}",
            flush=True,
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
