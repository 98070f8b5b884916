"""The transactional outbox against the dual write, on the memory database and the
simulator's Kafka (virtual time), and the memory database's transactions themselves."""

from __future__ import annotations

from collections import Counter

import pytest

from mqlab.brokers.kafka.api import KafkaRecord
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import BusinessWriteCommitted, OutboxRelayed, OutboxWritten
from mqlab.patterns.database import MemoryDatabase, OutboxMessage, Transaction
from mqlab.patterns.delivery import Until, apply_in_database, idempotent_consumer
from mqlab.patterns.harness import Crashed, Reporter, crash_at
from mqlab.patterns.outbox import OutboxRelay, dual_write, kafka_publisher, write_with_outbox

VIRTUAL_TIME = True


class Published:
    """A publisher that remembers what it published (and can fail on demand)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.fail = False

    async def __call__(self, message: OutboxMessage) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.messages.append(message.message_id)


async def pay(tx: Transaction) -> None:
    await tx.credit("wallet", -30, message_id="order-1")


EVENT = OutboxMessage("evt-1", "payments", b'{"order": 1}', key="order-1")


async def test_the_dual_write_loses_the_event_when_it_crashes_after_the_commit(
    bus: ObservationBus, recorder: Recorder
) -> None:
    db, published = MemoryDatabase(), Published()
    with pytest.raises(Crashed):
        await dual_write(
            db,
            "order-1",
            pay,
            EVENT,
            published,
            reporter=Reporter(bus, "memory"),
            crash=crash_at("after_commit"),
        )
    assert await db.balance("wallet") == -30
    assert published.messages == []  # committed, never announced: nothing will ever retry it
    [committed] = recorder.of_kind(BusinessWriteCommitted)
    assert not committed.outbox  # type: ignore[attr-defined]


async def test_the_dual_write_also_loses_it_when_the_broker_is_down() -> None:
    db, published = MemoryDatabase(), Published()
    published.fail = True
    with pytest.raises(ConnectionError):
        await dual_write(db, "order-1", pay, EVENT, published)
    assert await db.balance("wallet") == -30
    assert published.messages == []


async def test_the_outbox_commits_the_event_with_the_write_and_the_relay_publishes_it(
    bus: ObservationBus, recorder: Recorder
) -> None:
    db, published = MemoryDatabase(), Published()
    reporter = Reporter(bus, "memory")
    with pytest.raises(Crashed):
        await write_with_outbox(
            db, "order-1", pay, EVENT, reporter=reporter, crash=crash_at("after_commit")
        )
    # The service died right after the commit; a relay (this one, or another process) runs.
    relay = OutboxRelay(db, published, reporter=reporter)
    assert await relay.relay_once() == 1
    assert published.messages == ["evt-1"]
    assert await relay.relay_once() == 0
    assert [r.relayed for r in await db.outbox()] == [True]
    assert [o.kind for o in recorder.observations] == [
        "business_write_committed",
        "outbox_written",
        "outbox_relayed",
    ]


async def test_a_failed_business_write_leaves_no_event() -> None:
    db = MemoryDatabase()

    async def refused(tx: Transaction) -> None:
        await tx.credit("wallet", -30, message_id="order-1")
        raise ValueError("card declined")

    with pytest.raises(ValueError, match="declined"):
        await write_with_outbox(db, "order-1", refused, EVENT)
    assert await db.outbox() == []
    assert await db.balance("wallet") == 0


async def test_a_relay_crash_after_publishing_publishes_again() -> None:
    db, published = MemoryDatabase(), Published()
    for number in range(1, 4):
        await write_with_outbox(db, "o", pay, OutboxMessage(f"evt-{number}", "payments", b""))
    crashing = OutboxRelay(db, published, crash=crash_at("after_publish", detail="evt-2"))
    with pytest.raises(Crashed):
        await crashing.relay_once()
    # The batch's marks never committed: everything it held is published again, in order.
    assert [r.relayed for r in await db.outbox()] == [False, False, False]
    assert await OutboxRelay(db, published).relay_once() == 3
    assert published.messages == ["evt-1", "evt-2", "evt-1", "evt-2", "evt-3"]


async def test_a_failed_publish_keeps_the_rest_in_order() -> None:
    db, published = MemoryDatabase(), Published()
    for number in range(1, 4):
        await write_with_outbox(db, "o", pay, OutboxMessage(f"evt-{number}", "payments", b""))

    calls = 0

    async def flaky(message: OutboxMessage) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("broker down")
        await published(message)

    assert await OutboxRelay(db, flaky).relay_once() == 1
    assert [r.relayed for r in await db.outbox()] == [True, False, False]
    published.fail = True
    with pytest.raises(ConnectionError):
        await OutboxRelay(db, published).relay_once()
    published.fail = False
    assert await OutboxRelay(db, published).relay_once() == 2
    assert published.messages == ["evt-1", "evt-2", "evt-3"]


async def test_two_relays_never_hold_the_same_rows() -> None:
    db = MemoryDatabase()
    for number in range(1, 5):
        await write_with_outbox(db, "o", pay, OutboxMessage(f"evt-{number}", "payments", b""))
    async with db.outbox_batch(2) as first, db.outbox_batch(10) as second:
        assert [r.message.message_id for r in first.rows] == ["evt-1", "evt-2"]
        assert [r.message.message_id for r in second.rows] == ["evt-3", "evt-4"]


async def test_outbox_to_kafka_to_an_idempotent_consumer_is_exactly_once_despite_a_relay_crash(
    sim_kafka: SimKafkaBroker,
) -> None:
    """The whole chain: outbox, relay crash, republish, consumer dedup."""
    orders, ledger = MemoryDatabase(), MemoryDatabase()
    topic = sim_kafka.qualify("payments")
    await sim_kafka.create_topic(topic, partitions=1, replication_factor=3)
    producer = await sim_kafka.producer(acks="all", idempotent=True)
    for number in range(1, 4):
        message = OutboxMessage(f"evt-{number}", topic, str(number).encode(), key="o")
        await write_with_outbox(orders, f"order-{number}", pay, message)
    with pytest.raises(Crashed):
        await OutboxRelay(
            orders, kafka_publisher(producer), crash=crash_at("after_publish", detail="evt-3")
        ).relay_once()
    await OutboxRelay(orders, kafka_publisher(producer)).relay_once()
    await producer.close()

    async def book(tx: Transaction, record: KafkaRecord) -> None:
        await tx.credit("revenue", int(record.value), message_id=record.message_id)

    group = sim_kafka.qualify("ledger")
    consumer = await sim_kafka.consumer([topic], group_id=group)
    outcome = await idempotent_consumer(
        consumer, apply_in_database(ledger, group, book), until=Until(idle=5.0)
    )
    await consumer.close()
    assert (outcome.handled, outcome.applied, outcome.skipped) == (6, 3, 3)
    assert Counter(p.message_id for p in await ledger.postings()) == Counter(
        {"evt-1": 1, "evt-2": 1, "evt-3": 1}
    )
    assert await ledger.balance("revenue") == 6


async def test_outbox_observations(bus: ObservationBus, recorder: Recorder) -> None:
    db = MemoryDatabase()
    reporter = Reporter(bus, "memory")
    outbox_id = await write_with_outbox(db, "order-1", pay, EVENT, reporter=reporter)
    await OutboxRelay(db, Published(), reporter=reporter).relay_once()
    [written] = recorder.of_kind(OutboxWritten)
    [relayed] = recorder.of_kind(OutboxRelayed)
    assert (written.outbox_id, relayed.outbox_id, relayed.destination) == (
        outbox_id,
        outbox_id,
        "payments",
    )  # type: ignore[attr-defined]


# --- the memory database's transactions ------------------------------------------------------


async def test_a_transaction_that_raises_or_crashes_leaves_nothing() -> None:
    db = MemoryDatabase()

    async def write_then(failure: BaseException) -> None:
        async with db.transaction() as tx:
            assert await tx.claim("c", "m1")
            await tx.credit("a", 5, message_id="m1")
            assert await tx.balance("a") == 5
            await tx.add_to_outbox(OutboxMessage("e1", "t", b""))
            raise failure

    with pytest.raises(ValueError, match="no"):
        await write_then(ValueError("no"))
    with pytest.raises(Crashed):
        await write_then(Crashed("before_commit", "m1"))
    assert (await db.balance("a"), await db.postings(), await db.outbox()) == (0, [], [])
    assert not await db.is_claimed("c", "m1")


async def test_advance_offset_is_a_compare_and_set() -> None:
    db = MemoryDatabase()
    async with db.transaction() as tx:
        assert await tx.advance_offset("g", "t", 0, start=5, end=6)  # nothing stored yet
    async with db.transaction() as tx:
        assert not await tx.advance_offset("g", "t", 0, start=5, end=6)
        assert await tx.advance_offset("g", "t", 0, start=6, end=7)
    assert await db.stored_offsets("g", [("t", 0), ("t", 1)]) == {("t", 0): 7}


async def test_set_balance_reports_before_and_after() -> None:
    db = MemoryDatabase()
    async with db.transaction() as tx:
        await tx.credit("a", 7, message_id="m1")
        change = await tx.set_balance("a", 100, message_id="m2")
    assert (change.before, change.after) == (7, 100)
    assert [(p.operation, p.amount) for p in await db.postings("a")] == [
        ("credit", 7),
        ("set", 100),
    ]
