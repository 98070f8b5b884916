"""The delivery-semantics loops of :mod:`mqlab.patterns.delivery` as one program.

``kafka-consumer-loop`` consumes the scenario's channel (a Kafka topic the scenario's
``produce`` steps fill) with one of the five loops, in the consumer group ``group``, and each
record credits a wallet in the run's business database (PostgreSQL on the lab, memory on the
simulator), reported as an ``EffectApplied`` once committed. A scenario crashes the loop at
one of its points (a SIGKILL of the worker process on the lab) and runs it again as the
replacement; the message ledger (lost, duplicated, processed once) and the effects
(``effects``, ``effects_repeated``) then show what each loop promises:

=====================  ===============================================================
loop                   a crash between its two writes (the effect and the position)
=====================  ===============================================================
at-most-once           the offset committed first: the record is lost
at-least-once          the effect first: the record is processed, and credited, twice
idempotent             key + effect in one transaction: the redelivery is skipped
transactions           outputs + input offsets in one Kafka transaction: each output
                       once for a read_committed reader
offsets-in-database    effect + offset in one database transaction: nothing twice
=====================  ===============================================================

The transactional loop writes one output record per input (``<channel>-out``) instead of a
credit, with a stable transactional id so that the replacement fences the crashed producer
and aborts its open transaction; after the loop a downstream reader (``downstream``) reads
the outputs with its isolation level and reports each as processed in group ``downstream``.
"""

from __future__ import annotations

import asyncio
import contextlib

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaProducer, KafkaRecord
from mqlab.observe.events import Processed
from mqlab.patterns.database import Transaction
from mqlab.patterns.delivery import (
    Output,
    Until,
    apply_in_database,
    at_least_once,
    at_most_once,
    consume_transform_produce,
    idempotent_consumer,
    offsets_in_database,
)
from mqlab.patterns.harness import Crashed
from mqlab.patterns.programs import Param, ProgramContext, program
from mqlab.patterns.programs.idempotency import ACCOUNT

LOOPS = ("at-most-once", "at-least-once", "idempotent", "transactions", "offsets-in-database")

SESSION_TIMEOUT = 3.0
"""Seconds before the group notices a killed member (the scenario consumers' value)."""


@program(
    "kafka-consumer-loop",
    "Consume the channel with a delivery-semantics loop; each record credits a wallet",
    params={
        "loop": Param((str,), "at-least-once", "Which consumer loop.", LOOPS),
        "group": Param((str,), "billing", "The consumer group."),
        "count": Param((int, type(None)), None, "Stop after this many records (null: when idle)."),
        "idle": Param((int, float), 6.0, "Stop after this many seconds without a record."),
        "amount": Param((int,), 10, "What each record credits."),
        "max_records": Param((int,), 100, "Records per poll (the transactional loop's batch)."),
        "downstream": Param(
            (str, type(None)),
            "read_committed",
            "transactions: read the outputs afterwards with this isolation (null: do not).",
            ("read_committed", "read_uncommitted"),
        ),
    },
    crash_points=(
        "after_receive",
        "after_processing",
        "after_offset_commit",
        "after_claim",
        "before_commit",
        "after_commit",
        "after_send",
        "after_offsets_sent",
        "after_transaction_commit",
    ),
    services=("postgres",),
)
async def kafka_consumer_loop(ctx: ProgramContext) -> None:
    """One run of the chosen loop until it has handled ``count`` records or goes idle."""
    kafka = ctx.broker
    if not isinstance(kafka, KafkaAPI):
        raise ValueError("kafka-consumer-loop runs in a scenario with brokers: [kafka, sim]")
    loop, group = ctx.str_param("loop"), kafka.qualify(ctx.str_param("group"))
    count = ctx.params["count"]
    until = Until(count=count if isinstance(count, int) else None, idle=ctx.float_param("idle"))
    db = await ctx.database()
    amount = ctx.int_param("amount")
    consumer = await kafka.consumer(
        [kafka.qualify(ctx.channel)],
        group_id=group,
        name=loop,
        max_poll_records=ctx.int_param("max_records"),
        session_timeout=SESSION_TIMEOUT,
    )

    async def credit(record: KafkaRecord) -> None:
        async with db.transaction() as tx:
            await tx.credit(ACCOUNT, amount, message_id=record.message_id)

    async def credit_in(tx: Transaction, record: KafkaRecord) -> None:
        await tx.credit(ACCOUNT, amount, message_id=record.message_id)

    producer: KafkaProducer | None = None
    report, crash = ctx.reporter, ctx.crash
    try:
        if loop == "at-most-once":
            await at_most_once(consumer, credit, until=until, reporter=report, crash=crash)
        elif loop == "at-least-once":
            await at_least_once(consumer, credit, until=until, reporter=report, crash=crash)
        elif loop == "idempotent":
            apply = apply_in_database(db, group, credit_in, reporter=report, crash=crash)
            await idempotent_consumer(consumer, apply, until=until, reporter=report, crash=crash)
        elif loop == "offsets-in-database":
            await offsets_in_database(
                consumer, db, credit_in, until=until, reporter=report, crash=crash
            )
        else:
            producer = await _transform(ctx, kafka, consumer, group, until)
    except Crashed as crashed:
        # The simulated kill: the member vanishes without leaving its group, the producer's
        # transaction stays open (the replacement's producer aborts it).
        await consumer.crash(crashed.point)
        raise
    await consumer.close()
    if producer is not None:
        await producer.close()
    downstream = ctx.optional_str("downstream")
    if loop == "transactions" and downstream is not None:
        await _read_downstream(ctx, kafka, downstream)


