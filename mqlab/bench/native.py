"""The brokers' own perf tools, run on the same broker as the harness, for the ratio.

If mqlab's harness reaches 40% of what Kafka's ProducerPerformance does on the same cluster,
the rest is the client (Python, one event loop), not the broker. Each tool runs the workload
the harness runs, as far as it can be told to:

- Kafka: ``ProducerPerformance`` (acks=all, linger.ms 5, records of the same size, a topic of
  three partitions with replication factor 3), then ``ConsumerPerformance`` reading them back.
- RabbitMQ: ``PerfTest`` with one producer and one consumer, persistent messages, publisher
  confirms with the same bound of outstanding confirms, a durable queue, prefetch 1000 and an
  ack per message (multi-ack off).
- NATS: ``nats bench js pub async`` (asynchronous JetStream publishes, ``--batch`` = the
  in-flight bound, a file-backed stream), then ``nats bench js fetch`` reading them back.

Each tool addresses its broker by the lab's endpoints (the same Toxiproxy proxies the harness
goes through) and works inside an adapter's namespace, so what it creates is deleted with the
namespace afterwards. The parsers of their summaries are plain functions (tested on the tools'
real output) that raise :class:`NativeToolError` naming the tool when the text is not what
they expect.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from mqlab.bench.harness import KAFKA_LINGER_MS, KAFKA_PARTITIONS, rabbitmq_prefetch
from mqlab.bench.workload import BenchTarget, Workload
from mqlab.brokers.base import BrokerError
from mqlab.lab.endpoints import Endpoints
from mqlab.lab.spec import LabPaths

TOOL_TIMEOUT = 600.0
"""Seconds one tool may run before it is stopped (a broker that stopped answering)."""
JAVA_HEAP = "-Xmx512m"


class NativeToolError(BrokerError):
    """A perf tool is missing, failed, or printed something its parser does not know."""


@dataclass(frozen=True, slots=True)
class NativeResult:
    """What one broker's own tool measured on the workload."""

    target: BenchTarget
    tool: str
    """``ProducerPerformance``, ``PerfTest``, ``nats bench``."""
    produce_rate: float
    """Messages acknowledged per second (the tool's own number)."""
    consume_rate: float | None = None
    """Messages consumed per second, when the tool measures it."""
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_kind: str = ""
    """What the latency is: ``ack`` (send to acknowledgement) or ``end-to-end``."""
    commands: tuple[str, ...] = ()
    """The commands that ran (for the learner to run again by hand)."""
    settings: tuple[tuple[str, str], ...] = field(default=())

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "tool": self.tool,
            "produce_rate": round(self.produce_rate, 1),
            "consume_rate": None if self.consume_rate is None else round(self.consume_rate, 1),
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_kind": self.latency_kind,
            "commands": list(self.commands),
            "settings": dict(self.settings),
        }


# --- parsers ------------------------------------------------------------------------------

_PP_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec .*?"
    r"(?P<p50>[\d.]+) ms 50th, (?P<p95>[\d.]+) ms 95th, (?P<p99>[\d.]+) ms 99th"
)


def parse_producer_performance(output: str) -> tuple[float, float, float]:
    """ProducerPerformance's final line: (records/s, p50 ms, p99 ms).

    Raises:
        NativeToolError: no summary line in ``output``.
    """
    for line in reversed(output.splitlines()):
        match = _PP_SUMMARY.search(line)
        if match:
            return float(match["rate"]), float(match["p50"]), float(match["p99"])
    raise NativeToolError(f"ProducerPerformance printed no summary: {_tail(output)}")


