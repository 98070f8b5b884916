"""The simulator's Kafka consumer groups, offsets and transactions, and determinism.

Consumers use the adapter's defaults unless a test says otherwise: heartbeat every 0.3 s,
session timeout 6 s (virtual seconds, so waiting them out costs nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import pytest

from mqlab.brokers.base import BrokerError
from mqlab.brokers.faults import NetworkFault
from mqlab.brokers.kafka.api import CommitFailed, ProducerFenced, TopicPartition
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.kafka.algorithms import (
    assign_replicas,
    coordinator_partition,
    java_string_hash,
    range_assign,
    roundrobin_assign,
)
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.kafka.consumer import SimKafkaConsumer
from mqlab.brokers.sim.kafka.log import Partition
from mqlab.brokers.sim.kafka.server import SimKafkaCluster, Transaction
from mqlab.brokers.sim.world import SimWorld
from mqlab.observe.bus import Recorder
from mqlab.observe.events import (
    ConsumerCrashed,
    Delivered,
    Note,
    Observation,
    Rebalanced,
)
from mqlab.observe.trace import TraceHeader, dumps
from tests import waiting

_O = TypeVar("_O", bound=Observation)


def of_kind(recorder: Recorder, kind: type[_O]) -> list[_O]:
    """The recorded observations of one kind, typed."""
    return [o for o in recorder.observations if isinstance(o, kind)]


def tps(topic: str, *partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in partitions]


# --- assignors (vectors computed with kafka-clients 3.9.1's RangeAssignor and
# RoundRobinAssignor on the same inputs) -----------------------------------------------------


def test_range_and_roundrobin_for_two_members_on_two_topics() -> None:
    partitions = {"t0": 3, "t1": 3}
    subscriptions = {"C0": ["t0", "t1"], "C1": ["t0", "t1"]}
    assert range_assign(partitions, subscriptions) == {
        "C0": tps("t0", 0, 1) + tps("t1", 0, 1),
        "C1": tps("t0", 2) + tps("t1", 2),
    }
    assert roundrobin_assign(partitions, subscriptions) == {
        "C0": [*tps("t0", 0, 2), *tps("t1", 1)],
        "C1": [*tps("t0", 1), *tps("t1", 0, 2)],
    }


def test_assignors_with_unequal_subscriptions() -> None:
    partitions = {"t0": 1, "t1": 2, "t2": 3}
    subscriptions = {"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]}
    expected = {"C0": tps("t0", 0), "C1": tps("t1", 0), "C2": tps("t1", 1) + tps("t2", 0, 1, 2)}
    assert range_assign(partitions, subscriptions) == expected
    assert roundrobin_assign(partitions, subscriptions) == expected


def test_members_are_ordered_by_member_id_not_by_join_order() -> None:
    subscriptions = {"c-b-000011": ["t"], "c-a-000012": ["t"], "c-c-000013": ["t"]}
    assert range_assign({"t": 7}, subscriptions) == {
        "c-a-000012": tps("t", 0, 1, 2),
        "c-b-000011": tps("t", 3, 4),
        "c-c-000013": tps("t", 5, 6),
    }
    assert roundrobin_assign({"t": 7}, subscriptions) == {
        "c-a-000012": tps("t", 0, 3, 6),
        "c-b-000011": tps("t", 1, 4),
        "c-c-000013": tps("t", 2, 5),
    }
    assert range_assign({}, subscriptions) == {m: [] for m in subscriptions}


def test_coordinator_partition_is_javas_string_hash() -> None:
    # String.hashCode() and Utils.abs(hash) % n as the Java broker computes them.
    assert java_string_hash("mq-sim001-g") == 1663252317
    assert java_string_hash("billing") == -109829509
    assert [coordinator_partition(g, 10) for g in ("mq-sim001-g", "billing", "x")] == [7, 9, 0]
    assert coordinator_partition("orders-consumers", 50) == 39


def test_replica_placement_is_round_robin_with_a_shifting_follower() -> None:
    class FixedStart:
        def randrange(self, stop: int) -> int:
            return 0

    placement = assign_replicas([1, 2, 3], 6, 3, FixedStart())  # type: ignore[arg-type]
    assert placement == [(1, 2, 3), (2, 3, 1), (3, 1, 2), (1, 3, 2), (2, 1, 3), (3, 2, 1)]


# --- groups on the cluster ----------------------------------------------------------------


async def settle(consumers: list[SimKafkaConsumer], seconds: float = 2.0) -> None:
    """Let every member poll for a while, as live consumers do."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        await asyncio.gather(*(c.poll(timeout=0.2) for c in consumers))


