"""What every Kafka adapter (the real one and the simulator's model) must do.

``KafkaContract`` is not collected on its own (its name does not start with ``Test``); a
subclass per backend provides the ``broker`` fixture: a connected adapter in a fresh namespace,
closed (and so cleaned up) after the test.

The tests wait only through the adapter's own timeouts and asyncio (``loop.time()`` deadlines,
``poll(timeout=...)``), never ``time.sleep``, so they run on the simulator's virtual clock as
well as against the lab's cluster. Topics about the cluster's behaviour use replication factor
3, like the lab (and the simulator) with its three brokers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import (
    AssignmentStrategy,
    KafkaAPI,
    KafkaConsumer,
    KafkaRecord,
    TopicPartition,
    default_partition,
)
from mqlab.observe.bus import Recorder
from mqlab.observe.events import Committed, Delivered, Observation, Produced, Rebalanced
from tests import waiting

REPLICATION = 3
# How long a test waits for records or an assignment it expects. Only ever reached when
# something is broken (a healthy group settles in a few seconds with the adapter's short
# heartbeat/session defaults), so it is generous rather than tight.
EXPECT = 30.0
# One poll's wait: short, so loops that wait for a condition re-check it often.
POLL = 0.5

_O = TypeVar("_O", bound=Observation)


def record(broker: KafkaAPI) -> Recorder:
    """Start recording the adapter's observations."""
    recorder = Recorder()
    broker.bus.subscribe(recorder)
    return recorder


def observed(recorder: Recorder, kind: type[_O]) -> list[_O]:
    """The recorded observations of one kind, typed."""
    return [o for o in recorder.observations if isinstance(o, kind)]


async def poll_until(
    consumer: KafkaConsumer, count: int, *, within: float = EXPECT
) -> list[KafkaRecord]:
    """Poll until ``count`` records arrived (the group join happens inside the polls)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    records: list[KafkaRecord] = []
    while len(records) < count:
        assert loop.time() < deadline, (
            f"{consumer.name} got {len(records)} of {count} records within {within}s"
        )
        records += await consumer.poll(timeout=POLL)
    return records


async def poll_all_until(
    consumers: Sequence[KafkaConsumer],
    condition: Callable[[], bool],
    what: str,
    *,
    within: float = EXPECT,
) -> None:
    """Keep every consumer polling (as a live group does) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"not within {within}s: {what}"
        await asyncio.gather(*(c.poll(timeout=POLL) for c in consumers))


async def produce(
    broker: KafkaAPI, topic: str, values: Sequence[bytes], *, partition: int | None = None
) -> None:
    producer = await broker.producer(acks="all")
    for value in values:
        await producer.send(topic, value, partition=partition)
    await producer.close()


