"""What every SQS adapter (the real one and the simulator's model) must do.

``SqsContract`` is not collected on its own (its name does not start with ``Test``); a subclass
per backend provides the ``broker`` fixture: a connected adapter in a fresh namespace, closed
(and so cleaned up) after the test.

The tests wait only through the adapter's own long polling and asyncio, never ``time.sleep``,
so they run on the simulator's virtual clock as well as against the lab's server. Names that
come back from the adapter are compared through ``unqualify`` so the tests hold whether a
backend reports broker-side or logical names.

Visibility timeouts are 1 second on purpose: SQS counts them in whole seconds, and 1 s is the
shortest one that still keeps a received message hidden for a while (0 would make it visible
again at once), so a redelivery test waits as little as SQS allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from mqlab.brokers.base import BrokerError
from mqlab.brokers.sqs.api import QueueMissing, SqsAPI, SqsMessage
from mqlab.observe.bus import Recorder
from mqlab.observe.events import Acked, DeadLettered, Delivered, Nacked, Observation, Produced
from tests import waiting

# Long-poll wait for a message that should be there (only reached when something is broken,
# so generous: a long poll returns as soon as the message is there). SQS allows up to 20 s,
# and one test polls 2 s longer than this: 18, not 10, for moto on a loaded machine.
EXPECT = 18
# How long a test waits for something that needs a visibility timeout to run out first (a
# bound: the waits end when the state holds; 10 s was tight for moto under load).
SETTLE = 30.0
SHORT_VISIBILITY = 1  # seconds; see the module docstring


def record(broker: SqsAPI) -> Recorder:
    recorder = Recorder()
    broker.bus.subscribe(recorder)
    return recorder


def observed(recorder: Recorder, kind: type[Observation]) -> list[Observation]:
    return recorder.of_kind(kind)


async def receive_one(broker: SqsAPI, queue: str, *, max_messages: int = 1) -> SqsMessage:
    """Exactly one message from ``queue`` (long polling), failing the test if none comes."""
    messages = await broker.receive(queue, max_messages=max_messages, wait_time=EXPECT)
    assert len(messages) == 1, f"expected one message on {queue}, got {len(messages)}"
    return messages[0]


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = SETTLE, what: str = "condition"
) -> None:
    """Poll ``check`` on the loop's clock until it holds (a state change, not a speed goal)."""
    await waiting.eventually(check, timeout, what, interval=0.2)


async def total_messages(broker: SqsAPI, queue: str) -> int:
    info = await broker.queue_info(queue)
    return info.visible + info.in_flight + info.delayed


