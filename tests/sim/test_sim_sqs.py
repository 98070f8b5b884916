"""The simulator's SQS (+ SNS) model: what the course teaches, beyond the shared contract.

Every test runs on virtual time: visibility timeouts, five-minute deduplication windows and
20-second long polls cost no wall-clock time, so assertions may name exact virtual instants.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.registry import get_broker_class
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.sqs.client import SimSqsBroker
from mqlab.brokers.sim.sqs.server import configure_sqs
from mqlab.brokers.sim.world import SimWorld
from mqlab.brokers.sqs.api import ReceiptHandleInvalid, SqsRequestRefused
from mqlab.observe.bus import Recorder
from mqlab.observe.events import BrokerDown, BrokerUp, DeadLettered, Delivered, Produced

pytestmark = pytest.mark.sim


@pytest.fixture
async def world() -> AsyncIterator[SimWorld]:
    sim = SimWorld(seed=11)
    yield sim
    await sim.aclose()
    assert sim.errors == []


@pytest.fixture
async def sqs(world: SimWorld) -> AsyncIterator[SimSqsBroker]:
    """An adapter on a world whose standard queues neither duplicate nor reorder."""
    async with SimSqsBroker(world=world, duplicate_rate=0.0, reorder_rate=0.0) as adapter:
        yield adapter


def recorded(world: SimWorld) -> Recorder:
    recorder = Recorder()
    world.bus.subscribe(recorder)
    return recorder


# --- visibility -------------------------------------------------------------------------------


async def test_visibility_timeout_hides_then_redelivers_with_a_count(
    world: SimWorld, sqs: SimSqsBroker
) -> None:
    await sqs.create_queue("work", visibility_timeout=30)
    sent = await sqs.send("work", "job")
    first = await sqs.receive("work")
    assert [m.receive_count for m in first] == [1]
    await asyncio.sleep(29.9)
    assert await sqs.receive("work") == []
    info = await sqs.queue_info("work")
    assert (info.visible, info.in_flight) == (0, 1)
    await asyncio.sleep(0.1)
    second = await sqs.receive("work")
    assert [(m.message_id, m.receive_count) for m in second] == [(sent.message_id, 2)]
    assert second[0].receipt_handle != first[0].receipt_handle


async def test_change_visibility_extends_or_releases_a_message(
    world: SimWorld, sqs: SimSqsBroker
) -> None:
    await sqs.create_queue("slow", visibility_timeout=10)
    await sqs.send("slow", "big job")
    [message] = await sqs.receive("slow")
    await asyncio.sleep(9)
    await sqs.change_visibility("slow", message.receipt_handle, 60)  # still working on it
    await asyncio.sleep(50)
    assert await sqs.receive("slow") == []
    await asyncio.sleep(10)
    assert [m.receive_count for m in await sqs.receive("slow", visibility_timeout=5)] == [2]


async def test_per_receive_visibility_timeout_overrides_the_queue_default(
    sqs: SimSqsBroker,
) -> None:
    await sqs.create_queue("q", visibility_timeout=300)
    await sqs.send("q", "x")
    await sqs.receive("q", visibility_timeout=2)
    started = asyncio.get_running_loop().time()
    [again] = await sqs.receive("q", wait_time=20)
    assert again.receive_count == 2
    assert round(asyncio.get_running_loop().time() - started, 6) == 2.0


async def test_stale_receipt_handle_still_deletes_like_the_labs_server(
    sqs: SimSqsBroker,
) -> None:
    await sqs.create_queue("q", visibility_timeout=1)
    await sqs.send("q", "x")
    [old] = await sqs.receive("q")
    [new] = await sqs.receive("q", wait_time=5)  # the visibility ran out, received again
    await sqs.delete_message("q", old.receipt_handle)  # stale, but moto deletes anyway
    await sqs.delete_message("q", new.receipt_handle)  # already gone: fine
    assert (await sqs.queue_info("q")).visible + (await sqs.queue_info("q")).in_flight == 0
    with pytest.raises(ReceiptHandleInvalid):
        await sqs.delete_message("q", "never-issued")
    with pytest.raises(ReceiptHandleInvalid):
        await sqs.change_visibility("q", new.receipt_handle, 10)


async def test_delay_seconds_queue_default_and_per_message(sqs: SimSqsBroker) -> None:
    loop = asyncio.get_running_loop()
    await sqs.create_queue("later", delay_seconds=5)
    await sqs.send("later", "queue delay")
    await sqs.send("later", "own delay", delay_seconds=1)
    assert (await sqs.queue_info("later")).delayed == 2
    started = loop.time()
    first = await sqs.receive("later", wait_time=20, max_messages=10)
    assert [m.body for m in first] == ["own delay"]
    assert round(loop.time() - started, 6) == 1.0
    second = await sqs.receive("later", wait_time=20, max_messages=10)
    assert [m.body for m in second] == ["queue delay"]
    assert round(loop.time() - started, 6) == 5.0


# --- long polling -----------------------------------------------------------------------------


async def test_short_poll_answers_at_once_long_poll_when_a_message_arrives(
    sqs: SimSqsBroker,
) -> None:
    loop = asyncio.get_running_loop()
    await sqs.create_queue("inbox")
    started = loop.time()
    assert await sqs.receive("inbox") == []
    assert loop.time() == started

    async def send_later() -> None:
        await asyncio.sleep(3.5)
        await sqs.send("inbox", "finally")

    sender = asyncio.ensure_future(send_later())
    messages = await sqs.receive("inbox", wait_time=20)
    assert [m.body for m in messages] == ["finally"]
    assert round(loop.time() - started, 6) == 3.5  # not 20: it returns when one is there
    await sender
    started = loop.time()
    assert await sqs.receive("inbox", wait_time=2.2) == []
    assert round(loop.time() - started, 6) == 3.0  # whole seconds, rounded up


async def test_receive_limits_are_checked(sqs: SimSqsBroker) -> None:
    await sqs.create_queue("q")
    with pytest.raises(SqsRequestRefused):
        await sqs.receive("q", max_messages=11)
    with pytest.raises(SqsRequestRefused):
        await sqs.receive("q", wait_time=21)
    with pytest.raises(BrokerError):
        await sqs.receive("missing")


# --- at-least-once: duplicates and order ------------------------------------------------------


async def test_standard_queue_can_deliver_a_deleted_message_again(world: SimWorld) -> None:
    async with SimSqsBroker(world=world, duplicate_rate=1.0, reorder_rate=0.0) as sqs:
        await sqs.create_queue("payments")
        sent = await sqs.send("payments", "charge 10 EUR")
        [first] = await sqs.receive("payments")
        await sqs.delete_message("payments", first.receipt_handle)
        # Another copy of the message missed that receive: it shows up again.
        [copy] = await sqs.receive("payments", wait_time=5)
        assert copy.sqs_message_id == first.sqs_message_id
        assert copy.message_id == sent.message_id
        assert copy.receive_count == 1  # it does not even look like a redelivery


async def test_standard_queue_order_is_best_effort(world: SimWorld) -> None:
    async with SimSqsBroker(world=world, duplicate_rate=0.0, reorder_rate=1.0) as sqs:
        await sqs.create_queue("events")
        for number in range(3):
            await sqs.send("events", f"e{number}")
        received = [m.body for m in await sqs.receive("events", max_messages=10)]
        assert sorted(received) == ["e0", "e1", "e2"]
        assert received != ["e0", "e1", "e2"]
    configure_sqs(world, reorder_rate=0.0)
    async with SimSqsBroker(world=world) as sqs:
        await sqs.create_queue("events")
        for number in range(3):
            await sqs.send("events", f"e{number}")
        assert [m.body for m in await sqs.receive("events", max_messages=10)] == [
            "e0",
            "e1",
            "e2",
        ]


def test_rates_must_be_probabilities() -> None:
    with pytest.raises(ValueError, match="duplicate_rate"):
        configure_sqs(SimWorld(), duplicate_rate=1.5)


# --- FIFO -------------------------------------------------------------------------------------


async def test_fifo_head_of_line_blocking_and_group_order_after_expiry(
    sqs: SimSqsBroker,
) -> None:
    await sqs.create_queue("jobs.fifo", visibility_timeout=5)
    for body, group in (("a-1", "a"), ("a-2", "a"), ("b-1", "b"), ("a-3", "a")):
        await sqs.send("jobs.fifo", body, group_id=group, dedup_id=body)

    [head] = await sqs.receive("jobs.fifo")
    assert head.body == "a-1"
    # Group a is blocked behind a-1 (in flight); group b is not.
    assert [m.body for m in await sqs.receive("jobs.fifo", max_messages=10)] == ["b-1"]
    assert await sqs.receive("jobs.fifo", max_messages=10) == []
    # Nothing deleted: when the visibility runs out a-1 comes back first, its group still in
    # order, and a batch is filled one group at a time.
    again = await sqs.receive("jobs.fifo", max_messages=10, wait_time=20)
    assert [(m.body, m.receive_count) for m in again] == [
        ("a-1", 2),
        ("a-2", 1),
        ("a-3", 1),
        ("b-1", 2),
    ]
    sequences = [int(m.sequence_number or 0) for m in again[:3]]
    assert sequences == sorted(sequences)


async def test_fifo_dedup_window_is_five_minutes_from_the_first_send(
    world: SimWorld, sqs: SimSqsBroker
) -> None:
    recorder = recorded(world)
    await sqs.create_queue("pay.fifo")
    first = await sqs.send("pay.fifo", "charge", group_id="p", dedup_id="pay-1")
    [message] = await sqs.receive("pay.fifo")
    await sqs.delete_message("pay.fifo", message.receipt_handle)
    await asyncio.sleep(200)
    # Deleted long ago, still inside the window: SQS drops the resend and answers with the
    # original ids.
    resend = await sqs.send("pay.fifo", "charge", group_id="p", dedup_id="pay-1")
    assert resend.sqs_message_id == first.sqs_message_id
    assert resend.sequence_number == first.sequence_number
    assert await sqs.receive("pay.fifo", wait_time=1) == []
    await asyncio.sleep(100)  # 300 s after the first send: the window has closed
    late = await sqs.send("pay.fifo", "charge", group_id="p", dedup_id="pay-1")
    assert late.sqs_message_id != first.sqs_message_id
    assert [m.body for m in await sqs.receive("pay.fifo")] == ["charge"]
    produced = [o for o in recorder.of_kind(Produced) if isinstance(o, Produced)]
    assert [o.duplicate for o in produced] == [False, True, False]


async def test_fifo_content_based_dedup_hashes_the_body(sqs: SimSqsBroker) -> None:
    await sqs.create_queue("events.fifo", content_based_dedup=True)
    a = await sqs.send("events.fifo", '{"id": 1}', group_id="g")
    b = await sqs.send("events.fifo", '{"id": 1}', group_id="other-group")
    c = await sqs.send("events.fifo", '{"id": 2}', group_id="g")
    assert b.sqs_message_id == a.sqs_message_id  # same body: same dedup id, any group
    assert c.sqs_message_id != a.sqs_message_id
    received = await sqs.receive("events.fifo", max_messages=10)
    assert [m.body for m in received] == ['{"id": 1}', '{"id": 2}']
    assert received[0].dedup_id is not None
    assert len(received[0].dedup_id) == 64  # a SHA-256 in hex


async def test_fifo_rules_are_enforced(sqs: SimSqsBroker) -> None:
    await sqs.create_queue("strict.fifo")
    with pytest.raises(SqsRequestRefused, match="MessageGroupId"):
        await sqs.send("strict.fifo", "x", dedup_id="x")
    with pytest.raises(SqsRequestRefused, match="ContentBasedDeduplication"):
        await sqs.send("strict.fifo", "x", group_id="g")
    with pytest.raises(SqsRequestRefused, match="DelaySeconds"):
        await sqs.send("strict.fifo", "x", group_id="g", dedup_id="x", delay_seconds=3)
    with pytest.raises(SqsRequestRefused):
        await sqs.create_queue("standard", content_based_dedup=True)
    await sqs.create_queue("standard-dlq")
    with pytest.raises(SqsRequestRefused, match=r"(?i)fifo"):
        await sqs.create_queue(
            "needs-fifo-dlq.fifo", dead_letter_queue="standard-dlq", max_receive_count=2
        )


# --- dead-letter queues -----------------------------------------------------------------------


async def test_redrive_happens_on_the_receive_after_max_receive_count(
    world: SimWorld, sqs: SimSqsBroker
) -> None:
    recorder = recorded(world)
    await sqs.create_queue("orders-dlq")
    await sqs.create_queue(
        "orders", visibility_timeout=1, dead_letter_queue="orders-dlq", max_receive_count=3
    )
    sent = await sqs.send("orders", "poison")
    counts = []
    for _ in range(3):
        [message] = await sqs.receive("orders", wait_time=5)
        counts.append(message.receive_count)
    assert counts == [1, 2, 3]
    assert recorder.of_kind(DeadLettered) == []  # three receives allowed, none moved yet
    await asyncio.sleep(1)
    assert await sqs.receive("orders") == []  # this receive moves it instead
    info = await sqs.queue_info("orders")
    assert (info.visible, info.in_flight, info.dead_letter_depth) == (0, 0, 1)
    [dead] = await sqs.receive("orders-dlq")
    assert (dead.message_id, dead.sqs_message_id) == (sent.message_id, dead.sqs_message_id)
    assert dead.receive_count == 4  # the count carries over, as on the lab's server
    [lettered] = [o for o in recorder.of_kind(DeadLettered) if isinstance(o, DeadLettered)]
    assert (sqs.unqualify(lettered.source), sqs.unqualify(lettered.target)) == (
        "orders",
        "orders-dlq",
    )
    assert "maxReceiveCount 3" in lettered.reason


async def test_fifo_redrive_unblocks_the_group(sqs: SimSqsBroker) -> None:
    await sqs.create_queue("dlq.fifo")
    await sqs.create_queue(
        "work.fifo", visibility_timeout=1, dead_letter_queue="dlq.fifo", max_receive_count=1
    )
    await sqs.send("work.fifo", "poison", group_id="g", dedup_id="1")
    await sqs.send("work.fifo", "next", group_id="g", dedup_id="2")
    [poison] = await sqs.receive("work.fifo")
    assert poison.body == "poison"
    # After its visibility runs out, the poison is moved aside and "next" is delivered.
    [after] = await sqs.receive("work.fifo", wait_time=5)
    assert after.body == "next"
    assert [m.body for m in await sqs.receive("dlq.fifo")] == ["poison"]


# --- SNS --------------------------------------------------------------------------------------


async def test_sns_fan_out_raw_and_enveloped(sqs: SimSqsBroker) -> None:
    for queue in ("raw", "wrapped", "left-out"):
        await sqs.create_queue(queue)
    topic = await sqs.create_topic("signups")
    await sqs.subscribe_queue(topic, "raw")
    await sqs.subscribe_queue(topic, "wrapped", raw=False)
    message_id = await sqs.publish(topic, "user 42")

    [raw] = await sqs.receive("raw")
    assert (raw.body, raw.message_id) == ("user 42", message_id)
    [wrapped] = await sqs.receive("wrapped")
    envelope = json.loads(wrapped.body)
    assert (envelope["Type"], envelope["Message"], envelope["TopicArn"]) == (
        "Notification",
        "user 42",
        topic,
    )
    assert envelope["MessageAttributes"]["mqlab-id"]["Value"] == message_id
    assert await sqs.receive("left-out") == []


async def test_sns_fifo_topic_needs_group_and_dedup(sqs: SimSqsBroker) -> None:
    await sqs.create_queue("orders.fifo")
    topic = await sqs.create_topic("orders.fifo")
    await sqs.subscribe_queue(topic, "orders.fifo")
    with pytest.raises(SqsRequestRefused, match="MessageGroupId"):
        await sqs.publish(topic, "x")
    await sqs.publish(topic, "o-1", group_id="customer-7", dedup_id="o-1")
    await sqs.publish(topic, "o-1", group_id="customer-7", dedup_id="o-1")
    assert [m.body for m in await sqs.receive("orders.fifo", max_messages=10)] == ["o-1"]


# --- faults -----------------------------------------------------------------------------------


async def test_killed_endpoint_refuses_calls_and_forgets_its_queues(world: SimWorld) -> None:
    recorder = recorded(world)
    async with SimSqsBroker(world=world, duplicate_rate=0.0) as sqs:
        await sqs.create_queue("q")
        await sqs.send("q", "in memory only")
        await world.kill("sqs")
        with pytest.raises(BrokerUnavailable, match="connection refused"):
            await sqs.send("q", "refused")
        assert len([o for o in recorder.of_kind(BrokerDown) if o.broker == sqs.name]) == 1
        await world.restart("sqs")
        await asyncio.sleep(1)  # the adapter's probe notices within half a second
        assert len([o for o in recorder.of_kind(BrokerUp) if o.broker == sqs.name]) == 1
        # The lab's server keeps queues in memory: after a restart they are gone.
        with pytest.raises(BrokerError, match="does not exist"):
            await sqs.queue_info("q")


async def test_a_send_that_timed_out_on_a_paused_endpoint_is_stored_on_resume(
    world: SimWorld,
) -> None:
    async with SimSqsBroker(world=world, request_timeout=2.0, duplicate_rate=0.0) as sqs:
        await sqs.create_queue("q")
        await world.pause("sqs")
        with pytest.raises(OperationTimedOut):
            await sqs.send("q", "did it arrive?")
        await world.resume("sqs")
        assert [m.body for m in await sqs.receive("q", wait_time=1)] == ["did it arrive?"]


# --- registry and determinism -----------------------------------------------------------------


def test_the_registry_resolves_the_simulated_adapter() -> None:
    assert get_broker_class("sim:sqs") is SimSqsBroker


def test_same_seed_same_run_with_default_duplicates_and_reordering() -> None:
    def run(seed: int) -> list[dict[str, object]]:
        async def scenario() -> list[dict[str, object]]:
            world = SimWorld(seed=seed)
            recorder = recorded(world)
            async with SimSqsBroker(world=world, duplicate_rate=0.2, reorder_rate=0.3) as sqs:
                await sqs.create_queue("q", visibility_timeout=2)
                for number in range(30):
                    await sqs.send("q", f"m{number}")
                for _ in range(20):
                    for message in await sqs.receive("q", max_messages=3, wait_time=1):
                        if message.receive_count > 1 or message.body.endswith("7"):
                            await sqs.delete_message("q", message.receipt_handle)
            await world.aclose()
            return [o.to_dict() for o in recorder.observations]

        return run_virtual(scenario())

    first = run(5)
    assert first == run(5)
    delivered = [o for o in first if o["kind"] == Delivered.kind]
    assert len(delivered) > 30
