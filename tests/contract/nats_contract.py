"""What every NATS JetStream adapter (the real one and the simulator's model) must do.

``NatsContract`` is not collected on its own (its name does not start with ``Test``); a subclass
per backend provides the ``broker`` fixture: a connected adapter in a fresh namespace, closed
(and so cleaned up) after the test.

Subjects are always built with ``broker.subject(...)`` and streams named by their logical name,
so the tests hold whatever namespace a backend uses; names that come back are compared through
``unqualify``. The tests wait only through ``fetch``'s own timeout and asyncio, never
``time.sleep``, so they run on the simulator's virtual clock as well as against nats-server.

``ack_wait`` is 1 second where a test needs a redelivery: JetStream redelivers an unacked
message only after ack_wait, and the default 30 s would make each such test half a minute long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from mqlab.brokers.base import BrokerError
from mqlab.brokers.nats.api import JsMessage, NatsAPI, NatsPullConsumer, NoStreamForSubject
from mqlab.observe.bus import Recorder
from mqlab.observe.events import (
    Acked,
    DeadLettered,
    Delivered,
    Nacked,
    Produced,
    ProduceFailed,
)
from tests import waiting

SHORT_ACK_WAIT = 1.0  # seconds; see the module docstring
# fetch timeout for a message that should be there (only reached when something is broken,
# so generous: a fetch returns as soon as the message is there). 30 s, not 10: on a loaded
# machine with another lane beside it, the server and this process both wait for a core.
EXPECT = 30.0
# fetch timeout when a test checks that nothing is delivered.
QUIET = 0.5


def record(broker: NatsAPI) -> Recorder:
    recorder = Recorder()
    broker.bus.subscribe(recorder)
    return recorder


async def fetch_one(consumer: NatsPullConsumer, timeout: float = EXPECT) -> JsMessage:
    """Exactly one message, failing the test (not hanging) if none arrives."""
    messages = await consumer.fetch(1, timeout=timeout)
    assert len(messages) == 1, f"no message for {consumer.name} within {timeout}s"
    return messages[0]


async def fetch_all(consumer: NatsPullConsumer, count: int) -> list[JsMessage]:
    """``count`` messages (in as many fetches as it takes), failing if they stop coming."""
    messages: list[JsMessage] = []
    while len(messages) < count:
        batch = await consumer.fetch(count - len(messages), timeout=EXPECT)
        assert batch, f"only {len(messages)} of {count} messages arrived"
        messages.extend(batch)
    return messages


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = EXPECT, what: str = "condition"
) -> None:
    """Poll ``check`` on the loop's clock until it holds (a bound, not a speed goal)."""
    await waiting.eventually(check, timeout, what, interval=0.1)


