"""Throughput and produce-to-consume latency of mqlab's real adapters against the local lab.

One ``bench_<system>(messages, size)`` per system, all measuring the same workload: one producer
and one consumer running at the same time through the mqlab adapter (so its bookkeeping and
observations are included), ``messages`` messages of ``size`` bytes. Each body starts with the
send time (``time.perf_counter_ns``), so the consumer measures produce-to-consume latency per
message. Printed: messages/s (first send to last receive) and latency p50/p99 in milliseconds.

Speed goals live here, never in the test suite. Run against a started lab, for example::

    mqlab lab up rabbitmq
    python benchmarks/bench_adapters.py rabbitmq               # 100k x 100 bytes
    python benchmarks/bench_adapters.py rabbitmq --messages 10000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mqlab.brokers.base import BrokerError

TIMESTAMP = struct.Struct("!q")


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What one benchmark measured."""

    system: str
    messages: int
    size: int
    seconds: float
    latencies_ms: list[float]
    notes: str = ""

    def report(self) -> str:
        """One line per result: rate and latency percentiles."""
        ordered = sorted(self.latencies_ms)
        p50 = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        rate = self.messages / self.seconds
        notes = f"  ({self.notes})" if self.notes else ""
        return (
            f"{self.system:9} {self.messages:>8} x {self.size} B  {rate:>10,.0f} msg/s  "
            f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  total {self.seconds:6.2f} s{notes}"
        )


def stamped_body(size: int) -> bytes:
    """A body of ``size`` bytes starting with the current perf_counter_ns."""
    stamp = TIMESTAMP.pack(time.perf_counter_ns())
    return stamp + b"x" * max(0, size - len(stamp))


def latency_ms(body: bytes) -> float:
    """Milliseconds since the body was stamped."""
    (sent,) = TIMESTAMP.unpack_from(body)
    return float(time.perf_counter_ns() - sent) / 1e6


# --- RabbitMQ -----------------------------------------------------------------------------------

# Publishes awaiting their confirm at once. One at a time, every message would wait a full
# round trip for its confirm; a window is how confirming publishers get throughput.
RABBITMQ_CONFIRM_WINDOW = 256
RABBITMQ_PREFETCH = 1000


