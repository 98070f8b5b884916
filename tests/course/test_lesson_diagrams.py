"""The kafka-cluster diagram: a pure function of a snapshot, with the cheat sheet's corrections."""

from __future__ import annotations

import dataclasses

import pytest

from mqlab.brokers.kafka.api import KafkaNode, PartitionInfo
from mqlab.course.diagrams import DIAGRAM_NAMES, EXAMPLE_KAFKA_SNAPSHOT, draw, kafka_cluster_lines

pytestmark = pytest.mark.sim


def test_the_example_draws_the_corrected_diagram() -> None:
    lines = draw("kafka-cluster")
    text = "\n".join(lines)
    assert lines[0] == "CLUSTER   controller 0 (KRaft, its own process);  brokers B1  B2  B3"
    assert "TOPIC     orders  partitions=4  replication-factor=3  min.insync.replicas=2" in lines
    assert "  P3  leader=B1  replicas=[B1,B3,B2]  ISR=[B1,B3] (B2 behind)  log 0..44" in lines
    assert "  consumer-0 -> [P0,P1]  (P0 lag 0; P1 lag 7)" in lines
    assert "murmur2(key) & 0x7fffffff % 4" in text
    assert "hash(key)" not in text
    assert all(len(line) <= 80 for line in lines), "must fit an 80-column terminal"


def test_a_dead_broker_and_an_offline_partition_are_shown() -> None:
    brokers = (
        KafkaNode(1, "h", 1, alive=True),
        KafkaNode(2, "h", 2, alive=False),
        KafkaNode(3, "h", 3, alive=True, controller=True),
    )
    topic = EXAMPLE_KAFKA_SNAPSHOT.topics[0]
    offline = PartitionInfo(0, leader=-1, replicas=(2,), isr=(2,))
    snapshot = dataclasses.replace(
        EXAMPLE_KAFKA_SNAPSHOT,
        brokers=brokers,
        controller_id=3,
        topics=(dataclasses.replace(topic, partitions=(offline,), replication_factor=1),),
        groups=(),
    )
    lines = kafka_cluster_lines(snapshot)
    assert lines[0] == "CLUSTER   controller on B3;  brokers B1  B2 (down)  B3"
    assert "  P0  leader=none (offline)  replicas=[B2]  ISR=[B2]  log 0..0" in lines
    assert "murmur2(key) & 0x7fffffff % 1" in lines[-2]


def test_names_are_shortened_and_an_empty_namespace_says_so() -> None:
    snapshot = dataclasses.replace(EXAMPLE_KAFKA_SNAPSHOT, topics=(), groups=())
    lines = kafka_cluster_lines(snapshot, display_name=str.upper, producer="acks=1")
    assert "TOPIC     (none yet)" in lines
    assert "PRODUCER  acks=1" in lines
    grouped = kafka_cluster_lines(EXAMPLE_KAFKA_SNAPSHOT, display_name=str.upper)
    assert "GROUP     BILLING (Stable, range)" in grouped


def test_only_known_diagrams_draw() -> None:
    assert DIAGRAM_NAMES == ("kafka-cluster",)
    with pytest.raises(KeyError):
        draw("rabbitmq-exchanges")
