"""Broker faults on the lab's Kafka cluster, and what replication does about them.

These tests break the running lab on purpose (``mqlab.lab.faults``: SIGKILL, SIGSTOP) and
always repair it in ``finally`` (restart / resume), so the next test finds three healthy
brokers. They wait for the cluster by polling its metadata with a bound, never by sleeping a
fixed time: how fast a broker is fenced follows from the lab's settings (heartbeats every
0.5 s, fenced after 3 s of silence; see docs/kafka-lab.md), not from the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, RequestTimedOutError

from mqlab.lab import faults
from mqlab.lab.endpoints import KAFKA_BROKER_IDS, Endpoints
from tests import waiting

pytestmark = [pytest.mark.kafka, pytest.mark.toxiproxy, pytest.mark.lab]

PARTITIONS = 4
ALL_BROKERS = sorted(KAFKA_BROKER_IDS)

# Upper bound for the cluster to notice a fault or a repair (fencing takes ~3 s, a restarted
# broker catches up in a few more). A bound, not a speed goal: waits end when the state holds.
SETTLE_SECONDS = 90.0

# Client request timeout, short on purpose: a request that lands on a frozen broker gives up
# after 3 s (aiokafka's default is 40 s), so polling moves on to a broker that answers, and a
# produce to the frozen leader fails within the test instead of hanging.
REQUEST_TIMEOUT_MS = 3000
# Creating and deleting the test's topic must succeed, so those go through a client of their
# own with a generous request timeout: on a loaded machine (or right after a broker was
# resumed) the controller's answer can take longer than the polling client's 3 s, and a
# failed deletion would error the test after it passed.
MANAGEMENT_TIMEOUT_MS = 30000

PartitionStates = dict[int, tuple[int, list[int]]]


async def partition_states(admin: AIOKafkaAdminClient, topic: str) -> PartitionStates | None:
    """partition -> (leader, sorted ISR); None while a broker does not answer or the
    metadata is incomplete (normal while a broker is down)."""
    try:
        [description] = await admin.describe_topics([topic])
    except KafkaError:
        return None
    if description["error_code"] != 0:
        return None
    states = {p["partition"]: (p["leader"], sorted(p["isr"])) for p in description["partitions"]}
    return states if len(states) == PARTITIONS else None


async def wait_for_states(
    admin: AIOKafkaAdminClient,
    topic: str,
    condition: Callable[[PartitionStates], bool],
    what: str,
) -> PartitionStates:
    """Poll the topic's metadata until ``condition`` holds; fail after SETTLE_SECONDS."""
    states = await waiting.eventually(
        lambda: partition_states(admin, topic),
        SETTLE_SECONDS,
        what,
        accept=lambda states: states is not None and condition(states),
        interval=0.2,
    )
    assert states is not None
    return states


def fully_replicated(states: PartitionStates) -> bool:
    return all(leader in KAFKA_BROKER_IDS and isr == ALL_BROKERS for leader, isr in states.values())