def output_topic(ctx: ProgramContext) -> str:
    """The transactional loop's output topic (logical name)."""
    return f"{ctx.channel}-out"


async def _transform(
    ctx: ProgramContext, kafka: KafkaAPI, consumer: KafkaConsumer, group: str, until: Until
) -> KafkaProducer:
    """The consume-transform-produce loop: one output per input, in Kafka transactions."""
    out = kafka.qualify(output_topic(ctx))
    # The crashed run created it already: the replacement writes to the same topic.
    with contextlib.suppress(BrokerError):
        await kafka.create_topic(out, partitions=1, replication_factor=3)
    # The same transactional id for every run of this group's loop: the replacement's
    # producer fences the crashed one and aborts the transaction it left open.
    producer = await kafka.producer(
        acks="all", idempotent=True, transactional_id=f"{group}-tx", name="transform"
    )

    def transform(record: KafkaRecord) -> list[Output]:
        return [Output(out, record.value.upper(), key=record.key)]

    try:
        await consume_transform_produce(
            consumer,
            producer,
            transform,
            until=until,
            reporter=ctx.reporter,
            crash=ctx.crash,
            max_records=ctx.int_param("max_records"),
        )
    except Crashed:
        raise  # the producer dies with the process: its transaction stays open
    except BaseException:
        await producer.close()
        raise
    return producer


async def _read_downstream(ctx: ProgramContext, kafka: KafkaAPI, isolation: str) -> None:
    """Read the output topic to its end with ``isolation`` and report each record as
    processed by the group ``downstream-<isolation>``.

    Raises:
        TimeoutError: the reader did not reach the end of the topic within 30 seconds.
    """
    from mqlab.brokers.kafka.api import TopicPartition

    topic = kafka.qualify(output_topic(ctx))
    info = await kafka.describe_topic(topic)
    ends = {TopicPartition(topic, p.partition): p.high_watermark for p in info.partitions}
    group = f"downstream-{isolation.replace('_', '-')}"
    reader = await kafka.consumer(
        [topic],
        group_id=kafka.qualify(group),
        name="downstream",
        isolation_level="read_committed" if isolation == "read_committed" else "read_uncommitted",
        session_timeout=SESSION_TIMEOUT,
    )
    try:
        async with asyncio.timeout(30.0):
            while True:
                for record in await reader.poll(timeout=0.5):
                    ctx.reporter.emit(
                        Processed,
                        message_id=record.message_id,
                        consumer="downstream",
                        group=group,
                        key=record.key.decode("utf-8", errors="replace") if record.key else None,
                    )
                if not reader.assignment():
                    continue
                # Past the end: a read_committed position also steps over the aborted
                # records and the transaction markers, up to the high watermark.
                positions = {tp: await reader.position(tp) for tp in ends}
                if all(positions[tp] >= end for tp, end in ends.items()):
                    break
    finally:
        await reader.close()