def parse_consumer_performance(output: str) -> float:
    """ConsumerPerformance's CSV summary: messages consumed per second (``nMsg.sec``).

    Raises:
        NativeToolError: no header with ``nMsg.sec`` followed by a row of values.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines[:-1]):
        columns = [column.strip() for column in line.split(",")]
        if "nMsg.sec" in columns:
            values = [value.strip() for value in lines[index + 1].split(",")]
            try:
                return float(values[columns.index("nMsg.sec")])
            except (IndexError, ValueError):
                break
    raise NativeToolError(f"ConsumerPerformance printed no summary: {_tail(output)}")


_PERFTEST_SENDING = re.compile(r"sending rate avg: (?P<rate>[\d.]+) msg/s")
_PERFTEST_RECEIVING = re.compile(r"receiving rate avg: (?P<rate>[\d.]+) msg/s")
_PERFTEST_LATENCY = re.compile(
    r"consumer latency min/median/75th/95th/99th (?P<values>[\d/.]+) (?P<unit>µs|ms|us)"
)


def parse_perftest(output: str) -> tuple[float, float, float | None, float | None]:
    """PerfTest's summary: (sent/s, received/s, p50 ms, p99 ms of the consumer latency).

    Raises:
        NativeToolError: no sending or receiving rate in ``output``.
    """
    sending = _PERFTEST_SENDING.search(output)
    receiving = _PERFTEST_RECEIVING.search(output)
    if sending is None or receiving is None:
        raise NativeToolError(f"PerfTest printed no summary: {_tail(output)}")
    p50 = p99 = None
    latencies = list(_PERFTEST_LATENCY.finditer(output))
    if latencies:
        last = latencies[-1]
        values = [float(value) for value in last["values"].split("/")]
        scale = 1.0 if last["unit"] == "ms" else 0.001
        if len(values) == 5:
            p50, p99 = values[1] * scale, values[4] * scale
    return float(sending["rate"]), float(receiving["rate"]), p50, p99


_NATS_RATE = re.compile(r"(?P<rate>[\d,]+(?:\.\d+)?) msgs/sec")
_NATS_LATENCY = re.compile(
    r"(?P<name>p50|p99|50th|99th)[^\d]*(?P<value>[\d.]+)\s*(?P<unit>ms|µs|us|s)\b", re.IGNORECASE
)


def parse_nats_bench(output: str) -> float:
    """``nats bench``'s aggregated rate in messages per second (the last ``msgs/sec``).

    Raises:
        NativeToolError: no rate in ``output``.
    """
    rates = _NATS_RATE.findall(output)
    if not rates:
        raise NativeToolError(f"nats bench printed no rate: {_tail(output)}")
    return float(rates[-1].replace(",", ""))


def _tail(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:]) if lines else "(nothing)"


# --- running them -------------------------------------------------------------------------


async def _run_tool(argv: list[str], tool: str) -> str:
    """Run one tool to the end (bounded) and return its output (stdout and stderr).

    Raises:
        NativeToolError: it cannot start, exits non-zero, or outlives :data:`TOOL_TIMEOUT`.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as error:
        raise NativeToolError(f"cannot run {tool} ({argv[0]}): {error.strerror}") from None
    try:
        async with asyncio.timeout(TOOL_TIMEOUT):
            output, _ = await process.communicate()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    text = output.decode("utf-8", "replace")
    if process.returncode != 0:
        raise NativeToolError(f"{tool} exited with {process.returncode}: {_tail(text)}")
    return text


def _java(paths_glob: str, main: str, arguments: list[str]) -> list[str]:
    from mqlab.lab.kafka import find_java

    java = find_java()
    if java is None:
        raise NativeToolError("no java found (run: mqlab lab install kafka)")
    return [java, JAVA_HEAP, "-cp", paths_glob, main, *arguments]


async def kafka_native(workload: Workload, paths: LabPaths, endpoints: Endpoints) -> NativeResult:
    """ProducerPerformance then ConsumerPerformance on a topic like the harness's."""
    from mqlab.brokers.kafka.client import KafkaBroker
    from mqlab.lab.perftools import (
        KAFKA_CONSUMER_PERFORMANCE,
        KAFKA_PRODUCER_PERFORMANCE,
        kafka_tools_dir,
    )

    lib = kafka_tools_dir(paths)
    if not lib.is_dir():
        raise NativeToolError(f"no Kafka jars in {lib} (run: mqlab lab install kafka)")
    classpath = f"{lib}/*"
    async with KafkaBroker(endpoints=endpoints) as broker:
        topic = await broker.create_topic(
            broker.qualify("perf"),
            partitions=KAFKA_PARTITIONS,
            replication_factor=3,
            config={"min.insync.replicas": "2"},
        )
        produce = _java(
            classpath,
            KAFKA_PRODUCER_PERFORMANCE,
            [
                "--topic",
                topic.name,
                "--num-records",
                str(workload.messages),
                "--record-size",
                str(workload.size),
                "--throughput",
                "-1",
                "--producer-props",
                f"bootstrap.servers={endpoints.kafka_bootstrap}",
                "acks=all",
                f"linger.ms={KAFKA_LINGER_MS}",
                f"max.in.flight.requests.per.connection={min(workload.in_flight, 5)}",
            ],
        )
        rate, p50, p99 = parse_producer_performance(await _run_tool(produce, "ProducerPerformance"))
        group = broker.qualify("perf-readers")
        consume = _java(
            classpath,
            KAFKA_CONSUMER_PERFORMANCE,
            [
                "--bootstrap-server",
                endpoints.kafka_bootstrap,
                "--topic",
                topic.name,
                "--group",
                group,
                "--messages",
                str(workload.messages),
                "--timeout",
                "60000",
            ],
        )
        consume_rate = parse_consumer_performance(await _run_tool(consume, "ConsumerPerformance"))
    return NativeResult(
        target="kafka",
        tool="ProducerPerformance",
        produce_rate=rate,
        consume_rate=consume_rate,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_kind="ack",
        commands=(shlex.join(produce), shlex.join(consume)),
        settings=(
            ("producer", f"Java client, acks=all, linger.ms {KAFKA_LINGER_MS}, no rate limit"),
            ("consumer", "ConsumerPerformance afterwards (not side by side)"),
        ),
    )


