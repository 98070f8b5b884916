"""The simulator's RabbitMQ model: what the course teaches, beyond the shared contract.

Every test runs on virtual time, so TTLs, timeouts and restarts cost no wall-clock time, and
assertions may name exact virtual instants (they are not speed goals: the clock only moves
when the model says so).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.faults import NetworkFault
from mqlab.brokers.rabbitmq.api import (
    AlreadySettled,
    ConnectionLost,
    NotFound,
    PreconditionFailed,
    Unroutable,
)
from mqlab.brokers.registry import get_broker_class
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.rabbitmq.client import SimRabbitMQBroker
from mqlab.brokers.sim.rabbitmq.routing import headers_match, topic_matches
from mqlab.brokers.sim.world import SimWorld
from mqlab.observe.bus import Recorder
from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    DeadLettered,
    Expired,
    Observation,
    ProduceFailed,
)

pytestmark = pytest.mark.sim


@pytest.fixture
async def world() -> AsyncIterator[SimWorld]:
    sim = SimWorld(seed=7)
    yield sim
    await sim.aclose()
    assert sim.errors == []


@pytest.fixture
async def broker(world: SimWorld) -> AsyncIterator[SimRabbitMQBroker]:
    async with SimRabbitMQBroker(world=world, operation_timeout=3.0) as adapter:
        yield adapter


def recorded(world: SimWorld) -> Recorder:
    recorder = Recorder()
    world.bus.subscribe(recorder)
    return recorder


def of(recorder: Recorder, kind: type[Observation]) -> list[Observation]:
    return recorder.of_kind(kind)


async def bodies(broker: SimRabbitMQBroker, queue: str) -> list[bytes]:
    received = []
    while (delivery := await broker.get(queue)) is not None:
        received.append(delivery.body)
        await delivery.ack()
    return received


# --- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("order.*", "order.created", True),
        ("order.*", "order", False),
        ("order.*", "order.created.eu", False),
        ("order.#", "order", True),
        ("order.#", "order.created.eu", True),
        ("#", "", True),
        ("#", "anything.at.all", True),
        ("*", "", False),
        ("*.created.#", "order.created", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
        ("#.#", "x", True),
        ("a.*.#", "a", False),
    ],
)
def test_topic_matching_star_is_one_word_hash_is_zero_or_more(
    pattern: str, key: str, expected: bool
) -> None:
    assert topic_matches(pattern, key) is expected


def test_headers_matching_all_any_and_x_keys() -> None:
    binding = {"x-match": "all", "format": "pdf", "type": "report"}
    assert headers_match(binding, {"format": "pdf", "type": "report", "extra": 1})
    assert not headers_match(binding, {"format": "pdf"})
    assert headers_match({**binding, "x-match": "any"}, {"format": "pdf"})
    assert not headers_match({**binding, "x-match": "any"}, {"format": "csv"})
    # x- keys are ignored unless the mode says "-with-x"
    assert headers_match({"x-match": "all", "x-tenant": "a"}, {})
    assert not headers_match({"x-match": "all-with-x", "x-tenant": "a"}, {})
    # a binding value of None only asks for the key
    assert headers_match({"x-match": "all", "format": None}, {"format": "anything"})
    # the default mode is all; "any" with nothing to compare matches nothing
    assert not headers_match({"format": "pdf", "type": "x"}, {"format": "pdf"})
    assert not headers_match({"x-match": "any"}, {"format": "pdf"})


async def test_a_queue_bound_twice_gets_one_copy(broker: SimRabbitMQBroker) -> None:
    await broker.declare_exchange("events", "topic")
    await broker.declare_queue("all")
    await broker.bind_queue("all", "events", "order.*")
    await broker.bind_queue("all", "events", "#")
    await broker.publish("events", "order.paid", b"once")
    assert await bodies(broker, "all") == [b"once"]


async def test_default_exchange_routes_by_queue_name_and_refuses_bindings(
    broker: SimRabbitMQBroker,
) -> None:
    await broker.declare_queue("inbox")
    await broker.publish("", "inbox", b"direct to the queue")
    await broker.publish("", "nobody", b"dropped")
    assert await bodies(broker, "inbox") == [b"direct to the queue"]
    with pytest.raises(BrokerError, match="default exchange"):
        await broker.bind_queue("inbox", "")


# --- priorities -------------------------------------------------------------------------------


async def test_priority_queue_clamps_to_max_and_treats_missing_as_zero(
    broker: SimRabbitMQBroker,
) -> None:
    await broker.declare_queue("tickets", max_priority=5)
    sent = [("none", None), ("p9", 9), ("p5", 5), ("p1", 1), ("none-2", None), ("p7", 7)]
    for body, priority in sent:
        await broker.publish("", "tickets", body.encode(), priority=priority)
    # 9 and 7 count as 5 (the maximum) and keep their arrival order among the fives.
    assert await bodies(broker, "tickets") == [b"p9", b"p5", b"p7", b"p1", b"none", b"none-2"]


async def test_priority_is_ignored_without_max_priority(broker: SimRabbitMQBroker) -> None:
    await broker.declare_queue("plain")
    for body, priority in (("low", 1), ("high", 9)):
        await broker.publish("", "plain", body.encode(), priority=priority)
    assert await bodies(broker, "plain") == [b"low", b"high"]


# --- acknowledgements, prefetch, requeue ------------------------------------------------------


async def test_round_robin_between_consumers_within_their_prefetch(
    broker: SimRabbitMQBroker,
) -> None:
    await broker.declare_queue("work")
    first = await broker.consume("work", prefetch=1, name="first")
    second = await broker.consume("work", prefetch=1, name="second")
    for number in range(4):
        await broker.publish("", "work", f"job-{number}".encode())

    a = await first.next(timeout=1)
    b = await second.next(timeout=1)
    assert a is not None
    assert b is not None
    assert (a.body, b.body) == (b"job-0", b"job-1")
    # Each holds one unacked message: a full window, nothing more for anyone.
    assert await first.next(timeout=0.5) is None
    info = await broker.queue_info("work")
    assert (info.ready, info.unacked, info.consumers) == (2, 2, 2)

    await b.ack()
    c = await second.next(timeout=1)
    assert c is not None
    assert c.body == b"job-2"
    await a.ack()
    d = await first.next(timeout=1)
    assert d is not None
    assert d.body == b"job-3"
    for delivery in (c, d):
        await delivery.ack()
    await first.close()
    await second.close()


async def test_requeued_message_returns_to_its_original_position(
    broker: SimRabbitMQBroker,
) -> None:
    await broker.declare_queue("line")
    for body in (b"a", b"b", b"c"):
        await broker.publish("", "line", body)
    a = await broker.get("line")
    b = await broker.get("line")
    assert a is not None
    assert b is not None
    await a.nack(requeue=True)
    again = await broker.get("line")
    assert again is not None
    assert (again.body, again.redelivered, again.delivery_count) == (b"a", True, 2)
    await again.ack()
    await b.ack()
    assert await bodies(broker, "line") == [b"c"]


async def test_settling_twice_or_after_no_ack_is_refused(broker: SimRabbitMQBroker) -> None:
    await broker.declare_queue("once")
    await broker.publish("", "once", b"1")
    await broker.publish("", "once", b"2")
    delivery = await broker.get("once")
    assert delivery is not None
    await delivery.ack()
    with pytest.raises(AlreadySettled):
        await delivery.ack()
    auto = await broker.get("once", no_ack=True)
    assert auto is not None
    with pytest.raises(AlreadySettled):
        await auto.nack()
    assert (await broker.queue_info("once")).unacked == 0


# --- TTL, max length, dead letters ------------------------------------------------------------


async def test_retry_loop_records_x_death_like_rabbitmq(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    """work --reject--> wait (TTL 100 ms) --expired--> work, three times."""
    await broker.declare_queue(
        "wait", message_ttl_ms=100, dead_letter_exchange="", dead_letter_routing_key="work"
    )
    await broker.declare_queue("work", dead_letter_exchange="", dead_letter_routing_key="wait")
    message_id = await broker.publish("", "work", b"flaky")
    consumer = await broker.consume("work", prefetch=1)
    arrivals = []
    for round_number in range(3):
        delivery = await consumer.next(timeout=5)
        assert delivery is not None
        arrivals.append(round(world.now(), 6))
        await delivery.nack(requeue=False)
        if round_number == 1:
            # While it waits: the repeated rejection moved its entry back to the front.
            waiting = await broker.get("wait")
            assert waiting is not None
            assert [(broker.unqualify(d.queue), d.reason, d.count) for d in waiting.x_death] == [
                ("work", "rejected", 2),
                ("wait", "expired", 1),
            ]
            await waiting.nack(requeue=True)  # back where it was, same expiry
    last = await consumer.next(timeout=5)
    assert last is not None
    # Each round waits exactly the queue TTL on the virtual clock.
    assert arrivals == [0.0, 0.1, 0.2]
    assert last.message_id == message_id
    assert last.redelivered is False  # a dead-lettered message is a new message
    # One entry per (queue, reason): counted up and moved to the front, newest first.
    assert [(broker.unqualify(d.queue), d.reason, d.count) for d in last.x_death] == [
        ("wait", "expired", 3),
        ("work", "rejected", 3),
    ]
    assert last.headers["x-first-death-reason"] == "rejected"
    assert broker.unqualify(last.headers["x-first-death-queue"]) == "work"
    assert broker.unqualify(last.routing_key) == "work"
    await last.ack()
    await consumer.close()


async def test_poison_message_goes_to_the_dead_letter_exchange_once(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    recorder = recorded(world)
    await broker.declare_exchange("dlx", "direct")
    await broker.declare_queue("parking-lot")
    await broker.bind_queue("parking-lot", "dlx", "poison")
    await broker.declare_queue(
        "orders", dead_letter_exchange="dlx", dead_letter_routing_key="poison"
    )
    message_id = await broker.publish("", "orders", b"{broken", headers={"attempt": 1})
    delivery = await broker.get("orders")
    assert delivery is not None
    await delivery.reject(requeue=False)

    parked = await broker.get("parking-lot")
    assert parked is not None
    assert parked.message_id == message_id
    assert parked.headers["attempt"] == 1
    assert broker.unqualify(parked.exchange) == "dlx"
    assert parked.routing_key == "poison"
    [death] = parked.x_death
    assert (broker.unqualify(death.queue), death.reason, death.count) == ("orders", "rejected", 1)
    assert broker.unqualify(death.routing_keys[0]) == "orders"
    lettered = [o for o in of(recorder, DeadLettered) if isinstance(o, DeadLettered)]
    assert [(o.message_id, broker.unqualify(o.target), o.reason) for o in lettered] == [
        (message_id, "dlx", "rejected")
    ]


async def test_queue_ttl_expires_at_the_head_without_any_consumer(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    recorder = recorded(world)
    await broker.declare_queue("dead")
    await broker.declare_queue(
        "short", message_ttl_ms=2_000, dead_letter_exchange="", dead_letter_routing_key="dead"
    )
    await broker.publish("", "short", b"1")
    await asyncio.sleep(1.999)
    assert (await broker.queue_info("short")).ready == 1
    await asyncio.sleep(0.002)
    assert (await broker.queue_info("short")).ready == 0
    assert await bodies(broker, "dead") == [b"1"]
    [lettered] = [o for o in of(recorder, DeadLettered) if isinstance(o, DeadLettered)]
    assert (lettered.reason, round(lettered.at, 6)) == ("expired", 2.0)


async def test_per_message_expiration_only_applies_at_the_head(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    recorder = recorded(world)
    await broker.declare_queue("mixed")
    await broker.publish("", "mixed", b"no ttl")
    expiring = await broker.publish("", "mixed", b"50 ms", expiration_ms=50)
    await asyncio.sleep(1.0)
    # Behind a head that never expires, the expired message still counts as ready.
    assert (await broker.queue_info("mixed")).ready == 2
    head = await broker.get("mixed")
    assert head is not None
    assert head.body == b"no ttl"
    await head.ack()
    # Now it is the head: RabbitMQ discards it when it gets there.
    assert await broker.get("mixed") is None
    expired = [o for o in of(recorder, Expired) if isinstance(o, Expired)]
    assert [o.message_id for o in expired] == [expiring]


async def test_max_length_drops_the_head_into_the_dead_letter_queue(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    recorder = recorded(world)
    await broker.declare_queue("overflow")
    await broker.declare_queue(
        "bounded", max_length=2, dead_letter_exchange="", dead_letter_routing_key="overflow"
    )
    for body in (b"1", b"2", b"3", b"4"):
        await broker.publish("", "bounded", body)
    assert await bodies(broker, "bounded") == [b"3", b"4"]
    dropped = await broker.get("overflow")
    assert dropped is not None
    assert [(d.reason, d.count) for d in dropped.x_death] == [("maxlen", 1)]
    await dropped.ack()
    assert await bodies(broker, "overflow") == [b"2"]
    reasons = [o.reason for o in of(recorder, DeadLettered) if isinstance(o, DeadLettered)]
    assert reasons == ["maxlen", "maxlen"]


async def test_an_expiry_only_loop_is_cut_by_cycle_detection(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    recorder = recorded(world)
    await broker.declare_queue(
        "ping", message_ttl_ms=100, dead_letter_exchange="", dead_letter_routing_key="pong"
    )
    await broker.declare_queue(
        "pong", message_ttl_ms=100, dead_letter_exchange="", dead_letter_routing_key="ping"
    )
    message_id = await broker.publish("", "ping", b"round and round")
    await asyncio.sleep(5.0)
    assert (await broker.queue_info("ping")).ready == 0
    assert (await broker.queue_info("pong")).ready == 0
    # ping -> pong once; pong -> ping would close a loop without a rejection: dropped.
    lettered = [o for o in of(recorder, DeadLettered) if isinstance(o, DeadLettered)]
    assert [broker.unqualify(o.source) for o in lettered] == ["ping"]
    expired = [o for o in of(recorder, Expired) if isinstance(o, Expired)]
    assert [(broker.unqualify(o.destination), o.message_id) for o in expired] == [
        ("pong", message_id)
    ]


async def test_nack_without_dead_letter_exchange_loses_the_message(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    recorder = recorded(world)
    await broker.declare_queue("fragile", dead_letter_exchange="missing-exchange")
    await broker.publish("", "fragile", b"x")
    delivery = await broker.get("fragile")
    assert delivery is not None
    await delivery.nack(requeue=False)
    assert (await broker.queue_info("fragile")).ready == 0
    assert of(recorder, DeadLettered) == []


async def test_a_consumer_whose_queue_is_deleted_ends_with_a_clear_error(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    await broker.declare_queue("doomed")
    consumer = await broker.consume("doomed", prefetch=1)
    # Another client (same namespace) deletes the queue under it.
    other = await SimRabbitMQBroker(world=world, namespace=broker.namespace).connect()
    await other.delete_queue("doomed")
    await other.close(keep=True)
    with pytest.raises(BrokerError, match="cancelled consumer"):
        await consumer.next(timeout=1)
    await consumer.close()


# --- errors -----------------------------------------------------------------------------------


async def test_errors_are_one_line_and_named_like_the_real_adapter(
    world: SimWorld, broker: SimRabbitMQBroker
) -> None:
    recorder = recorded(world)
    await broker.declare_queue("shape", max_priority=5)
    with pytest.raises(PreconditionFailed, match="PRECONDITION_FAILED") as raised:
        await broker.declare_queue("shape")
    assert "\n" not in str(raised.value)
    await broker.declare_exchange("kind", "topic")
    with pytest.raises(PreconditionFailed):
        await broker.declare_exchange("kind", "fanout")
    with pytest.raises(NotFound, match="NOT_FOUND"):
        await broker.bind_queue("shape", "no-such-exchange")
    with pytest.raises(NotFound):
        await broker.publish("no-such-exchange", "key", b"x")
    with pytest.raises(Unroutable):
        await broker.publish("kind", "nobody.listens", b"x", mandatory=True)
    with pytest.raises(NotFound):
        await broker.consume("no-such-queue")
    failed = [o for o in of(recorder, ProduceFailed) if isinstance(o, ProduceFailed)]
    assert len(failed) == 2
    # The adapter keeps working after errors.
    await broker.publish("", "shape", b"fine")
    assert await bodies(broker, "shape") == [b"fine"]


# --- faults -----------------------------------------------------------------------------------


async def test_killed_node_requeues_unacked_keeps_durable_and_loses_transient(
    world: SimWorld,
) -> None:
    recorder = recorded(world)
    async with SimRabbitMQBroker(
        world=world, operation_timeout=3.0, reconnect_interval=0.5
    ) as broker:
        await broker.declare_queue("durable-orders")
        await broker.declare_queue("transient-cache", durable=False)
        kept = await broker.publish("", "durable-orders", b"persisted")
        await broker.publish("", "durable-orders", b"in flight")
        await broker.publish("", "transient-cache", b"in memory")
        consumer = await broker.consume("durable-orders", prefetch=1, name="worker")
        held = await consumer.next(timeout=1)
        assert held is not None
        assert held.message_id == kept

        await world.kill("rabbitmq")
        await asyncio.sleep(0)
        downs = [o for o in of(recorder, BrokerDown) if o.broker == broker.name]
        assert len(downs) == 1
        with pytest.raises(ConnectionLost):
            await held.ack()  # its channel died with the connection
        with pytest.raises(OperationTimedOut, match="reconnecting"):
            await broker.publish("", "durable-orders", b"while down")

        await world.restart("rabbitmq")
        await asyncio.sleep(1.0)  # the client reconnects within reconnect_interval
        ups = [o for o in of(recorder, BrokerUp) if o.broker == broker.name]
        assert len(ups) == 1

        # The same consumer gets the unacked message again, flagged redelivered.
        again = await consumer.next(timeout=2)
        assert again is not None
        assert (again.message_id, again.redelivered) == (kept, True)
        await again.ack()
        following = await consumer.next(timeout=2)
        assert following is not None
        assert following.body == b"in flight"
        await following.ack()
        # The transient queue was re-declared by the adapter: it exists, empty.
        assert (await broker.queue_info("transient-cache")).ready == 0
        await consumer.close()


async def test_paused_node_makes_calls_wait_until_resume_or_timeout(world: SimWorld) -> None:
    async with SimRabbitMQBroker(world=world, operation_timeout=2.0) as broker:
        await broker.declare_queue("q")
        await world.pause("rabbitmq")
        started = world.now()
        with pytest.raises(OperationTimedOut):
            await broker.publish("", "q", b"lost in the buffer?")
        assert round(world.now() - started, 6) == 2.0

        async def resume_later() -> None:
            await asyncio.sleep(1.5)
            await world.resume("rabbitmq")

        resumer = asyncio.ensure_future(resume_later())
        started = world.now()
        await broker.publish("", "q", b"after resume")
        assert round(world.now() - started, 6) == 1.5
        await resumer
        # The publish that timed out reached the broker once it woke up (a lost confirm).
        assert await bodies(broker, "q") == [b"lost in the buffer?", b"after resume"]


async def test_latency_slows_every_call_and_partition_cuts_the_connection(
    world: SimWorld,
) -> None:
    recorder = recorded(world)
    async with SimRabbitMQBroker(world=world, reconnect_interval=0.3) as broker:
        await broker.declare_queue("q")
        await world.add_network_fault("rabbitmq", NetworkFault("latency", latency=0.25))
        started = world.now()
        await broker.publish("", "q", b"slow")
        assert round(world.now() - started, 6) == 0.5  # one leg each way
        await world.remove_network_faults("rabbitmq")
        await world.add_network_fault("rabbitmq", NetworkFault("bandwidth", rate=1.0))  # 1 KB/s
        started = world.now()
        await broker.publish("", "q", b"x" * 2_000)
        assert round(world.now() - started, 6) == 2.0  # 2,000 bytes through the pipe
        await world.remove_network_faults("rabbitmq")

        await world.add_network_fault("rabbitmq", NetworkFault("cut"))
        await asyncio.sleep(0)
        assert len([o for o in of(recorder, BrokerDown) if o.broker == broker.name]) == 1
        with pytest.raises(BrokerError):
            await broker.get("q")
        await world.remove_network_faults("rabbitmq")
        await asyncio.sleep(0.5)
        assert len([o for o in of(recorder, BrokerUp) if o.broker == broker.name]) == 1
        assert await bodies(broker, "q") == [b"slow", b"x" * 2_000]


def test_connect_to_a_killed_node_is_refused_with_one_line() -> None:
    async def scenario() -> str:
        world = SimWorld()
        await world.kill("rabbitmq")
        adapter = SimRabbitMQBroker(world=world)
        with pytest.raises(BrokerUnavailable) as raised:
            await adapter.connect()
        await adapter.close()
        await world.aclose()
        return str(raised.value)

    message = run_virtual(scenario())
    assert "connection refused" in message
    assert "\n" not in message


# --- namespaces, registry, determinism ------------------------------------------------------


async def test_two_adapters_share_the_node_and_clean_up_only_their_namespace(
    world: SimWorld,
) -> None:
    async with SimRabbitMQBroker(world=world) as keeper:
        await keeper.declare_queue("stays")
        await keeper.bind_queue("stays", "amq.topic", "#")
        async with SimRabbitMQBroker(world=world) as visitor:
            await visitor.declare_queue("goes")
            await visitor.publish("amq.topic", "shared.node", b"across namespaces")
            assert [q.name for q in (await visitor.inspect()).queues] == [visitor.qualify("goes")]
        assert [q.name for q in (await keeper.inspect()).queues] == [keeper.qualify("stays")]
        assert await bodies(keeper, "stays") == [b"across namespaces"]


def test_the_registry_resolves_the_simulated_adapter() -> None:
    assert get_broker_class("sim:rabbitmq") is SimRabbitMQBroker
    assert SimRabbitMQBroker().name == "sim:rabbitmq"


def test_same_seed_same_run() -> None:
    def run(seed: int) -> list[dict[str, object]]:
        async def scenario() -> list[dict[str, object]]:
            world = SimWorld(seed=seed)
            recorder = recorded(world)
            async with SimRabbitMQBroker(world=world) as broker:
                await broker.declare_queue("retry", message_ttl_ms=30, dead_letter_exchange="")
                await broker.declare_queue(
                    "jobs", dead_letter_exchange="", dead_letter_routing_key="retry"
                )
                workers = [await broker.consume("jobs", prefetch=2) for _ in range(3)]
                for number in range(12):
                    await broker.publish("", "jobs", f"job-{number}".encode(), priority=number % 3)
                for round_number in range(4):
                    for worker in workers:
                        delivery = await worker.next(timeout=0.2)
                        if delivery is None:
                            continue
                        if (round_number + len(delivery.body)) % 2:
                            await delivery.ack()
                        else:
                            await delivery.nack(requeue=round_number % 2 == 0)
            await world.aclose()
            return [o.to_dict() for o in recorder.observations]

        return run_virtual(scenario())

    first = run(3)
    assert first == run(3)
    assert len(first) > 30
