"""The live models, fed observations and snapshots by hand (no terminal)."""

from __future__ import annotations

import pytest

from mqlab.observe.events import (
    Acked,
    AggregateLoaded,
    BrokerDown,
    BrokerUp,
    Committed,
    CompensationStarted,
    CompensationSucceeded,
    Delivered,
    EventAppended,
    LeaderChanged,
    Produced,
    ProduceRequested,
    Rebalanced,
    RetryAttempted,
    RetryGaveUp,
    RetryScheduled,
    SagaParked,
    SagaStarted,
    SagaStepFailed,
    SagaStepSucceeded,
    VersionConflict,
)
from mqlab.tui.models import short_name
from mqlab.tui.models.kafka import KafkaView
from mqlab.tui.models.live import LiveModels
from mqlab.tui.models.patterns import EventLogView, RetryView, SagaView
from mqlab.tui.models.queues import QueueSystemView
from mqlab.tui.models.snapshots import (
    KafkaSnapshot,
    SqsSnapshot,
)
from mqlab.tui.widgets.scenario.event_log_view import render_event_log
from mqlab.tui.widgets.scenario.kafka_view import offset_track
from mqlab.tui.widgets.scenario.saga_view import render_sagas

pytestmark = pytest.mark.sim

TOPIC = "mq-3f2a9c-orders"


def test_short_names_drop_the_run_namespace_only() -> None:
    assert short_name("mq-3f2a9c-orders") == "orders"
    assert short_name("mq-sim001-orders-group") == "orders-group"
    assert short_name("orders") == "orders"
    assert short_name("my-queue") == "my-queue"


def test_the_nodes_down_are_those_reported_down_and_not_up_again() -> None:
    models = LiveModels("rabbitmq")
    models(BrokerDown(at=1.0, broker="rabbitmq", node="rabbitmq", detail="connection lost"))
    # The run's other adapter (the producer's) loses the same node: still one node down.
    models(BrokerDown(at=1.1, broker="rabbitmq", node="rabbitmq", detail="connection lost"))
    models(BrokerUp(at=2.0, broker="rabbitmq", node="toxiproxy", detail="another node"))
    assert models.nodes_down() == ["rabbitmq"]
    models(BrokerUp(at=3.0, broker="rabbitmq", node="rabbitmq", detail="reconnected"))
    assert models.nodes_down() == []

    kafka = LiveModels("kafka")
    for node, at in (("kafka-broker-2", 1.0), ("kafka-broker-1", 2.0)):
        kafka(BrokerDown(at=at, broker="kafka", node=node))
    assert kafka.nodes_down() == ["kafka-broker-2", "kafka-broker-1"]  # in the order they went


def test_kafka_view_follows_leaders_brokers_offsets_and_assignment() -> None:
    view = KafkaView()
    for offset in range(5):
        view(
            Produced(
                at=offset,
                broker="sim:kafka",
                destination=TOPIC,
                message_id=f"m{offset}",
                partition=1,
                position=offset,
            )
        )
    view(LeaderChanged(at=5, broker="sim:kafka", topic=TOPIC, partition=1, leader=2, isr=(2, 3)))
    view(BrokerDown(at=6, broker="lab", node="kafka-broker-1"))
    view(
        Committed(
            at=7, broker="sim:kafka", group="mq-3f2a9c-billing", topic=TOPIC, partition=1, offset=3
        )
    )
    view(
        Rebalanced(
            at=8,
            broker="sim:kafka",
            group="mq-3f2a9c-billing",
            generation=4,
            assignment=(("c1", (f"{TOPIC}:0", f"{TOPIC}:1")), ("c2", ())),
        )
    )
    partition = view.partitions[("orders", 1)]
    assert partition.log_end == 5
    assert (partition.leader, partition.isr) == (2, (2, 3))
    assert view.brokers[1] is False
    group = view.groups["billing"]
    assert group.committed[("orders", 1)] == 3
    assert view.lag(group, "orders", 1) == 2
    assert group.assignment == {"c1": ("orders:0", "orders:1"), "c2": ()}
    assert group.generation == 4
    view(BrokerUp(at=9, broker="lab", node="kafka-broker-1"))
    assert view.brokers[1] is True


def test_kafka_view_merges_each_members_report_of_a_generation() -> None:
    view = KafkaView()
    group = "mq-3f2a9c-billing"

    def rebalanced(generation: int, member: str, *partitions: int) -> None:
        share = tuple(f"{TOPIC}:{p}" for p in partitions)
        view(
            Rebalanced(
                at=1,
                broker="kafka",
                group=group,
                generation=generation,
                assignment=((member, share),),
            )
        )

    rebalanced(1, "c1", 0, 1)
    rebalanced(2, "c1", 0)
    rebalanced(2, "c2", 1)
    assert view.groups["billing"].assignment == {"c1": ("orders:0",), "c2": ("orders:1",)}
    rebalanced(3, "c2", 0, 1)  # c1 left: the new generation is c2's alone
    assert view.groups["billing"].assignment == {"c2": ("orders:0", "orders:1")}
    assert view.groups["billing"].generation == 3


