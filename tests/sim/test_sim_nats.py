"""The simulator's NATS JetStream model: what the course teaches, beyond the shared contract.

The consumer-counter traces below were measured on nats-server 2.15.1 (the lab's version)
with nats-py, running the same steps; the model must reproduce them number for number.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.nats.api import ConsumerInfo, JetStreamError, NoStreamForSubject
from mqlab.brokers.registry import get_broker_class
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.nats import subjects as nats_subjects
from mqlab.brokers.sim.nats.client import SimNatsBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.observe.bus import Recorder
from mqlab.observe.events import BrokerDown, BrokerUp, DeadLettered, Expired

pytestmark = pytest.mark.sim


@pytest.fixture
async def world() -> AsyncIterator[SimWorld]:
    sim = SimWorld(seed=5)
    yield sim
    await sim.aclose()
    assert sim.errors == []


@pytest.fixture
async def nats(world: SimWorld) -> AsyncIterator[SimNatsBroker]:
    async with SimNatsBroker(world=world) as adapter:
        yield adapter


def recorded(world: SimWorld) -> Recorder:
    recorder = Recorder()
    world.bus.subscribe(recorder)
    return recorder


def counters(info: ConsumerInfo) -> tuple[int, int, int, int, int]:
    """(delivered, ack floor, pending, ack pending, redelivered), as the server reports them."""
    return (
        info.delivered,
        info.ack_floor,
        info.num_pending,
        info.num_ack_pending,
        info.num_redelivered,
    )


# --- subjects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders.eu.paris", False),
        ("orders.*", "orders", False),
        ("orders.>", "orders.eu.paris", True),
        ("orders.>", "orders", False),
        ("*.eu.>", "orders.eu.paris", True),
        (">", "anything", True),
        ("orders.eu", "orders.eu", True),
    ],
)
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert nats_subjects.matches(pattern, subject) is expected


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("orders.*", "orders.eu", True),
        ("orders.>", "orders.eu.paris", True),
        ("orders.*", "orders.*.x", False),
        ("orders.>", "orders", False),
        ("a.*.c", "a.b.*", True),
        ("a.b", "a.c", False),
        (">", "x.y", True),
    ],
)
def test_subject_overlap(first: str, second: str, expected: bool) -> None:
    assert nats_subjects.overlap(first, second) is expected
    assert nats_subjects.overlap(second, first) is expected


def test_subject_filters_are_validated() -> None:
    assert nats_subjects.valid_filter("a.*.>")
    for bad in ("a.>.b", "a..b", "a.b*", "", "a b"):
        assert not nats_subjects.valid_filter(bad)


async def test_streams_capture_by_wildcard_and_refuse_overlaps(nats: SimNatsBroker) -> None:
    await nats.add_stream("orders", [nats.subject("orders.*.created"), nats.subject("refunds.>")])
    await nats.publish(nats.subject("orders.eu.created"), b"1")
    await nats.publish(nats.subject("refunds.eu.partial"), b"2")
    with pytest.raises(NoStreamForSubject):
        await nats.publish(nats.subject("orders.eu.paris.created"), b"3")
    assert (await nats.stream_info("orders")).messages == 2
    with pytest.raises(JetStreamError, match="overlap with an existing stream"):
        await nats.add_stream("clash", [nats.subject("orders.us.*")])
    with pytest.raises(JetStreamError, match="overlaps"):
        await nats.add_stream("self-clash", [nats.subject("x.*"), nats.subject("x.a")])
    with pytest.raises(JetStreamError, match="invalid subject"):
        await nats.add_stream("bad", [nats.subject("x.>.y")])
    with pytest.raises(JetStreamError, match="not allowed"):
        await nats.add_stream("has.dot", [nats.subject("y")])


async def test_consumer_filter_captures_wildcards(nats: SimNatsBroker) -> None:
    await nats.add_stream("events", [nats.subject("events.>")])
    for subject in ("events.eu.paris", "events.us.ny", "events.eu.berlin.mitte", "events.eu"):
        await nats.publish(nats.subject(subject), subject.encode())
    one_level = await nats.pull_consumer(
        "events", "one", filter_subject=nats.subject("events.eu.*")
    )
    deeper = await nats.pull_consumer("events", "deep", filter_subject=nats.subject("events.eu.>"))
    assert [m.data for m in await one_level.fetch(10, timeout=1)] == [b"events.eu.paris"]
    assert [m.data for m in await deeper.fetch(10, timeout=1)] == [
        b"events.eu.paris",
        b"events.eu.berlin.mitte",
    ]
    assert (await nats.consumer_info("events", "one")).num_pending == 0


# --- counters, redelivery, max deliver --------------------------------------------------------


async def test_counters_follow_the_server_through_redelivery_and_max_deliver(
    world: SimWorld, nats: SimNatsBroker
) -> None:
    recorder = recorded(world)
    await nats.add_stream("P1", [nats.subject("p1.>")])
    for number in range(5):
        await nats.publish(nats.subject(f"p1.x.{number}"), f"m{number}".encode())
    consumer = await nats.pull_consumer("P1", "c", ack_wait=1.0, max_deliver=3)

    async def info() -> tuple[int, int, int, int, int]:
        return counters(await nats.consumer_info("P1", "c"))

    messages = await consumer.fetch(3, timeout=1)
    assert await info() == (3, 0, 2, 3, 0)
    await messages[1].ack()
    assert await info() == (3, 0, 2, 2, 0)  # acking 2 before 1 does not move the floor
    await messages[0].ack()
    assert await info() == (3, 2, 2, 1, 0)
    await asyncio.sleep(1.3)
    assert await info() == (3, 2, 2, 1, 0)  # expired, but nobody fetched yet
    messages = await consumer.fetch(3, timeout=1)
    # The redelivery comes first, then the new ones.
    assert [(m.stream_sequence, m.consumer_sequence, m.num_delivered) for m in messages] == [
        (3, 4, 2),
        (4, 5, 1),
        (5, 6, 1),
    ]
    assert await info() == (5, 2, 0, 3, 1)
    await messages[0].ack()
    assert await info() == (5, 3, 0, 2, 0)
    rounds = []
    for _ in range(3):
        await asyncio.sleep(1.2)
        again = await consumer.fetch(5, timeout=0.5)
        rounds.append([(m.stream_sequence, m.num_delivered) for m in again])
        assert await info() == ((5, 3, 0, 0, 2) if not again else (5, 3, 0, 2, 2))
    assert rounds == [[(4, 2), (5, 2)], [(4, 3), (5, 3)], []]
    await nats.publish(nats.subject("p1.x.9"), b"later")
    [fresh] = await consumer.fetch(5, timeout=0.5)
    assert (fresh.stream_sequence, fresh.consumer_sequence) == (6, 11)
    await fresh.ack()
    assert await info() == (6, 6, 0, 0, 2)

    lettered = [o for o in recorder.of_kind(DeadLettered) if isinstance(o, DeadLettered)]
    assert [o.reason for o in lettered] == [
        "consumer c reached max_deliver after 3 deliveries (stream sequence 4)",
        "consumer c reached max_deliver after 3 deliveries (stream sequence 5)",
    ]
    assert {o.target for o in lettered} == {
        f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{nats.qualify('P1')}.c"
    }
    # JetStream has no DLQ: the messages stay in the stream.
    assert (await nats.stream_info("P1")).messages == 6


async def test_stale_ack_nak_at_max_and_lazy_give_up(nats: SimNatsBroker) -> None:
    """The second trace measured on the real server (ack_wait 0.5 s, max_deliver 2)."""
    await nats.add_stream("Q", [nats.subject("q.>")])
    for number in range(3):
        await nats.publish(nats.subject("q.a"), f"m{number}".encode())
    consumer = await nats.pull_consumer("Q", "c", ack_wait=0.5, max_deliver=2)

    async def info() -> tuple[int, int, int, int, int]:
        return counters(await nats.consumer_info("Q", "c"))

    [first] = await consumer.fetch(1, timeout=0.3)
    await asyncio.sleep(0.7)
    [second] = await consumer.fetch(1, timeout=0.3)
    assert (second.stream_sequence, second.num_delivered) == (1, 2)
    await first.ack()  # an ack through the older delivery still acks the message
    assert await info() == (1, 1, 2, 0, 0)
    [_two] = await consumer.fetch(1, timeout=0.3)
    await asyncio.sleep(0.7)
    assert await info() == (2, 1, 1, 1, 0)
    [two_again] = await consumer.fetch(1, timeout=0.3)
    assert (two_again.stream_sequence, two_again.num_delivered) == (2, 2)
    await two_again.nak()
    assert await info() == (2, 1, 1, 1, 1)
    await asyncio.sleep(0.7)
    assert await info() == (2, 1, 1, 1, 1)  # given up only when the next fetch looks at it
    [three] = await consumer.fetch(3, timeout=0.3)
    assert (three.stream_sequence, three.num_delivered) == (3, 1)
    assert await info() == (3, 1, 0, 1, 1)
    with pytest.raises(JetStreamError, match="already acknowledged"):
        await two_again.ack()


async def test_in_progress_restarts_the_ack_wait(nats: SimNatsBroker) -> None:
    await nats.add_stream("slow", [nats.subject("slow.>")])
    await nats.publish(nats.subject("slow.job"), b"big")
    consumer = await nats.pull_consumer("slow", "worker", ack_wait=1.0)
    [message] = await consumer.fetch(1, timeout=1)
    for _ in range(3):
        await asyncio.sleep(0.8)
        await message.in_progress()
    assert await consumer.fetch(1, timeout=0.5) == []
    again = await consumer.fetch(1, timeout=1)
    assert [m.num_delivered for m in again] == [2]


async def test_at_most_max_ack_pending_unacked_messages(nats: SimNatsBroker) -> None:
    await nats.add_stream("bulk", [nats.subject("bulk.>")])
    for _ in range(1005):
        await nats.publish(nats.subject("bulk.x"), b"x")
    consumer = await nats.pull_consumer("bulk", "greedy")
    held = []
    while batch := await consumer.fetch(100, timeout=0.2):
        held.extend(batch)
    assert len(held) == 1000  # the server's default max_ack_pending
    await held[0].ack()
    assert [m.stream_sequence for m in await consumer.fetch(100, timeout=0.2)] == [1001]


async def test_nak_with_delay_and_term(world: SimWorld, nats: SimNatsBroker) -> None:
    loop = asyncio.get_running_loop()
    await nats.add_stream("tasks", [nats.subject("tasks.>")])
    await nats.publish(nats.subject("tasks.a"), b"retry me")
    await nats.publish(nats.subject("tasks.b"), b"give up on me")
    consumer = await nats.pull_consumer("tasks", "worker", ack_wait=30)
    retry, hopeless = await consumer.fetch(2, timeout=1)
    await hopeless.term()
    started = loop.time()
    await retry.nak(delay=2.5)
    [again] = await consumer.fetch(1, timeout=10)
    assert round(loop.time() - started, 6) == 2.5
    assert (again.data, again.num_delivered) == (b"retry me", 2)
    await again.ack()
    assert counters(await nats.consumer_info("tasks", "worker")) == (2, 2, 0, 0, 0)


# --- dedup and replay -------------------------------------------------------------------------


async def test_msg_id_dedup_only_inside_the_window(nats: SimNatsBroker) -> None:
    await nats.add_stream("charges", [nats.subject("charges.>")], duplicate_window=60)
    first = await nats.publish(nats.subject("charges.new"), b"100", msg_id="pay-1")
    await asyncio.sleep(59)
    again = await nats.publish(nats.subject("charges.new"), b"100", msg_id="pay-1")
    assert (again.sequence, again.duplicate) == (first.sequence, True)
    await asyncio.sleep(1)
    late = await nats.publish(nats.subject("charges.new"), b"100", msg_id="pay-1")
    assert (late.sequence, late.duplicate) == (2, False)


async def test_replay_by_sequence_time_last_and_new(nats: SimNatsBroker) -> None:
    await nats.add_stream("audit", [nats.subject("audit.>")])
    for number in range(1, 5):
        await nats.publish(nats.subject(f"audit.{'ab'[number % 2]}"), f"e{number}".encode())
        await asyncio.sleep(10)  # one event every 10 virtual seconds: t = 0, 10, 20, 30
    by_sequence = await nats.pull_consumer(
        "audit", "from-3", deliver_policy="by_start_sequence", start_sequence=3
    )
    assert [m.data for m in await by_sequence.fetch(10, timeout=1)] == [b"e3", b"e4"]
    by_time = await nats.pull_consumer(
        "audit", "since-t15", deliver_policy="by_start_time", start_time=15.0
    )
    assert [m.data for m in await by_time.fetch(10, timeout=1)] == [b"e3", b"e4"]
    last_a = await nats.pull_consumer(
        "audit", "last-a", deliver_policy="last", filter_subject=nats.subject("audit.a")
    )
    assert [m.data for m in await last_a.fetch(10, timeout=1)] == [b"e4"]
    only_new = await nats.pull_consumer("audit", "new", deliver_policy="new")
    assert counters(await nats.consumer_info("audit", "new")) == (4, 4, 0, 0, 0)
    assert await only_new.fetch(1, timeout=0.5) == []
    with pytest.raises(JetStreamError, match="deliver policy can not be updated"):
        await nats.pull_consumer("audit", "new", deliver_policy="all")


# --- retention and limits ---------------------------------------------------------------------


async def test_interest_retention_keeps_what_someone_still_needs(nats: SimNatsBroker) -> None:
    await nats.add_stream("I", [nats.subject("i.>")], retention="interest")
    ack = await nats.publish(nats.subject("i.a"), b"nobody is listening")
    info = await nats.stream_info("I")
    assert (ack.sequence, info.messages, info.first_sequence, info.last_sequence) == (1, 0, 2, 1)
    everything = await nats.pull_consumer("I", "all")
    await nats.pull_consumer("I", "only-b", filter_subject=nats.subject("i.b"))
    await nats.publish(nats.subject("i.a"), b"1")
    await nats.publish(nats.subject("i.b"), b"2")
    for message in await everything.fetch(5, timeout=1):
        await message.ack()
    info = await nats.stream_info("I")
    # i.a was only wanted by "all"; i.b still waits for "only-b".
    assert (info.messages, info.first_sequence) == (1, 3)
    await nats.delete_consumer("I", "only-b")
    assert (await nats.stream_info("I")).messages == 0


async def test_workqueue_removes_on_ack_and_allows_one_consumer_per_subject(
    nats: SimNatsBroker,
) -> None:
    await nats.add_stream("W", [nats.subject("w.>")], retention="workqueue")
    for number in range(3):
        await nats.publish(nats.subject("w.job"), f"{number}".encode())
    worker = await nats.pull_consumer("W", "worker")
    with pytest.raises(JetStreamError, match="multiple non-filtered consumers"):
        await nats.pull_consumer("W", "second")
    with pytest.raises(JetStreamError, match="deliver all"):
        await nats.pull_consumer("W", "late", deliver_policy="last", filter_subject="w.x")
    first, second = await worker.fetch(2, timeout=1)
    await first.ack()
    await second.term()
    info = await nats.stream_info("W")
    assert (info.messages, info.first_sequence) == (1, 3)


async def test_limits_drop_the_oldest_and_max_age_expires(
    world: SimWorld, nats: SimNatsBroker
) -> None:
    recorder = recorded(world)
    await nats.add_stream(
        "L", [nats.subject("l.*")], max_msgs=3, max_msgs_per_subject=2, duplicate_window=1
    )
    for number in range(3):
        await nats.publish(nats.subject("l.a"), f"a{number}".encode())
    info = await nats.stream_info("L")
    assert (info.messages, info.first_sequence, info.last_sequence) == (2, 2, 3)
    for number in range(3):
        await nats.publish(nats.subject("l.b"), f"b{number}".encode())
    info = await nats.stream_info("L")
    assert (info.messages, info.first_sequence, info.last_sequence) == (3, 3, 6)

    with pytest.raises(JetStreamError, match="duplicates window"):
        await nats.add_stream("A", [nats.subject("age.>")], max_age=1.0)
    await nats.add_stream("A", [nats.subject("age.>")], max_age=1.0, duplicate_window=1.0)
    await nats.publish(nats.subject("age.x"), b"old")
    await asyncio.sleep(0.5)
    await nats.publish(nats.subject("age.x"), b"new")
    await asyncio.sleep(0.6)
    info = await nats.stream_info("A")
    assert (info.messages, info.first_sequence) == (1, 2)
    assert [round(o.at, 6) for o in recorder.of_kind(Expired)] == [1.0]


# --- core NATS --------------------------------------------------------------------------------


async def test_core_nats_is_at_most_once_and_sees_jetstream_publishes(
    nats: SimNatsBroker,
) -> None:
    await nats.add_stream("chat", [nats.subject("chat.>")])
    await nats.publish_core(nats.subject("chat.room1"), b"before anyone listened")
    subscription = await nats.subscribe(nats.subject("chat.>"))
    await nats.publish(nats.subject("chat.room1"), b"via jetstream", msg_id="m1")
    await nats.publish(nats.subject("chat.room1"), b"via jetstream", msg_id="m1")  # dup
    assert await subscription.next(timeout=1) == (nats.subject("chat.room1"), b"via jetstream")
    # Deduplication is the stream's business: core subscribers see both publishes.
    assert await subscription.next(timeout=1) == (nats.subject("chat.room1"), b"via jetstream")
    assert await subscription.next(timeout=0.5) is None
    await subscription.close()
    # A core publish to a captured subject is stored by the stream, though nobody acked it.
    assert (await nats.stream_info("chat")).messages == 2


# --- faults -----------------------------------------------------------------------------------


async def test_killed_server_refuses_calls_keeps_streams_and_redelivers(
    world: SimWorld,
) -> None:
    recorder = recorded(world)
    async with SimNatsBroker(world=world) as nats:
        await nats.add_stream("jobs", [nats.subject("jobs.>")])
        subscription = await nats.subscribe(nats.subject("jobs.>"))
        await nats.publish(nats.subject("jobs.a"), b"work")
        consumer = await nats.pull_consumer("jobs", "worker", ack_wait=5)
        [message] = await consumer.fetch(1, timeout=1)

        await world.kill("nats")
        await asyncio.sleep(0)
        assert len([o for o in recorder.of_kind(BrokerDown) if o.broker == nats.name]) == 1
        with pytest.raises(BrokerUnavailable):
            await message.ack()
        with pytest.raises(BrokerUnavailable):
            await nats.publish(nats.subject("jobs.a"), b"refused")
        with pytest.raises(BrokerUnavailable):
            await consumer.fetch(1, timeout=1)

        await world.restart("nats")
        await asyncio.sleep(0.6)  # reconnects every half second
        assert len([o for o in recorder.of_kind(BrokerUp) if o.broker == nats.name]) == 1
        # File storage: the stream and the consumer's state survived; the unacked message is
        # redelivered once its ack wait has passed.
        assert (await nats.stream_info("jobs")).messages == 1
        [again] = await consumer.fetch(1, timeout=10)
        assert (again.stream_sequence, again.num_delivered) == (1, 2)
        await again.ack()
        # The core subscription is back too (nats-py re-subscribes after a reconnect).
        await nats.publish(nats.subject("jobs.b"), b"after the restart")
        assert await subscription.next(timeout=0.1) == (nats.subject("jobs.a"), b"work")
        assert await subscription.next(timeout=0.1) == (
            nats.subject("jobs.b"),
            b"after the restart",
        )
        assert await subscription.next(timeout=0.1) is None


async def test_paused_server_times_out_then_the_client_gives_the_connection_up(
    world: SimWorld,
) -> None:
    recorder = recorded(world)
    async with SimNatsBroker(world=world, request_timeout=2.0) as nats:
        await nats.add_stream("s", [nats.subject("s.>")])
        await world.pause("nats")
        with pytest.raises(OperationTimedOut):
            await nats.publish(nats.subject("s.x"), b"buffered")
        await asyncio.sleep(5)  # three pings without a PONG: the client disconnects
        assert len([o for o in recorder.of_kind(BrokerDown) if o.broker == nats.name]) == 1
        with pytest.raises(BrokerUnavailable):
            await nats.publish(nats.subject("s.x"), b"no reconnect in time")
        await world.resume("nats")
        await asyncio.sleep(1)
        # The publish that timed out was in the socket: the server stored it on resume.
        assert (await nats.stream_info("s")).messages == 1


def test_connect_to_a_killed_server_is_refused() -> None:
    async def scenario() -> None:
        world = SimWorld()
        await world.kill("nats")
        with pytest.raises(BrokerUnavailable, match="connection refused"):
            await SimNatsBroker(world=world).connect()
        await world.aclose()

    run_virtual(scenario())


# --- registry and determinism -----------------------------------------------------------------


def test_the_registry_resolves_the_simulated_adapter() -> None:
    assert get_broker_class("sim:nats") is SimNatsBroker


async def test_errors_for_unknown_streams_and_consumers(nats: SimNatsBroker) -> None:
    with pytest.raises(JetStreamError, match="stream not found"):
        await nats.stream_info("nope")
    await nats.add_stream("s", [nats.subject("s.>")])
    with pytest.raises(JetStreamError, match="consumer not found"):
        await nats.consumer_info("s", "nope")
    with pytest.raises(JetStreamError, match="start_sequence"):
        await nats.pull_consumer("s", "x", deliver_policy="by_start_sequence")
    with pytest.raises(BrokerError):
        await nats.pull_consumer("missing", "x")


def test_same_seed_same_run() -> None:
    def run(seed: int) -> list[dict[str, object]]:
        async def scenario() -> list[dict[str, object]]:
            world = SimWorld(seed=seed)
            recorder = recorded(world)
            async with SimNatsBroker(world=world) as nats:
                await nats.add_stream("s", [nats.subject("s.>")])
                consumer = await nats.pull_consumer("s", "c", ack_wait=0.5, max_deliver=3)
                for number in range(10):
                    await nats.publish(nats.subject(f"s.{number % 3}"), b"x", msg_id=str(number))
                for round_number in range(8):
                    for message in await consumer.fetch(4, timeout=0.3):
                        if (message.stream_sequence + round_number) % 3 == 0:
                            await message.ack()
                        elif message.stream_sequence % 4 == 0:
                            await message.nak(delay=0.2)
                    await asyncio.sleep(0.3)
            await world.aclose()
            return [o.to_dict() for o in recorder.observations]

        return run_virtual(scenario())

    first = run(9)
    assert first == run(9)
    assert len(first) > 30
