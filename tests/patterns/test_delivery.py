"""The delivery-semantics loops on the simulator's Kafka (virtual time): the same crash in
each loop, then a replacement consumer in the same group, and what the effects show: lost,
duplicated, or exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from mqlab.brokers.kafka.api import KafkaRecord, TopicPartition
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.kafka.consumer import SimKafkaConsumer
from mqlab.observe.bus import Recorder
from mqlab.observe.events import OffsetRestored, OffsetStored, Processed
from mqlab.patterns.database import MemoryDatabase, Transaction
from mqlab.patterns.delivery import (
    LoopOutcome,
    Output,
    Until,
    apply_in_database,
    apply_with_dedup_store,
    at_least_once,
    at_most_once,
    consume_transform_produce,
    idempotent_consumer,
    offsets_in_database,
)
from mqlab.patterns.harness import Crashed, CrashHook, Reporter, crash_at, no_crash
from mqlab.patterns.idempotency import MemoryDedupStore

VIRTUAL_TIME = True

MESSAGES = [f"m{i}" for i in range(1, 7)]
CRASH_ON = "m3"
UNTIL = Until(idle=15.0)


class Run:
    """A topic with the messages produced, a group, and the effects counted."""

    def __init__(self, kafka: SimKafkaBroker, partitions: int = 1) -> None:
        self.kafka = kafka
        self.partitions = partitions
        self.topic = kafka.qualify("in")
        self.group = kafka.qualify("g")
        self.effects: Counter[str] = Counter()
        self.reporter = Reporter(kafka.bus, kafka.name)
        self.consumers = 0

    async def setup(self) -> None:
        await self.kafka.create_topic(self.topic, partitions=self.partitions, replication_factor=3)
        producer = await self.kafka.producer(acks="all")
        for number, message_id in enumerate(MESSAGES):
            await producer.send(
                self.topic,
                message_id.encode(),
                partition=number % self.partitions,
                message_id=message_id,
            )
        await producer.close()

    async def consumer(self) -> SimKafkaConsumer:
        self.consumers += 1
        consumer = await self.kafka.consumer(
            [self.topic], group_id=self.group, name=f"c{self.consumers}", session_timeout=3.0
        )
        assert isinstance(consumer, SimKafkaConsumer)
        return consumer

    async def handle(self, record: KafkaRecord) -> None:
        self.effects[record.message_id] += 1

    async def crash_then_recover(
        self,
        loop: Callable[[SimKafkaConsumer, CrashHook], Awaitable[LoopOutcome]],
        point: str,
        on: str = CRASH_ON,
    ) -> LoopOutcome:
        """Run ``loop`` with a crash at ``point`` of message ``on``, vanish (kill -9), then
        run a replacement until the topic is drained."""
        first = await self.consumer()
        with pytest.raises(Crashed):
            await loop(first, crash_at(point, detail=on))
        await first.crash(point)
        second = await self.consumer()
        try:
            return await loop(second, no_crash)
        finally:
            await second.close()


async def test_at_most_once_loses_the_record_committed_before_the_crash(
    sim_kafka: SimKafkaBroker,
) -> None:
    run = Run(sim_kafka)
    await run.setup()

    async def loop(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        return await at_most_once(
            consumer, run.handle, until=UNTIL, reporter=run.reporter, crash=crash
        )

    await run.crash_then_recover(loop, "after_offset_commit")
    assert run.effects == Counter({m: 1 for m in MESSAGES if m != CRASH_ON})


async def test_at_least_once_processes_the_uncommitted_record_again(
    sim_kafka: SimKafkaBroker,
) -> None:
    run = Run(sim_kafka)
    await run.setup()

    async def loop(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        return await at_least_once(
            consumer, run.handle, until=UNTIL, reporter=run.reporter, crash=crash
        )

    await run.crash_then_recover(loop, "after_processing")
    assert run.effects == Counter({m: 2 if m == CRASH_ON else 1 for m in MESSAGES})


async def test_at_least_once_loses_nothing_whatever_the_crash_point(
    sim_kafka: SimKafkaBroker,
) -> None:
    for point in ("after_receive", "after_processing", "after_offset_commit"):
        run = Run(sim_kafka)
        run.topic, run.group = sim_kafka.qualify(f"in-{point}"), sim_kafka.qualify(f"g-{point}")
        await run.setup()

        async def loop(consumer: SimKafkaConsumer, crash: CrashHook, run: Run = run) -> LoopOutcome:
            return await at_least_once(consumer, run.handle, until=UNTIL, crash=crash)

        await run.crash_then_recover(loop, point)
        assert set(run.effects) == set(MESSAGES), point


async def test_the_idempotent_consumer_skips_the_redelivery(
    sim_kafka: SimKafkaBroker,
) -> None:
    run, db = Run(sim_kafka), MemoryDatabase()
    await run.setup()
    recorder = Recorder()
    sim_kafka.bus.subscribe(recorder)

    async def credit(tx: Transaction, record: KafkaRecord) -> None:
        await tx.credit("acct", 1, message_id=record.message_id)

    async def loop(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        apply = apply_in_database(db, run.group, credit, crash=crash)
        return await idempotent_consumer(
            consumer, apply, until=UNTIL, reporter=run.reporter, crash=crash
        )

    outcome = await run.crash_then_recover(loop, "after_processing")
    assert await db.balance("acct") == len(MESSAGES)
    assert sorted(p.message_id for p in await db.postings()) == sorted(MESSAGES)
    assert outcome.skipped == 1
    skipped = [o for o in recorder.of_kind(Processed) if o.skipped_duplicate]  # type: ignore[attr-defined]
    assert [o.message_id for o in skipped] == [CRASH_ON]  # type: ignore[attr-defined]


async def test_a_dedup_store_next_to_the_work_still_repeats_a_crash_after_the_work(
    sim_kafka: SimKafkaBroker,
) -> None:
    run, store = Run(sim_kafka), MemoryDedupStore(ttl=3600.0)
    await run.setup()

    async def loop(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        apply = apply_with_dedup_store(store, run.group, run.handle, crash=crash)
        return await idempotent_consumer(consumer, apply, until=UNTIL, crash=crash)

    await run.crash_then_recover(loop, "after_processing")
    assert run.effects == Counter(dict.fromkeys(MESSAGES, 1))
    run2 = Run(sim_kafka)
    run2.topic, run2.group = sim_kafka.qualify("in2"), sim_kafka.qualify("g2")
    await run2.setup()
    store2 = MemoryDedupStore(ttl=3600.0)

    async def loop2(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        apply = apply_with_dedup_store(store2, run2.group, run2.handle, crash=crash)
        return await idempotent_consumer(consumer, apply, until=UNTIL, crash=crash)

    await run2.crash_then_recover(loop2, "after_work")
    assert run2.effects[CRASH_ON] == 2


async def read_output(kafka: SimKafkaBroker, topic: str, isolation: str) -> list[str]:
    consumer = await kafka.consumer(
        [topic],
        group_id=kafka.qualify(f"reader-{isolation}"),
        isolation_level=isolation,  # type: ignore[arg-type]
    )
    seen: list[str] = []
    try:
        idle = 0
        while idle < 5:
            batch = await consumer.poll(timeout=1.0)
            idle = 0 if batch else idle + 1
            seen += [r.message_id for r in batch]
    finally:
        await consumer.close()
    return seen


@pytest.mark.parametrize("point", ["after_send", "after_offsets_sent", "after_transaction_commit"])
async def test_kafka_transactions_give_each_input_one_committed_output(
    sim_kafka: SimKafkaBroker, point: str
) -> None:
    run = Run(sim_kafka)
    await run.setup()
    out = sim_kafka.qualify("out")
    await sim_kafka.create_topic(out, partitions=1, replication_factor=3)

    def transform(record: KafkaRecord) -> list[Output]:
        return [Output(out, record.value.upper())]

    async def loop(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        # The same transactional id for the replacement: starting it fences the dead one
        # and aborts the transaction it left open.
        producer = await sim_kafka.producer(transactional_id=run.group + "-tx")
        return await consume_transform_produce(
            consumer,
            producer,
            transform,
            until=UNTIL,
            reporter=run.reporter,
            crash=crash,
            max_records=2,
        )

    # The crash hits the first transaction. On the simulator a transaction that a producer
    # begins within the replication delay after its previous commit loses the start of its
    # aborted range (its first record then leaks to read_committed readers), so a crash in a
    # later batch is tested on the real Kafka only (test_patterns_kafka.py).
    await run.crash_then_recover(loop, point, on="m1")
    committed = await read_output(sim_kafka, out, "read_committed")
    assert sorted(committed) == sorted(f"{m}>1" for m in MESSAGES)
    everything = await read_output(sim_kafka, out, "read_uncommitted")
    if point == "after_transaction_commit":
        assert sorted(everything) == sorted(committed)
    else:
        # The aborted transaction's records are in the log; only read_committed hides them.
        assert len(everything) > len(committed)


@pytest.mark.parametrize("point", ["after_receive", "before_commit", "after_commit"])
async def test_offsets_in_the_database_apply_each_record_once(
    sim_kafka: SimKafkaBroker, point: str
) -> None:
    run, db = Run(sim_kafka), MemoryDatabase()
    await run.setup()
    recorder = Recorder()
    sim_kafka.bus.subscribe(recorder)

    async def credit(tx: Transaction, record: KafkaRecord) -> None:
        await tx.credit("acct", 1, message_id=record.message_id)

    async def loop(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        return await offsets_in_database(
            consumer, db, credit, until=UNTIL, reporter=run.reporter, crash=crash
        )

    await run.crash_then_recover(loop, point)
    assert sorted(p.message_id for p in await db.postings()) == sorted(MESSAGES)
    stored = await db.stored_offsets(run.group, [(run.topic, 0)])
    assert stored == {(run.topic, 0): len(MESSAGES)}
    restored = [o for o in recorder.of_kind(OffsetRestored) if o.consumer == "c2"]  # type: ignore[attr-defined]
    expected = 2 if point != "after_commit" else 3
    assert [o.offset for o in restored] == [expected]  # type: ignore[attr-defined]
    assert len(recorder.of_kind(OffsetStored)) == len(MESSAGES)
    # Kafka never saw a commit from this group: the database is the source of truth.
    assert await sim_kafka.group_offsets(run.group) == {}


async def test_the_database_refuses_a_record_from_a_position_it_disagrees_with(
    sim_kafka: SimKafkaBroker,
) -> None:
    """A consumer whose position is behind the database (as after a rebalance it did not
    notice) gets nothing applied twice: the transaction refuses, the loop seeks."""
    run, db = Run(sim_kafka), MemoryDatabase()
    await run.setup()

    async def credit(tx: Transaction, record: KafkaRecord) -> None:
        await tx.credit("acct", 1, message_id=record.message_id)

    first = await run.consumer()
    await offsets_in_database(first, db, credit, until=Until(idle=5.0))
    await first.close()
    # Someone rewinds the group in Kafka (it has no commits: the next member starts at 0).
    second = await run.consumer()
    outcome = await offsets_in_database(second, db, credit, until=Until(idle=5.0))
    await second.close()
    assert sorted(p.message_id for p in await db.postings()) == sorted(MESSAGES)
    assert outcome.applied == 0


async def test_offsets_in_the_database_across_two_partitions_and_a_rebalance(
    sim_kafka: SimKafkaBroker,
) -> None:
    run, db = Run(sim_kafka, partitions=2), MemoryDatabase()
    await run.setup()

    async def credit(tx: Transaction, record: KafkaRecord) -> None:
        await tx.credit("acct", 1, message_id=record.message_id)

    async def loop(consumer: SimKafkaConsumer, crash: CrashHook) -> LoopOutcome:
        return await offsets_in_database(consumer, db, credit, until=UNTIL, crash=crash)

    await run.crash_then_recover(loop, "before_commit")
    assert sorted(p.message_id for p in await db.postings()) == sorted(MESSAGES)
    stored = await db.stored_offsets(run.group, [(run.topic, 0), (run.topic, 1)])
    assert stored == {(run.topic, 0): 3, (run.topic, 1): 3}


async def test_a_loop_stops_on_count(sim_kafka: SimKafkaBroker) -> None:
    run = Run(sim_kafka)
    await run.setup()
    consumer = await run.consumer()
    outcome = await at_least_once(consumer, run.handle, until=Until(count=4, idle=10.0))
    await consumer.close()
    assert (outcome.handled, outcome.stopped_by) == (4, "count")
    assert await sim_kafka.group_offsets(run.group) == {TopicPartition(run.topic, 0): 4}
