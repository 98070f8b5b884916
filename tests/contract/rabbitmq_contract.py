"""What every RabbitMQ adapter (the real one and the simulator's model) must do.

``RabbitMQContract`` is not collected on its own (its name does not start with ``Test``);
a subclass per backend provides the ``broker`` fixture: a connected adapter in a fresh
namespace, closed (and so cleaned up) after the test.

The tests wait only through the adapter's own timeouts and asyncio, never ``time.sleep``, so
they run on the simulator's virtual clock as well as against a real node. Names that come back
from the broker (queue names, ``x-death`` queues) are compared through ``unqualify`` so that the
tests hold whether a backend reports broker-side names or logical ones.
"""

from __future__ import annotations

import asyncio

from mqlab.brokers.base import BrokerError
from mqlab.brokers.rabbitmq.api import RabbitConsumer, RabbitDelivery, RabbitMQAPI
from mqlab.observe.bus import Recorder
from mqlab.observe.events import Acked, DeadLettered, Delivered, Nacked, Produced

# Short on purpose: long enough for a local broker to push a message, short enough that the
# tests that wait for "nothing arrives" stay fast.
QUIET = 0.5
# How long a test waits for a message it expects (only ever reached when something is broken,
# so generous: a busy machine must not turn a slow delivery into a failure).
EXPECT = 15.0


async def next_delivery(consumer: RabbitConsumer, timeout: float = EXPECT) -> RabbitDelivery:
    """The next delivery, failing the test (not hanging) if none arrives."""
    delivery = await consumer.next(timeout=timeout)
    assert delivery is not None, f"no delivery on {consumer.queue} within {timeout}s"
    return delivery


async def next_deliveries(consumer: RabbitConsumer, count: int) -> list[RabbitDelivery]:
    """``count`` deliveries (in as many batches as it takes), failing if they stop coming."""
    received: list[RabbitDelivery] = []
    while len(received) < count:
        batch = await consumer.next_batch(count - len(received), timeout=EXPECT)
        assert batch, f"only {len(received)} of {count} deliveries on {consumer.queue}"
        received.extend(batch)
    return received


async def drain(broker: RabbitMQAPI, queue: str) -> list[bytes]:
    """Every ready message of ``queue`` through basic.get, acked, in the order received."""
    bodies = []
    while (delivery := await broker.get(queue)) is not None:
        bodies.append(delivery.body)
        await delivery.ack()
    return bodies


def record(broker: RabbitMQAPI) -> Recorder:
    recorder = Recorder()
    broker.bus.subscribe(recorder)
    return recorder


