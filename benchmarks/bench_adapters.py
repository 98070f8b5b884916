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
    from mqlab.brokers.rabbitmq.client import RabbitMQBroker

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
# moto's ReceiveMessage costs time in proportion to the queue's depth (it rescans the queue
# and recomputes its attributes for each message it returns), so a producer that runs far
# ahead makes the consumer crawl (2,000 queued messages: ~4 msg/s). The producer therefore
# waits while this many messages are sent but not yet received: the benchmark measures a
# queue that is kept short, which is how a healthy SQS consumer runs anyway.
SQS_MAX_BACKLOG = 50


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
    from mqlab.brokers.sqs.client import SqsBroker

    async with SqsBroker() as broker:
        await broker.create_queue("bench")
        latencies: list[float] = []
        window = asyncio.Semaphore(SQS_SEND_WINDOW)
        backlog = asyncio.Semaphore(SQS_MAX_BACKLOG)

        async def send_one() -> None:
            try:
                await broker.send("bench", stamped_text(size))
            finally:
                window.release()

        async def produce() -> None:
            pending: set[asyncio.Task[None]] = set()
            for _ in range(messages):
                await backlog.acquire()
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
                for _ in batch:
                    backlog.release()
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
        notes=(
            f"send window {SQS_SEND_WINDOW}, backlog <= {SQS_MAX_BACKLOG}, "
            f"receive batch {SQS_BATCH}, delete each"
        ),
    )


# --- NATS JetStream -----------------------------------------------------------------------------

# Publishes awaiting their PubAck at once (one at a time, each would wait a round trip).
NATS_PUBLISH_WINDOW = 256
NATS_FETCH_BATCH = 256
# Published but not yet fetched. Without a bound the producer (cheaper per message than the
# consumer, which fetches and acks) runs ahead and the stream becomes a buffer: latency then
# measures how far behind the consumer is (~40 s at the end of a 100k run), not the system.
NATS_MAX_BACKLOG = 1024


async def bench_nats(messages: int, size: int) -> BenchResult:
    """A file-backed stream through :class:`NatsBroker`: a producer with a window of publishes
    awaiting their PubAck, a durable pull consumer fetching batches and acking every message
    (acks wait for the server's confirmation)."""
    from mqlab.brokers.nats.client import NatsBroker

    async with NatsBroker() as broker:
        await broker.add_stream("bench", [broker.subject("bench.>")])
        consumer = await broker.pull_consumer("bench", "bench-reader")
        subject = broker.subject("bench.data")
        latencies: list[float] = []
        window = asyncio.Semaphore(NATS_PUBLISH_WINDOW)
        backlog = asyncio.Semaphore(NATS_MAX_BACKLOG)

        async def publish_one() -> None:
            try:
                await broker.publish(subject, stamped_body(size))
            finally:
                window.release()

        async def produce() -> None:
            pending: set[asyncio.Task[None]] = set()
            for _ in range(messages):
                await backlog.acquire()
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
                for _ in batch:
                    backlog.release()
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
        notes=(
            f"publish window {NATS_PUBLISH_WINDOW}, backlog <= {NATS_MAX_BACKLOG}, "
            f"fetch batch {NATS_FETCH_BATCH}, ack each"
        ),
    )


# --- Kafka -------------------------------------------------------------------------------------

# Sends awaiting their acknowledgement at once: like the other systems' windows, this is how an
# acknowledging producer gets throughput (aiokafka batches whatever is waiting per partition).
KAFKA_SEND_WINDOW = 1000
KAFKA_LINGER_MS = 5
KAFKA_PARTITIONS = 3  # one leader per broker
KAFKA_MAX_POLL = 500
# Kafka's own producer benchmark, from the jars the lab runs. Same topic layout, acks and
# linger, records of the same size; it sends as fast as its buffer allows (--throughput -1).
PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def producer_performance(
    bootstrap: str, topic: str, messages: int, size: int
) -> dict[str, float]:
    """Run Kafka's ProducerPerformance; returns records/s and p50/p99 ack latency (ms)."""
    import re

    from mqlab.lab.kafka import KafkaService, find_java
    from mqlab.lab.paths import lab_paths

    java = find_java()
    lib = KafkaService().lib_dir(lab_paths())
    if java is None or not lib.is_dir():
        raise BrokerError(
            f"kafka: no java or no Kafka jars in {lib} (run: mqlab lab install kafka)"
        )
    process = await asyncio.create_subprocess_exec(
        java,
        "-Xmx512m",
        "-cp",
        f"{lib}/*",
        PRODUCER_PERFORMANCE,
        "--topic",
        topic,
        "--num-records",
        str(messages),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        f"linger.ms={KAFKA_LINGER_MS}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    summary = next(
        (
            line
            for line in stdout.decode().splitlines()
            if "records sent" in line and "50th" in line
        ),
        None,
    )
    if process.returncode != 0 or summary is None:
        raise BrokerError(f"kafka: ProducerPerformance failed: {stderr.decode()[-500:]}")
    rate = re.search(r"([\d.]+) records/sec", summary)
    p50 = re.search(r"(\d+) ms 50th", summary)
    p99 = re.search(r"(\d+) ms 99th", summary)
    if rate is None or p50 is None or p99 is None:
        raise BrokerError(f"kafka: cannot read ProducerPerformance's summary: {summary}")
    return {"rate": float(rate[1]), "p50": float(p50[1]), "p99": float(p99[1])}