def test_kafka_view_ignores_what_is_not_kafka() -> None:
    view = KafkaView()
    view(
        Produced(at=0, broker="sim:nats", destination="s", message_id="m", partition=0, position=4)
    )
    view(BrokerDown(at=1, broker="sim:rabbitmq", node="rabbitmq"))
    assert view.empty
    assert view.version == 0


def test_a_snapshot_replaces_what_observations_inferred() -> None:
    from mqlab.brokers.kafka.api import (
        GroupInfo,
        GroupMember,
        GroupOffset,
        KafkaNode,
        PartitionInfo,
        TopicInfo,
        TopicPartition,
    )

    view = KafkaView()
    view(Produced(at=0, broker="kafka", destination=TOPIC, message_id="m", partition=0, position=9))
    snapshot = KafkaSnapshot(
        brokers=(KafkaNode(1, "h", 1, True), KafkaNode(2, "h", 2, False)),
        topics=(
            TopicInfo(TOPIC, (PartitionInfo(0, 1, (1, 2), (1,), 2, 8, 10),), replication_factor=2),
        ),
        groups=(
            GroupInfo(
                "mq-3f2a9c-billing",
                "Stable",
                (GroupMember("id-1", "c1", (TopicPartition(TOPIC, 0),)),),
                (GroupOffset(TOPIC, 0, 6, 8),),
            ),
        ),
        controller_id=0,
    )
    view.apply_snapshot(snapshot)
    partition = view.partitions[("orders", 0)]
    assert (partition.log_start, partition.high_watermark, partition.log_end) == (2, 8, 10)
    assert partition.replicas == (1, 2)
    assert view.brokers == {1: True, 2: False}
    assert view.controller_id == 0
    assert view.groups["billing"].assignment == {"c1": ("orders:0",)}
    assert view.lag(view.groups["billing"], "orders", 0) == 2


def test_offset_track_marks_committed_readable_and_unreplicated() -> None:
    from mqlab.tui.models.kafka import PartitionState

    state = PartitionState("orders", 0, log_start=0, high_watermark=18, log_end=24)
    track = offset_track(state, committed=[12], scale=24).plain
    assert track.count("█") == 12  # committed
    assert track.count("▓") == 6  # readable, not yet committed
    assert track.count("░") == 6  # written, not yet in every ISR replica
    empty = offset_track(PartitionState("orders", 1), committed=[], scale=24).plain
    assert set(empty.strip("▕▏")) == {"·"}


def _flow(system: str = "sqs") -> QueueSystemView:
    return QueueSystemView(system)


def test_fifo_head_of_line_blocking_is_found_per_group() -> None:
    view = _flow()
    for number, key in enumerate(["a", "a", "a", "b"]):
        mid = f"m{number}"
        view(ProduceRequested(at=0, broker="runner", message_id=mid, step=1, key=key))
        view(Produced(at=0, broker="sim:sqs", destination="mq-1-q.fifo", message_id=mid, key=key))
    view(
        Delivered(
            at=1,
            broker="sim:sqs",
            destination="mq-1-q.fifo",
            message_id="m0",
            consumer="c",
            key="a",
        )
    )
    view(
        Delivered(
            at=1,
            broker="sim:sqs",
            destination="mq-1-q.fifo",
            message_id="m3",
            consumer="c",
            key="b",
        )
    )
    view.visibility_timeout = 30.0
    blocked = view.flow.blocked_groups()
    assert list(blocked) == ["a"]  # b has nothing waiting behind its head
    head, waiting = blocked["a"]
    assert (head.message_id, waiting) == ("m0", 2)
    assert view.visible_again_in(head) == pytest.approx(30.0)
    view(Acked(at=2, broker="sim:sqs", destination="mq-1-q.fifo", message_id="m0", consumer="c"))
    assert "a" not in view.flow.blocked_groups()


def test_an_sqs_snapshot_sets_the_visibility_timeout() -> None:
    from mqlab.brokers.sqs.api import SqsQueueInfo

    view = _flow()
    queue = SqsQueueInfo("mq-1-q", "url", False, 3, 1, 0, visibility_timeout=7)
    view.apply_snapshot(SqsSnapshot(queues=(queue,)))
    assert view.visibility_timeout == 7.0
    assert view.snapshot is not None