class RabbitMQContract:
    """Behaviour shared by every RabbitMQ backend (see the module docstring)."""

    # --- basics ---------------------------------------------------------------------------

    async def test_round_trip_with_ack(self, broker: RabbitMQAPI) -> None:
        recorder = record(broker)
        await broker.declare_queue("orders")
        message_id = await broker.publish("", "orders", b"order-1", headers={"tenant": "a"})

        consumer = await broker.consume("orders", prefetch=1)
        delivery = await next_delivery(consumer)
        assert delivery.body == b"order-1"
        assert delivery.message_id == message_id
        assert delivery.headers["tenant"] == "a"
        assert delivery.redelivered is False
        assert broker.unqualify(delivery.queue) == "orders"
        await delivery.ack()
        await consumer.close()

        assert (await broker.queue_info("orders")).ready == 0
        produced = [o for o in recorder.of_kind(Produced) if isinstance(o, Produced)]
        delivered = [o for o in recorder.of_kind(Delivered) if isinstance(o, Delivered)]
        acked = [o for o in recorder.of_kind(Acked) if isinstance(o, Acked)]
        assert [o.message_id for o in produced] == [message_id]
        assert [(o.message_id, o.delivery_count, o.redelivered) for o in delivered] == [
            (message_id, 1, False)
        ]
        assert [o.message_id for o in acked] == [message_id]

    async def test_publish_many_then_ack_batch_reports_every_message(
        self, broker: RabbitMQAPI
    ) -> None:
        """A window of confirms and one multiple=True ack: the ledger still sees one
        Produced, one Delivered and one Acked per message."""
        recorder = record(broker)
        await broker.declare_queue("batched")
        bodies = [f"m{n}".encode() for n in range(30)]
        ids = await broker.publish_many("", "batched", bodies, window=8)
        consumer = await broker.consume("batched", prefetch=50)
        received = await next_deliveries(consumer, 30)
        assert [d.body for d in received] == bodies
        await consumer.ack_batch(received)
        await consumer.close()

        assert (await broker.queue_info("batched")).ready == 0  # nothing came back on close
        produced = [o.message_id for o in recorder.of_kind(Produced) if isinstance(o, Produced)]
        acked = [o.message_id for o in recorder.of_kind(Acked) if isinstance(o, Acked)]
        assert sorted(produced) == sorted(ids)
        assert sorted(acked) == sorted(ids)

    async def test_ack_batch_leaves_an_earlier_held_delivery_unsettled(
        self, broker: RabbitMQAPI
    ) -> None:
        """basic.ack multiple=True for the batch's last tag would settle the held first
        delivery too (with no Acked for it); the adapter must not send it then."""
        recorder = record(broker)
        await broker.declare_queue("held")
        await broker.publish_many("", "held", [b"a", b"b", b"c"])
        consumer = await broker.consume("held", prefetch=10)
        held, *rest = await next_deliveries(consumer, 3)
        await consumer.ack_batch(rest)
        await consumer.close()  # the held one goes back to the queue, unacked

        survivor = await broker.consume("held", prefetch=10)
        back = await next_delivery(survivor)
        assert (back.body, back.redelivered) == (held.body, True)
        await back.ack()
        assert await survivor.next(timeout=QUIET) is None  # the batch stayed acked
        await survivor.close()
        acked = [o.message_id for o in recorder.of_kind(Acked) if isinstance(o, Acked)]
        assert sorted(acked) == sorted([*(d.message_id for d in rest), back.message_id])

    async def test_nack_with_requeue_redelivers(self, broker: RabbitMQAPI) -> None:
        recorder = record(broker)
        await broker.declare_queue("jobs")
        message_id = await broker.publish("", "jobs", b"job")

        consumer = await broker.consume("jobs", prefetch=1)
        first = await next_delivery(consumer)
        assert first.redelivered is False
        await first.nack(requeue=True)
        again = await next_delivery(consumer)
        assert again.message_id == message_id
        assert again.body == b"job"
        assert again.redelivered is True
        await again.ack()
        await consumer.close()

        nacked = [o for o in recorder.of_kind(Nacked) if isinstance(o, Nacked)]
        assert [(o.message_id, o.requeue) for o in nacked] == [(message_id, True)]
        counts = [o.delivery_count for o in recorder.of_kind(Delivered) if isinstance(o, Delivered)]
        assert counts == [1, 2]

    async def test_closed_consumer_returns_unacked_messages(self, broker: RabbitMQAPI) -> None:
        await broker.declare_queue("tasks")
        for number in range(3):
            await broker.publish("", "tasks", f"task-{number}".encode())

        crashing = await broker.consume("tasks", prefetch=2)
        taken = [await next_delivery(crashing), await next_delivery(crashing)]
        assert [d.redelivered for d in taken] == [False, False]
        await crashing.close()  # without acking: what a dying consumer does

        survivor = await broker.consume("tasks", prefetch=10)
        received = [await next_delivery(survivor) for _ in range(3)]
        for delivery in received:
            await delivery.ack()
        by_body = {d.body: d.redelivered for d in received}
        assert by_body == {b"task-0": True, b"task-1": True, b"task-2": False}
        assert await survivor.next(timeout=QUIET) is None
        await survivor.close()

    async def test_fifo_within_a_queue(self, broker: RabbitMQAPI) -> None:
        await broker.declare_queue("ledger")
        sent = [f"entry-{number:02d}".encode() for number in range(20)]
        for body in sent:
            await broker.publish("", "ledger", body)
        consumer = await broker.consume("ledger", prefetch=5)
        received = []
        for _ in sent:
            delivery = await next_delivery(consumer)
            received.append(delivery.body)
            await delivery.ack()
        await consumer.close()
        assert received == sent

    async def test_priority_queue_delivers_high_priority_first(self, broker: RabbitMQAPI) -> None:
        assert broker.capabilities.priority is True
        await broker.declare_queue("support", max_priority=10)
        sent = [("low-1", 1), ("high-1", 9), ("mid-1", 5), ("low-2", 1), ("high-2", 9)]
        for body, priority in sent:  # all queued before anyone consumes
            await broker.publish("", "support", body.encode(), priority=priority)

        consumer = await broker.consume("support", prefetch=1)
        received = []
        for _ in sent:
            delivery = await next_delivery(consumer)
            assert delivery.priority is not None
            received.append(delivery.body.decode())
            await delivery.ack()
        await consumer.close()
        # Highest priority first; FIFO among equal priorities.
        assert received == ["high-1", "high-2", "mid-1", "low-1", "low-2"]

    # --- routing --------------------------------------------------------------------------

    async def test_topic_wildcards(self, broker: RabbitMQAPI) -> None:
        await broker.declare_exchange("events", "topic")
        await broker.declare_queue("one-word")
        await broker.declare_queue("any-words")
        await broker.bind_queue("one-word", "events", "order.*")
        await broker.bind_queue("any-words", "events", "order.#")

        for key in ("order.created", "order.created.eu", "order", "payment.created"):
            await broker.publish("events", key, key.encode())

        # `*` is exactly one word; `#` is zero or more words.
        assert await drain(broker, "one-word") == [b"order.created"]
        assert await drain(broker, "any-words") == [b"order.created", b"order.created.eu", b"order"]

    async def test_fanout_copies_to_every_bound_queue(self, broker: RabbitMQAPI) -> None:
        await broker.declare_exchange("broadcast", "fanout")
        for queue in ("audit", "email", "search"):
            await broker.declare_queue(queue)
            await broker.bind_queue(queue, "broadcast", "ignored-by-fanout")
        await broker.publish("broadcast", "any-key", b"user-signed-up")
        for queue in ("audit", "email", "search"):
            assert await drain(broker, queue) == [b"user-signed-up"]

    async def test_headers_exchange_any_and_all(self, broker: RabbitMQAPI) -> None:
        await broker.declare_exchange("by-headers", "headers")
        await broker.declare_queue("match-all")
        await broker.declare_queue("match-any")
        wanted = {"format": "pdf", "type": "report"}
        await broker.bind_queue("match-all", "by-headers", arguments={"x-match": "all", **wanted})
        await broker.bind_queue("match-any", "by-headers", arguments={"x-match": "any", **wanted})

        await broker.publish("by-headers", "", b"both", headers={"format": "pdf", "type": "report"})
        await broker.publish("by-headers", "", b"format-only", headers={"format": "pdf"})
        await broker.publish("by-headers", "", b"neither", headers={"format": "csv"})

        assert await drain(broker, "match-all") == [b"both"]
        assert await drain(broker, "match-any") == [b"both", b"format-only"]

    async def test_mandatory_publish_that_routes_nowhere_fails(self, broker: RabbitMQAPI) -> None:
        await broker.declare_exchange("orphan", "direct")
        try:
            await broker.publish("orphan", "no-binding", b"lost", mandatory=True)
        except BrokerError:
            pass
        else:
            raise AssertionError("an unroutable mandatory publish must raise BrokerError")
        # Without mandatory, RabbitMQ drops it silently (and confirms it).
        await broker.publish("orphan", "no-binding", b"dropped")

    # --- dead letters ---------------------------------------------------------------------

    async def test_ttl_retry_loop_counts_deaths(self, broker: RabbitMQAPI) -> None:
        """work --nack--> wait (TTL) --expired--> work: each round adds to x-death."""
        recorder = record(broker)
        await broker.declare_queue(
            "retry-wait",
            message_ttl_ms=100,
            dead_letter_exchange="",
            dead_letter_routing_key="retry-work",
        )
        await broker.declare_queue(
            "retry-work", dead_letter_exchange="", dead_letter_routing_key="retry-wait"
        )
        message_id = await broker.publish("", "retry-work", b"flaky")
        consumer = await broker.consume("retry-work", prefetch=1)

        for attempt in range(1, 4):
            delivery = await next_delivery(consumer)
            assert delivery.message_id == message_id
            expired = {
                broker.unqualify(d.queue): d.count
                for d in delivery.x_death
                if d.reason == "expired"
            }
            rejected = {
                broker.unqualify(d.queue): d.count
                for d in delivery.x_death
                if d.reason == "rejected"
            }
            previous_rounds = attempt - 1
            assert expired == ({"retry-wait": previous_rounds} if previous_rounds else {})
            assert rejected == ({"retry-work": previous_rounds} if previous_rounds else {})
            deaths = [o for o in recorder.of_kind(DeadLettered) if isinstance(o, DeadLettered)]
            assert sum(o.reason == "expired" for o in deaths) == previous_rounds
            assert sum(o.reason == "rejected" for o in deaths) == previous_rounds
            if attempt < 3:
                await delivery.nack(requeue=False)  # back into the wait queue
            else:
                await delivery.ack()
        await consumer.close()
        deaths = [o for o in recorder.of_kind(DeadLettered) if isinstance(o, DeadLettered)]
        assert {o.message_id for o in deaths} == {message_id}
        assert {(broker.unqualify(o.source), o.reason) for o in deaths} == {
            ("retry-work", "rejected"),
            ("retry-wait", "expired"),
        }

    async def test_poison_message_lands_in_dead_letter_queue(self, broker: RabbitMQAPI) -> None:
        recorder = record(broker)
        await broker.declare_exchange("parking", "fanout")
        await broker.declare_queue("parked")
        await broker.bind_queue("parked", "parking")
        await broker.declare_queue("payments", dead_letter_exchange="parking")
        good = await broker.publish("", "payments", b"ok")
        poison = await broker.publish("", "payments", b"{not json")

        consumer = await broker.consume("payments", prefetch=2)
        for _ in range(2):
            delivery = await next_delivery(consumer)
            if delivery.body == b"ok":
                await delivery.ack()
            else:
                await delivery.reject(requeue=False)  # permanent failure: do not retry
        await consumer.close()

        assert (await broker.queue_info("payments")).ready == 0
        parked = await broker.get("parked")
        assert parked is not None
        assert parked.body == b"{not json"
        assert parked.message_id == poison
        [death] = parked.x_death
        assert broker.unqualify(death.queue) == "payments"
        assert death.reason == "rejected"
        assert death.count == 1
        await parked.ack()
        assert await broker.get("parked") is None

        deaths = [o for o in recorder.of_kind(DeadLettered) if isinstance(o, DeadLettered)]
        assert [(o.message_id, broker.unqualify(o.source), o.reason) for o in deaths] == [
            (poison, "payments", "rejected")
        ]
        assert good not in {o.message_id for o in deaths}

    async def test_nack_without_requeue_and_no_dead_letter_exchange_drops(
        self, broker: RabbitMQAPI
    ) -> None:
        recorder = record(broker)
        await broker.declare_queue("fragile")
        await broker.publish("", "fragile", b"gone")
        delivery = await broker.get("fragile")
        assert delivery is not None
        await delivery.nack(requeue=False)
        assert await broker.get("fragile") is None
        assert recorder.of_kind(DeadLettered) == []

    # --- flow control ---------------------------------------------------------------------

    async def test_prefetch_limits_unacked_deliveries(self, broker: RabbitMQAPI) -> None:
        await broker.declare_queue("bulk")
        for number in range(5):
            await broker.publish("", "bulk", f"item-{number}".encode())

        consumer = await broker.consume("bulk", prefetch=2)
        held = [await next_delivery(consumer), await next_delivery(consumer)]
        # Two unacked messages fill the window: nothing more is pushed.
        assert await consumer.next(timeout=QUIET) is None
        info = await broker.queue_info("bulk")
        assert info.ready == 3
        assert info.consumers == 1

        await held[0].ack()  # frees one slot
        third = await next_delivery(consumer)
        assert third.body == b"item-2"
        assert await consumer.next(timeout=QUIET) is None
        await held[1].ack()
        await third.ack()
        rest = [await next_delivery(consumer), await next_delivery(consumer)]
        for delivery in rest:
            await delivery.ack()
        assert [d.body for d in rest] == [b"item-3", b"item-4"]
        await consumer.close()

    async def test_get_from_an_empty_queue_returns_none(self, broker: RabbitMQAPI) -> None:
        await broker.declare_queue("empty")
        assert await broker.get("empty") is None
        consumer = await broker.consume("empty", prefetch=1)
        assert await consumer.next(timeout=QUIET) is None
        await consumer.close()

    async def test_per_message_expiration(self, broker: RabbitMQAPI) -> None:
        await broker.declare_queue("short-lived")
        await broker.publish("", "short-lived", b"stale", expiration_ms=50)
        await broker.publish("", "short-lived", b"fresh")
        # Time passing *is* the condition here: the 50 ms run from the broker's receipt, which
        # came before the publish confirm, so 0.3 s after it the message has surely expired
        # (a busier machine only makes the wait longer, never too short).
        await asyncio.sleep(0.3)
        # An expired message at the head of the queue is discarded when it is reached.
        assert await drain(broker, "short-lived") == [b"fresh"]

    async def test_max_length_drops_the_oldest(self, broker: RabbitMQAPI) -> None:
        await broker.declare_queue("bounded", max_length=2)
        for body in (b"first", b"second", b"third"):
            await broker.publish("", "bounded", body)
        assert await drain(broker, "bounded") == [b"second", b"third"]

    async def test_purge_and_delete(self, broker: RabbitMQAPI) -> None:
        await broker.declare_queue("scratch")
        for _ in range(3):
            await broker.publish("", "scratch", b"x")
        assert await broker.purge_queue("scratch") == 3
        assert (await broker.queue_info("scratch")).ready == 0
        await broker.delete_queue("scratch")
        await broker.delete_queue("scratch")  # deleting twice is fine
        try:
            await broker.queue_info("scratch")
        except BrokerError:
            pass
        else:
            raise AssertionError("queue_info of a deleted queue must raise BrokerError")

    # --- capabilities ---------------------------------------------------------------------

    async def test_no_replay_after_ack(self, broker: RabbitMQAPI) -> None:
        assert broker.capabilities.replay is False
        await broker.declare_queue("once")
        await broker.publish("", "once", b"read-me-once")
        consumer = await broker.consume("once", prefetch=1)
        delivery = await next_delivery(consumer)
        await delivery.ack()
        await consumer.close()
        # Acked means gone: no consumer, old or new, can read it again.
        assert await broker.get("once") is None
        again = await broker.consume("once", prefetch=1)
        assert await again.next(timeout=QUIET) is None
        await again.close()

    async def test_capabilities(self, broker: RabbitMQAPI) -> None:
        capabilities = broker.capabilities
        assert capabilities.priority is True
        assert capabilities.max_priority == 255
        assert capabilities.dead_letter is True
        assert capabilities.replay is False
        assert capabilities.ordering == "queue"
        assert capabilities.routing == "exchanges"

    # --- inspect --------------------------------------------------------------------------

    async def test_inspect_shows_the_namespace_topology(self, broker: RabbitMQAPI) -> None:
        await broker.declare_exchange("shop", "topic")
        await broker.declare_queue(
            "shipping", max_priority=5, dead_letter_exchange="shop", message_ttl_ms=60_000
        )
        await broker.bind_queue("shipping", "shop", "order.paid")

        snapshot = await broker.inspect()
        exchanges = {broker.unqualify(e.name): e.type for e in snapshot.exchanges}
        assert exchanges == {"shop": "topic"}
        bindings = {
            (broker.unqualify(b.exchange), broker.unqualify(b.queue), b.routing_key)
            for b in snapshot.bindings
        }
        assert bindings == {("shop", "shipping", "order.paid")}
        [queue] = snapshot.queues
        assert broker.unqualify(queue.name) == "shipping"
        assert queue.max_priority == 5
        assert queue.message_ttl_ms == 60_000
        assert queue.dead_letter_exchange is not None
        assert broker.unqualify(queue.dead_letter_exchange) == "shop"
        assert queue.durable is True
