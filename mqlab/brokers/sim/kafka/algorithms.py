"""Kafka's deterministic algorithms, written from their specification so the simulator places,
assigns and routes exactly as a real cluster and client would.

* :func:`range_assign` and :func:`roundrobin_assign`: the consumer group assignors (Java's
  ``RangeAssignor`` / ``RoundRobinAssignor``, which aiokafka implements the same way).
* :func:`assign_replicas`: rack-unaware replica placement (the broker's round-robin placement
  with a random start and a shifting second replica).
* :func:`java_string_hash` / :func:`coordinator_partition`: which ``__consumer_offsets`` /
  ``__transaction_state`` partition (and so which broker) coordinates a group or transaction.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from mqlab.brokers.kafka.api import TopicPartition

Assignment = dict[str, list[TopicPartition]]


def range_assign(
    partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Sequence[str]]
) -> Assignment:
    """The range assignor: per topic, members sorted by member id get consecutive ranges;
    the first ``partitions % members`` members get one partition more.

    Args:
        partitions_per_topic: partition count of every existing topic.
        subscriptions: member id -> topics it subscribes to.

    Returns:
        member id -> its partitions (every member appears, possibly with none).
    """
    assignment: Assignment = {member: [] for member in subscriptions}
    members_per_topic: dict[str, list[str]] = {}
    for member, topics in subscriptions.items():
        for topic in topics:
            members_per_topic.setdefault(topic, []).append(member)
    for topic in sorted(members_per_topic):
        count = partitions_per_topic.get(topic)
        if not count:
            continue
        members = sorted(members_per_topic[topic])
        per_member, extra = divmod(count, len(members))
        for index, member in enumerate(members):
            start = per_member * index + min(index, extra)
            length = per_member + (1 if index < extra else 0)
            assignment[member].extend(
                TopicPartition(topic, p) for p in range(start, start + length)
            )
    return assignment


def roundrobin_assign(
    partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Sequence[str]]
) -> Assignment:
    """The round-robin assignor: all subscribed partitions sorted by (topic, partition) are
    dealt one by one to the members sorted by member id, skipping members not subscribed to
    the partition's topic.

    Args/Returns: as :func:`range_assign`.
    """
    assignment: Assignment = {member: [] for member in subscriptions}
    members = sorted(subscriptions)
    if not members:
        return assignment
    subscribed = {member: set(topics) for member, topics in subscriptions.items()}
    topics = sorted({t for ts in subscriptions.values() for t in ts if t in partitions_per_topic})
    cursor = 0
    for topic in topics:
        for partition in range(partitions_per_topic[topic]):
            while topic not in subscribed[members[cursor % len(members)]]:
                cursor += 1
            assignment[members[cursor % len(members)]].append(TopicPartition(topic, partition))
            cursor += 1
    return assignment


ASSIGNORS = {"range": range_assign, "roundrobin": roundrobin_assign}


def assign_replicas(
    broker_ids: Sequence[int], partitions: int, replication_factor: int, rng: random.Random
) -> list[tuple[int, ...]]:
    """Rack-unaware replica placement: partition ``p``'s first replica is broker
    ``(p + start) % n``; the others follow at a shift that grows by one every ``n``
    partitions, which spreads leaders and followers evenly.

    Args:
        broker_ids: the live brokers (placement is over their sorted ids).
        rng: where the random start index and shift come from (the world's seeded rng).

    Returns:
        The replica list of every partition; its first entry is the preferred leader.
    """
    brokers = sorted(broker_ids)
    count = len(brokers)
    start = rng.randrange(count)
    shift = rng.randrange(count)
    placement: list[tuple[int, ...]] = []
    for partition in range(partitions):
        if partition > 0 and partition % count == 0:
            shift += 1
        first = (partition + start) % count
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            offset = 1 + (shift + j) % (count - 1)
            replicas.append(brokers[(first + offset) % count])
        placement.append(tuple(replicas))
    return placement


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (over UTF-16 code units, 32-bit signed overflow)."""
    value = 0
    encoded = text.encode("utf-16-be")
    for i in range(0, len(encoded), 2):
        value = (31 * value + ((encoded[i] << 8) | encoded[i + 1])) & 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


def coordinator_partition(key: str, partitions: int) -> int:
    """The internal-topic partition that coordinates ``key`` (a group id or transactional
    id): ``Utils.abs(key.hashCode()) % partitions``, where ``abs(MIN_VALUE)`` is 0."""
    hashed = java_string_hash(key)
    return (0 if hashed == -0x80000000 else abs(hashed)) % partitions