async def rabbitmq_native(
    workload: Workload, paths: LabPaths, endpoints: Endpoints
) -> NativeResult:
    """PerfTest: one producer and one consumer side by side, as in the harness."""
    from mqlab.brokers.rabbitmq.client import RabbitMQBroker
    from mqlab.lab.perftools import PERFTEST_MAIN, perftest_dir, perftest_ready

    if not perftest_ready(paths):
        raise NativeToolError("PerfTest is not installed (run: mqlab bench --install)")
    async with RabbitMQBroker(endpoints=endpoints) as broker:
        queue = broker.qualify("perf")
        argv = _java(
            f"{perftest_dir(paths)}/*",
            PERFTEST_MAIN,
            [
                "--uri",
                endpoints.rabbitmq_url.rstrip("/"),
                "--producers",
                "1",
                "--consumers",
                "1",
                "--size",
                str(workload.size),
                "--pmessages",
                str(workload.messages),
                "--cmessages",
                str(workload.messages),
                "--confirm",
                str(workload.in_flight),
                "--flag",
                "persistent",
                "--qos",
                str(rabbitmq_prefetch(workload)),
                "--queue",
                queue,
                "--auto-delete",
                "false",
            ],
        )
        sent, received, p50, p99 = parse_perftest(await _run_tool(argv, "PerfTest"))
        await broker.delete_queue("perf")
    return NativeResult(
        target="rabbitmq",
        tool="PerfTest",
        produce_rate=sent,
        consume_rate=received,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_kind="end-to-end",
        commands=(shlex.join(argv),),
        settings=(
            (
                "producer",
                f"Java client, confirms with {workload.in_flight} outstanding, persistent",
            ),
            (
                "consumer",
                f"side by side, prefetch {rabbitmq_prefetch(workload)}, an ack per message",
            ),
        ),
    )


async def nats_native(workload: Workload, paths: LabPaths, endpoints: Endpoints) -> NativeResult:
    """``nats bench js pub async`` then ``nats bench js fetch`` on a file-backed stream."""
    from mqlab.brokers.nats.client import NatsBroker
    from mqlab.lab.perftools import nats_cli_path, nats_cli_ready

    if not nats_cli_ready(paths):
        raise NativeToolError("the NATS CLI is not installed (run: mqlab bench --install)")
    cli = str(nats_cli_path(paths))
    async with NatsBroker(endpoints=endpoints) as broker:
        stream = broker.qualify("perf")
        subject = broker.subject("perf")
        common = [
            "--server",
            endpoints.nats_url,
            "--no-context",
        ]
        publish = [
            cli,
            *common,
            "bench",
            "js",
            "pub",
            "async",
            subject,
            "--msgs",
            str(workload.messages),
            "--size",
            f"{workload.size}B",
            "--batch",
            str(workload.in_flight),
            "--create",
            "--storage",
            "file",
            "--stream",
            stream,
            "--no-progress",
        ]
        produce_rate = parse_nats_bench(await _run_tool(publish, "nats bench js pub"))
        fetch = [
            cli,
            *common,
            "bench",
            "js",
            "fetch",
            "--msgs",
            str(workload.messages),
            "--stream",
            stream,
            "--no-progress",
        ]
        consume_rate: float | None
        try:
            consume_rate = parse_nats_bench(await _run_tool(fetch, "nats bench js fetch"))
        except NativeToolError:
            consume_rate = None
    return NativeResult(
        target="nats",
        tool="nats bench",
        produce_rate=produce_rate,
        consume_rate=consume_rate,
        commands=(shlex.join(publish), shlex.join(fetch)),
        settings=(
            ("producer", f"Go client, async publishes in batches of {workload.in_flight}"),
            ("consumer", "nats bench js fetch afterwards (not side by side)"),
        ),
    )


NATIVE_TOOLS: dict[BenchTarget, str] = {
    "kafka": "ProducerPerformance",
    "rabbitmq": "PerfTest",
    "nats": "nats bench",
}
"""The targets with a native tool (SQS is a service: AWS ships no load generator for it)."""


async def run_native(
    target: BenchTarget,
    workload: Workload,
    paths: LabPaths | None = None,
    endpoints: Endpoints | None = None,
) -> NativeResult:
    """Run ``target``'s own tool on the lab's broker.

    Raises:
        NativeToolError: the target has no tool, it is not installed, or it failed.
        BrokerUnavailable: the broker is not reachable.
    """
    from mqlab.lab.paths import lab_paths

    chosen_paths = paths or lab_paths()
    chosen_endpoints = endpoints or Endpoints.local()
    if target == "kafka":
        return await kafka_native(workload, chosen_paths, chosen_endpoints)
    if target == "rabbitmq":
        return await rabbitmq_native(workload, chosen_paths, chosen_endpoints)
    if target == "nats":
        return await nats_native(workload, chosen_paths, chosen_endpoints)
    raise NativeToolError(f"{target} has no native perf tool (it is a service, not a program)")