@pytest.fixture
async def admin(endpoints: Endpoints) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(
        bootstrap_servers=endpoints.kafka_bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def topic(endpoints: Endpoints, admin: AIOKafkaAdminClient) -> AsyncIterator[str]:
    """A fresh topic with 4 partitions on all 3 brokers, fully in sync, deleted afterwards."""
    name = f"mqlab-fault-{uuid.uuid4().hex[:12]}"
    manager = AIOKafkaAdminClient(
        bootstrap_servers=endpoints.kafka_bootstrap, request_timeout_ms=MANAGEMENT_TIMEOUT_MS
    )
    await manager.start()
    try:
        response = await manager.create_topics([NewTopic(name, PARTITIONS, len(ALL_BROKERS))])
        assert [error_code for _, error_code, *_ in response.topic_errors] == [0]
        try:
            await wait_for_states(admin, name, fully_replicated, f"{name} fully replicated")
            yield name
        finally:
            await manager.delete_topics([name])
    finally:
        await manager.close()


@pytest.fixture
async def producer(endpoints: Endpoints) -> AsyncIterator[AIOKafkaProducer]:
    # Not idempotent on purpose: an idempotent aiokafka producer never expires a batch (it
    # retries until it succeeds), which would hide the failed produce the pause test shows.
    client = AIOKafkaProducer(
        bootstrap_servers=endpoints.kafka_bootstrap,
        acks="all",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def produce_until_acknowledged(
    producer: AIOKafkaProducer, topic: str, partition: int, value: bytes
) -> int:
    """Produce with acks=all, retrying while clients still learn about a new leader.

    Returns the offset. Fails the test if no attempt succeeds within SETTLE_SECONDS.
    """
    metadata = await waiting.eventually(
        lambda: producer.send_and_wait(topic, value, partition=partition),
        SETTLE_SECONDS,
        f"an acknowledged produce to {topic}:{partition}",
        accept=lambda metadata: metadata is not None,
        interval=0.2,
        retry_on=(KafkaError,),
    )
    offset: int = metadata.offset
    return offset


async def test_killed_broker_leaves_the_isr_and_acks_all_still_succeeds(
    admin: AIOKafkaAdminClient, topic: str, producer: AIOKafkaProducer
) -> None:
    victim_id = 2
    victim = f"kafka-broker-{victim_id}"
    survivors = [broker for broker in ALL_BROKERS if broker != victim_id]
    await asyncio.to_thread(faults.kill, victim)
    killed = True
    try:
        # RF 3 on 3 brokers: broker 2 hosts every partition, so every ISR shrinks to the two
        # survivors and every partition it led gets a new leader among them.
        shrunk = await wait_for_states(
            admin,
            topic,
            lambda states: all(
                isr == survivors and leader in survivors for leader, isr in states.values()
            ),
            f"ISR without {victim}",
        )
        assert all(len(isr) == 2 for _, isr in shrunk.values())
        # ISR 2 >= min.insync.replicas 2: acks=all writes are still accepted, on every
        # partition, including those broker 2 led before it died.
        for partition in range(PARTITIONS):
            offset = await produce_until_acknowledged(
                producer, topic, partition, f"while {victim} is down".encode()
            )
            assert offset >= 0

        await asyncio.to_thread(faults.restart, victim)
        killed = False
        # The restarted broker catches up from the leaders and rejoins every ISR.
        await wait_for_states(admin, topic, fully_replicated, f"{victim} back in every ISR")
    finally:
        if killed:
            await asyncio.to_thread(faults.restart, victim)


async def test_paused_leader_stalls_produce_and_the_cluster_recovers_after_resume(
    admin: AIOKafkaAdminClient, topic: str, producer: AIOKafkaProducer
) -> None:
    # Waited for, not read once: one metadata request can time out on a loaded machine (the
    # admin client's 3 s request timeout) although the topic fixture saw the topic in sync.
    states = await wait_for_states(admin, topic, fully_replicated, f"{topic} fully replicated")
    partition = 0
    frozen_id = states[partition][0]
    frozen = f"kafka-broker-{frozen_id}"
    # Connection and metadata ready, so the next produce goes straight to the leader. Until
    # acknowledged: one attempt can outlast the 3 s request timeout on a loaded machine.
    await produce_until_acknowledged(producer, topic, partition, b"before pause")

    await asyncio.to_thread(faults.pause, frozen)
    paused = True
    try:
        # Else the produce below could reach the leader before the signal stopped it.
        await waiting.until_paused(frozen, SETTLE_SECONDS)
        # The frozen leader keeps its connections open but never answers: the produce waits
        # for its whole request timeout and fails; no acknowledgement is ever faked.
        with pytest.raises((RequestTimedOutError, KafkaTimeoutError)):
            await producer.send_and_wait(topic, b"to the frozen leader", partition=partition)

        # Its heartbeats stopped, so the controller fences it: it drops out of every ISR and
        # the partition gets a new leader that accepts acks=all writes again.
        await wait_for_states(
            admin,
            topic,
            lambda states: all(
                frozen_id not in isr and leader != frozen_id for leader, isr in states.values()
            ),
            f"{frozen} fenced while paused",
        )
        await produce_until_acknowledged(producer, topic, partition, b"to the new leader")

        await asyncio.to_thread(faults.resume, frozen)
        paused = False
        await wait_for_states(admin, topic, fully_replicated, f"{frozen} back in every ISR")
        await produce_until_acknowledged(producer, topic, partition, b"after resume")
    finally:
        if paused:
            await asyncio.to_thread(faults.resume, frozen)