class NatsContract:
    """Behaviour shared by every NATS JetStream backend (see the module docstring)."""

    # --- basics --------------------------------------------------------------------------

    async def test_publish_fetch_ack_round_trip(self, broker: NatsAPI) -> None:
        recorder = record(broker)
        await broker.add_stream("orders", [broker.subject("orders.>")])
        ack = await broker.publish(
            broker.subject("orders.created"), b"order-1", headers={"tenant": "a"}
        )
        assert broker.unqualify(ack.stream) == "orders"
        assert (ack.sequence, ack.duplicate) == (1, False)

        consumer = await broker.pull_consumer("orders", "billing")
        message = await fetch_one(consumer)
        assert message.data == b"order-1"
        assert message.subject == broker.subject("orders.created")
        assert message.headers["tenant"] == "a"
        assert (message.stream_sequence, message.num_delivered) == (1, 1)
        await message.ack()
        assert await consumer.fetch(1, timeout=QUIET) == []

        info = await broker.consumer_info("orders", "billing")
        assert (info.ack_floor, info.num_ack_pending, info.num_pending) == (1, 0, 0)
        stream = await broker.stream_info("orders")
        assert (stream.messages, stream.first_sequence, stream.last_sequence) == (1, 1, 1)

        produced = [o for o in recorder.of_kind(Produced) if isinstance(o, Produced)]
        delivered = [o for o in recorder.of_kind(Delivered) if isinstance(o, Delivered)]
        acked = [o for o in recorder.of_kind(Acked) if isinstance(o, Acked)]
        assert [(o.position, o.duplicate) for o in produced] == [(1, False)]
        assert [o.message_id for o in delivered] == [produced[0].message_id]
        assert [(o.delivery_count, o.redelivered) for o in delivered] == [(1, False)]
        assert [o.message_id for o in acked] == [message.message_id]
        assert message.message_id == produced[0].message_id

    async def test_publish_many_then_ack_batch_reports_every_message(self, broker: NatsAPI) -> None:
        """A window of PubAcks and one flush for a fetch's acks: the ledger still sees one
        Produced and one Acked per message, and the consumer's ack floor moves past all."""
        recorder = record(broker)
        await broker.add_stream("batched", [broker.subject("batched.>")])
        payloads = [f"m{n}".encode() for n in range(30)]
        acks = await broker.publish_many(broker.subject("batched.x"), payloads, window=8)
        assert sorted(ack.sequence for ack in acks) == list(range(1, 31))
        consumer = await broker.pull_consumer("batched", "reader")
        messages = await fetch_all(consumer, 30)
        await consumer.ack_batch(messages)

        async def all_acked() -> bool:
            info = await broker.consumer_info("batched", "reader")
            return (info.num_ack_pending, info.ack_floor) == (0, 30)

        # The flush says the server has read the acks, not that the stream's consumer has
        # applied them: nats-server does that on its own goroutine (seen lagging under load).
        await eventually(all_acked, what="the ack floor past all 30 messages")
        produced = [o.message_id for o in recorder.of_kind(Produced) if isinstance(o, Produced)]
        acked = [o.message_id for o in recorder.of_kind(Acked) if isinstance(o, Acked)]
        assert len(set(produced)) == 30
        assert sorted(acked) == sorted(produced)
        with pytest.raises(BrokerError, match="already acknowledged"):
            await consumer.ack_batch(messages[:1])

    async def test_publish_many_to_a_subject_no_stream_captures_fails_per_message(
        self, broker: NatsAPI
    ) -> None:
        recorder = record(broker)
        with pytest.raises(NoStreamForSubject):
            await broker.publish_many(broker.subject("nowhere"), [b"a", b"b"], window=1)
        assert len(recorder.of_kind(ProduceFailed)) == 1  # the second was never sent
        assert recorder.of_kind(Produced) == []

    async def test_wildcards_star_one_token_and_gt_the_rest(self, broker: NatsAPI) -> None:
        # A stream on "metrics.*" captures exactly one token after "metrics".
        await broker.add_stream("metrics", [broker.subject("metrics.*")])
        await broker.publish(broker.subject("metrics.cpu"), b"1")
        with pytest.raises(BrokerError):
            await broker.publish(broker.subject("metrics.cpu.core0"), b"2")
        assert (await broker.stream_info("metrics")).messages == 1

        # A stream on "events.>" captures one token or more; a consumer filters inside it.
        await broker.add_stream("events", [broker.subject("events.>")])
        for subject in ("events.eu.paris", "events.us.ny", "events.eu.berlin", "events.eu"):
            await broker.publish(broker.subject(subject), subject.encode())
        assert (await broker.stream_info("events")).messages == 4

        europe = await broker.pull_consumer(
            "events", "europe", filter_subject=broker.subject("events.eu.*")
        )
        messages = await fetch_all(europe, 2)
        assert [m.data for m in messages] == [b"events.eu.paris", b"events.eu.berlin"]
        assert await europe.fetch(1, timeout=QUIET) == []
        everything = await broker.pull_consumer(
            "events", "all-of-it", filter_subject=broker.subject("events.>")
        )
        assert len(await fetch_all(everything, 4)) == 4

    async def test_order_within_a_stream(self, broker: NatsAPI) -> None:
        await broker.add_stream("log", [broker.subject("log.>")])
        published = []
        for number in range(20):
            subject = broker.subject(f"log.{'ab'[number % 2]}")
            await broker.publish(subject, f"entry-{number}".encode())
            published.append(f"entry-{number}".encode())

        consumer = await broker.pull_consumer("log", "reader")
        messages = await fetch_all(consumer, 20)
        assert [m.data for m in messages] == published
        sequences = [m.stream_sequence for m in messages]
        assert sequences == sorted(sequences) == list(range(1, 21))
        for message in messages:
            await message.ack()

    # --- redelivery ----------------------------------------------------------------------

    async def test_redelivery_after_ack_wait(self, broker: NatsAPI) -> None:
        recorder = record(broker)
        await broker.add_stream("jobs", [broker.subject("jobs.>")])
        await broker.publish(broker.subject("jobs.resize"), b"img-1")
        consumer = await broker.pull_consumer("jobs", "worker", ack_wait=SHORT_ACK_WAIT)

        first = await fetch_one(consumer)
        assert first.num_delivered == 1
        # Not acked: after ack_wait JetStream delivers it again.
        second = await fetch_one(consumer)
        assert second.stream_sequence == first.stream_sequence
        assert second.num_delivered == 2
        await second.ack()
        info = await broker.consumer_info("jobs", "worker")
        assert (info.ack_floor, info.num_ack_pending) == (1, 0)

        delivered = [o for o in recorder.of_kind(Delivered) if isinstance(o, Delivered)]
        assert [(o.delivery_count, o.redelivered) for o in delivered] == [(1, False), (2, True)]

    async def test_nak_redelivers_and_nak_with_delay_waits(self, broker: NatsAPI) -> None:
        recorder = record(broker)
        await broker.add_stream("tasks", [broker.subject("tasks.>")])
        await broker.publish(broker.subject("tasks.a"), b"task")
        consumer = await broker.pull_consumer("tasks", "worker")  # 30 s ack_wait: only nak counts

        first = await fetch_one(consumer)
        await first.nak()
        second = await fetch_one(consumer)
        assert (second.stream_sequence, second.num_delivered) == (1, 2)

        loop = asyncio.get_running_loop()
        nak_sent = loop.time()
        await second.nak(delay=2.0)
        third = await fetch_one(consumer, timeout=2.0 + EXPECT)
        # Not redelivered before the delay ran out. The server counts the 2 s from the nak's
        # arrival, after nak_sent, so this holds however slowly the machine runs (a check that
        # nothing arrives within 0.5 s would fail whenever a busy machine stalls that long).
        # 10 ms of slack for float rounding on the simulator's virtual clock.
        assert loop.time() - nak_sent >= 2.0 - 0.01
        assert third.num_delivered == 3
        await third.ack()

        nacked = [o for o in recorder.of_kind(Nacked) if isinstance(o, Nacked)]
        assert [o.requeue for o in nacked] == [True, True]

    async def test_term_stops_redelivery(self, broker: NatsAPI) -> None:
        recorder = record(broker)
        await broker.add_stream("mail", [broker.subject("mail.>")])
        await broker.publish(broker.subject("mail.out"), b"bad address")
        consumer = await broker.pull_consumer("mail", "sender", ack_wait=SHORT_ACK_WAIT)
        message = await fetch_one(consumer)
        await message.term()
        assert await consumer.fetch(1, timeout=SHORT_ACK_WAIT + 1.0) == []
        nacked = [o for o in recorder.of_kind(Nacked) if isinstance(o, Nacked)]
        assert [o.requeue for o in nacked] == [False]

    async def test_max_deliver_stops_redelivery(self, broker: NatsAPI) -> None:
        recorder = record(broker)
        await broker.add_stream("payments", [broker.subject("payments.>")])
        await broker.publish(broker.subject("payments.charge"), b"poison")
        consumer = await broker.pull_consumer(
            "payments", "charger", ack_wait=SHORT_ACK_WAIT, max_deliver=2
        )

        assert (await fetch_one(consumer)).num_delivered == 1
        assert (await fetch_one(consumer)).num_delivered == 2
        # Two deliveries without an ack: the consumer gives up on it.
        assert await consumer.fetch(1, timeout=SHORT_ACK_WAIT + 1.5) == []
        info = await broker.consumer_info("payments", "charger")
        assert info.max_deliver == 2
        assert info.num_pending == 0

        async def dead_lettered() -> bool:
            return bool(recorder.of_kind(DeadLettered))

        await eventually(dead_lettered, what="the max-deliveries advisory as DeadLettered")
        [lettered] = [o for o in recorder.of_kind(DeadLettered) if isinstance(o, DeadLettered)]
        produced = [o for o in recorder.of_kind(Produced) if isinstance(o, Produced)]
        assert lettered.message_id == produced[0].message_id
        assert broker.unqualify(lettered.source) == "payments"
        # The message itself stays in the stream (JetStream has no DLQ).
        assert (await broker.stream_info("payments")).messages == 1

    # --- deduplication and replay --------------------------------------------------------

    async def test_msg_id_dedup_inside_the_window(self, broker: NatsAPI) -> None:
        recorder = record(broker)
        await broker.add_stream("charges", [broker.subject("charges.>")], duplicate_window=60)
        first = await broker.publish(broker.subject("charges.new"), b"100 EUR", msg_id="pay-1")
        again = await broker.publish(broker.subject("charges.new"), b"100 EUR", msg_id="pay-1")
        other = await broker.publish(broker.subject("charges.new"), b"5 EUR", msg_id="pay-2")
        assert (first.sequence, first.duplicate) == (1, False)
        assert (again.sequence, again.duplicate) == (1, True)
        assert (other.sequence, other.duplicate) == (2, False)
        stream = await broker.stream_info("charges")
        assert stream.messages == 2
        assert stream.duplicate_window_seconds == 60
        produced = [o for o in recorder.of_kind(Produced) if isinstance(o, Produced)]
        assert [o.duplicate for o in produced] == [False, True, False]

    async def test_replay_new_consumers_read_acked_history(self, broker: NatsAPI) -> None:
        assert broker.capabilities.replay is True
        await broker.add_stream("audit", [broker.subject("audit.>")])
        for number in range(1, 4):
            await broker.publish(broker.subject("audit.login"), f"login-{number}".encode())
        first_reader = await broker.pull_consumer("audit", "first")
        for message in await fetch_all(first_reader, 3):
            await message.ack()
        assert (await broker.consumer_info("audit", "first")).ack_floor == 3

        from_start = await broker.pull_consumer("audit", "replay-all", deliver_policy="all")
        replayed = await fetch_all(from_start, 3)
        assert [m.data for m in replayed] == [b"login-1", b"login-2", b"login-3"]
        assert [m.num_delivered for m in replayed] == [1, 1, 1]

        from_two = await broker.pull_consumer(
            "audit", "replay-from-2", deliver_policy="by_start_sequence", start_sequence=2
        )
        assert [m.stream_sequence for m in await fetch_all(from_two, 2)] == [2, 3]
        assert await from_two.fetch(1, timeout=QUIET) == []

        only_new = await broker.pull_consumer("audit", "only-new", deliver_policy="new")
        assert await only_new.fetch(1, timeout=QUIET) == []
        await broker.publish(broker.subject("audit.login"), b"login-4")
        assert (await fetch_one(only_new)).data == b"login-4"

    async def test_stream_limits_drop_the_oldest(self, broker: NatsAPI) -> None:
        await broker.add_stream("recent", [broker.subject("recent.>")], max_msgs=3)
        for number in range(5):
            await broker.publish(broker.subject("recent.x"), f"m{number}".encode())
        info = await broker.stream_info("recent")
        assert (info.messages, info.first_sequence, info.last_sequence) == (3, 3, 5)
        assert info.max_msgs == 3

        await broker.add_stream("latest", [broker.subject("latest.>")], max_msgs_per_subject=1)
        for subject in ("latest.a", "latest.a", "latest.b"):
            await broker.publish(broker.subject(subject), subject.encode())
        assert (await broker.stream_info("latest")).messages == 2

    # --- core NATS -----------------------------------------------------------------------

    async def test_core_publish_reaches_only_current_subscribers(self, broker: NatsAPI) -> None:
        await broker.publish_core(broker.subject("chat.room1"), b"nobody listens")  # gone
        subscription = await broker.subscribe(broker.subject("chat.*"))
        await broker.publish_core(broker.subject("chat.room1"), b"hello")
        await broker.publish_core(broker.subject("chat.room1.thread"), b"not matched by *")
        received = await subscription.next(timeout=EXPECT)
        assert received == (broker.subject("chat.room1"), b"hello")
        assert await subscription.next(timeout=QUIET) is None
        await subscription.close()

    # --- management ----------------------------------------------------------------------

    async def test_inspect_and_delete(self, broker: NatsAPI) -> None:
        await broker.add_stream("a", [broker.subject("a.>")])
        await broker.add_stream("b", [broker.subject("b.>")])
        await broker.publish(broker.subject("a.x"), b"1")
        await broker.pull_consumer("a", "reader", filter_subject=broker.subject("a.x"))

        snapshot = await broker.inspect()
        assert sorted(broker.unqualify(s.name) for s in snapshot.streams) == ["a", "b"]
        [consumer] = snapshot.consumers
        assert (broker.unqualify(consumer.stream), consumer.name) == ("a", "reader")
        assert consumer.filter_subject == broker.subject("a.x")
        assert consumer.num_pending == 1

        await broker.delete_consumer("a", "reader")
        await broker.delete_consumer("a", "reader")  # already gone: fine
        await broker.delete_stream("b")
        await broker.delete_stream("b")
        snapshot = await broker.inspect()
        assert [broker.unqualify(s.name) for s in snapshot.streams] == ["a"]
        assert snapshot.consumers == ()
