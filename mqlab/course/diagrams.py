"""Diagrams a lesson can draw, as plain text lines from a broker's snapshot (no I/O here).

``kafka-cluster`` is the cheat sheet's Kafka diagram, drawn from a
:class:`~mqlab.brokers.kafka.api.KafkaSnapshot`: the brokers and the controller, each topic's
partitions with leader, replicas and ISR (and who fell out of it), the offsets, each consumer
group's members with their partitions and lag, and the produce / consume flow. The player takes
the snapshot from a live ``inspect()`` (the simulator's or the lab's); when there is none it
draws :data:`EXAMPLE_KAFKA_SNAPSHOT`. The TUI draws the same lines.

Two corrections to the cheat sheet are built in: the partitioner is ``murmur2(key) &
0x7fffffff`` modulo the partition count (the sign bit masked, not ``hash(key) % 4``), and in a
KRaft cluster like the lab's the controller is its own process, not "Broker 0".
"""

from __future__ import annotations

from collections.abc import Callable

from mqlab.brokers.kafka.api import (
    GroupInfo,
    GroupMember,
    GroupOffset,
    KafkaNode,
    KafkaSnapshot,
    PartitionInfo,
    TopicInfo,
    TopicPartition,
)

DIAGRAM_NAMES: tuple[str, ...] = ("kafka-cluster",)
"""Diagrams a read step may name."""


def _example() -> KafkaSnapshot:
    topic = "orders"
    partitions = (
        PartitionInfo(
            0, leader=1, replicas=(1, 2, 3), isr=(1, 2, 3), high_watermark=42, log_end=42
        ),
        PartitionInfo(
            1, leader=2, replicas=(2, 3, 1), isr=(2, 3, 1), high_watermark=37, log_end=37
        ),
        PartitionInfo(
            2, leader=3, replicas=(3, 1, 2), isr=(3, 1, 2), high_watermark=51, log_end=51
        ),
        # A follower that fell behind: still a replica, no longer in sync. acks=all waits for
        # the ISR only, which is why min.insync.replicas matters.
        PartitionInfo(3, leader=1, replicas=(1, 3, 2), isr=(1, 3), high_watermark=44, log_end=44),
    )
    offsets = (
        GroupOffset(topic, 0, committed=42, high_watermark=42),
        GroupOffset(topic, 1, committed=30, high_watermark=37),
        GroupOffset(topic, 2, committed=51, high_watermark=51),
        GroupOffset(topic, 3, committed=None, high_watermark=44),
    )
    members = (
        GroupMember(
            "consumer-0-1", "consumer-0", (TopicPartition(topic, 0), TopicPartition(topic, 1))
        ),
        GroupMember(
            "consumer-1-2", "consumer-1", (TopicPartition(topic, 2), TopicPartition(topic, 3))
        ),
    )
    return KafkaSnapshot(
        brokers=tuple(KafkaNode(node, "127.0.0.1", 19090 + node, alive=True) for node in (1, 2, 3)),
        topics=(
            TopicInfo(topic, partitions, replication_factor=3, config={"min.insync.replicas": "2"}),
        ),
        groups=(GroupInfo("billing", "Stable", members, offsets, protocol="range"),),
        controller_id=0,
    )


EXAMPLE_KAFKA_SNAPSHOT = _example()
"""The cheat sheet's cluster as the lab runs it: a KRaft controller (node 0) and brokers 1-3;
topic ``orders`` with four partitions on three replicas, one of which has a follower out of the
ISR; group ``billing`` with two members, one partition lagging and one never committed."""


def _broker(node_id: int) -> str:
    return f"B{node_id}"


def _brokers(node_ids: tuple[int, ...]) -> str:
    return "[" + ",".join(_broker(node) for node in node_ids) + "]"


def _cluster_line(snapshot: KafkaSnapshot) -> str:
    nodes = "  ".join(
        _broker(node.node_id) + ("" if node.alive else " (down)") for node in snapshot.brokers
    )
    broker_ids = {node.node_id for node in snapshot.brokers}
    controller = snapshot.controller_id
    if controller is None:
        who = "controller unknown"
    elif controller in broker_ids:
        who = f"controller on {_broker(controller)}"
    else:
        who = f"controller {controller} (KRaft, its own process)"
    return f"CLUSTER   {who};  brokers {nodes or '(none)'}"


