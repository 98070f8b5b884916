"""Hidden check of the keyed-producer exercise: per-key order and nothing lost through a
leader failover.

Six orders publish eight events each, interleaved (every order's first event, then every
order's second ...), through the learner's ``publish``, one at a time, as an order service
would. After a seeded number of events (12 to 20) the leader of a seeded partition freezes
(SIGSTOP) and is killed a second later, while the events go on. A producer with acks=all gets
no answer from the frozen leader and retries on the new one once the controller has fenced
the old; an acks=0 producer wrote into the frozen broker's socket and was told nothing, and
those records die with the process. Then the killed broker is restarted, and once every
replica is back in every ISR (so the high watermarks have caught up), a reader (a fresh group,
from the start of every partition, up to the high watermarks) reads the topic back and reports
each event as processed under its order id, so ``per-key-order`` compares the order of
reading with the order of publishing, and ``nothing-lost`` the events read with those sent.

Payloads are 3 KB. Without a key, the client picks a partition per record (aiokafka: at
random) or per 16 KB batch (the Java client's sticky partitioner, which the simulator
models); events of 3 KB fill a batch after a few, so keyless events spread over the
partitions with both.
"""

from __future__ import annotations

import asyncio
import json
from types import ModuleType

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import (
    KafkaAPI,
    KafkaProducer,
    TopicInfo,
    TopicPartition,
    default_partition,
)
from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.observe.events import Observation, Processed, Produced

PARTITIONS = 3
EVENTS_PER_ORDER = 8
KEYS_PER_PARTITION = 2
PAYLOAD_BYTES = 3000
FROZEN_SECONDS = 1.0
# Bounds on the check's own waits on the lab (off the learner's clock): each wait ends as soon
# as its condition holds, and a loaded machine restarts a JVM broker and re-forms a consumer
# group many times slower than an idle one, so they are generous; past one, the check reports
# the lab (a check error), never a verdict on the learner's code.
READ_SECONDS = 120.0
SETTLE_SECONDS = 120.0
RESTART_SECONDS = 60.0
READER_GROUP = "order-reader"


def _orders() -> tuple[str, ...]:
    """order-1, order-2 ...: the first two ids that land in each partition, so that every
    partition (the frozen one too) carries the events of two orders."""
    chosen: list[str] = []
    per_partition = dict.fromkeys(range(PARTITIONS), 0)
    number = 0
    while len(chosen) < PARTITIONS * KEYS_PER_PARTITION:
        number += 1
        order = f"order-{number}"
        partition = default_partition(order.encode(), PARTITIONS)
        if per_partition[partition] < KEYS_PER_PARTITION:
            per_partition[partition] += 1
            chosen.append(order)
    return tuple(chosen)


ORDERS = _orders()
STEPS = ("created", "paid", "packed", "shipped", "delivered", "invoiced", "reviewed", "closed")


def _payload(order: str, seq: int) -> bytes:
    event = {"order": order, "seq": seq, "step": STEPS[seq], "note": "." * PAYLOAD_BYTES}
    return json.dumps(event).encode()


class _Sends:
    """What the adapter reported for the learner's sends (to catch a missing message_id)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.ids: list[str] = []

    def __call__(self, observation: Observation) -> None:
        if isinstance(observation, Produced) and observation.broker == self.source:
            self.ids.append(observation.message_id)


async def _open(learner: ModuleType, kafka: KafkaAPI) -> KafkaProducer:
    producer = await learner_function(learner, "open_producer")(kafka)
    if not isinstance(producer, KafkaProducer):
        raise LearnerMistake(
            f"open_producer must return the producer from `await kafka.producer(...)`, "
            f"not {type(producer).__name__}"
        )
    return producer


async def _freeze_then_kill(ctx: GradingContext, node: str, frozen: asyncio.Event) -> None:
    assert ctx.faults is not None
    await ctx.faults.apply("pause", node)
    frozen.set()
    await asyncio.sleep(FROZEN_SECONDS)
    await ctx.faults.apply("kill", node)


async def _restart(ctx: GradingContext, node: str) -> None:
    """Start the killed broker again. Right after a SIGKILL its old connections can hold its
    ports for a few seconds (the kernel is still closing them, for no process), and the lab
    will not start a server over a port in use: ask again until they are free.

    Raises:
        Exception: the lab's error, if the broker still cannot start after a while.
    """
    assert ctx.faults is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESTART_SECONDS
    while True:
        try:
            await ctx.faults.apply("restart", node)
            return
        except Exception as error:  # the lab's LabError (the simulator never refuses)
            if "already in use" not in str(error) or loop.time() >= deadline:
                raise
        await asyncio.sleep(1.0)


async def _until_whole(kafka: KafkaAPI, topic: str) -> TopicInfo:
    """Wait until every replica is in every partition's ISR: before the fault (a broker of
    the lab that another run restarted may still be catching up), and after it, so that the
    high watermark has caught up with what each leader wrote (a reader sees nothing above it).

    Raises:
        BrokerError: the cluster stayed degraded (a broker of the lab is down).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_SECONDS
    while True:
        info = await kafka.describe_topic(topic)
        if all(set(p.isr) == set(p.replicas) and p.leader >= 0 for p in info.partitions):
            return info
        if loop.time() >= deadline:
            isr = ", ".join(f"{p.partition}: {list(p.isr)}" for p in info.partitions)
            raise BrokerError(
                f"kafka: the topic's replicas were not all in sync within {SETTLE_SECONDS:g}s "
                f"(ISR {isr}): is every broker of the lab up? (mqlab lab status)"
            )
        await asyncio.sleep(0.2)