async def windowed_sends(
    send: Callable[[], Coroutine[Any, Any, object]], messages: int
) -> tuple[float, list[float]]:
    """Run ``messages`` sends with at most KAFKA_SEND_WINDOW awaiting their ack at once.

    Returns the seconds taken and each send's latency until acknowledged (ms).
    """
    window = asyncio.Semaphore(KAFKA_SEND_WINDOW)
    acks: list[float] = []
    failures: list[BaseException] = []

    async def one() -> None:
        sent = time.perf_counter()
        try:
            await send()
            acks.append((time.perf_counter() - sent) * 1000)
        except BrokerError as error:
            failures.append(error)
        finally:
            window.release()

    started = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    for _ in range(messages):
        await window.acquire()
        if failures:
            raise failures[0]
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    if failures:
        raise failures[0]
    return time.perf_counter() - started, acks


async def bench_kafka(messages: int, size: int) -> BenchResult:
    """A topic with 3 partitions on all 3 brokers (acks=all, min.insync.replicas 2) through
    :class:`KafkaBroker`: a producer with a window of sends awaiting their acknowledgement, a
    consumer in a group polling up to 500 records at a time (offsets auto-committed).

    Then three producers alone, one after the other, with the same records and settings: the
    adapter's, aiokafka's without the adapter (what the adapter itself costs), and Kafka's own
    ProducerPerformance in Java (what the Python client costs). Their rates and ack latencies
    are printed side by side with the ratios.
    """
    from aiokafka import AIOKafkaProducer

    from mqlab.brokers.kafka.client import KafkaBroker

    async with KafkaBroker() as broker:
        topic = await broker.create_topic(
            broker.qualify("bench"), partitions=KAFKA_PARTITIONS, replication_factor=3
        )
        producer = await broker.producer(acks="all", linger_ms=KAFKA_LINGER_MS)
        consumer = await broker.consumer(
            [topic.name], group_id=broker.qualify("bench-readers"), auto_commit=True
        )
        while not consumer.assignment():  # joined before the clock starts
            await consumer.poll(timeout=0.2)
        latencies: list[float] = []

        async def consume() -> None:
            idle_polls = 0
            while len(latencies) < messages:
                records = await consumer.poll(max_records=KAFKA_MAX_POLL, timeout=1.0)
                if not records:
                    idle_polls += 1
                    if idle_polls > 30:
                        raise BrokerError(f"kafka: only {len(latencies)} of {messages} arrived")
                    continue
                idle_polls = 0
                latencies.extend(latency_ms(record.value) for record in records)

        async def send_through_adapter() -> object:
            return await producer.send(topic.name, stamped_body(size))

        started = time.perf_counter()
        await asyncio.gather(windowed_sends(send_through_adapter, messages), consume())
        seconds = time.perf_counter() - started
        await consumer.close()

        # Producers alone: first the adapter's again, then aiokafka's, then Kafka's own.
        adapter_seconds, adapter_acks = await windowed_sends(send_through_adapter, messages)
        raw = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, acks="all", linger_ms=KAFKA_LINGER_MS
        )
        await raw.start()

        async def send_through_aiokafka() -> object:
            return await (await raw.send(topic.name, stamped_body(size)))

        try:
            raw_seconds, raw_acks = await windowed_sends(send_through_aiokafka, messages)
        finally:
            await raw.stop()
        perf_topic = await broker.create_topic(
            broker.qualify("perf"), partitions=KAFKA_PARTITIONS, replication_factor=3
        )
        java = await producer_performance(broker.bootstrap, perf_topic.name, messages, size)

    adapter_rate = messages / adapter_seconds
    raw_rate = messages / raw_seconds

    def line(label: str, rate: float, p50: float, p99: float) -> str:
        return f"  {label:34} {rate:>10,.0f} msg/s  ack p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"

    print(f"kafka producers alone, {messages} x {size} B, acks=all, linger.ms={KAFKA_LINGER_MS}:")
    adapter_p50, adapter_p99 = percentile(adapter_acks, 0.5), percentile(adapter_acks, 0.99)
    print(line("mqlab adapter (window 1000)", adapter_rate, adapter_p50, adapter_p99))
    raw_p50, raw_p99 = percentile(raw_acks, 0.5), percentile(raw_acks, 0.99)
    print(line("aiokafka alone (window 1000)", raw_rate, raw_p50, raw_p99))
    print(line("Kafka ProducerPerformance (Java)", java["rate"], java["p50"], java["p99"]))
    print(
        f"  ratio adapter / ProducerPerformance: {adapter_rate / java['rate']:.2f}; "
        f"adapter / aiokafka: {adapter_rate / raw_rate:.2f}"
    )
    return BenchResult(
        "kafka",
        messages,
        size,
        seconds,
        latencies,
        notes=(
            f"produce-to-consume; {KAFKA_PARTITIONS} partitions RF 3, acks=all, send window "
            f"{KAFKA_SEND_WINDOW}, poll {KAFKA_MAX_POLL}"
        ),
    )


# --- command line -------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[int, int], Coroutine[Any, Any, BenchResult]]] = {
    "rabbitmq": bench_rabbitmq,
    "sqs": bench_sqs,
    "nats": bench_nats,
    "kafka": bench_kafka,
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