def owned(consumer: SimKafkaConsumer) -> list[int]:
    return sorted(tp.partition for tp in consumer.assignment())


async def test_three_members_get_the_java_range_assignment(kafka: SimKafkaBroker) -> None:
    topic = await kafka.create_topic(kafka.qualify("seven"), partitions=7, replication_factor=3)
    group = kafka.qualify("g")
    members = [
        await kafka.consumer([topic.name], group_id=group, name=name) for name in ("b", "a", "c")
    ]
    await settle(members)
    assert {c.name: owned(c) for c in members} == {"a": [0, 1, 2], "b": [3, 4], "c": [5, 6]}
    assert len({c.generation for c in members}) == 1


async def test_a_crashed_member_keeps_its_partitions_until_the_session_times_out(
    kafka: SimKafkaBroker, recorder: Recorder
) -> None:
    topic = await kafka.create_topic(kafka.qualify("work"), partitions=4, replication_factor=3)
    group = kafka.qualify("workers")
    a = await kafka.consumer([topic.name], group_id=group, name="a", session_timeout=6.0)
    b = await kafka.consumer([topic.name], group_id=group, name="b", session_timeout=6.0)
    await settle([a, b])
    assert (owned(a), owned(b)) == ([0, 1], [2, 3])
    generation = b.generation
    loop = asyncio.get_running_loop()
    crashed_at = loop.time()

    await a.crash("while processing")
    await settle([b], 5.5)
    assert owned(b) == [2, 3]  # nobody has noticed yet: partitions 0 and 1 are orphaned
    await settle([b], 1.0)
    assert owned(b) == [0, 1, 2, 3]
    assert b.generation == generation + 1
    last = of_kind(recorder, Rebalanced)[-1]
    assert isinstance(last, Rebalanced)
    assert last.reason == "a session timed out"
    assert dict(last.assignment) == {"b": tuple(f"{topic.name}:{p}" for p in range(4))}
    # The session runs from a's last heartbeat (up to one interval before the crash) and the
    # survivor hears of the rebalance at its next heartbeat.
    assert 6.0 - 0.3 <= last.at - crashed_at <= 6.0 + 0.3
    (crash,) = of_kind(recorder, ConsumerCrashed)
    assert crash.point == "while processing"
    with pytest.raises(BrokerError, match="crashed"):
        await a.poll()


async def test_a_clean_close_rebalances_at_once(kafka: SimKafkaBroker, recorder: Recorder) -> None:
    topic = await kafka.create_topic(kafka.qualify("work"), partitions=4, replication_factor=3)
    group = kafka.qualify("workers")
    a = await kafka.consumer([topic.name], group_id=group, name="a")
    b = await kafka.consumer([topic.name], group_id=group, name="b")
    await settle([a, b])
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    await a.close()
    await settle([b], 0.5)  # one heartbeat tells b to rejoin
    assert owned(b) == [0, 1, 2, 3]
    last = of_kind(recorder, Rebalanced)[-1]
    assert last.reason == "a left the group"
    assert last.at - closed_at <= 0.31


async def test_generations_count_rebalances_and_the_group_empties(
    kafka: SimKafkaBroker, recorder: Recorder
) -> None:
    topic = await kafka.create_topic(kafka.qualify("gen"), partitions=2, replication_factor=3)
    group = kafka.qualify("g")
    first = await kafka.consumer([topic.name], group_id=group, name="first")
    await settle([first], 0.5)
    second = await kafka.consumer([topic.name], group_id=group, name="second")
    await settle([first, second], 1.0)
    await first.close()
    await settle([second], 1.0)
    await second.close()
    # Each member reports its own assignment (as the real adapter's do); when the last member
    # leaves, nobody is left to hear of generation 4, so nothing is reported for it.
    rebalances = [(o.generation, dict(o.assignment)) for o in of_kind(recorder, Rebalanced)]
    t = topic.name
    assert rebalances == [
        (1, {"first": (f"{t}:0", f"{t}:1")}),
        (2, {"first": (f"{t}:0",)}),
        (2, {"second": (f"{t}:1",)}),
        (3, {"second": (f"{t}:0", f"{t}:1")}),
    ]
    (info,) = (await kafka.inspect()).groups
    assert (info.state, info.members) == ("Empty", ())