async def bench_rabbitmq(messages: int, size: int) -> BenchResult:
    """Persistent messages into a durable classic queue, publisher confirms on, a consumer
    acking each message (prefetch 1000), both through :class:`RabbitMQBroker`."""
    from mqlab.brokers.rabbitmq import RabbitMQBroker

    async with RabbitMQBroker() as broker:
        await broker.declare_queue("bench")
        consumer = await broker.consume("bench", prefetch=RABBITMQ_PREFETCH)
        latencies: list[float] = []
        window = asyncio.Semaphore(RABBITMQ_CONFIRM_WINDOW)

        failures: list[BrokerError] = []

        async def publish_one() -> None:
            try:
                await broker.publish("", "bench", stamped_body(size))
            except BrokerError as error:
                failures.append(error)
            finally:
                window.release()

        async def produce() -> None:
            pending: set[asyncio.Task[None]] = set()
            for _ in range(messages):
                await window.acquire()
                if failures:
                    raise failures[0]
                task = asyncio.create_task(publish_one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            if failures:
                raise failures[0]

        async def consume() -> None:
            while len(latencies) < messages:
                delivery = await consumer.next(timeout=30.0)
                if delivery is None:
                    raise BrokerError(f"rabbitmq: only {len(latencies)} of {messages} arrived")
                latencies.append(latency_ms(delivery.body))
                await delivery.ack()

        started = time.perf_counter()
        await asyncio.gather(produce(), consume())
        seconds = time.perf_counter() - started
        await consumer.close()
    return BenchResult(
        "rabbitmq",
        messages,
        size,
        seconds,
        latencies,
        notes=f"confirm window {RABBITMQ_CONFIRM_WINDOW}, prefetch {RABBITMQ_PREFETCH}",
    )


# --- SQS (moto) --------------------------------------------------------------------------------

# SQS through the lab's moto server is slow: every call is an HTTP request served by a Python
# process, so a full 100k run takes many minutes. Its default workload is this much smaller.
SQS_DEFAULT_MESSAGES = 2_000
# Sends in flight at once (each one is a blocking boto3 call in a worker thread).
SQS_SEND_WINDOW = 4
SQS_BATCH = 10  # the most ReceiveMessage returns


def stamped_text(size: int) -> str:
    """An SQS body (text only) of ``size`` characters starting with the perf_counter_ns."""
    return f"{time.perf_counter_ns()}:".ljust(size, "x")


def text_latency_ms(body: str) -> float:
    """Milliseconds since :func:`stamped_text` made ``body``."""
    sent = int(body.split(":", 1)[0])
    return float(time.perf_counter_ns() - sent) / 1e6


async def bench_sqs(messages: int, size: int) -> BenchResult:
    """A standard queue through :class:`SqsBroker`: a producer with a window of concurrent
    SendMessage calls, a consumer long-polling batches of 10 and deleting each message."""
    from mqlab.brokers.sqs import SqsBroker

    async with SqsBroker() as broker:
        await broker.create_queue("bench")
        latencies: list[float] = []
        window = asyncio.Semaphore(SQS_SEND_WINDOW)

        async def send_one() -> None:
            try:
                await broker.send("bench", stamped_text(size))
            finally:
                window.release()

        async def produce() -> None:
            pending: set[asyncio.Task[None]] = set()
            for _ in range(messages):
                await window.acquire()
                task = asyncio.create_task(send_one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)

        async def consume() -> None:
            idle_polls = 0
            while len(latencies) < messages:
                batch = await broker.receive("bench", max_messages=SQS_BATCH, wait_time=1)
                if not batch:
                    idle_polls += 1
                    if idle_polls > 30:
                        raise BrokerError(f"sqs: only {len(latencies)} of {messages} arrived")
                    continue
                idle_polls = 0
                latencies.extend(text_latency_ms(message.body) for message in batch)
                await asyncio.gather(
                    *(broker.delete_message("bench", m.receipt_handle) for m in batch)
                )

        started = time.perf_counter()
        await asyncio.gather(produce(), consume())
        seconds = time.perf_counter() - started
    return BenchResult(
        "sqs",
        messages,
        size,
        seconds,
        latencies,
        notes=f"send window {SQS_SEND_WINDOW}, receive batch {SQS_BATCH}, delete each",
    )


# --- NATS JetStream -----------------------------------------------------------------------------

# Publishes awaiting their PubAck at once (one at a time, each would wait a round trip).
NATS_PUBLISH_WINDOW = 256
NATS_FETCH_BATCH = 256


async def bench_nats(messages: int, size: int) -> BenchResult:
    """A file-backed stream through :class:`NatsBroker`: a producer with a window of publishes
    awaiting their PubAck, a durable pull consumer fetching batches and acking every message
    (acks wait for the server's confirmation)."""
    from mqlab.brokers.nats import NatsBroker

    async with NatsBroker() as broker:
        await broker.add_stream("bench", [broker.subject("bench.>")])
        consumer = await broker.pull_consumer("bench", "bench-reader")
        subject = broker.subject("bench.data")
        latencies: list[float] = []
        window = asyncio.Semaphore(NATS_PUBLISH_WINDOW)

        async def publish_one() -> None:
            try:
                await broker.publish(subject, stamped_body(size))
            finally:
                window.release()

        async def produce() -> None:
            pending: set[asyncio.Task[None]] = set()
            for _ in range(messages):
                await window.acquire()
                task = asyncio.create_task(publish_one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)

        async def consume() -> None:
            idle_fetches = 0
            while len(latencies) < messages:
                batch = await consumer.fetch(NATS_FETCH_BATCH, timeout=1.0)
                if not batch:
                    idle_fetches += 1
                    if idle_fetches > 30:
                        raise BrokerError(f"nats: only {len(latencies)} of {messages} arrived")
                    continue
                idle_fetches = 0
                latencies.extend(latency_ms(message.data) for message in batch)
                await asyncio.gather(*(message.ack() for message in batch))

        started = time.perf_counter()
        await asyncio.gather(produce(), consume())
        seconds = time.perf_counter() - started
        await consumer.close()
    return BenchResult(
        "nats",
        messages,
        size,
        seconds,
        latencies,
        notes=f"publish window {NATS_PUBLISH_WINDOW}, fetch batch {NATS_FETCH_BATCH}, ack each",
    )


# --- command line -------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[int, int], Coroutine[Any, Any, BenchResult]]] = {
    "rabbitmq": bench_rabbitmq,
    "sqs": bench_sqs,
    "nats": bench_nats,
}

# Systems whose full default workload would take far too long (see each benchmark).
DEFAULT_MESSAGES: dict[str, int] = {"sqs": SQS_DEFAULT_MESSAGES}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named on the command line, one after the other."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("systems", nargs="+", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--messages", type=int, default=None, help="default 100000 (sqs: 2000, it is slow)"
    )
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    options = parser.parse_args(argv)
    for system in options.systems:
        try:
            messages = options.messages or DEFAULT_MESSAGES.get(system, 100_000)
            result = asyncio.run(BENCHMARKS[system](messages, options.size))
        except BrokerError as error:
            print(f"{system}: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        print(result.report(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