class SqsContract:
    """Behaviour shared by every SQS backend (see the module docstring)."""

    # --- standard queues -----------------------------------------------------------------

    async def test_round_trip_with_delete(self, broker: SqsAPI) -> None:
        recorder = record(broker)
        await broker.create_queue("orders")
        sent = await broker.send("orders", "order-1")

        message = await receive_one(broker, "orders", max_messages=10)
        assert message.body == "order-1"
        assert message.message_id == sent.message_id
        assert message.sqs_message_id == sent.sqs_message_id
        assert message.receive_count == 1
        assert broker.unqualify(message.queue) == "orders"
        info = await broker.queue_info("orders")
        assert (info.visible, info.in_flight) == (0, 1)

        await broker.delete_message("orders", message.receipt_handle)
        assert await total_messages(broker, "orders") == 0

        produced = observed(recorder, Produced)
        delivered = observed(recorder, Delivered)
        acked = observed(recorder, Acked)
        assert [(o.message_id, o.duplicate) for o in produced if isinstance(o, Produced)] == [
            (sent.message_id, False)
        ]
        assert [
            (o.message_id, o.delivery_count, o.redelivered)
            for o in delivered
            if isinstance(o, Delivered)
        ] == [(sent.message_id, 1, False)]
        assert [o.message_id for o in acked if isinstance(o, Acked)] == [sent.message_id]

    async def test_visibility_timeout_expiry_redelivers(self, broker: SqsAPI) -> None:
        recorder = record(broker)
        await broker.create_queue("work", visibility_timeout=SHORT_VISIBILITY)
        sent = await broker.send("work", "job")

        loop = asyncio.get_running_loop()
        asked = loop.time()
        first = await receive_one(broker, "work")
        assert first.receive_count == 1
        # In flight: invisible to everyone until the visibility timeout runs out. A receive
        # right away finds nothing, unless the machine was so slow that the timeout ran out
        # meanwhile; either way the message must not come back before then.
        early = await broker.receive("work")
        assert early == [] or loop.time() - asked >= SHORT_VISIBILITY
        # Not deleted in time: SQS hands it out again, counting the receive.
        second = early[0] if early else await receive_one(broker, "work")
        assert second.message_id == sent.message_id
        assert second.receive_count == 2
        assert second.receipt_handle != first.receipt_handle
        await broker.delete_message("work", second.receipt_handle)

        counts = [
            (o.delivery_count, o.redelivered)
            for o in observed(recorder, Delivered)
            if isinstance(o, Delivered)
        ]
        assert counts == [(1, False), (2, True)]

    async def test_change_visibility_zero_is_a_nack(self, broker: SqsAPI) -> None:
        recorder = record(broker)
        await broker.create_queue("retry")  # default 30 s visibility: only the nack frees it
        sent = await broker.send("retry", "job")

        first = await receive_one(broker, "retry")
        await broker.change_visibility("retry", first.receipt_handle, 0)
        again = await receive_one(broker, "retry")
        assert again.message_id == sent.message_id
        assert again.receive_count == 2
        await broker.delete_message("retry", again.receipt_handle)

        nacked = [o for o in observed(recorder, Nacked) if isinstance(o, Nacked)]
        assert [(o.message_id, o.requeue) for o in nacked] == [(sent.message_id, True)]

    async def test_delay_seconds_hides_a_new_message(self, broker: SqsAPI) -> None:
        await broker.create_queue("later")
        loop = asyncio.get_running_loop()
        sending = loop.time()
        await broker.send("later", "soon", delay_seconds=2)
        info = await broker.queue_info("later")
        early = await broker.receive("later")
        # Hidden while the delay runs; only a machine slow enough to let the 2 s pass before
        # these answers came back may see it already (then it must indeed be 2 s later).
        if loop.time() - sending < 2:
            assert (info.visible, info.delayed) == (0, 1)
            assert early == []
        # A long poll that outlasts the delay gets it (moto re-checks once a second).
        messages = early or await broker.receive("later", wait_time=2 + EXPECT)
        assert [m.body for m in messages] == ["soon"]

    async def test_purge_drops_everything(self, broker: SqsAPI) -> None:
        await broker.create_queue("scratch")
        for number in range(3):
            await broker.send("scratch", f"m{number}")
        await broker.purge_queue("scratch")

        async def empty() -> bool:
            return await total_messages(broker, "scratch") == 0

        await eventually(empty, what=f"{broker.qualify('scratch')} empty after the purge")
        assert await broker.receive("scratch", wait_time=1) == []

    # --- FIFO queues ---------------------------------------------------------------------

    async def test_fifo_keeps_order_per_group(self, broker: SqsAPI) -> None:
        assert broker.capabilities_for("orders.fifo").per_key_ordering is True
        await broker.create_queue("orders.fifo")
        sent: dict[str, list[str]] = {"a": [], "b": []}
        for number in range(5):
            for group in ("a", "b"):
                body = f"{group}-{number}"
                await broker.send("orders.fifo", body, group_id=group, dedup_id=body)
                sent[group].append(body)

        received: dict[str, list[str]] = {"a": [], "b": []}
        while sum(map(len, received.values())) < 10:
            messages = await broker.receive("orders.fifo", max_messages=10, wait_time=EXPECT)
            assert messages, "FIFO queue stopped delivering"
            for message in messages:
                assert message.group_id is not None
                received[message.group_id].append(message.body)
                await broker.delete_message("orders.fifo", message.receipt_handle)
        assert received == sent

    async def test_fifo_head_of_line_blocking_per_group(self, broker: SqsAPI) -> None:
        await broker.create_queue("jobs.fifo")
        await broker.send("jobs.fifo", "a-1", group_id="a", dedup_id="a-1")
        await broker.send("jobs.fifo", "a-2", group_id="a", dedup_id="a-2")
        await broker.send("jobs.fifo", "b-1", group_id="b", dedup_id="b-1")

        head = await receive_one(broker, "jobs.fifo")
        assert head.body == "a-1"
        # a-2 waits behind a-1 (in flight), but group b still flows.
        other = await receive_one(broker, "jobs.fifo")
        assert other.body == "b-1"
        assert await broker.receive("jobs.fifo") == []
        await broker.delete_message("jobs.fifo", head.receipt_handle)
        after = await receive_one(broker, "jobs.fifo")
        assert after.body == "a-2"
        assert after.sequence_number is not None

    async def test_fifo_dedup_id_drops_a_resend_inside_the_window(self, broker: SqsAPI) -> None:
        recorder = record(broker)
        await broker.create_queue("payments.fifo")
        first = await broker.send("payments.fifo", "charge", group_id="p", dedup_id="pay-1")
        again = await broker.send("payments.fifo", "charge again", group_id="p", dedup_id="pay-1")
        # SQS answers a deduplicated send with the first send's ids.
        assert (again.sqs_message_id, again.sequence_number) == (
            first.sqs_message_id,
            first.sequence_number,
        )
        await broker.send("payments.fifo", "refund", group_id="p", dedup_id="pay-2")

        bodies = []
        while messages := await broker.receive("payments.fifo", max_messages=10, wait_time=1):
            for message in messages:
                bodies.append(message.body)
                assert message.dedup_id in {"pay-1", "pay-2"}
                await broker.delete_message("payments.fifo", message.receipt_handle)
        assert bodies == ["charge", "refund"]

        produced = [o for o in observed(recorder, Produced) if isinstance(o, Produced)]
        assert [o.duplicate for o in produced] == [False, True, False]
        assert produced[0].message_id == first.message_id

    async def test_fifo_dedup_id_outlives_the_delete_of_its_message(self, broker: SqsAPI) -> None:
        """A producer's retry after the consumer already deleted the first copy is still
        dropped: the window runs five minutes from the first send, deleted or not (moto as it
        ships forgets the id with the message; the lab's server keeps it)."""
        recorder = record(broker)
        await broker.create_queue("refunds.fifo")
        sent = await broker.send("refunds.fifo", "refund", group_id="r", dedup_id="refund-1")
        first = await receive_one(broker, "refunds.fifo")
        await broker.delete_message("refunds.fifo", first.receipt_handle)

        retried = await broker.send(
            "refunds.fifo", "refund (retried)", group_id="r", dedup_id="refund-1"
        )
        assert retried.sqs_message_id == sent.sqs_message_id
        await broker.send("refunds.fifo", "next refund", group_id="r", dedup_id="refund-2")
        after = await receive_one(broker, "refunds.fifo", max_messages=10)
        assert after.body == "next refund"
        await broker.delete_message("refunds.fifo", after.receipt_handle)
        produced = [o for o in observed(recorder, Produced) if isinstance(o, Produced)]
        assert [o.duplicate for o in produced] == [False, True, False]

    async def test_fifo_content_based_dedup(self, broker: SqsAPI) -> None:
        recorder = record(broker)
        await broker.create_queue("events.fifo", content_based_dedup=True)
        await broker.send("events.fifo", "same body", group_id="g")
        await broker.send("events.fifo", "same body", group_id="g")
        await broker.send("events.fifo", "other body", group_id="g")

        bodies = []
        while messages := await broker.receive("events.fifo", max_messages=10, wait_time=1):
            for message in messages:
                bodies.append(message.body)
                await broker.delete_message("events.fifo", message.receipt_handle)
        assert bodies == ["same body", "other body"]
        produced = [o for o in observed(recorder, Produced) if isinstance(o, Produced)]
        assert [o.duplicate for o in produced] == [False, True, False]

    async def test_fifo_send_needs_a_group(self, broker: SqsAPI) -> None:
        await broker.create_queue("strict.fifo")
        with pytest.raises(BrokerError) as raised:
            await broker.send("strict.fifo", "no group", dedup_id="x")
        assert "\n" not in str(raised.value)

    # --- dead letters --------------------------------------------------------------------

    async def test_redrive_to_dead_letter_queue_at_max_receive_count(self, broker: SqsAPI) -> None:
        assert broker.capabilities.dead_letter is True
        recorder = record(broker)
        await broker.create_queue("orders-dlq")
        await broker.create_queue(
            "orders",
            visibility_timeout=SHORT_VISIBILITY,
            dead_letter_queue="orders-dlq",
            max_receive_count=2,
        )
        sent = await broker.send("orders", "poison")
        info = await broker.queue_info("orders")
        assert broker.unqualify(info.dead_letter_queue or "") == "orders-dlq"
        assert info.max_receive_count == 2

        for attempt in (1, 2):  # a consumer that fails and never deletes
            message = await receive_one(broker, "orders")
            assert message.receive_count == attempt

        # The next receive after the second failure moves the message aside instead.
        async def moved() -> bool:
            await broker.receive("orders", wait_time=1)
            info = await broker.queue_info("orders")
            return info.dead_letter_depth == 1

        await eventually(moved, what="the poison message moved to orders-dlq")
        assert await total_messages(broker, "orders") == 0

        dead = await receive_one(broker, "orders-dlq")
        assert dead.message_id == sent.message_id
        assert dead.body == "poison"
        lettered = [o for o in observed(recorder, DeadLettered) if isinstance(o, DeadLettered)]
        assert [
            (o.message_id, broker.unqualify(o.source), broker.unqualify(o.target)) for o in lettered
        ] == [(sent.message_id, "orders", "orders-dlq")]

    # --- SNS fan-out ---------------------------------------------------------------------

    async def test_sns_fans_out_to_every_subscribed_queue(self, broker: SqsAPI) -> None:
        await broker.create_queue("billing")
        await broker.create_queue("shipping")
        await broker.create_queue("unsubscribed")
        topic = await broker.create_topic("order-placed")
        await broker.subscribe_queue(topic, "billing")
        await broker.subscribe_queue(topic, "shipping")

        message_id = await broker.publish(topic, '{"order": 7}')
        for queue in ("billing", "shipping"):
            message = await receive_one(broker, queue)
            assert message.body == '{"order": 7}'  # raw delivery: no SNS envelope
            assert message.message_id == message_id
            await broker.delete_message(queue, message.receipt_handle)
        assert await broker.receive("unsubscribed", wait_time=1) == []

        snapshot = await broker.inspect()
        [topic_info] = snapshot.topics
        assert broker.unqualify(topic_info.name) == "order-placed"
        assert sorted(broker.unqualify(q) for q in topic_info.subscribed_queues) == [
            "billing",
            "shipping",
        ]

    # --- capabilities --------------------------------------------------------------------

    async def test_no_replay_a_deleted_message_is_gone(self, broker: SqsAPI) -> None:
        assert broker.capabilities.replay is False
        assert broker.capabilities_for("x.fifo").replay is False
        await broker.create_queue("once")
        await broker.send("once", "read me once")
        message = await receive_one(broker, "once")
        await broker.delete_message("once", message.receipt_handle)

        assert await broker.receive("once", max_messages=10, wait_time=2) == []
        assert await total_messages(broker, "once") == 0

    async def test_a_missing_queue_raises_queue_missing(self, broker: SqsAPI) -> None:
        """Both backends raise the interface's one QueueMissing (code that catches it works on
        either), and it is still a refused request."""
        with pytest.raises(QueueMissing, match="does not exist") as raised:
            await broker.queue_info("never-created")
        assert isinstance(raised.value, BrokerError)

    async def test_inspect_sees_queues_with_depths_and_redrive(self, broker: SqsAPI) -> None:
        await broker.create_queue("in-dlq")
        await broker.create_queue("in", dead_letter_queue="in-dlq", max_receive_count=3)
        await broker.create_queue("in.fifo", content_based_dedup=True)
        await broker.send("in", "visible")
        await broker.send("in", "taken")
        await broker.receive("in", wait_time=EXPECT)

        snapshot = await broker.inspect()
        by_name = {broker.unqualify(q.name): q for q in snapshot.queues}
        assert sorted(by_name) == ["in", "in-dlq", "in.fifo"]
        source = by_name["in"]
        assert source.visible + source.in_flight == 2
        assert source.in_flight == 1
        assert source.max_receive_count == 3
        assert broker.unqualify(source.dead_letter_queue or "") == "in-dlq"
        assert source.dead_letter_depth == 0
        assert by_name["in.fifo"].fifo is True
        assert by_name["in.fifo"].content_based_dedup is True
        assert by_name["in-dlq"].fifo is False
