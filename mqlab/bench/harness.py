"""The benchmark harness: one workload, the same on every system, through mqlab's adapters.

What it must show is the broker, not itself. A producer that waits for each confirm before
sending the next message measures one network round trip per message, whatever the broker
can do; so the harness keeps ``in_flight`` sends outstanding at once through the adapters'
windowed publishes (:data:`PIPELINES` calls of ``publish_many`` / ``send_many`` at a time,
each with a window of ``in_flight / PIPELINES``), settles deliveries in batches where the
system allows it (RabbitMQ's multiple=True ack, NATS's acks with one flush), lets the client
batch where it batches (Kafka's linger, SQS's SendMessageBatch), and bounds the backlog (sent
but not yet received) so that the end-to-end latency measures the system rather than a queue
the producer filled up.

A consumer runs at the same time, in the same process. Each payload starts with the time it
was sent (the event loop's clock: monotonic on the lab, virtual on the simulator), so the
consumer measures end-to-end latency per message; the producer measures each send's time to
acknowledgement. Every number comes with the settings it was measured with
(:attr:`BenchResult.settings`): acks, confirms, persistence, batching, sizes and bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from mqlab.bench.workload import (
    MIN_SIZE,
    BenchResult,
    BenchTarget,
    Latency,
    Workload,
    target_system,
)
from mqlab.brokers.base import Broker, BrokerError
from mqlab.brokers.registry import BrokerRef, create_broker

IDLE_TIMEOUT = 30.0
"""Seconds without a single message arriving before the run gives up (something is stuck)."""
JOIN_TIMEOUT = 30.0
"""Seconds the Kafka consumer may take to join its group before the clock starts."""

KAFKA_PARTITIONS = 3
"""One partition led by each of the lab's three brokers."""
KAFKA_LINGER_MS = 5
KAFKA_MAX_BATCH_BYTES = 16 * 1024
"""aiokafka's default ``max_batch_size``: a partition's batch is sent when full or lingered."""
KAFKA_POLL_RECORDS = 500


def rabbitmq_prefetch(workload: Workload) -> int:
    """The consumer's prefetch: two windows, so RabbitMQ keeps pushing the next batch while
    the consumer measures and acks the last one (PerfTest gets the same ``--qos``)."""
    return 2 * workload.in_flight


SQS_BATCH = 10
"""The most SendMessageBatch takes and ReceiveMessage returns."""
SQS_MAX_BACKLOG = 100
"""moto's ReceiveMessage costs time in proportion to the queue's depth (it rescans it for
each message it returns), so an SQS backlog is kept short, as a healthy consumer keeps it."""
SQS_FIFO_GROUPS = 8
"""Message groups the FIFO workload spreads over (order holds within each)."""
SQS_VISIBILITY_TIMEOUT = 10
"""The bench queues' visibility timeout (seconds), well inside :data:`IDLE_TIMEOUT`. A receive
whose answer is lost (the client gives up on a server slow to answer and asks again) hides
its messages for this long, though nobody got them; with SQS's default 30 s the last of them
came back just as the run gave up waiting (a fresh-clone run under load: 399 of 400)."""


ProgressCallback = Callable[[int, int], None]
"""Called with (messages acknowledged, messages received) as a run goes on."""


def stamp(size: int, now: float, number: int) -> str:
    """A payload of ``size`` characters that starts with ``now`` (seconds), the message's
    ``number`` in the workload, and a colon after each."""
    return f"{now:017.6f}:{number}:".ljust(size, "x")


def read_stamp(payload: str | bytes) -> tuple[float, int]:
    """The send time and the message number :func:`stamp` put at the start of ``payload``.

    Raises:
        BrokerError: the payload is not one of the harness's (something else is on the
            channel).
    """
    text = payload.decode("ascii", "replace") if isinstance(payload, bytes) else payload
    fields = text[:MIN_SIZE].split(":", 2)
    try:
        if len(fields) < 3:
            raise ValueError(fields[0])
        return float(fields[0]), int(fields[1])
    except ValueError:
        raise BrokerError(f"bench: a message without the harness's stamp: {text[:24]!r}") from None