class KafkaContract:
    """Behaviour shared by every Kafka backend (see the module docstring)."""

    # --- produce and consume --------------------------------------------------------------

    async def test_keyed_records_land_where_the_java_partitioner_puts_them(
        self, broker: KafkaAPI
    ) -> None:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("orders"), partitions=4, replication_factor=REPLICATION
        )
        producer = await broker.producer(acks="all", name="checkout")
        sent: dict[str, tuple[bytes, bytes, int, int]] = {}
        for i in range(24):
            key = f"order-{i % 8}".encode()
            value = f"event-{i}".encode()
            metadata = await producer.send(topic.name, value, key=key, message_id=f"msg-{i}")
            # Fidelity with Kafka's Java client: same key, same partition, and exactly the
            # partition murmur2 gives (what a Java producer would pick for that key).
            assert metadata.partition == default_partition(key, 4)
            sent[f"msg-{i}"] = (key, value, metadata.partition, metadata.offset)
        assert len({partition for _, _, partition, _ in sent.values()}) > 1

        consumer = await broker.consumer([topic.name], group_id=broker.qualify("billing"))
        records = await poll_until(consumer, len(sent))
        received = {r.message_id: (r.key, r.value, r.partition, r.offset) for r in records}
        assert received == sent

        produced = observed(recorder, Produced)
        assert {(o.message_id, o.partition, o.position) for o in produced} == {
            (mid, partition, offset) for mid, (_, _, partition, offset) in sent.items()
        }
        assert {o.producer for o in produced} == {"checkout"}
        delivered = observed(recorder, Delivered)
        assert sorted(o.message_id for o in delivered) == sorted(sent)
        assert all(o.delivery_count == 1 and not o.redelivered for o in delivered)
        assert {o.consumer for o in delivered} == {consumer.name}

    async def test_order_holds_within_each_partition_for_many_keys(self, broker: KafkaAPI) -> None:
        topic = await broker.create_topic(
            broker.qualify("payments"), partitions=4, replication_factor=REPLICATION
        )
        producer = await broker.producer(acks="all")
        keys = [f"account-{n}".encode() for n in range(16)]
        rounds = 6
        for sequence in range(rounds):  # interleave the keys: k0:0, k1:0, ... k0:1, k1:1 ...
            for key in keys:
                await producer.send(topic.name, f"{sequence}".encode(), key=key)

        consumer = await broker.consumer([topic.name], group_id=broker.qualify("ledger"))
        records = await poll_until(consumer, rounds * len(keys))

        offsets_by_partition: dict[int, list[int]] = {}
        sequences_by_key: dict[bytes, list[int]] = {}
        for r in records:
            offsets_by_partition.setdefault(r.partition, []).append(r.offset)
            assert r.key is not None
            sequences_by_key.setdefault(r.key, []).append(int(r.value))
        # Kafka's promise: within a partition, records arrive in offset order, so each key
        # (which lives in one partition) keeps the order it was sent in...
        for offsets in offsets_by_partition.values():
            assert offsets == sorted(offsets)
        assert sequences_by_key == {key: list(range(rounds)) for key in keys}
        # ... while the keys were spread over several partitions, which promise nothing about
        # each other.
        assert len(offsets_by_partition) > 1

    # --- redelivery and replay ------------------------------------------------------------

    async def test_uncommitted_records_go_to_the_next_member(self, broker: KafkaAPI) -> None:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("jobs"), partitions=1, replication_factor=REPLICATION
        )
        await produce(broker, topic.name, [b"job-1", b"job-2", b"job-3"])
        group = broker.qualify("workers")

        first = await broker.consumer([topic.name], group_id=group, name="first")
        taken = await poll_until(first, 3)
        await first.close()  # leaves the group without committing anything
        assert await broker.group_offsets(group) == {}

        second = await broker.consumer([topic.name], group_id=group, name="second")
        again = await poll_until(second, 3)
        assert [(r.offset, r.message_id) for r in again] == [
            (r.offset, r.message_id) for r in taken
        ]

        # The second member reads the same offsets again. Kafka has no redelivered flag and no
        # delivery count, so both reads look alike: the re-read shows as the same offsets
        # delivered to another consumer (and as duplicates in a scenario's ledger).
        deliveries = [
            (o.consumer, o.position, o.delivery_count, o.redelivered)
            for o in observed(recorder, Delivered)
        ]
        assert deliveries == [("first", n, 1, False) for n in range(3)] + [
            ("second", n, 1, False) for n in range(3)
        ]

    async def test_replay_with_seek_to_beginning(self, broker: KafkaAPI) -> None:
        assert broker.capabilities.replay is True
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("audit"), partitions=1, replication_factor=REPLICATION
        )
        await produce(broker, topic.name, [f"entry-{n}".encode() for n in range(5)])
        tp = TopicPartition(topic.name, 0)

        consumer = await broker.consumer([topic.name], group_id=broker.qualify("auditors"))
        first_pass = await poll_until(consumer, 5)
        await consumer.commit()
        assert await consumer.committed(tp) == 5
        assert await consumer.position(tp) == 5

        await consumer.seek_to_beginning()
        assert await consumer.position(tp) == 0
        second_pass = await poll_until(consumer, 5)
        assert [r.value for r in second_pass] == [r.value for r in first_pass]

        await consumer.seek(tp, 3)
        assert [r.offset for r in await poll_until(consumer, 2)] == [3, 4]

        # Every replayed offset is delivered again, and none is flagged (Kafka has no flag).
        flags = [(o.position, o.redelivered) for o in observed(recorder, Delivered)]
        assert flags == [(n, False) for n in range(5)] * 2 + [(3, False), (4, False)]
        # Replaying moved the position, not the committed offset.
        assert await broker.group_offsets(consumer.group_id) == {tp: 5}

    async def test_a_consumer_knows_it_is_behind_the_end_its_fetch_saw(
        self, broker: KafkaAPI
    ) -> None:
        topic = await broker.create_topic(
            broker.qualify("readings"), partitions=1, replication_factor=REPLICATION
        )
        await produce(broker, topic.name, [f"reading-{n}".encode() for n in range(10)])
        consumer = await broker.consumer([topic.name], group_id=broker.qualify("meters"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXPECT
        first: list[KafkaRecord] = []
        while not first:
            assert loop.time() < deadline, "no record within the deadline"
            first = await consumer.poll(max_records=3, timeout=POLL)
        assert len(first) == 3
        assert await consumer.behind()  # seven more are known to be there
        rest = await poll_until(consumer, 7)
        assert [r.offset for r in first + rest] == list(range(10))
        assert not await consumer.behind()
        await consumer.seek(TopicPartition(topic.name, 0), 4)
        assert await consumer.behind()  # a replay puts it behind again

    async def test_replay_with_a_new_group(self, broker: KafkaAPI) -> None:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("events"), partitions=1, replication_factor=REPLICATION
        )
        await produce(broker, topic.name, [f"event-{n}".encode() for n in range(4)])

        old = await broker.consumer([topic.name], group_id=broker.qualify("projection-v1"))
        await poll_until(old, 4)
        await old.commit()
        await old.close()

        new = await broker.consumer(
            [topic.name], group_id=broker.qualify("projection-v2"), auto_offset_reset="earliest"
        )
        replayed = await poll_until(new, 4)
        assert [r.offset for r in replayed] == [0, 1, 2, 3]
        # Another group reading the same records is not a redelivery.
        assert not any(o.redelivered for o in observed(recorder, Delivered))

    # --- groups, offsets and inspect() ----------------------------------------------------

    async def test_committed_offsets_and_lag_in_inspect(self, broker: KafkaAPI) -> None:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("clicks"), partitions=2, replication_factor=REPLICATION
        )
        await produce(broker, topic.name, [f"a{n}".encode() for n in range(6)], partition=0)
        await produce(broker, topic.name, [f"b{n}".encode() for n in range(4)], partition=1)
        tp0, tp1 = TopicPartition(topic.name, 0), TopicPartition(topic.name, 1)
        group = broker.qualify("analytics")

        consumer = await broker.consumer([topic.name], group_id=group, name="analyst")
        await poll_until(consumer, 10)
        await consumer.commit({tp0: 4, tp1: 4})  # processed 4 of p0, all of p1
        assert await consumer.committed(tp0) == 4
        assert await consumer.committed(tp1) == 4
        assert await broker.group_offsets(group) == {tp0: 4, tp1: 4}
        committed = {
            (o.group, o.topic, o.partition, o.offset) for o in observed(recorder, Committed)
        }
        assert committed == {(group, topic.name, 0, 4), (group, topic.name, 1, 4)}

        snapshot = await broker.inspect()
        assert all(t.name.startswith(broker.namespace) for t in snapshot.topics)
        assert all(g.group_id.startswith(broker.namespace) for g in snapshot.groups)
        assert len([b for b in snapshot.brokers if b.alive]) == REPLICATION

        (info,) = [t for t in snapshot.topics if t.name == topic.name]
        assert info.replication_factor == REPLICATION
        assert [(p.partition, p.log_start, p.high_watermark) for p in info.partitions] == [
            (0, 0, 6),
            (1, 0, 4),
        ]
        for p in info.partitions:
            assert len(p.replicas) == REPLICATION
            assert p.leader in p.isr
            assert sorted(p.isr) == sorted(p.replicas)

        (group_info,) = [g for g in snapshot.groups if g.group_id == group]
        lag = {(o.partition, o.committed, o.high_watermark, o.lag) for o in group_info.offsets}
        assert lag == {(0, 4, 6, 2), (1, 4, 4, 0)}
        (member,) = group_info.members
        assert member.client_id == "analyst"
        assert frozenset(member.assignment) == consumer.assignment() == {tp0, tp1}
        assert group_info.state == "Stable"

    @pytest.mark.parametrize(
        ("strategy", "expected_a", "expected_b"),
        [("range", {0, 1}, {2, 3}), ("roundrobin", {0, 2}, {1, 3})],
    )
    async def test_assignment_strategies_for_two_members(
        self,
        broker: KafkaAPI,
        strategy: AssignmentStrategy,
        expected_a: set[int],
        expected_b: set[int],
    ) -> None:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("shipments"), partitions=4, replication_factor=REPLICATION
        )
        group = broker.qualify(f"shippers-{strategy}")
        # Members are ordered by member id, which starts with the client name: "a" sorts first.
        a = await broker.consumer(
            [topic.name],
            group_id=group,
            name="a",
            assignment_strategy=strategy,
        )
        b = await broker.consumer(
            [topic.name],
            group_id=group,
            name="b",
            assignment_strategy=strategy,
        )

        def partitions(consumer: KafkaConsumer) -> set[int]:
            return {tp.partition for tp in consumer.assignment()}

        await poll_all_until(
            [a, b],
            lambda: len(partitions(a)) == 2 and len(partitions(b)) == 2,
            f"{strategy}: two members with two partitions each",
        )
        assert partitions(a) == expected_a
        assert partitions(b) == expected_b

        snapshot = await broker.inspect()
        (group_info,) = [g for g in snapshot.groups if g.group_id == group]
        assert group_info.protocol == strategy
        assert {m.client_id: {tp.partition for tp in m.assignment} for m in group_info.members} == {
            "a": expected_a,
            "b": expected_b,
        }
        final = {
            member: {int(tp.rsplit(":", 1)[1]) for tp in tps}
            for o in observed(recorder, Rebalanced)
            if o.group == group
            for member, tps in o.assignment
        }
        assert final == {"a": expected_a, "b": expected_b}

    # --- exactly-once building blocks -----------------------------------------------------

    async def test_send_many_reports_every_record(self, broker: KafkaAPI) -> None:
        """A window of records in flight (batched by the client): one Produced each."""
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("windowed"), partitions=1, replication_factor=REPLICATION
        )
        producer = await broker.producer(acks="all", linger_ms=5)
        values = [f"v{n}".encode() for n in range(40)]
        placed = await producer.send_many(topic.name, values, window=16)
        await producer.close()
        assert sorted(record.offset for record in placed) == list(range(40))
        produced = observed(recorder, Produced)
        assert sorted(o.position for o in produced if o.position is not None) == list(range(40))
        consumer = await broker.consumer([topic.name], group_id=broker.qualify("readers"))
        records = await poll_until(consumer, 40)
        assert sorted(r.value for r in records) == sorted(values)
        await consumer.close()

    async def test_idempotent_producer_writes_each_record_once(self, broker: KafkaAPI) -> None:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("transfers"), partitions=1, replication_factor=REPLICATION
        )
        producer = await broker.producer(acks="all", idempotent=True)
        offsets = [
            (await producer.send(topic.name, f"transfer-{n}".encode(), key=b"acct")).offset
            for n in range(20)
        ]
        assert offsets == list(range(20))
        consumer = await broker.consumer([topic.name], group_id=broker.qualify("bank"))
        records = await poll_until(consumer, 20)
        assert [r.value for r in records] == [f"transfer-{n}".encode() for n in range(20)]
        assert len({r.message_id for r in records}) == 20
        assert not any(o.duplicate for o in observed(recorder, Produced))

    async def test_a_transaction_needs_a_transactional_id_in_the_same_words_everywhere(
        self, broker: KafkaAPI
    ) -> None:
        producer = await broker.producer(name="plain")
        expected = (
            "producer plain has no transactional_id: transactions need "
            "producer(transactional_id=...)"
        )
        calls = (
            producer.begin_transaction,
            producer.commit_transaction,
            producer.abort_transaction,
            lambda: producer.send_offsets_to_transaction({}, broker.qualify("g")),
        )
        for call in calls:
            with pytest.raises(BrokerError) as raised:
                await call()
            assert str(raised.value) == expected
        await producer.close()

    async def test_aborted_transaction_is_invisible_to_read_committed(
        self, broker: KafkaAPI
    ) -> None:
        assert broker.capabilities.transactions is True
        topic = await broker.create_topic(
            broker.qualify("ledger"), partitions=1, replication_factor=REPLICATION
        )
        producer = await broker.producer(transactional_id=broker.qualify("ledger-writer"))
        await producer.begin_transaction()
        for value in (b"aborted-1", b"aborted-2", b"aborted-3"):
            await producer.send(topic.name, value)
        await producer.abort_transaction()
        await producer.begin_transaction()
        for value in (b"committed-1", b"committed-2"):
            await producer.send(topic.name, value)
        await producer.commit_transaction()

        committed_reader = await broker.consumer(
            [topic.name], group_id=broker.qualify("rc"), isolation_level="read_committed"
        )
        seen = await poll_until(committed_reader, 2)
        seen += await committed_reader.poll(timeout=1.0)  # nothing else may follow
        assert [r.value for r in seen] == [b"committed-1", b"committed-2"]

        everything_reader = await broker.consumer(
            [topic.name], group_id=broker.qualify("ru"), isolation_level="read_uncommitted"
        )
        seen_all = await poll_until(everything_reader, 5)
        assert [r.value for r in seen_all] == [
            b"aborted-1",
            b"aborted-2",
            b"aborted-3",
            b"committed-1",
            b"committed-2",
        ]

    async def test_read_committed_stops_at_the_next_open_transaction(
        self, broker: KafkaAPI
    ) -> None:
        # One producer, one partition, transactions back to back: the consume-transform-produce
        # loop. Each transaction's marker takes an offset; the next transaction starts right
        # after it and must hold read_committed consumers back until it is decided.
        topic = await broker.create_topic(
            broker.qualify("payments"), partitions=1, replication_factor=REPLICATION
        )
        producer = await broker.producer(transactional_id=broker.qualify("payments-writer"))
        await producer.begin_transaction()
        first = await producer.send(topic.name, b"first")
        await producer.commit_transaction()
        await producer.begin_transaction()
        second = await producer.send(topic.name, b"second")  # acknowledged, not committed

        reader = await broker.consumer(
            [topic.name],
            group_id=broker.qualify("payments-rc"),
            isolation_level="read_committed",
        )
        seen = await poll_until(reader, 1)
        seen += await reader.poll(timeout=1.0)  # the open transaction stays invisible
        assert [r.value for r in seen] == [b"first"]
        # Up to the last stable offset is all there is to read (past the commit marker too).
        assert not await reader.behind()

        await producer.abort_transaction()
        await producer.begin_transaction()
        third = await producer.send(topic.name, b"third")
        await producer.commit_transaction()
        seen += await poll_until(reader, 1)
        seen += await reader.poll(timeout=1.0)  # the aborted record never shows up
        assert [r.value for r in seen] == [b"first", b"third"]
        assert not await reader.behind()  # the aborted record and both markers are passed
        # Every marker holds an offset of its own: commit at 1, abort at 3.
        assert [first.offset, second.offset, third.offset] == [0, 2, 4]

    async def test_offsets_sent_in_a_transaction_commit_with_it(self, broker: KafkaAPI) -> None:
        recorder = record(broker)
        source = await broker.create_topic(
            broker.qualify("orders-in"), partitions=1, replication_factor=REPLICATION
        )
        sink = await broker.create_topic(
            broker.qualify("orders-out"), partitions=1, replication_factor=REPLICATION
        )
        await produce(broker, source.name, [b"o1", b"o2", b"o3"])
        group = broker.qualify("enricher")
        tp = TopicPartition(source.name, 0)
        consumer = await broker.consumer(
            [source.name], group_id=group, isolation_level="read_committed"
        )
        records = await poll_until(consumer, 3)
        producer = await broker.producer(transactional_id=broker.qualify("enricher-tx"))

        # Aborted: neither the output nor the consumer's progress counts.
        await producer.begin_transaction()
        for r in records:
            await producer.send(sink.name, r.value + b"-enriched")
        await producer.send_offsets_to_transaction({tp: 3}, group)
        await producer.abort_transaction()
        assert await broker.group_offsets(group) == {}

        # Committed: output and progress become visible together.
        await producer.begin_transaction()
        for r in records:
            await producer.send(sink.name, r.value + b"-enriched")
        await producer.send_offsets_to_transaction({tp: 3}, group)
        await producer.commit_transaction()
        # The commit returns once the coordinator has decided; it then writes the markers that
        # make the offsets readable, so they show up moments later (on a real cluster).
        await waiting.eventually(
            lambda: broker.group_offsets(group),
            EXPECT,
            f"offsets {{{tp}: 3}} committed with the transaction",
            accept=lambda offsets: offsets == {tp: 3},
            interval=0.1,
        )
        assert [(o.group, o.offset) for o in observed(recorder, Committed)] == [(group, 3)]

        reader = await broker.consumer(
            [sink.name], group_id=broker.qualify("audit"), isolation_level="read_committed"
        )
        output = await poll_until(reader, 3)
        output += await reader.poll(timeout=1.0)
        assert [r.value for r in output] == [b"o1-enriched", b"o2-enriched", b"o3-enriched"]

    # --- capabilities and cleanup ---------------------------------------------------------

    async def test_capabilities_match_what_kafka_does(self, broker: KafkaAPI) -> None:
        capabilities = broker.capabilities
        assert capabilities.ordering == "partition"
        assert capabilities.per_key_ordering is True
        assert capabilities.replay is True  # shown by the replay tests above
        assert capabilities.transactions is True  # shown by the transaction tests above
        assert capabilities.dead_letter is False
        assert capabilities.priority is False
        # No priority: a record marked urgent still waits behind everything before it.
        topic = await broker.create_topic(
            broker.qualify("tickets"), partitions=1, replication_factor=REPLICATION
        )
        producer = await broker.producer(acks="all")
        for n in range(3):
            await producer.send(topic.name, f"routine-{n}".encode(), headers=[("priority", b"0")])
        await producer.send(topic.name, b"urgent", headers=[("priority", b"255")])
        consumer = await broker.consumer([topic.name], group_id=broker.qualify("support"))
        records = await poll_until(consumer, 4)
        assert [r.value for r in records] == [b"routine-0", b"routine-1", b"routine-2", b"urgent"]
        assert dict(records[-1].headers)["priority"] == b"255"

    async def test_cleanup_deletes_the_namespace_and_is_repeatable(self, broker: KafkaAPI) -> None:
        topic = await broker.create_topic(
            broker.qualify("scratch"), partitions=2, replication_factor=REPLICATION
        )
        gone = await broker.create_topic(
            broker.qualify("already-gone"), partitions=1, replication_factor=REPLICATION
        )
        await produce(broker, topic.name, [b"x"])
        consumer = await broker.consumer([topic.name], group_id=broker.qualify("scratchers"))
        await poll_until(consumer, 1)
        await consumer.commit()
        await broker.delete_topic(gone.name)

        before = await broker.inspect()
        assert [t.name for t in before.topics] == [topic.name]
        assert [g.group_id for g in before.groups] == [consumer.group_id]

        await broker.cleanup()
        await broker.cleanup()  # safe to repeat, nothing left to delete
        after = await broker.inspect()
        assert after.topics == ()
        assert after.groups == ()