async def _read_back(ctx: GradingContext, kafka: KafkaAPI, topic: str) -> None:
    """Read every partition from its start to its high watermark, reporting each event."""
    info = await kafka.describe_topic(topic)
    ends = {TopicPartition(topic, p.partition): p.high_watermark for p in info.partitions}
    reader = await kafka.consumer(
        [topic], group_id=kafka.qualify(READER_GROUP), name="reader", auto_offset_reset="earliest"
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READ_SECONDS
    read = 0
    try:
        while True:
            if loop.time() >= deadline:
                # A partial read judged as "lost" would blame the learner for a slow lab.
                raise BrokerError(
                    f"kafka: the reader got {read} events but not to the end of every "
                    f"partition within {READ_SECONDS:g}s: is every broker of the lab up? "
                    "(mqlab lab status)"
                )
            for record in await reader.poll(timeout=0.5):
                event = json.loads(record.value)
                read += 1
                ctx.emit(
                    Processed,
                    message_id=record.message_id,
                    consumer=reader.name,
                    group=READER_GROUP,
                    key=str(event["order"]),
                )
            assigned = reader.assignment()
            if len(assigned) == len(ends) and all(
                [await reader.position(tp) >= end for tp, end in ends.items()]
            ):
                return
    finally:
        await reader.close()


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    kafka = ctx.broker
    assert isinstance(kafka, KafkaAPI)
    assert ctx.faults is not None
    topic = kafka.qualify("orders")
    await kafka.create_topic(
        topic,
        partitions=PARTITIONS,
        replication_factor=3,
        config={"min.insync.replicas": "2"},
    )
    frozen_partition = ctx.rng.randrange(PARTITIONS)
    freeze_after = ctx.rng.randint(12, 20)
    # One broker is about to go: the other two must both be in sync for acks=all to go on.
    with ctx.off_the_clock():
        info = await _until_whole(kafka, topic)
    node = f"kafka-broker-{info.partitions[frozen_partition].leader}"
    publish = learner_function(learner, "publish")
    sends = _Sends(kafka.name)
    unsubscribe = ctx.bus.subscribe(sends)
    producer = await _open(learner, kafka)
    events = [(order, seq) for seq in range(EVENTS_PER_ORDER) for order in ORDERS]
    faults: asyncio.Task[None] | None = None
    try:
        for number, (order, seq) in enumerate(events):
            if number == freeze_after:
                frozen = asyncio.Event()
                faults = asyncio.ensure_future(_freeze_then_kill(ctx, node, frozen))
                await frozen.wait()
            event_id = f"{order}/{STEPS[seq]}"
            await publish(producer, topic, order, event_id, _payload(order, seq))
            if number == 0 and sends.ids and sends.ids[0] != event_id:
                raise LearnerMistake(
                    f"the first event was sent as {sends.ids[0]!r}, not {event_id!r}: pass "
                    "message_id=event_id to producer.send (the grader follows each event by it)"
                )
        if faults is not None:
            await faults
        await producer.close()  # acks=0: whatever is still in a dead socket is given up here
    finally:
        unsubscribe()
        if faults is not None:
            if not faults.done():
                faults.cancel()
                await asyncio.gather(faults, return_exceptions=True)
            # Back to three brokers, whatever the learner's code did meanwhile.
            with ctx.off_the_clock():
                await _restart(ctx, node)
    with ctx.off_the_clock():
        await _until_whole(kafka, topic)
        await _read_back(ctx, kafka, topic)