def test_retries_are_tracked_per_client_with_delays_per_strategy() -> None:
    view = RetryView()
    view(RetryAttempted(at=0.0, broker="p", message_id="client-1", call=1, outcome="failed"))
    view(
        RetryScheduled(
            at=0.0, broker="p", message_id="client-1", attempt=0, delay=0.4, strategy="full"
        )
    )
    view(RetryAttempted(at=0.4, broker="p", message_id="client-1", call=2, outcome="succeeded"))
    view(
        RetryScheduled(
            at=0.1, broker="p", message_id="client-2", attempt=0, delay=1.6, strategy="full"
        )
    )
    view(
        RetryGaveUp(
            at=2.0, broker="p", message_id="client-2", reason="attempts", calls=3, elapsed=2.0
        )
    )
    assert view.tracks["client-1"].calls == [(0.0, "failed"), (0.4, "succeeded")]
    assert view.tracks["client-2"].gave_up == (2.0, "attempts")
    assert view.delays["full"] == [0.4, 1.6]


def test_saga_compensations_out_of_reverse_order_are_flagged() -> None:
    view = SagaView()
    view(
        SagaStarted(
            at=0, broker="p", saga_id="s1", saga="order", steps=("reserve", "charge", "ship")
        )
    )
    view(SagaStepSucceeded(at=1, broker="p", saga_id="s1", step="reserve"))
    view(SagaStepSucceeded(at=2, broker="p", saga_id="s1", step="charge"))
    view(SagaStepFailed(at=3, broker="p", saga_id="s1", step="ship", error="no truck"))
    for step in ("reserve", "charge"):  # the wrong order: forward, not backward
        view(CompensationStarted(at=4, broker="p", saga_id="s1", step=step, compensation_id=step))
        view(CompensationSucceeded(at=5, broker="p", saga_id="s1", step=step, compensation_id=step))
    assert "not in reverse order" in str(render_sagas(view).renderables[2])  # type: ignore[attr-defined]
    right = SagaView()
    right(SagaStarted(at=0, broker="p", saga_id="s2", saga="order", steps=("reserve", "charge")))
    for step in ("charge", "reserve"):
        right(
            CompensationSucceeded(at=5, broker="p", saga_id="s2", step=step, compensation_id=step)
        )
    rendered = " ".join(str(r) for r in render_sagas(right).renderables)  # type: ignore[attr-defined]
    assert "not in reverse order" not in rendered


def test_a_parked_saga_is_marked() -> None:
    view = SagaView()
    view(SagaStarted(at=0, broker="p", saga_id="s1", saga="order", steps=("reserve", "charge")))
    view(SagaParked(at=1, broker="p", saga_id="s1", step="charge", reason="refund keeps failing"))
    saga = view.sagas["s1"]
    assert saga.outcome == "parked"
    assert saga.states["charge"] == "stuck"
    assert "PARKED" in str(render_sagas(view).renderables[0])  # type: ignore[attr-defined]


def test_event_log_beside_the_rebuilt_aggregate() -> None:
    view = EventLogView()
    for version, event in enumerate(["Opened", "Deposited", "Withdrawn"], start=1):
        view(
            EventAppended(
                at=version, broker="p", aggregate_id="acct-1", event_type=event, version=version
            )
        )
    view(AggregateLoaded(at=4, broker="p", aggregate_id="acct-1", version=2, events_replayed=2))
    view(
        VersionConflict(
            at=5, broker="p", aggregate_id="acct-1", expected_version=2, actual_version=3
        )
    )
    aggregate = view.aggregates["acct-1"]
    assert aggregate.version == 3
    assert aggregate.loaded_version == 2
    assert aggregate.conflicts == [(2, 3, "append")]
    table = render_event_log(view).renderables[0]  # type: ignore[attr-defined]
    events, state = (cell for column in table.columns for cell in column.cells)
    assert "v3   Withdrawn" in str(events)
    assert "(1 behind)" in str(state)
    assert "CONFLICT" in str(state)


def test_a_snapshot_requested_before_a_restart_does_not_show_the_broker_dead() -> None:
    from mqlab.brokers.kafka.api import KafkaNode

    def both(second_alive: bool) -> KafkaSnapshot:
        return KafkaSnapshot(
            brokers=(KafkaNode(1, "h", 1, True), KafkaNode(2, "h", 2, second_alive)),
            topics=(),
            groups=(),
            controller_id=0,
        )

    view = KafkaView()
    view(BrokerDown(at=1, broker="kafka", node="kafka-broker-2"))
    requested = view.liveness_reports  # the poller asks while broker 2 is down...
    view(BrokerUp(at=2, broker="kafka", node="kafka-broker-2"))  # ...it restarts...
    view.apply_snapshot(both(False), requested_after=requested)  # ...the old answer arrives
    assert view.brokers == {1: True, 2: True}
    # A snapshot requested after the report is the broker's word, even against it.
    view.apply_snapshot(both(False), requested_after=view.liveness_reports)
    assert view.brokers == {1: True, 2: False}
    # Unstamped (a replay's, a test's): the snapshot's word stands.
    view(BrokerUp(at=3, broker="kafka", node="kafka-broker-2"))
    view.apply_snapshot(both(False))
    assert view.brokers == {1: True, 2: False}
