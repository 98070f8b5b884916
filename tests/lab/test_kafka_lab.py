"""The lab's Kafka cluster does what the course teaches, seen through aiokafka.

Runs against the running lab (``mqlab lab up kafka``): a KRaft controller and three brokers,
reached through their Toxiproxy proxies. Each test makes its own topic (4 partitions,
replication factor 3) with a unique name and deletes it afterwards, also when the test fails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from mqlab.lab.endpoints import KAFKA_BROKER_IDS, Endpoints
from tests import waiting

pytestmark = pytest.mark.kafka

PARTITIONS = 4
REPLICATION_FACTOR = 3

# Consumer group timeouts: with aiokafka's defaults (3 s heartbeats, 10 s session) a group
# takes over ten seconds to settle; 0.3 s heartbeats settle it in about a second. The session
# stays at 10 s (it was 3 s): the test's one member never leaves without saying so, so the
# session only matters when this process misses heartbeats, and a loaded machine can stall it
# for seconds (the member would be expelled and its commit refused with a new generation).
GROUP_TIMEOUTS: dict[str, Any] = {"heartbeat_interval_ms": 300, "session_timeout_ms": 10000}

# Upper bound for waiting on the cluster (metadata propagation, group join). A bound, not a
# speed goal: the waits return as soon as the condition holds.
SETTLE_SECONDS = 60.0

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = SETTLE_SECONDS
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout``."""
    result = await waiting.eventually(
        probe, timeout, what, accept=lambda answer: answer is not None, interval=0.1
    )
    assert result is not None
    return result


async def partition_states(
    admin: AIOKafkaAdminClient, topic: str
) -> dict[int, tuple[int, list[int], list[int]]] | None:
    """partition -> (leader, replicas, isr), or None while the metadata is incomplete."""
    try:
        [description] = await admin.describe_topics([topic])
    except KafkaError:
        return None
    if description["error_code"] != 0:
        return None
    states = {
        p["partition"]: (p["leader"], sorted(p["replicas"]), sorted(p["isr"]))
        for p in description["partitions"]
    }
    return states if len(states) == PARTITIONS else None


@pytest.fixture
async def admin(endpoints: Endpoints) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def topic(admin: AIOKafkaAdminClient) -> AsyncIterator[str]:
    """A fresh topic with 4 partitions on all 3 brokers, deleted after the test."""
    name = f"mqlab-test-{uuid.uuid4().hex[:12]}"
    response = await admin.create_topics([NewTopic(name, PARTITIONS, REPLICATION_FACTOR)])
    assert [error_code for _, error_code, *_ in response.topic_errors] == [0]
    try:

        async def every_partition_led() -> bool | None:
            states = await partition_states(admin, name)
            if states and all(leader in KAFKA_BROKER_IDS for leader, _, _ in states.values()):
                return True
            return None

        await eventually(every_partition_led, f"leaders for {name}")
        yield name
    finally:
        await admin.delete_topics([name])


async def test_every_partition_has_a_leader_and_three_in_sync_replicas(
    admin: AIOKafkaAdminClient, topic: str
) -> None:
    # Waited for, not read once: one metadata request can fail on a loaded machine.
    states = await eventually(lambda: partition_states(admin, topic), f"metadata of {topic}")
    assert sorted(states) == list(range(PARTITIONS))
    for leader, replicas, isr in states.values():
        assert leader in KAFKA_BROKER_IDS
        assert replicas == list(KAFKA_BROKER_IDS)
        assert isr == list(KAFKA_BROKER_IDS)
    # Leadership is spread: with 4 partitions over 3 brokers every broker leads one.
    assert {leader for leader, _, _ in states.values()} == set(KAFKA_BROKER_IDS)


