"""The simulator's Kafka cluster: partitioning, replication, ISR, leader election, acks,
idempotence, and what broker and network faults do to them.

Timings follow the lab's broker configs the model uses by default: the controller fences a
silent broker after 3 s (broker.session.timeout.ms), min.insync.replicas is 2, a restarted
broker takes 3 virtual seconds to start, followers fetch 5 ms after a leader append.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from mqlab.brokers.base import BrokerError, OperationTimedOut
from mqlab.brokers.faults import NetworkFault
from mqlab.brokers.kafka.api import (
    NotEnoughReplicas,
    ProduceTimedOut,
    TopicInfo,
    TopicPartition,
    default_partition,
    murmur2,
)
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.observe.bus import Recorder
from mqlab.observe.events import (
    BrokerDown,
    LeaderChanged,
    Note,
    Observation,
    Produced,
    ProduceFailed,
)

_O = TypeVar("_O", bound=Observation)

# Fencing happens 3 s after a broker goes silent; waiting a little longer sees it done.
AFTER_FENCING = 3.5
# A restarted broker is up after 3 s and fetches 5 ms later; this is comfortably after.
AFTER_RESTART_CATCH_UP = 0.5


def node(broker_id: int) -> str:
    return f"kafka-broker-{broker_id}"


def of_kind(recorder: Recorder, kind: type[_O]) -> list[_O]:
    """The recorded observations of one kind, typed."""
    return [o for o in recorder.observations if isinstance(o, kind)]


async def single_partition(
    kafka: SimKafkaBroker, name: str, config: dict[str, str] | None = None
) -> TopicInfo:
    return await kafka.create_topic(
        kafka.qualify(name), partitions=1, replication_factor=3, config=config
    )


async def partition_state(kafka: SimKafkaBroker, topic: str) -> tuple[int, tuple[int, ...]]:
    (info,) = (await kafka.describe_topic(topic)).partitions
    return info.leader, info.isr


async def read_all(kafka: SimKafkaBroker, topic: str, group: str) -> list[bytes]:
    """Everything a fresh group can read now (it polls until two polls in a row are empty)."""
    consumer = await kafka.consumer([topic], group_id=kafka.qualify(group))
    values: list[bytes] = []
    empty = 0
    while empty < 2:
        batch = await consumer.poll(timeout=1.0)
        values += [r.value for r in batch]
        empty = 0 if batch else empty + 1
    await consumer.close()
    return values


# --- partitioning -------------------------------------------------------------------------

# murmur2 and partitions as kafka-clients 3.9.1 computes them (Utils.murmur2 /
# Utils.toPositive(hash) % n), obtained by running the Java client's own code.
JAVA_MURMUR2 = [
    (b"21", -973932308, 0, 0, 0),
    (b"foobar", -790332482, 0, 2, 6),
    (b"a-little-bit-long-string", -985981536, 2, 0, 8),
    (b"a-little-bit-longer-string", -1486304829, 2, 3, 11),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 2, 1, 5),
    (b"abc", 479470107, 0, 3, 3),
    (b"order-1", 1221710326, 1, 2, 10),
    (b"order-7", 323129857, 1, 1, 1),
    (b"", 275646681, 0, 1, 9),
    ("\u00e9t\u00e9".encode(), -2101193575, 1, 1, 1),
]


@pytest.mark.parametrize(("key", "java_hash", "of3", "of4", "of12"), JAVA_MURMUR2)
def test_murmur2_and_partition_match_the_java_client(
    key: bytes, java_hash: int, of3: int, of4: int, of12: int
) -> None:
    assert murmur2(key) == java_hash
    assert [default_partition(key, n) for n in (3, 4, 12)] == [of3, of4, of12]


async def test_keyed_sends_land_on_the_java_partition(kafka: SimKafkaBroker) -> None:
    topic = await kafka.create_topic(kafka.qualify("orders"), partitions=4, replication_factor=3)
    producer = await kafka.producer(acks=1)
    landed = {
        key: (await producer.send(topic.name, b"x", key=key)).partition for key, *_ in JAVA_MURMUR2
    }
    assert landed == {key: of4 for key, _, _, of4, _ in JAVA_MURMUR2}


async def test_null_keys_stick_to_a_partition_for_a_batch_then_move(
    kafka: SimKafkaBroker,
) -> None:
    topic = await kafka.create_topic(kafka.qualify("clicks"), partitions=6, replication_factor=3)
    producer = await kafka.producer(acks=1)
    # 1000-byte values count 1010 bytes each: 17 of them fill batch.size (16384 bytes).
    partitions = [(await producer.send(topic.name, bytes(1000))).partition for _ in range(17 * 12)]
    batches = [partitions[i : i + 17] for i in range(0, len(partitions), 17)]
    assert all(len(set(batch)) == 1 for batch in batches)
    assert len({batch[0] for batch in batches}) > 2  # it does move on, at random


async def test_sticky_choices_repeat_with_the_seed() -> None:
    async def choices(seed: int) -> list[int]:
        async with SimKafkaBroker(world=SimWorld(seed=seed)) as kafka:
            topic = await kafka.create_topic(kafka.qualify("t"), partitions=8, replication_factor=3)
            producer = await kafka.producer(acks=1)
            return [(await producer.send(topic.name, bytes(4000))).partition for _ in range(60)]

    assert await choices(11) == await choices(11)
    assert await choices(11) != await choices(12)


# --- topics -------------------------------------------------------------------------------


async def test_replicas_are_placed_round_robin_with_leaders_spread(kafka: SimKafkaBroker) -> None:
    topic = await kafka.create_topic(kafka.qualify("spread"), partitions=6, replication_factor=3)
    leaders = [p.leader for p in topic.partitions]
    assert all(p.leader == p.replicas[0] for p in topic.partitions)  # preferred leader leads
    assert sorted(leaders) == [1, 1, 2, 2, 3, 3]
    assert all(sorted(p.replicas) == [1, 2, 3] and p.isr == p.replicas for p in topic.partitions)
    # Consecutive partitions start on consecutive brokers.
    assert all(leaders[i + 1] == leaders[i] % 3 + 1 for i in range(2)), (
        f"first replicas {leaders} do not go round-robin"
    )


async def test_topic_errors_are_one_clear_line(kafka: SimKafkaBroker) -> None:
    name = kafka.qualify("dup")
    await kafka.create_topic(name, partitions=1, replication_factor=3)
    with pytest.raises(BrokerError, match="already exists"):
        await kafka.create_topic(name)
    with pytest.raises(BrokerError, match=r"InvalidReplicationFactor.*4 replicas.*3 broker"):
        await kafka.create_topic(kafka.qualify("big"), replication_factor=4)
    with pytest.raises(BrokerError, match="invalid topic name"):
        await kafka.create_topic(kafka.qualify("no spaces"))
    with pytest.raises(BrokerError, match="UnknownTopicOrPartition"):
        await kafka.describe_topic(kafka.qualify("missing"))
    producer = await kafka.producer()
    with pytest.raises(BrokerError, match="UnknownTopicOrPartition"):
        await producer.send(kafka.qualify("missing"), b"x")
    with pytest.raises(BrokerError, match="has no partition 5"):
        await producer.send(name, b"x", partition=5)


async def test_two_adapters_of_one_world_share_the_cluster(world: SimWorld) -> None:
    async with (
        SimKafkaBroker(world=world, namespace="mq-left") as left,
        SimKafkaBroker(world=world, namespace="mq-right") as right,
    ):
        assert left.cluster is right.cluster
        topic = await left.create_topic(left.qualify("shared"), replication_factor=3)
        await right.create_topic(right.qualify("own"), replication_factor=3)
        producer = await right.producer()
        await producer.send(topic.name, b"from the right")  # the other adapter's topic
        assert (await right.describe_topic(topic.name)).partitions[0].high_watermark == 1
        assert [t.name for t in (await left.inspect()).topics] == ["mq-left-shared"]
        assert [t.name for t in (await right.inspect()).topics] == ["mq-right-own"]


# --- ISR and fencing ----------------------------------------------------------------------


async def test_a_killed_follower_leaves_the_isr_when_fenced_and_returns_after_restart(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder
) -> None:
    topic = await single_partition(kafka, "isr")
    (info,) = topic.partitions
    leader, follower = info.leader, info.replicas[1]
    producer = await kafka.producer(acks="all")
    for n in range(3):
        await producer.send(topic.name, f"before-{n}".encode())

    await world.kill(node(follower))
    await asyncio.sleep(2.9)  # the controller has not noticed yet
    assert await partition_state(kafka, topic.name) == (leader, info.isr)
    assert not of_kind(recorder, LeaderChanged)
    await asyncio.sleep(0.2)
    shrunk = tuple(b for b in info.isr if b != follower)
    assert await partition_state(kafka, topic.name) == (leader, shrunk)
    (change,) = of_kind(recorder, LeaderChanged)
    assert isinstance(change, LeaderChanged)
    assert (change.leader, change.isr, change.previous_isr) == (leader, shrunk, info.isr)
    fenced = [o for o in of_kind(recorder, BrokerDown) if o.broker == "sim:kafka"]
    assert [o.node for o in fenced] == [node(follower)]
    alive = {b.node_id: b.alive for b in (await kafka.inspect()).brokers}
    assert alive[follower] is False

    # Two of three in sync is still enough for acks=all with min.insync.replicas=2.
    for n in range(3):
        await producer.send(topic.name, f"during-{n}".encode())

    await world.restart(node(follower))
    await asyncio.sleep(AFTER_RESTART_CATCH_UP)
    leader_now, isr_now = await partition_state(kafka, topic.name)
    assert leader_now == leader
    assert sorted(isr_now) == sorted(info.isr)
    assert of_kind(recorder, LeaderChanged)[-1].isr == isr_now
    # The returning follower copied what it missed: it could lead with all six records.
    replica = kafka.cluster.topics[topic.name].partitions[0].replica[follower]
    assert replica.log_end == 6


async def test_a_dead_leader_is_replaced_from_the_isr_and_producers_follow(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder
) -> None:
    topic = await single_partition(kafka, "failover")
    (info,) = topic.partitions
    producer = await kafka.producer(acks="all")
    await producer.send(topic.name, b"one")
    await world.kill(node(info.leader))
    loop = asyncio.get_running_loop()
    start = loop.time()
    # The send retries (connection refused, then no leader) until the controller elects one.
    metadata = await producer.send(topic.name, b"two")
    assert metadata.offset == 1
    assert 3.0 <= loop.time() - start < 3.5
    new_leader, isr = await partition_state(kafka, topic.name)
    assert new_leader == info.replicas[1]  # the first replica in the ISR, in replica order
    assert info.leader not in isr
    change = of_kind(recorder, LeaderChanged)[0]
    assert isinstance(change, LeaderChanged)
    assert (change.previous_leader, change.leader) == (info.leader, new_leader)
    assert await read_all(kafka, topic.name, "readers") == [b"one", b"two"]


async def test_the_preferred_leader_gets_its_partition_back_after_a_restart(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "preferred")
    (info,) = topic.partitions
    await world.kill(node(info.leader))
    await asyncio.sleep(AFTER_FENCING)
    assert (await partition_state(kafka, topic.name))[0] != info.leader
    await world.restart(node(info.leader))
    await asyncio.sleep(1.0)
    assert (await partition_state(kafka, topic.name))[0] != info.leader  # not at once...
    await asyncio.sleep(30)  # ... but at the next leader.imbalance.check.interval (30 s)
    assert (await partition_state(kafka, topic.name))[0] == info.leader


async def test_a_restart_is_a_controlled_shutdown_leadership_moves_at_once(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "graceful")
    (info,) = topic.partitions
    restart = asyncio.ensure_future(world.restart(node(info.leader)))
    await asyncio.sleep(0.1)  # long before the 3 s session timeout
    leader, isr = await partition_state(kafka, topic.name)
    assert leader == info.replicas[1]
    assert info.leader not in isr
    await restart


# --- acks and min.insync.replicas ---------------------------------------------------------


async def test_not_enough_replicas_with_two_brokers_down(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder
) -> None:
    topic = await single_partition(kafka, "strict")
    (info,) = topic.partitions
    followers = info.replicas[1:]
    for follower in followers:
        await world.kill(node(follower))
    await asyncio.sleep(AFTER_FENCING)
    assert await partition_state(kafka, topic.name) == (info.leader, (info.leader,))

    strict = await kafka.producer(acks="all", request_timeout=2.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(NotEnoughReplicas, match=r"ISR \[\d\].*min.insync.replicas=2"):
        await strict.send(topic.name, b"refused", message_id="refused")
    assert loop.time() - start == pytest.approx(2.0, abs=0.11)  # retried until the timeout
    (failed,) = of_kind(recorder, ProduceFailed)
    assert failed.message_id == "refused"

    # acks=1 only needs the leader: accepted (and at risk, see the acks=1 loss test).
    relaxed = await kafka.producer(acks=1)
    assert (await relaxed.send(topic.name, b"accepted")).offset == 0

    await world.restart(node(followers[0]))
    await asyncio.sleep(AFTER_RESTART_CATCH_UP)
    assert (await strict.send(topic.name, b"back to two")).offset == 1


async def test_acks_all_waits_for_a_dead_follower_until_the_controller_drops_it(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "waiting")
    (info,) = topic.partitions
    await world.kill(node(info.replicas[1]))
    producer = await kafka.producer(acks="all")
    loop = asyncio.get_running_loop()
    start = loop.time()
    await producer.send(topic.name, b"slow ack")
    # The ISR still named the dead follower until it was fenced 3 s later.
    assert loop.time() - start == pytest.approx(3.0, abs=0.01)


async def test_acks_1_loses_acknowledged_writes_when_the_leader_dies_first(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder
) -> None:
    topic = await single_partition(kafka, "risky")
    (info,) = topic.partitions
    producer = await kafka.producer(acks=1)
    acked = [(await producer.send(topic.name, f"r{n}".encode())).offset for n in range(10)]
    assert acked == list(range(10))  # every one acknowledged by the leader...
    await world.kill(node(info.leader))  # ... which dies before its followers fetched them
    await asyncio.sleep(AFTER_FENCING)

    new_leader, _ = await partition_state(kafka, topic.name)
    assert new_leader != info.leader
    (state,) = (await kafka.describe_topic(topic.name)).partitions
    assert (state.high_watermark, state.log_end) == (0, 0)
    assert await read_all(kafka, topic.name, "after") == []
    assert len(of_kind(recorder, Produced)) == 10  # acknowledged, and gone

    # Offsets 0..9 are handed out again, to other records.
    assert (await producer.send(topic.name, b"next")).offset == 0
    await world.restart(node(info.leader))
    await asyncio.sleep(AFTER_RESTART_CATCH_UP)
    notes = [o.text for o in of_kind(recorder, Note)]
    assert any(f"broker {info.leader} truncated" in t and "10 record(s)" in t for t in notes)
    assert await read_all(kafka, topic.name, "later") == [b"next"]


async def test_acks_all_keeps_acknowledged_writes_when_the_leader_dies(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "safe")
    (info,) = topic.partitions
    producer = await kafka.producer(acks="all")
    for n in range(10):
        await producer.send(topic.name, f"r{n}".encode())
    await world.kill(node(info.leader))
    await asyncio.sleep(AFTER_FENCING)
    assert await read_all(kafka, topic.name, "after") == [f"r{n}".encode() for n in range(10)]


# --- clean and unclean leader election ----------------------------------------------------


async def only_the_leader_left(
    kafka: SimKafkaBroker, world: SimWorld, unclean: bool
) -> tuple[str, int, int]:
    """4 records on all replicas, then the followers die and 3 more go to the leader alone,
    then the leader dies too. Returns (topic, old leader, a follower)."""
    topic = await single_partition(
        kafka,
        "unclean" if unclean else "clean",
        {"min.insync.replicas": "1", "unclean.leader.election.enable": str(unclean).lower()},
    )
    (info,) = topic.partitions
    leader, follower, other = info.replicas
    producer = await kafka.producer(acks="all")
    for n in range(4):
        await producer.send(topic.name, f"shared-{n}".encode())
    await world.kill(node(follower))
    await world.kill(node(other))
    await asyncio.sleep(AFTER_FENCING)
    for n in range(3):  # committed: the whole ISR (just the leader) has them
        await producer.send(topic.name, f"leader-only-{n}".encode())
    await world.kill(node(leader))
    await asyncio.sleep(AFTER_FENCING)
    assert await partition_state(kafka, topic.name) == (-1, (leader,))  # offline
    await world.restart(node(follower))
    await asyncio.sleep(AFTER_RESTART_CATCH_UP)
    return topic.name, leader, follower


async def test_clean_election_waits_for_the_last_in_sync_replica(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder
) -> None:
    topic, leader, follower = await only_the_leader_left(kafka, world, unclean=False)
    # The follower is back but missed records: it may not lead. The partition stays offline.
    assert await partition_state(kafka, topic) == (-1, (leader,))
    producer = await kafka.producer(acks=1, request_timeout=2.0)
    with pytest.raises(ProduceTimedOut, match="no leader"):
        await producer.send(topic, b"nobody to take it")

    await world.restart(node(leader))
    await asyncio.sleep(AFTER_RESTART_CATCH_UP)
    leader_now, isr = await partition_state(kafka, topic)
    assert leader_now == leader
    assert follower in isr
    expected = [f"shared-{n}".encode() for n in range(4)]
    expected += [f"leader-only-{n}".encode() for n in range(3)]
    assert await read_all(kafka, topic, "readers") == expected
    assert not [o for o in of_kind(recorder, Note) if "unclean" in o.text]


async def test_unclean_election_makes_the_lost_records_visible(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder
) -> None:
    topic, leader, follower = await only_the_leader_left(kafka, world, unclean=True)
    leader_now, isr = await partition_state(kafka, topic)
    assert (leader_now, isr) == (follower, (follower,))
    (state,) = (await kafka.describe_topic(topic)).partitions
    # The high watermark went backwards: 7 committed records, 4 left.
    assert (state.high_watermark, state.log_end) == (4, 4)
    (note,) = [o for o in of_kind(recorder, Note) if "unclean" in o.text]
    assert f"broker {follower} became leader with log end 4" in note.text
    assert "offsets 4..6" in note.text

    producer = await kafka.producer(acks=1)
    assert (await producer.send(topic, b"after")).offset == 4  # offset 4 now means this
    await world.restart(node(leader))
    await asyncio.sleep(AFTER_RESTART_CATCH_UP)
    truncated = [o.text for o in of_kind(recorder, Note) if "truncated" in o.text]
    assert truncated == [
        f"broker {leader} truncated {topic}:0 to offset 4: 3 record(s) it held are not in "
        "the leader's log (offsets 4..6)"
    ]
    assert leader in (await partition_state(kafka, topic))[1]
    assert await read_all(kafka, topic, "readers") == [
        b"shared-0",
        b"shared-1",
        b"shared-2",
        b"shared-3",
        b"after",
    ]


# --- idempotence --------------------------------------------------------------------------


@pytest.mark.parametrize(("idempotent", "copies"), [(False, 2), (True, 1)])
async def test_a_retry_after_a_lost_ack_duplicates_unless_idempotent(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder, idempotent: bool, copies: int
) -> None:
    topic = await single_partition(kafka, "payments")
    (info,) = topic.partitions
    producer = await kafka.producer(acks="all", idempotent=idempotent)
    # The request reaches the leader, but the answer is lost on the way back ...
    await world.add_network_fault(
        node(info.leader), NetworkFault("reset_peer", stream="downstream")
    )
    send = asyncio.ensure_future(producer.send(topic.name, b"pay 10 EUR", message_id="pay-1"))
    await asyncio.sleep(0.05)
    await world.remove_network_faults(node(info.leader))  # ... and the retry's answer is not.
    metadata = await send
    # Non-idempotent: the retry appended a second copy and is acknowledged with its offset;
    # idempotent: the leader recognised the sequence number and answered with the first.
    assert metadata.offset == copies - 1
    assert await read_all(kafka, topic.name, "accounting") == [b"pay 10 EUR"] * copies
    (produced,) = of_kind(recorder, Produced)
    assert produced.duplicate is idempotent


async def test_idempotent_producers_need_acks_all(kafka: SimKafkaBroker) -> None:
    with pytest.raises(BrokerError, match="acks='all'"):
        await kafka.producer(acks=1, idempotent=True)


# --- pauses, the controller and network faults --------------------------------------------


async def test_a_paused_leader_holds_requests_until_it_resumes(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "frozen")
    (info,) = topic.partitions
    producer = await kafka.producer(acks="all", request_timeout=30.0)
    await world.pause(node(info.leader))
    send = asyncio.ensure_future(producer.send(topic.name, b"waiting"))
    await asyncio.sleep(AFTER_FENCING)
    assert not send.done()  # the request sits in the frozen broker's socket
    assert (await partition_state(kafka, topic.name))[0] != info.leader  # fenced, replaced
    await asyncio.sleep(1.5)
    await world.resume(node(info.leader))
    # Woken up, it answers "not the leader any more"; the retry goes to the new leader.
    assert (await send).offset == 0
    await asyncio.sleep(AFTER_RESTART_CATCH_UP)
    assert info.leader in (await partition_state(kafka, topic.name))[1]


async def test_without_the_controller_nothing_is_fenced_or_elected(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "headless")
    (info,) = topic.partitions
    await world.kill("kafka-controller")
    with pytest.raises(OperationTimedOut, match="controller did not answer"):
        await kafka.create_topic(kafka.qualify("new"), replication_factor=3)
    await world.kill(node(info.leader))
    await asyncio.sleep(30)
    # Nobody fences the dead leader: metadata still names it, the partition is unusable.
    assert await partition_state(kafka, topic.name) == (info.leader, info.isr)
    producer = await kafka.producer(acks=1, request_timeout=2.0)
    with pytest.raises(ProduceTimedOut, match="connection refused"):
        await producer.send(topic.name, b"lost in limbo")

    await world.restart("kafka-controller")  # 2 s to start, then a session timeout
    await asyncio.sleep(AFTER_FENCING)
    leader, isr = await partition_state(kafka, topic.name)
    assert leader == info.replicas[1]
    assert info.leader not in isr


async def test_latency_on_the_leader_path_slows_each_request(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "slow")
    (info,) = topic.partitions
    await world.add_network_fault(node(info.leader), NetworkFault("latency", latency=0.2))
    producer = await kafka.producer(acks=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await producer.send(topic.name, b"x")
    assert loop.time() - start == pytest.approx(0.4)  # there and back
    # Replication does not cross the client proxy: the followers are not slowed down.
    await asyncio.sleep(0.01)
    assert (await kafka.describe_topic(topic.name)).partitions[0].high_watermark == 1


async def test_a_partitioned_leader_times_producers_out(
    kafka: SimKafkaBroker, world: SimWorld, recorder: Recorder
) -> None:
    topic = await single_partition(kafka, "cut")
    (info,) = topic.partitions
    await world.add_network_fault(node(info.leader), NetworkFault("cut"))
    producer = await kafka.producer(acks=1, request_timeout=1.0)
    with pytest.raises(ProduceTimedOut, match=r"within 1s.*connection refused"):
        await producer.send(topic.name, b"x", message_id="cut-1")
    # Only clients are cut off: the broker stays in the cluster and keeps its leadership.
    await asyncio.sleep(AFTER_FENCING)
    assert await partition_state(kafka, topic.name) == (info.leader, info.isr)
    assert [o.message_id for o in of_kind(recorder, ProduceFailed)] == ["cut-1"]


async def test_acks_0_is_fire_and_forget(kafka: SimKafkaBroker, world: SimWorld) -> None:
    topic = await single_partition(kafka, "metrics")
    (info,) = topic.partitions
    producer = await kafka.producer(acks=0)
    assert (await producer.send(topic.name, b"m1")).offset == -1  # nobody says where
    await world.kill(node(info.leader))
    # Sent into a dead connection: no error, no record.
    assert (await producer.send(topic.name, b"m2")).offset == -1
    await producer.flush()
    await asyncio.sleep(AFTER_FENCING)
    assert await read_all(kafka, topic.name, "dashboards") == []  # m1 was not replicated yet


async def test_tp_partition_info_matches_the_cluster(kafka: SimKafkaBroker) -> None:
    topic = await kafka.create_topic(kafka.qualify("info"), partitions=2, replication_factor=3)
    producer = await kafka.producer(acks="all")
    await producer.send(topic.name, b"x", partition=1)
    consumer = await kafka.consumer([topic.name], group_id=kafka.qualify("g"))
    assert await consumer.poll(timeout=2.0)
    assert await consumer.position(TopicPartition(topic.name, 1)) == 1
    described = await kafka.describe_topic(topic.name)
    assert [(p.high_watermark, p.log_end) for p in described.partitions] == [(0, 0), (1, 1)]


async def test_an_answer_dropped_during_replication_times_the_send_out(
    kafka: SimKafkaBroker, world: SimWorld
) -> None:
    topic = await single_partition(kafka, "dropped")
    (info,) = topic.partitions
    producer = await kafka.producer(acks="all", request_timeout=2.0)
    send = asyncio.ensure_future(producer.send(topic.name, b"written, never confirmed"))
    await asyncio.sleep(0.001)  # the leader has it; its followers fetch 5 ms after the append
    # From now on the leader's answers are silently dropped (a timeout toxic without timeout).
    await world.add_network_fault(node(info.leader), NetworkFault("timeout", stream="downstream"))
    loop = asyncio.get_running_loop()
    with pytest.raises(ProduceTimedOut, match="within 2s"):
        await send
    assert loop.time() == pytest.approx(2.0)
    await world.remove_network_faults(node(info.leader))
    # The producer gave up, yet the record was written: "failed" is not "not written".
    assert await read_all(kafka, topic.name, "readers") == [b"written, never confirmed"]


async def test_a_cancel_that_lands_while_the_controller_answers_is_not_lost(
    kafka: SimKafkaBroker,
) -> None:
    # Python 3.11's asyncio.wait_for returns the inner result when the outer task is
    # cancelled in the very loop turn its inner future finished, and the cancel is gone (a
    # RunSession.cancel() at the start of a run was ignored that way). The cancel is timed to
    # land in exactly that turn; it must end the task at its next await at the latest.
    loop = asyncio.get_running_loop()
    finished = False

    async def create_then_go_on() -> None:
        nonlocal finished
        await kafka.create_topic(kafka.qualify("cancelled"))
        await asyncio.sleep(1)
        finished = True

    task = asyncio.create_task(create_then_go_on())
    # The task's first step starts the controller wait; in the turn after it the wait's inner
    # future finishes, and this cancel lands in that same turn, before the waiter wakes.
    loop.call_soon(lambda: loop.call_soon(task.cancel))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not finished