async def test_committed_offsets_survive_the_members_and_define_lag(
    kafka: SimKafkaBroker,
) -> None:
    topic = await kafka.create_topic(kafka.qualify("lag"), partitions=1, replication_factor=3)
    producer = await kafka.producer()
    for n in range(10):
        await producer.send(topic.name, f"{n}".encode())
    group = kafka.qualify("g")
    tp = TopicPartition(topic.name, 0)
    reader = await kafka.consumer([topic.name], group_id=group, max_poll_records=4)
    assert [r.offset for r in await reader.poll(timeout=2.0)] == [0, 1, 2, 3]
    await reader.commit()  # commits the position: the next offset to read
    assert await reader.committed(tp) == 4
    await reader.crash()
    (info,) = (await kafka.inspect()).groups
    assert [(o.committed, o.high_watermark, o.lag) for o in info.offsets] == [(4, 10, 6)]

    successor = await kafka.consumer([topic.name], group_id=group)
    records = await successor.poll(timeout=10.0)  # after the crashed member's session ends
    assert [r.offset for r in records] == list(range(4, 10))


async def test_commit_after_losing_the_partitions_fails(kafka: SimKafkaBroker) -> None:
    topic = await kafka.create_topic(kafka.qualify("slow"), partitions=2, replication_factor=3)
    producer = await kafka.producer()
    await producer.send(topic.name, b"x", partition=0)
    group = kafka.qualify("g")
    slow = await kafka.consumer([topic.name], group_id=group, name="slow", max_poll_interval=5.0)
    assert await slow.poll(timeout=2.0)
    other = await kafka.consumer([topic.name], group_id=group, name="other")
    # slow "processes" for longer than max.poll.interval: its client leaves the group.
    await settle([other], 6.0)
    assert owned(other) == [0, 1]
    with pytest.raises(CommitFailed, match="not a member of the current generation"):
        await slow.commit()
    # Its next poll rejoins; the group splits the partitions again.
    await settle([slow, other], 2.0)
    assert (owned(other), owned(slow)) == ([0], [1])


async def test_auto_commit_is_at_least_once_when_the_crash_comes_before_the_commit(
    kafka: SimKafkaBroker, recorder: Recorder
) -> None:
    topic = await kafka.create_topic(kafka.qualify("auto"), partitions=1, replication_factor=3)
    producer = await kafka.producer()
    for n in range(5):
        await producer.send(topic.name, f"{n}".encode())
    group = kafka.qualify("g")
    first = await kafka.consumer(
        [topic.name], group_id=group, auto_commit=True, auto_commit_interval=5.0
    )
    assert len(await first.poll(timeout=1.0)) == 5
    await first.crash("right after processing, before the next auto-commit")
    second = await kafka.consumer([topic.name], group_id=group)
    again = await second.poll(timeout=10.0)
    assert [r.offset for r in again] == [0, 1, 2, 3, 4]  # processed twice
    # Each offset was delivered twice, and Kafka flags neither delivery as a redelivery (it
    # has no such flag): only the duplicates in the ledger show the re-read.
    deliveries = [(o.position, o.redelivered) for o in of_kind(recorder, Delivered)]
    assert deliveries == [(n, False) for n in range(5)] * 2


