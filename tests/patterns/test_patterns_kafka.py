"""Delivery loops and the Kafka event log on the lab's Kafka cluster (and its PostgreSQL for
offsets kept with the data).

A consumer "crashes" here by raising at the boundary and leaving without committing: what
Kafka then redelivers depends only on what was committed, which is what these tests are
about (a real SIGKILL of a consumer process is the scenario worker's business). The
transactional producer of the crashed consumer is never closed: its transaction stays open
until the replacement starts a producer with the same transactional id and fences it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.kafka.api import KafkaAPI, KafkaRecord
from mqlab.brokers.kafka.client import KafkaBroker
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import Recorder
from mqlab.observe.events import OffsetRestored, VersionConflict
from mqlab.patterns.database import PostgresDatabase, Transaction
from mqlab.patterns.delivery import (
    Output,
    Until,
    at_least_once,
    consume_transform_produce,
    offsets_in_database,
)
from mqlab.patterns.event_log_kafka import KafkaEventLog
from mqlab.patterns.event_sourcing import Order, OrdersByStatus, rebuild
from mqlab.patterns.harness import Crashed, Reporter, crash_at

pytestmark = pytest.mark.kafka

MESSAGES = [f"m{i}" for i in range(1, 7)]
# After a crash at m3 with m1 and m2 committed, the replacement has m3 .. m6 to handle.
REMAINING = 4
BOUND = 60.0  # seconds: a bound against hanging, never a speed goal


@pytest.fixture
async def kafka(endpoints: Endpoints) -> AsyncIterator[KafkaBroker]:
    # Bounds, not speed goals: the connect (admin client start and a metadata round) and
    # the topic creations and acks=all sends with three replicas are slow on a loaded machine
    # where the JVMs share two cores: the 3 s this gave the connect (the adapter's default is
    # 5 s) could run out before the cluster answered, and the test failed as "unavailable".
    async with KafkaBroker(
        endpoints=endpoints, connect_timeout=BOUND / 2, request_timeout=BOUND / 2
    ) as adapter:
        yield adapter


async def topic_with_messages(kafka: KafkaAPI, name: str) -> str:
    topic = kafka.qualify(name)
    await kafka.create_topic(topic, partitions=1, replication_factor=3)
    producer = await kafka.producer(acks="all")
    for message_id in MESSAGES:
        await producer.send(topic, message_id.encode(), message_id=message_id)
    await producer.close()
    return topic


async def read(kafka: KafkaAPI, topic: str, isolation: str, at_least: int) -> list[str]:
    """Message ids on ``topic`` as a fresh group reads them, once ``at_least`` arrived and a
    poll found nothing more."""
    consumer = await kafka.consumer(
        [topic],
        group_id=kafka.qualify(f"reader-{isolation}"),
        isolation_level=isolation,  # type: ignore[arg-type]
    )
    seen: list[str] = []
    try:
        async with asyncio.timeout(BOUND):
            while True:
                batch = await consumer.poll(timeout=1.0)
                seen += [r.message_id for r in batch]
                if not batch and len(seen) >= at_least:
                    return seen
    finally:
        await consumer.close()


async def test_at_least_once_redelivers_what_was_not_committed(kafka: KafkaBroker) -> None:
    topic = await topic_with_messages(kafka, "alo")
    group = kafka.qualify("alo")
    effects: Counter[str] = Counter()

    async def handle(record: KafkaRecord) -> None:
        effects[record.message_id] += 1

    first = await kafka.consumer([topic], group_id=group)
    with pytest.raises(Crashed):
        await at_least_once(
            first, handle, until=Until(idle=BOUND), crash=crash_at("after_processing", detail="m3")
        )
    await first.close()
    second = await kafka.consumer([topic], group_id=group)
    outcome = await at_least_once(second, handle, until=Until(count=REMAINING, idle=BOUND))
    await second.close()
    assert outcome.stopped_by == "count"
    assert effects == Counter({m: 2 if m == "m3" else 1 for m in MESSAGES})


async def test_kafka_transactions_commit_each_output_once_after_a_crash_mid_stream(
    kafka: KafkaBroker,
) -> None:
    topic = await topic_with_messages(kafka, "eos-in")
    out = kafka.qualify("eos-out")
    await kafka.create_topic(out, partitions=1, replication_factor=3)
    group = kafka.qualify("eos")
    transactional_id = kafka.qualify("eos-tx")

    def transform(record: KafkaRecord) -> list[Output]:
        return [Output(out, record.value.upper())]

    first = await kafka.consumer([topic], group_id=group)
    zombie = await kafka.producer(transactional_id=transactional_id)
    with pytest.raises(Crashed):
        await consume_transform_produce(
            first,
            zombie,
            transform,
            until=Until(idle=BOUND),
            crash=crash_at("after_send", detail="m3"),
            max_records=2,
        )
    await first.close()  # the producer is left as it was: its transaction stays open
    second = await kafka.consumer([topic], group_id=group)
    producer = await kafka.producer(transactional_id=transactional_id)  # fences the zombie
    outcome = await consume_transform_produce(
        second, producer, transform, until=Until(count=REMAINING, idle=BOUND), max_records=2
    )
    await second.close()
    assert outcome.handled == REMAINING
    committed = await read(kafka, out, "read_committed", len(MESSAGES))
    assert sorted(committed) == sorted(f"{m}>1" for m in MESSAGES)
    everything = await read(kafka, out, "read_uncommitted", len(MESSAGES) + 1)
    assert Counter(everything)["m3>1"] == 2  # the aborted copy is in the log, hidden by isolation


@pytest.mark.postgres
async def test_offsets_in_postgres_apply_each_record_once_and_kafka_sees_no_commit(
    kafka: KafkaBroker, endpoints: Endpoints, postgres_namespace: str
) -> None:
    topic = await topic_with_messages(kafka, "db-offsets")
    group = kafka.qualify("db-offsets")
    recorder = Recorder()
    reporter = Reporter(kafka.bus, "postgres")
    kafka.bus.subscribe(recorder)

    async def credit(tx: Transaction, record: KafkaRecord) -> None:
        await tx.credit("acct", 1, message_id=record.message_id)

    async with PostgresDatabase(endpoints.postgres_dsn, postgres_namespace) as db:
        first = await kafka.consumer([topic], group_id=group, name="c1")
        with pytest.raises(Crashed):
            await offsets_in_database(
                first,
                db,
                credit,
                until=Until(idle=BOUND),
                reporter=reporter,
                crash=crash_at("before_commit", detail="m3"),
            )
        await first.close()
        second = await kafka.consumer([topic], group_id=group, name="c2")
        outcome = await offsets_in_database(
            second, db, credit, until=Until(count=REMAINING, idle=BOUND), reporter=reporter
        )
        await second.close()
        assert outcome.applied == REMAINING
        assert sorted(p.message_id for p in await db.postings()) == sorted(MESSAGES)
        assert await db.stored_offsets(group, [(topic, 0)]) == {(topic, 0): len(MESSAGES)}
    restored = [o for o in recorder.of_kind(OffsetRestored) if o.consumer == "c2"]  # type: ignore[attr-defined]
    assert [o.offset for o in restored] == [2]  # type: ignore[attr-defined]
    assert await kafka.group_offsets(group) == {}


async def test_the_kafka_event_log_takes_both_writers_and_the_replay_shows_it(
    kafka: KafkaBroker,
) -> None:
    recorder = Recorder()
    kafka.bus.subscribe(recorder)
    log = KafkaEventLog(kafka, "orders")
    await log.setup()
    try:
        order = Order("o1")
        order.create("alice")
        order.add_item("sku1", 1, 20)
        await log.publish(order.pending)
        first = Order.load_from_events("o1", order.pending)
        second = Order.load_from_events("o1", order.pending)
        first.pay(20)
        second.cancel("no")
        await log.publish(first.pending)
        await log.publish(second.pending)  # accepted: Kafka has no conditional append
        replayed = await log.read_all()
        assert [s.event.version for s in replayed] == [1, 2, 3, 3]
        projection = OrdersByStatus(reporter=Reporter(kafka.bus, kafka.name))
        assert await rebuild(projection, log) == 4
        assert projection.counts() == {"paid": 1}
        assert [o.detected for o in recorder.of_kind(VersionConflict)] == ["replay"]  # type: ignore[attr-defined]
    finally:
        await log.close()