def _partition_line(partition: PartitionInfo, alive: set[int]) -> str:
    if partition.leader < 0 or partition.leader not in alive:
        leader = "none (offline)"
    else:
        leader = _broker(partition.leader)
    line = (
        f"  P{partition.partition}  leader={leader}  replicas={_brokers(partition.replicas)}"
        f"  ISR={_brokers(partition.isr)}"
    )
    behind = tuple(node for node in partition.replicas if node not in partition.isr)
    if behind:
        line += f" ({','.join(_broker(node) for node in behind)} behind)"
    offsets = f"log {partition.log_start}..{partition.log_end}"
    if partition.high_watermark != partition.log_end:
        offsets += f" HW {partition.high_watermark}"
    return f"{line}  {offsets}"


def _topic_lines(topic: TopicInfo, name: str, alive: set[int]) -> list[str]:
    settings = f"partitions={len(topic.partitions)}  replication-factor={topic.replication_factor}"
    min_isr = topic.config.get("min.insync.replicas")
    if min_isr is not None:
        settings += f"  min.insync.replicas={min_isr}"
    lines = [f"TOPIC     {name}  {settings}"]
    lines += [
        _partition_line(p, alive) for p in sorted(topic.partitions, key=lambda p: p.partition)
    ]
    return lines


def _lag(offset: GroupOffset) -> str:
    if offset.committed is None:
        return f"P{offset.partition} nothing committed yet"
    return f"P{offset.partition} lag {offset.lag}"


def _group_lines(group: GroupInfo, name: Callable[[str], str]) -> list[str]:
    protocol = f", {group.protocol}" if group.protocol else ""
    lines = [f"GROUP     {name(group.group_id)} ({group.state}{protocol})"]
    offsets = {(o.topic, o.partition): o for o in group.offsets}
    for member in sorted(group.members, key=lambda m: m.client_id):
        owned = sorted(member.assignment, key=lambda tp: (tp.topic, tp.partition))
        partitions = ",".join(f"P{tp.partition}" for tp in owned)
        progress = [
            _lag(offsets[(tp.topic, tp.partition)])
            for tp in owned
            if (tp.topic, tp.partition) in offsets
        ]
        detail = f"  ({'; '.join(progress)})" if progress else ""
        lines.append(f"  {member.client_id} -> [{partitions}]{detail}")
    if not group.members:
        lines.append("  no members (committed offsets stay: a new member resumes from them)")
    return lines


def kafka_cluster_lines(
    snapshot: KafkaSnapshot,
    *,
    display_name: Callable[[str], str] | None = None,
    producer: str | None = None,
) -> list[str]:
    """The cheat sheet's Kafka diagram for ``snapshot``, one string per line.

    Args:
        display_name: shortens broker-side names for display (a run's namespace prefix).
        producer: the producer's settings, when the snapshot came from a run that used one
            (``acks=all, idempotence on``).
    """
    name = display_name or (lambda text: text)
    alive = {node.node_id for node in snapshot.brokers if node.alive}
    lines = [_cluster_line(snapshot), ""]
    for topic in snapshot.topics:
        lines += [*_topic_lines(topic, name(topic.name), alive), ""]
    if not snapshot.topics:
        lines += ["TOPIC     (none yet)", ""]
    if producer:
        lines += [f"PRODUCER  {producer}"]
    for group in snapshot.groups:
        lines += _group_lines(group, name)
    if producer or snapshot.groups:
        lines.append("")
    count = len(snapshot.topics[0].partitions) if snapshot.topics else "N"
    lines += [
        f"FLOW      producer -> murmur2(key) & 0x7fffffff % {count} -> partition leader -> ISR",
        "          consumer -> fetch from the leader -> process -> commit offset",
    ]
    return lines


def draw(
    name: str,
    snapshot: KafkaSnapshot | None = None,
    *,
    display_name: Callable[[str], str] | None = None,
    producer: str | None = None,
) -> list[str]:
    """Diagram ``name`` from ``snapshot`` (the built-in example when None).

    Raises:
        KeyError: an unknown diagram name (lessons are validated against
            :data:`DIAGRAM_NAMES`).
    """
    if name != "kafka-cluster":
        raise KeyError(name)
    return kafka_cluster_lines(
        snapshot or EXAMPLE_KAFKA_SNAPSHOT, display_name=display_name, producer=producer
    )