async def test_keyed_records_keep_their_partition_and_the_group_commits(
    endpoints: Endpoints, admin: AIOKafkaAdminClient, topic: str
) -> None:
    keys = [f"order-{n}".encode() for n in range(8)]
    rounds = 3
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, acks="all")
    await producer.start()
    partitions_of_key: dict[bytes, set[int]] = {key: set() for key in keys}
    try:
        for round_number in range(rounds):
            for key in keys:
                metadata = await producer.send_and_wait(
                    topic, f"{key.decode()}#{round_number}".encode(), key=key
                )
                partitions_of_key[key].add(metadata.partition)
    finally:
        await producer.stop()
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())
    # Eight keys do not all hash to one partition (else the check above would prove little).
    assert len(set().union(*partitions_of_key.values())) > 1

    group = f"mqlab-test-group-{uuid.uuid4().hex[:12]}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=endpoints.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMEOUTS,
    )
    await consumer.start()
    received: dict[int, list[tuple[int, bytes, bytes]]] = {}
    try:
        total = len(keys) * rounds

        async def all_received() -> bool | None:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                received.setdefault(tp.partition, []).extend(
                    (record.offset, record.key or b"", record.value or b"") for record in records
                )
            return True if sum(map(len, received.values())) >= total else None

        await eventually(all_received, f"{total} records for group {group}")
        await consumer.commit()
        committed = {
            partition: await consumer.committed(TopicPartition(topic, partition))
            for partition in range(PARTITIONS)
        }
    finally:
        await consumer.stop()

    assert sum(map(len, received.values())) == total
    for partition, records in received.items():
        offsets = [offset for offset, _, _ in records]
        assert offsets == list(range(len(records)))  # in order, none skipped, none twice
        for _, key, _ in records:
            assert partitions_of_key[key] == {partition}
        # Per key, the rounds arrive in the order they were produced.
        for key in {key for _, key, _ in records}:
            values = [value for _, k, value in records if k == key]
            assert values == [f"{key.decode()}#{n}".encode() for n in range(rounds)]
    # A committed offset is the next offset to read: the count of records in the partition.
    expected = {partition: len(received.get(partition, [])) for partition in range(PARTITIONS)}
    assert {p: offset or 0 for p, offset in committed.items()} == expected
    # The broker agrees (the group's offsets as an admin sees them).
    from_admin = await admin.list_consumer_group_offsets(group)
    assert {tp.partition: meta.offset for tp, meta in from_admin.items() if tp.topic == topic} == {
        p: n for p, n in expected.items() if n > 0
    }


async def test_idempotent_producer_writes_each_record_once(
    endpoints: Endpoints, topic: str
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=endpoints.kafka_bootstrap, enable_idempotence=True
    )
    await producer.start()
    try:
        offsets = [
            (await producer.send_and_wait(topic, f"payment-{n}".encode(), partition=0)).offset
            for n in range(5)
        ]
    finally:
        await producer.stop()
    assert offsets == list(range(5))
    values = await read_partition(endpoints, topic, 0, isolation_level="read_uncommitted")
    assert values == [f"payment-{n}".encode() for n in range(5)]


async def test_committed_transaction_is_visible_and_aborted_one_is_not(
    endpoints: Endpoints, topic: str
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=endpoints.kafka_bootstrap,
        transactional_id=f"mqlab-test-tx-{uuid.uuid4().hex[:12]}",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1", partition=0)
            await producer.send_and_wait(topic, b"committed-2", partition=0)
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", partition=0)
        await producer.abort_transaction()
        # A last committed transaction after the aborted one, so reading up to the end of
        # the partition proves the aborted record was skipped (not merely not yet reached).
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-3", partition=0)
    finally:
        await producer.stop()

    async def every_commit_decided() -> list[bytes] | None:
        values = await read_partition(endpoints, topic, 0, isolation_level="read_committed")
        assert b"aborted" not in values, values  # never visible, not even for a moment
        return values if len(values) >= 3 else None

    # commit_transaction returns once the coordinator has decided; the markers reach the
    # partition a moment later, and until then the last stable offset stops before
    # committed-3 (a loaded machine showed a read of only the first two).
    read_committed = await eventually(every_commit_decided, "committed-3 below the LSO")
    assert read_committed == [b"committed-1", b"committed-2", b"committed-3"]
    # The aborted record is in the log: a read_uncommitted consumer sees it.
    read_uncommitted = await read_partition(endpoints, topic, 0, isolation_level="read_uncommitted")
    assert read_uncommitted == [b"committed-1", b"committed-2", b"aborted", b"committed-3"]


async def read_partition(
    endpoints: Endpoints, topic: str, partition: int, *, isolation_level: str
) -> list[bytes]:
    """Every record value of one partition, read from the start to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=endpoints.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    tp = TopicPartition(topic, partition)
    values: list[bytes] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        # For read_committed this is the last stable offset: every transaction before it is
        # decided, so reading up to it shows all committed records and none aborted.
        end = (await consumer.end_offsets([tp]))[tp]

        async def reached_end() -> bool | None:
            batches = await consumer.getmany(tp, timeout_ms=500)
            values.extend(record.value or b"" for record in batches.get(tp, []))
            return True if await consumer.position(tp) >= end else None

        await eventually(reached_end, f"reading {tp} up to offset {end}")
    finally:
        await consumer.stop()
    return values