async def test_auto_commit_is_at_most_once_when_it_commits_during_processing(
    kafka: SimKafkaBroker,
) -> None:
    topic = await kafka.create_topic(kafka.qualify("auto"), partitions=1, replication_factor=3)
    producer = await kafka.producer()
    for n in range(5):
        await producer.send(topic.name, f"{n}".encode())
    group = kafka.qualify("g")
    first = await kafka.consumer(
        [topic.name], group_id=group, auto_commit=True, auto_commit_interval=1.0
    )
    batch = await first.poll(timeout=1.0)
    processed = []
    for record in batch[:2]:  # each record takes a second; the crash comes in the third
        await asyncio.sleep(1.0)
        processed.append(record.offset)
    await first.crash("processing offset 2")
    # The background auto-commit already stored position 5 while offsets 2..4 waited.
    assert await kafka.group_offsets(group) == {TopicPartition(topic.name, 0): 5}
    second = await kafka.consumer([topic.name], group_id=group)
    assert await second.poll(timeout=10.0) == []
    assert processed == [0, 1]  # offsets 2, 3, 4 were never processed by anyone


async def test_seek_replays_and_a_new_group_reads_from_the_start_or_the_end(
    kafka: SimKafkaBroker, recorder: Recorder
) -> None:
    topic = await kafka.create_topic(kafka.qualify("log"), partitions=1, replication_factor=3)
    producer = await kafka.producer()
    for n in range(3):
        await producer.send(topic.name, f"{n}".encode())
    tp = TopicPartition(topic.name, 0)
    reader = await kafka.consumer([topic.name], group_id=kafka.qualify("a"))
    assert len(await reader.poll(timeout=1.0)) == 3
    await reader.seek(tp, 1)
    assert [r.offset for r in await reader.poll(timeout=1.0)] == [1, 2]
    # The replay delivers offsets 1 and 2 again; Kafka counts no deliveries and flags nothing.
    counts = [(o.position, o.delivery_count, o.redelivered) for o in of_kind(recorder, Delivered)]
    assert counts == [(0, 1, False), (1, 1, False), (2, 1, False), (1, 1, False), (2, 1, False)]

    latest = await kafka.consumer(
        [topic.name], group_id=kafka.qualify("b"), auto_offset_reset="latest"
    )
    assert await latest.poll(timeout=1.0) == []
    await producer.send(topic.name, b"3")
    assert [r.offset for r in await latest.poll(timeout=1.0)] == [3]
    with pytest.raises(BrokerError, match="not assigned"):
        await latest.seek(TopicPartition(topic.name, 7), 0)


async def test_members_must_agree_on_the_assignor(kafka: SimKafkaBroker) -> None:
    topic = await kafka.create_topic(kafka.qualify("t"), partitions=2, replication_factor=3)
    group = kafka.qualify("g")
    ranger = await kafka.consumer([topic.name], group_id=group, assignment_strategy="range")
    await settle([ranger], 0.5)
    robin = await kafka.consumer([topic.name], group_id=group, assignment_strategy="roundrobin")
    with pytest.raises(BrokerError, match="InconsistentGroupProtocol"):
        await robin.poll(timeout=1.0)
    too_short = await kafka.consumer([topic.name], group_id=group, session_timeout=0.5)
    with pytest.raises(BrokerError, match="InvalidSessionTimeout"):
        await too_short.poll(timeout=1.0)


