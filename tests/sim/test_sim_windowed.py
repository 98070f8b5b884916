"""Windowed publishes and batch acks on the simulator: every message still reported once.

``publish_many`` / ``send_many`` keep a window of sends outstanding and ``ack_batch`` settles
a batch in one round trip; the ledger must not be able to tell: one ``Produced`` (or
``ProduceFailed``) per message, one ``Acked`` per settled delivery, and a multiple=True ack
never settles a delivery the caller did not hand in.
"""

from __future__ import annotations

import pytest

from mqlab.brokers.base import BrokerError
from mqlab.brokers.nats.api import JetStreamError
from mqlab.brokers.rabbitmq.api import AlreadySettled, Unroutable
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.nats.client import SimNatsBroker
from mqlab.brokers.sim.rabbitmq.client import SimRabbitMQBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.observe.bus import Recorder
from mqlab.observe.events import Acked, Produced, ProduceFailed


def produced_ids(recorder: Recorder) -> list[str]:
    return [o.message_id for o in recorder.of_kind(Produced) if isinstance(o, Produced)]


def acked_ids(recorder: Recorder) -> list[str]:
    return [o.message_id for o in recorder.of_kind(Acked) if isinstance(o, Acked)]


# --- RabbitMQ ------------------------------------------------------------------------------


async def test_rabbitmq_publish_many_reports_each_message_in_order(
    world: SimWorld, recorder: Recorder
) -> None:
    async with SimRabbitMQBroker(world=world) as rabbit:
        await rabbit.declare_queue("work")
        ids = await rabbit.publish_many("", "work", [b"m%d" % n for n in range(20)], window=8)
        assert len(set(ids)) == 20
        assert produced_ids(recorder) == ids
        assert (await rabbit.queue_info("work")).ready == 20


async def test_rabbitmq_publish_many_stops_at_the_first_failure_and_reports_it(
    world: SimWorld, recorder: Recorder
) -> None:
    async with SimRabbitMQBroker(world=world) as rabbit:
        with pytest.raises(Unroutable):
            await rabbit.publish_many("", "nowhere", [b"a", b"b", b"c"], window=1, mandatory=True)
        assert len(recorder.of_kind(ProduceFailed)) == 1  # the others were never sent
        assert produced_ids(recorder) == []


async def test_rabbitmq_publish_many_refuses_a_window_of_zero(world: SimWorld) -> None:
    async with SimRabbitMQBroker(world=world) as rabbit:
        await rabbit.declare_queue("work")
        with pytest.raises(BrokerError, match="window"):
            await rabbit.publish_many("", "work", [b"a"], window=0)


async def test_rabbitmq_ack_batch_settles_the_batch_with_one_ack(
    world: SimWorld, recorder: Recorder
) -> None:
    async with SimRabbitMQBroker(world=world) as rabbit:
        await rabbit.declare_queue("work")
        ids = await rabbit.publish_many("", "work", [b"m%d" % n for n in range(10)])
        consumer = await rabbit.consume("work", prefetch=20)
        batch = await consumer.next_batch(10, timeout=1.0)
        assert [d.message_id for d in batch] == ids
        await consumer.ack_batch(batch)
        assert sorted(acked_ids(recorder)) == sorted(ids)
        assert all(d.settled for d in batch)
        info = await rabbit.queue_info("work")
        assert (info.ready, info.unacked) == (0, 0)
        with pytest.raises(AlreadySettled):
            await consumer.ack_batch(batch[:1])


async def test_rabbitmq_ack_batch_never_settles_an_earlier_delivery_it_was_not_given(
    world: SimWorld, recorder: Recorder
) -> None:
    """A multiple=True ack for the last tag would settle the held first delivery too, with
    no Acked for it: the batch is acked one by one instead."""
    async with SimRabbitMQBroker(world=world) as rabbit:
        await rabbit.declare_queue("work")
        await rabbit.publish_many("", "work", [b"a", b"b", b"c"])
        consumer = await rabbit.consume("work", prefetch=10)
        held, *rest = await consumer.next_batch(3, timeout=1.0)
        assert len(rest) == 2
        await consumer.ack_batch(rest)
        assert sorted(acked_ids(recorder)) == sorted(d.message_id for d in rest)
        assert not held.settled
        assert (await rabbit.queue_info("work")).unacked == 1
        await consumer.ack_batch([held])  # now it covers exactly the one left
        assert (await rabbit.queue_info("work")).unacked == 0
        assert len(acked_ids(recorder)) == 3


async def test_rabbitmq_sim_server_multiple_ack_settles_every_earlier_tag(
    world: SimWorld,
) -> None:
    """The model's multiple=True itself (the adapter's check above relies on it)."""
    async with SimRabbitMQBroker(world=world) as rabbit:
        await rabbit.declare_queue("work")
        await rabbit.publish_many("", "work", [b"a", b"b", b"c"])
        consumer = await rabbit.consume("work", prefetch=10)
        batch = await consumer.next_batch(3, timeout=1.0)
        await batch[1]._send_ack_multiple()  # tags 1 and 2, not 3
        assert (await rabbit.queue_info("work")).unacked == 1


# --- NATS ----------------------------------------------------------------------------------


async def test_nats_publish_many_and_ack_batch_report_each_message(
    world: SimWorld, recorder: Recorder
) -> None:
    async with SimNatsBroker(world=world) as nats:
        await nats.add_stream("orders", ["orders.>"])
        acks = await nats.publish_many("orders.new", [b"o%d" % n for n in range(12)], window=5)
        assert [ack.sequence for ack in acks] == list(range(1, 13))
        assert len(produced_ids(recorder)) == 12
        consumer = await nats.pull_consumer("orders", "reader")
        fetched = await consumer.fetch(12, timeout=1.0)
        await consumer.ack_batch(fetched)
        assert sorted(acked_ids(recorder)) == sorted(m.message_id for m in fetched)
        info = await nats.consumer_info("orders", "reader")
        assert (info.num_ack_pending, info.ack_floor) == (0, 12)
        with pytest.raises(JetStreamError, match="already acknowledged"):
            await consumer.ack_batch(fetched[:1])
        assert len(acked_ids(recorder)) == 12


async def test_nats_ack_batch_refuses_another_consumers_message(world: SimWorld) -> None:
    async with SimNatsBroker(world=world) as nats:
        await nats.add_stream("orders", ["orders.>"])
        await nats.publish("orders.new", b"x")
        first = await nats.pull_consumer("orders", "first")
        second = await nats.pull_consumer("orders", "second")
        fetched = await first.fetch(1, timeout=1.0)
        with pytest.raises(JetStreamError, match="fetched by first"):
            await second.ack_batch(fetched)
        assert (await nats.consumer_info("orders", "first")).num_ack_pending == 1


# --- Kafka ---------------------------------------------------------------------------------


async def test_kafka_send_many_reports_each_record(
    kafka: SimKafkaBroker, recorder: Recorder
) -> None:
    topic = await kafka.create_topic(kafka.qualify("events"), partitions=1, replication_factor=3)
    producer = await kafka.producer(acks="all", linger_ms=5)
    placed = await producer.send_many(topic.name, [b"e%d" % n for n in range(15)], window=4)
    assert sorted(record.offset for record in placed) == list(range(15))
    assert len(produced_ids(recorder)) == 15
    await producer.close()