class _Credits:
    """A bound on messages sent but not yet received, taken and given back in bulk (one
    wait per batch rather than a semaphore round per message: the harness's own cost per
    message is counted against the client, so it is kept small)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._available = limit
        self._changed = asyncio.Event()

    async def take(self, count: int) -> None:
        """Wait until ``count`` (at most the limit) are free, then take them."""
        count = min(count, self.limit)
        while self._available < count:
            self._changed.clear()
            await self._changed.wait()
        self._available -= count

    def give(self, count: int) -> None:
        self._available = min(self.limit, self._available + count)
        self._changed.set()


class _Flow:
    """The run's shared counters: what was sent and received, the backlog bound, progress.

    ``received`` counts distinct messages, by the number stamped in each payload: a message
    delivered again (SQS delivers at least once, and a send retried after its answer was lost
    is stored twice where nothing deduplicates it) is counted in ``duplicates`` instead, and
    adds no latency sample, so the rates and percentiles stay those of the workload.
    """

    def __init__(
        self, workload: Workload, max_backlog: int, progress: ProgressCallback | None
    ) -> None:
        self.workload = workload
        self.loop = asyncio.get_running_loop()
        self.backlog = _Credits(max_backlog)
        self.sent = 0
        self.received = 0
        self.duplicates = 0
        self._arrived = bytearray(workload.messages)
        """One byte per message number: 1 once the message has been received."""
        self.ack_seconds: list[float] = []
        self.end_to_end_seconds: list[float] = []
        self.last_ack = 0.0
        self.last_receipt = 0.0
        self.first_arrival = asyncio.Event()
        self._progress = progress
        self._report_every = max(1, workload.messages // 200)
        self._next_report = 0

    def payload(self, number: int) -> str:
        return stamp(self.workload.size, self.loop.time(), number)

    def acknowledged(self, count: int, started: float) -> None:
        now = self.loop.time()
        self.sent += count
        self.last_ack = now
        self.ack_seconds.extend([now - started] * count)
        self._report()

    def arrived(self, payloads: Sequence[str | bytes]) -> None:
        """Count and time what arrived; a message already received counts as a duplicate.

        Raises:
            BrokerError: a payload that is not one of this workload's.
        """
        now = self.loop.time()
        fresh = 0
        for payload in payloads:
            sent_at, number = read_stamp(payload)
            if not 0 <= number < len(self._arrived):
                raise BrokerError(f"bench: message number {number} is not in the workload")
            if self._arrived[number]:
                self.duplicates += 1
                continue
            self._arrived[number] = 1
            self.end_to_end_seconds.append(now - sent_at)
            fresh += 1
        self.received += fresh
        self.last_receipt = now
        self.backlog.give(fresh)
        self._report()

    def _report(self) -> None:
        done = self.sent + self.received
        if self._progress is not None and (
            done >= self._next_report or self.received >= self.workload.messages
        ):
            self._next_report = done + self._report_every
            self._progress(self.sent, self.received)


SendUnit = Callable[[_Flow, int], Awaitable[int]]
"""Send unit ``index`` of the workload (one message, or a batch); returns how many it sent."""
Receive = Callable[[], Awaitable[list[Any]]]
"""Wait a moment for messages; returns what arrived (payloads are extracted by ``payload_of``)."""


async def _all_or_none(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run the coroutines side by side until all are done; when one fails (or the run is
    cancelled) the others are cancelled and awaited before the error goes on, so no task
    outlives the run."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _produce(flow: _Flow, units: int, in_flight: int, send: SendUnit) -> None:
    """``in_flight`` workers sharing one sequence of units, each awaiting its own send."""
    indexes = iter(range(units))

    async def worker() -> None:
        for index in indexes:  # shared: every unit is taken by exactly one worker
            started = flow.loop.time()
            count = await send(flow, index)
            flow.acknowledged(count, started)

    await _all_or_none([worker() for _ in range(max(1, min(in_flight, units)))])


async def _consume(
    flow: _Flow,
    receive: Receive,
    payload_of: Callable[[Any], str | bytes],
    settle: Callable[[list[Any]], Awaitable[None]],
    target: str,
) -> None:
    """Receive until every message arrived, settling each batch after measuring it."""
    expected = flow.workload.messages
    idle_since = flow.loop.time()
    while flow.received < expected:
        batch = await receive()
        if not batch:
            if flow.loop.time() - idle_since > IDLE_TIMEOUT:
                raise BrokerError(
                    f"{target}: only {flow.received} of {expected} messages arrived; nothing "
                    f"for {IDLE_TIMEOUT:g} s"
                )
            continue
        idle_since = flow.loop.time()
        flow.arrived([payload_of(item) for item in batch])
        await settle(batch)


async def _measure(
    broker: Broker,
    target: BenchTarget,
    workload: Workload,
    settings: list[tuple[str, str]],
    *,
    units: int,
    in_flight_units: int,
    send: SendUnit,
    receive: Receive,
    payload_of: Callable[[Any], str | bytes],
    settle: Callable[[list[Any]], Awaitable[None]],
    max_backlog: int,
    progress: ProgressCallback | None,
) -> BenchResult:
    """Run producer and consumer side by side and put the numbers together."""
    flow = _Flow(workload, max_backlog, progress)

    async def bounded_send(flow: _Flow, index: int) -> int:
        await flow.backlog.take(len(workload.unit_span(units, index)))
        return await send(flow, index)

    started = flow.loop.time()
    await _all_or_none(
        [
            _produce(flow, units, in_flight_units, bounded_send),
            _consume(flow, receive, payload_of, settle, target),
        ]
    )
    settings.append(("backlog", f"at most {max_backlog:,} sent but not yet received"))
    return BenchResult(
        target=target,
        broker=broker.name,
        workload=workload,
        settings=tuple(settings),
        sent=flow.sent,
        received=flow.received,
        duplicates=flow.duplicates,
        produce_seconds=flow.last_ack - started,
        total_seconds=flow.last_receipt - started,
        ack_latency=Latency.of(flow.ack_seconds),
        end_to_end=Latency.of(flow.end_to_end_seconds),
    )


async def _measure_windowed(
    broker: Broker,
    target: BenchTarget,
    workload: Workload,
    settings: list[tuple[str, str]],
    *,
    publish: Callable[[list[bytes]], Awaitable[object]],
    receive: Receive,
    payload_of: Callable[[Any], str | bytes],
    settle: Callable[[list[Any]], Awaitable[None]],
    progress: ProgressCallback | None,
) -> BenchResult:
    """:func:`_measure` for the systems that send through windowed calls (Kafka's
    ``send_many``, RabbitMQ's and NATS's ``publish_many``): the workload cut into units of
    one window, :attr:`Workload.pipelines` units in flight at once, ``publish`` sending one
    unit's payloads, and the workload's own backlog bound."""
    units = -(-workload.messages // workload.window)

    async def send(flow: _Flow, index: int) -> int:
        payloads = [flow.payload(number).encode() for number in workload.unit_span(units, index)]
        await publish(payloads)
        return len(payloads)

    return await _measure(
        broker,
        target,
        workload,
        settings,
        units=units,
        in_flight_units=workload.pipelines,
        send=send,
        receive=receive,
        payload_of=payload_of,
        settle=settle,
        max_backlog=workload.max_backlog,
        progress=progress,
    )


def _window_text(workload: Workload, call: str, what: str) -> str:
    return (
        f"at most {workload.in_flight} {what}: {workload.pipelines} {call} calls at once, "
        f"each with a window of {workload.window}"
    )


# --- the systems -------------------------------------------------------------------------


async def bench_kafka(
    broker: Broker, workload: Workload, progress: ProgressCallback | None = None
) -> BenchResult:
    """A topic of three partitions (replication factor 3, min.insync.replicas 2), acks=all,
    linger.ms 5; one consumer in a group polling up to 500 records, offsets auto-committed."""
    from mqlab.brokers.kafka.api import KafkaAPI

    if not isinstance(broker, KafkaAPI):
        raise TypeError(f"{broker.name} is not a Kafka adapter")
    topic = await broker.create_topic(
        broker.qualify("bench"),
        partitions=KAFKA_PARTITIONS,
        replication_factor=3,
        config={"min.insync.replicas": "2"},
    )
    producer = await broker.producer(acks="all", linger_ms=KAFKA_LINGER_MS, name="bench-producer")
    consumer = await broker.consumer(
        [topic.name],
        group_id=broker.qualify("bench-readers"),
        name="bench-consumer",
        auto_commit=True,
        max_poll_records=KAFKA_POLL_RECORDS,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_TIMEOUT
        while not consumer.assignment():  # joined before the clock starts
            if loop.time() > deadline:
                raise BrokerError(
                    f"kafka: the bench consumer got no partition in {JOIN_TIMEOUT:g} s"
                )
            await consumer.poll(timeout=0.2)

        async def receive() -> list[Any]:
            return list(await consumer.poll(max_records=KAFKA_POLL_RECORDS, timeout=0.5))

        async def settle(batch: list[Any]) -> None:
            """Offsets are committed in the background (auto-commit)."""

        settings = [
            (
                "topic",
                f"{KAFKA_PARTITIONS} partitions, replication factor 3, min.insync.replicas 2",
            ),
            ("acks", "all (every in-sync replica)"),
            (
                "batching",
                f"aiokafka's per-partition batches of up to {KAFKA_MAX_BATCH_BYTES // 1024} "
                f"KiB, linger.ms {KAFKA_LINGER_MS}",
            ),
            ("persistence", "the log (page cache; Kafka leaves fsync to the OS)"),
            ("message size", f"{workload.size} B"),
            ("in flight", _window_text(workload, "send_many", "records awaiting their ack")),
            ("consumer", f"1 group member, polls of {KAFKA_POLL_RECORDS}, auto-commit"),
        ]
        return await _measure_windowed(
            broker,
            "kafka",
            workload,
            settings,
            publish=lambda values: producer.send_many(topic.name, values, window=workload.window),
            receive=receive,
            payload_of=lambda record: record.value,
            settle=settle,
            progress=progress,
        )
    finally:
        await consumer.close()
        await producer.close()


async def bench_rabbitmq(
    broker: Broker, workload: Workload, progress: ProgressCallback | None = None
) -> BenchResult:
    """Persistent messages into a durable classic queue with publisher confirms; one consumer
    (prefetch 1000) acknowledging each message."""
    from mqlab.brokers.rabbitmq.api import RabbitMQAPI

    if not isinstance(broker, RabbitMQAPI):
        raise TypeError(f"{broker.name} is not a RabbitMQ adapter")
    await broker.declare_queue("bench", durable=True)
    prefetch = rabbitmq_prefetch(workload)
    consumer = await broker.consume("bench", prefetch=prefetch, name="bench-consumer")
    try:

        async def receive() -> list[Any]:
            return list(await consumer.next_batch(workload.in_flight, timeout=0.5))

        unacked: list[Any] = []
        taken = 0

        async def settle(batch: list[Any]) -> None:
            """Deliveries trickle in a few at a time, so they are acked (one multiple=True
            ack) once a quarter window is held, or at the last message; prefetch is two
            windows, so RabbitMQ keeps pushing meanwhile."""
            nonlocal taken
            unacked.extend(batch)
            taken += len(batch)
            if len(unacked) >= workload.window or taken >= workload.messages:
                await consumer.ack_batch(unacked)
                unacked.clear()

        settings = [
            ("queue", "durable classic queue, default exchange"),
            ("acks", "publisher confirms, a window of them outstanding (not one at a time)"),
            ("persistence", "persistent messages (delivery mode 2)"),
            ("batching", "none on the wire (AMQP sends one message per frame set)"),
            ("message size", f"{workload.size} B"),
            ("in flight", _window_text(workload, "publish_many", "publishes awaiting confirms")),
            (
                "consumer",
                f"1 consumer, prefetch {prefetch}, every {workload.window} deliveries "
                "acked with one basic.ack multiple=True",
            ),
        ]
        return await _measure_windowed(
            broker,
            "rabbitmq",
            workload,
            settings,
            publish=lambda bodies: broker.publish_many("", "bench", bodies, window=workload.window),
            receive=receive,
            payload_of=lambda delivery: delivery.body,
            settle=settle,
            progress=progress,
        )
    finally:
        await consumer.close()


async def bench_nats(
    broker: Broker, workload: Workload, progress: ProgressCallback | None = None
) -> BenchResult:
    """A file-backed stream; JetStream publishes awaiting their PubAck; a durable pull
    consumer fetching batches of 256 and acknowledging every message."""
    from mqlab.brokers.nats.api import NatsAPI

    if not isinstance(broker, NatsAPI):
        raise TypeError(f"{broker.name} is not a NATS adapter")
    await broker.add_stream("bench", [broker.subject("bench.>")])
    consumer = await broker.pull_consumer("bench", "bench-reader")
    subject = broker.subject("bench.data")
    try:

        async def receive() -> list[Any]:
            return list(await consumer.fetch(workload.in_flight, timeout=0.5))

        async def settle(batch: list[Any]) -> None:
            await consumer.ack_batch(batch)

        settings = [
            ("stream", "file storage, one replica"),
            ("acks", "every publish gets its PubAck (stored), a window of them outstanding"),
            ("batching", "none on the wire (one publish per message)"),
            ("persistence", "file storage (nats-server syncs to disk every 2 minutes)"),
            ("message size", f"{workload.size} B"),
            ("in flight", _window_text(workload, "publish_many", "publishes awaiting PubAcks")),
            (
                "consumer",
                f"1 durable pull consumer, fetches of up to {workload.in_flight}, each fetch's "
                "acks sent back to back and one flush",
            ),
        ]
        return await _measure_windowed(
            broker,
            "nats",
            workload,
            settings,
            publish=lambda payloads: broker.publish_many(subject, payloads, window=workload.window),
            receive=receive,
            payload_of=lambda message: message.data,
            settle=settle,
            progress=progress,
        )
    finally:
        await consumer.close()


async def _bench_sqs(
    broker: Broker, workload: Workload, progress: ProgressCallback | None, *, fifo: bool
) -> BenchResult:
    from mqlab.brokers.sqs.api import BatchEntry, SqsAPI

    if not isinstance(broker, SqsAPI):
        raise TypeError(f"{broker.name} is not an SQS adapter")
    queue = "bench.fifo" if fifo else "bench"
    await broker.create_queue(queue, visibility_timeout=SQS_VISIBILITY_TIMEOUT)
    units = -(-workload.messages // SQS_BATCH)

    async def send(flow: _Flow, index: int) -> int:
        entries = [
            BatchEntry(
                flow.payload(number),
                group_id=f"g{number % SQS_FIFO_GROUPS}" if fifo else None,
                dedup_id=str(number) if fifo else None,
            )
            for number in workload.unit_span(units, index)
        ]
        await broker.send_batch(queue, entries)
        return len(entries)

    async def receive() -> list[Any]:
        return list(await broker.receive(queue, max_messages=SQS_BATCH, wait_time=0.5))

    async def settle(batch: list[Any]) -> None:
        await asyncio.gather(
            *(broker.delete_message(queue, message.receipt_handle) for message in batch)
        )

    settings = [
        (
            "queue",
            f"FIFO, {SQS_FIFO_GROUPS} message groups, a dedup id per message"
            if fifo
            else "standard",
        ),
        ("acks", "each SendMessageBatch awaits its answer"),
        (
            "persistence",
            "the simulator's memory"
            if broker.backend == "sim"
            else "moto keeps messages in memory (AWS stores them redundantly)",
        ),
        ("batching", f"SendMessageBatch of {SQS_BATCH}; ReceiveMessage of up to {SQS_BATCH}"),
        ("message size", f"{workload.size} B"),
        (
            "in flight",
            f"{max(1, workload.in_flight // SQS_BATCH)} batch requests "
            f"({workload.in_flight} messages) awaiting their answer",
        ),
        (
            "consumer",
            f"1 consumer, long polls, a DeleteMessage per message, visibility timeout "
            f"{SQS_VISIBILITY_TIMEOUT} s",
        ),
    ]
    return await _measure(
        broker,
        "sqs-fifo" if fifo else "sqs",
        workload,
        settings,
        units=units,
        in_flight_units=max(1, workload.in_flight // SQS_BATCH),
        send=send,
        receive=receive,
        payload_of=lambda message: message.body,
        settle=settle,
        max_backlog=max(SQS_MAX_BACKLOG, workload.in_flight),
        progress=progress,
    )


async def bench_sqs(
    broker: Broker, workload: Workload, progress: ProgressCallback | None = None
) -> BenchResult:
    """A standard queue: batches of ten sent with SendMessageBatch, received in batches of up
    to ten with long polling, each message deleted."""
    return await _bench_sqs(broker, workload, progress, fifo=False)


async def bench_sqs_fifo(
    broker: Broker, workload: Workload, progress: ProgressCallback | None = None
) -> BenchResult:
    """A FIFO queue, the same as :func:`bench_sqs` with a group id and a dedup id per
    message (eight groups, so receives are not held to one group's order)."""
    return await _bench_sqs(broker, workload, progress, fifo=True)


RUNNERS: dict[
    BenchTarget,
    Callable[[Broker, Workload, ProgressCallback | None], Awaitable[BenchResult]],
] = {
    "kafka": bench_kafka,
    "rabbitmq": bench_rabbitmq,
    "sqs": bench_sqs,
    "sqs-fifo": bench_sqs_fifo,
    "nats": bench_nats,
}


async def run_bench(
    target: BenchTarget,
    workload: Workload,
    *,
    simulated: bool = False,
    progress: ProgressCallback | None = None,
) -> BenchResult:
    """Connect to ``target``'s broker (the lab's, or the simulator's), run the workload,
    delete what it created.

    On the simulator it must be awaited on the virtual-time loop (:func:`run_bench_sync`).

    Raises:
        BrokerUnavailable: the broker is not reachable.
        BrokerError: the run failed (a send refused, messages that never arrived).
    """
    broker = create_broker(BrokerRef(target_system(target), simulated))
    async with broker:
        return await RUNNERS[target](broker, workload, progress)


def run_bench_sync(
    target: BenchTarget,
    workload: Workload,
    *,
    simulated: bool = False,
    progress: ProgressCallback | None = None,
) -> BenchResult:
    """:func:`run_bench` on a fresh event loop of the right kind (virtual time on ``sim``)."""
    coroutine = run_bench(target, workload, simulated=simulated, progress=progress)
    if simulated:
        from mqlab.brokers.sim.clock import run_virtual

        return run_virtual(coroutine)
    return asyncio.run(coroutine)