async def test_the_group_survives_its_coordinator_broker(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await kafka.create_topic(kafka.qualify("t"), partitions=2, replication_factor=3)
    group = kafka.qualify("g")
    coordinator = kafka.cluster.coordinator("__consumer_offsets", group)
    a = await kafka.consumer([topic.name], group_id=group, name="a")
    b = await kafka.consumer([topic.name], group_id=group, name="b")
    await settle([a, b])
    generation = a.generation
    await world.kill(f"kafka-broker-{coordinator}")
    await settle([a, b], 10.0)  # longer than the session timeout
    # A new coordinator took over with fresh sessions: nobody was expelled.
    assert kafka.cluster.coordinator("__consumer_offsets", group) != coordinator
    assert (a.generation, owned(a), owned(b)) == (generation, [0], [1])
    await a.commit({TopicPartition(topic.name, 0): 0})


# --- transactions -------------------------------------------------------------------------


async def test_an_open_transaction_holds_read_committed_readers_back(
    kafka: SimKafkaBroker,
) -> None:
    topic = await kafka.create_topic(kafka.qualify("tx"), partitions=1, replication_factor=3)
    txn = await kafka.producer(transactional_id=kafka.qualify("writer"))
    plain = await kafka.producer()
    await txn.begin_transaction()
    await txn.send(topic.name, b"in-transaction")
    await plain.send(topic.name, b"after-it")
    committed = await kafka.consumer(
        [topic.name], group_id=kafka.qualify("rc"), isolation_level="read_committed"
    )
    uncommitted = await kafka.consumer([topic.name], group_id=kafka.qualify("ru"))
    assert [r.value for r in await uncommitted.poll(timeout=1.0)] == [
        b"in-transaction",
        b"after-it",
    ]
    assert await committed.poll(timeout=1.0) == []  # blocked at the last stable offset
    await txn.commit_transaction()
    assert [r.value for r in await committed.poll(timeout=1.0)] == [
        b"in-transaction",
        b"after-it",
    ]
    # The commit marker takes an offset too: the log ends at 3.
    (state,) = (await kafka.describe_topic(topic.name)).partitions
    assert state.log_end == 3


def append_in_transaction(
    cluster: SimKafkaCluster, txn: Transaction, partition: Partition, value: bytes, sequence: int
) -> int:
    """What a transactional send does on the cluster (AddPartitionsToTxn, then the append on
    the leader), without the client's round trips: tests that need several transactions in
    one loop turn drive the cluster this way. Returns the record's offset."""
    cluster.add_to_transaction(txn, partition.tp)
    offset, _ = cluster.append(
        partition,
        None,
        value,
        (),
        acks_all=False,
        producer_id=txn.producer_id,
        producer_epoch=txn.epoch,
        sequence=sequence,
        txn=True,
    )
    return offset


async def test_each_marker_settles_only_the_transaction_it_ends(kafka: SimKafkaBroker) -> None:
    # A producer starts its next transaction on a partition while the previous marker is still
    # on its way to the followers (the consume-transform-produce loop does exactly that). In
    # Kafka's producer state the marker ends one transaction and the records after it begin
    # the next: neither may take the other's fate. Driven on the cluster itself, so all three
    # transactions land in one loop turn, before any follower has fetched a marker.
    cluster = kafka.cluster
    topic = await kafka.create_topic(kafka.qualify("tx"), partitions=1, replication_factor=3)
    partition = cluster.topics[topic.name].partitions[0]
    txn = cluster.init_transactions(kafka.qualify("writer"), "writer", 60.0)

    assert append_in_transaction(cluster, txn, partition, b"committed", 0) == 0
    cluster.end_transaction(txn, commit=True)  # the commit marker takes offset 1
    assert append_in_transaction(cluster, txn, partition, b"aborted", 1) == 2
    cluster.end_transaction(txn, commit=False)  # the abort marker takes offset 3
    assert append_in_transaction(cluster, txn, partition, b"still open", 2) == 4
    assert (partition.high_watermark, partition.last_stable_offset) == (0, 0)

    await waiting.eventually(
        lambda: partition.high_watermark,
        1.0,
        "the followers to fetch both markers and the open record",
        accept=lambda high_watermark: high_watermark == 5,
    )
    # Both decided transactions are settled; the open one holds the LSO at its first record.
    assert partition.last_stable_offset == 4
    aborted = [partition.is_aborted(txn.producer_id, offset) for offset in (0, 2, 4)]
    assert aborted == [False, True, False]
    reader = await kafka.consumer(
        [topic.name], group_id=kafka.qualify("rc"), isolation_level="read_committed"
    )
    assert [r.value for r in await reader.poll(timeout=1.0)] == [b"committed"]
    assert await reader.poll(timeout=1.0) == []


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
async def test_a_marker_the_new_leader_lacks_is_written_again(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder, commit: bool
) -> None:
    # The leader dies in the loop turn the transaction ends, before a follower fetched the
    # marker: the follower elected next has the record but not the marker. Kafka's coordinator
    # retries WriteTxnMarkers on the new leader, so the transaction still ends as decided
    # instead of holding read_committed readers at its first record for good.
    topic = await kafka.create_topic(kafka.qualify("tx"), partitions=1, replication_factor=3)
    partition = kafka.cluster.topics[topic.name].partitions[0]
    transactional_id = kafka.qualify("writer")
    producer = await kafka.producer(transactional_id=transactional_id)
    await producer.begin_transaction()
    await producer.send(topic.name, b"decided")
    if commit:
        await producer.commit_transaction()
    else:
        await producer.abort_transaction()
    old_leader = partition.leader
    assert [r.log_end for r in partition.replica.values() if r.broker_id != old_leader] == [1, 1]
    await world.kill(f"kafka-broker-{old_leader}")

    plain = await kafka.producer()
    await plain.send(topic.name, b"after the election")  # waits for the new leader
    assert partition.leader != old_leader
    reader = await kafka.consumer(
        [topic.name], group_id=kafka.qualify("rc"), isolation_level="read_committed"
    )
    expected = [b"decided", b"after the election"] if commit else [b"after the election"]
    assert [r.value for r in await reader.poll(timeout=1.0)] == expected
    producer_id = kafka.cluster.transactions[transactional_id].producer_id
    kind = "COMMIT" if commit else "ABORT"
    assert [o.text for o in of_kind(recorder, Note) if "writes it again" in o.text] == [
        f"broker {partition.leader} leads {partition.tp} without the {kind} marker of "
        f"producer {producer_id}'s transaction: the coordinator writes it again at offset 1"
    ]


async def test_an_aborted_transaction_lost_in_an_unclean_election_hides_nothing_after_it(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    # The leader alone had an aborted transaction, its records and its marker, and died; the
    # follower elected (unclean) never had them, and the producer's next transaction reuses
    # the same offsets. Like Kafka's abort index, truncated with the log, the lost abort no
    # longer covers those offsets.
    cluster = kafka.cluster
    topic = await kafka.create_topic(
        kafka.qualify("tx"),
        partitions=1,
        replication_factor=3,
        config={"min.insync.replicas": "1", "unclean.leader.election.enable": "true"},
    )
    partition = cluster.topics[topic.name].partitions[0]
    leader, follower, other = partition.replicas
    await world.kill(f"kafka-broker-{follower}")
    await world.kill(f"kafka-broker-{other}")
    await waiting.eventually(
        lambda: partition.isr,
        10.0,
        "the leader alone in the ISR",
        accept=lambda isr: isr == [leader],
    )
    txn = cluster.init_transactions(kafka.qualify("writer"), "writer", 60.0)
    assert append_in_transaction(cluster, txn, partition, b"aborted, then lost", 0) == 0
    cluster.end_transaction(txn, commit=False)
    await world.kill(f"kafka-broker-{leader}")
    await world.restart(f"kafka-broker-{follower}")
    await waiting.eventually(
        lambda: partition.leader,
        10.0,
        "the empty follower elected",
        accept=lambda new_leader: new_leader == follower,
    )

    assert append_in_transaction(cluster, txn, partition, b"committed", 1) == 0
    cluster.end_transaction(txn, commit=True)
    reader = await kafka.consumer(
        [topic.name], group_id=kafka.qualify("rc"), isolation_level="read_committed"
    )
    assert [r.value for r in await reader.poll(timeout=1.0)] == [b"committed"]


async def test_a_hung_transaction_is_aborted_by_its_timeout(
    kafka: SimKafkaBroker, recorder: Recorder
) -> None:
    topic = await kafka.create_topic(kafka.qualify("tx"), partitions=1, replication_factor=3)
    txn = await kafka.producer(transactional_id=kafka.qualify("w"), transaction_timeout=10.0)
    await txn.begin_transaction()
    await txn.send(topic.name, b"never committed")
    reader = await kafka.consumer(
        [topic.name], group_id=kafka.qualify("rc"), isolation_level="read_committed"
    )
    plain = await kafka.producer()
    await plain.send(topic.name, b"visible once the transaction is gone")
    assert await reader.poll(timeout=9.0) == []
    assert [r.value for r in await reader.poll(timeout=2.0)] == [
        b"visible once the transaction is gone"
    ]
    assert any("timed out" in o.text for o in of_kind(recorder, Note))
    with pytest.raises(ProducerFenced):
        await txn.commit_transaction()


async def test_a_second_producer_with_the_same_transactional_id_fences_the_first(
    kafka: SimKafkaBroker,
) -> None:
    topic = await kafka.create_topic(kafka.qualify("tx"), partitions=1, replication_factor=3)
    transactional_id = kafka.qualify("singleton")
    zombie = await kafka.producer(transactional_id=transactional_id)
    await zombie.begin_transaction()
    await zombie.send(topic.name, b"zombie write")
    successor = await kafka.producer(transactional_id=transactional_id)  # aborts the open one
    with pytest.raises(ProducerFenced, match="fenced"):
        await zombie.send(topic.name, b"more")
    await successor.begin_transaction()
    await successor.send(topic.name, b"successor write")
    await successor.commit_transaction()
    reader = await kafka.consumer(
        [topic.name], group_id=kafka.qualify("rc"), isolation_level="read_committed"
    )
    assert [r.value for r in await reader.poll(timeout=1.0)] == [b"successor write"]


async def test_transactional_producers_refuse_sends_outside_a_transaction(
    kafka: SimKafkaBroker,
) -> None:
    topic = await kafka.create_topic(kafka.qualify("tx"), partitions=1, replication_factor=3)
    txn = await kafka.producer(transactional_id=kafka.qualify("w"))
    with pytest.raises(BrokerError, match="outside a transaction"):
        await txn.send(topic.name, b"x")
    plain = await kafka.producer()
    with pytest.raises(BrokerError, match="no transactional_id"):
        await plain.begin_transaction()


# --- determinism --------------------------------------------------------------------------


async def scripted_run(seed: int) -> str:
    """A run that uses every source of variation: placement, sticky partitioning, jitter,
    a crash, a broker kill and a rebalance."""
    world = SimWorld(seed=seed)
    recorder = Recorder()
    world.bus.subscribe(recorder)
    async with SimKafkaBroker(world=world) as kafka:
        topic = await kafka.create_topic(kafka.qualify("t"), partitions=4, replication_factor=3)
        group = kafka.qualify("g")
        a = await kafka.consumer([topic.name], group_id=group, name="a")
        b = await kafka.consumer([topic.name], group_id=group, name="b")
        producer = await kafka.producer(acks="all")
        await world.add_network_fault(
            "kafka-broker-2", NetworkFault("latency", latency=0.01, jitter=0.005)
        )
        for n in range(40):
            await producer.send(topic.name, bytes(3000), key=None if n % 2 else f"k{n}".encode())
            await asyncio.gather(a.poll(timeout=0.01), b.poll(timeout=0.01))
        await a.crash()
        await world.kill("kafka-broker-1")
        for _ in range(40):
            await b.poll(timeout=0.25)
        await b.commit()
    await world.aclose()
    return dumps(TraceHeader(broker="sim:kafka", seed=seed), recorder.observations)


def trace_digest_in_a_fresh_process(seed: int, hash_seed: str) -> str:
    """The trace's sha256 from another interpreter with its own string-hash seed."""
    code = (
        "import hashlib; from mqlab.brokers.sim.clock import run_virtual; "
        "from tests.sim.test_sim_kafka_groups import scripted_run; "
        f"print(hashlib.sha256(run_virtual(scripted_run({seed})).encode()).hexdigest())"
    )
    environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,  # a few seconds at most; this only catches a hang
    )
    return result.stdout.strip()


def test_the_same_seed_gives_the_same_trace_in_any_process() -> None:
    """Set iteration order changes with the interpreter's string-hash seed; a simulator that
    let it leak into scheduling would give different traces on different runs."""
    expected = hashlib.sha256(run_virtual(scripted_run(7)).encode()).hexdigest()
    assert trace_digest_in_a_fresh_process(7, "1") == expected
    assert trace_digest_in_a_fresh_process(7, "2") == expected


def test_the_same_seed_gives_a_byte_identical_trace() -> None:
    first = run_virtual(scripted_run(7))
    second = run_virtual(scripted_run(7))
    assert first == second
    assert len(first.splitlines()) > 100
    assert run_virtual(scripted_run(8)) != first
