"""The simulator's core: virtual time, the world's fault vocabulary and simulated network."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest

from mqlab.brokers.faults import FaultError, NetworkFault
from mqlab.brokers.registry import lab_nodes
from mqlab.brokers.sim.clock import VirtualTimeLoop, run_virtual
from mqlab.brokers.sim.fast import shortcut_applies, slot_builder
from mqlab.brokers.sim.world import (
    NodeChange,
    NodeState,
    NodeUnreachable,
    SimFaultError,
    SimWorld,
)
from mqlab.observe.bus import Recorder
from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    Delivered,
    FaultHealed,
    FaultInjected,
    Produced,
)

# --- virtual time -------------------------------------------------------------------------


async def test_tests_here_run_on_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    start = loop.time()
    await asyncio.sleep(3600)  # an hour of virtual time: instant, or the suite would time out
    assert loop.time() - start == pytest.approx(3600)


async def test_timers_fire_in_deadline_order_at_their_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    fired: list[tuple[str, float]] = []

    def fire(name: str) -> None:
        fired.append((name, loop.time() - start))

    for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        loop.call_later(delay, fire, name)
    await asyncio.sleep(5)
    assert fired == [("a", pytest.approx(1.0)), ("b", pytest.approx(2.0)), ("c", 3.0)]


def test_a_deadline_computed_by_hand_is_reached_despite_float_rounding() -> None:
    """Regression: asyncio runs a timer up to ``clock_resolution`` early when other work is
    ready. The clock must then stand at the timer's deadline, or tasks comparing ``time()``
    with a deadline they computed spin forever at one virtual instant (two heartbeat loops
    did, at 9.049999999999997, waiting for 9.049999999999999)."""

    async def wait_until_due(event: asyncio.Event, deadline: float) -> int:
        loop = asyncio.get_running_loop()
        rounds = 0
        while loop.time() < deadline:
            rounds += 1
            if rounds > 100:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), max(0.0, deadline - loop.time()))
        return rounds

    async def two_heartbeats() -> list[int]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        due = loop.time() + 3e-15  # a couple of float steps ahead: inside clock_resolution
        return list(await asyncio.gather(wait_until_due(event, due), wait_until_due(event, due)))

    assert run_virtual(two_heartbeats(), start=9.049999999999997) == [1, 1]


def test_run_virtual_returns_the_result_and_closes_its_loop() -> None:
    async def answer() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(60)
        return before, loop.time()

    assert run_virtual(answer(), start=100.0) == (100.0, 160.0)


# --- ids, namespaces and randomness ---------------------------------------------------------


def test_ids_namespaces_and_random_numbers_repeat_with_the_seed() -> None:
    def draw(seed: int) -> tuple[list[str], list[str], list[float]]:
        world = SimWorld(seed=seed)
        ids = [world.next_id("producer-1"), world.next_id("consumer-1")]
        namespaces = [world.new_namespace(), world.new_namespace()]
        return ids, namespaces, [world.rng.random() for _ in range(3)]

    assert draw(5) == draw(5)
    assert draw(5)[0] == ["producer-1-000001", "consumer-1-000002"]
    assert draw(5)[1] == ["mq-sim001", "mq-sim002"]
    assert draw(5)[2] != draw(6)[2]


# --- process faults -------------------------------------------------------------------------


async def test_kill_pause_resume_restart_change_state_and_report_like_the_lab(
    world: SimWorld, recorder: Recorder
) -> None:
    changes: list[tuple[str, str, str, str]] = []
    world.watch(lambda c: changes.append((c.node, c.previous, c.state, c.cause)))
    loop = asyncio.get_running_loop()
    start = loop.time()

    await world.pause("rabbitmq")
    assert world.state("rabbitmq") is NodeState.PAUSED
    await world.resume("rabbitmq")
    await world.kill("kafka-broker-2")
    assert world.state("kafka-broker-2") is NodeState.DOWN
    assert world.killed_nodes == {"kafka-broker-2"}
    await world.kill("kafka-broker-2")  # already down: nothing happens, nothing is reported
    await world.restart("kafka-broker-2")
    assert world.is_up("kafka-broker-2")
    # A restart takes the node's start-up time (a Kafka broker: seconds, virtual).
    assert loop.time() - start == pytest.approx(3.0)

    assert changes == [
        ("rabbitmq", "up", "paused", "pause"),
        ("rabbitmq", "paused", "up", "resume"),
        ("kafka-broker-2", "up", "down", "kill"),
        ("kafka-broker-2", "down", "up", "start"),
    ]
    reported = [
        (type(o).__name__, getattr(o, "fault", ""), getattr(o, "target", getattr(o, "node", "")))
        for o in recorder.observations
    ]
    assert reported == [
        ("FaultInjected", "pause", "rabbitmq"),
        ("BrokerDown", "", "rabbitmq"),
        ("FaultInjected", "resume", "rabbitmq"),
        ("FaultHealed", "pause", "rabbitmq"),
        ("BrokerUp", "", "rabbitmq"),
        ("FaultInjected", "kill", "kafka-broker-2"),
        ("BrokerDown", "", "kafka-broker-2"),
        ("FaultInjected", "restart", "kafka-broker-2"),
        ("FaultHealed", "kill", "kafka-broker-2"),
        ("BrokerUp", "", "kafka-broker-2"),
    ]
    assert all(o.broker == "lab" for o in recorder.observations)


async def test_restarting_a_running_node_stops_it_first(
    world: SimWorld, recorder: Recorder
) -> None:
    seen: list[NodeChange] = []
    world.watch(seen.append)
    await world.restart("nats")
    assert [(c.previous, c.state, c.cause) for c in seen] == [
        ("up", "down", "restart"),
        ("down", "up", "start"),
    ]
    assert [type(o) for o in recorder.observations] == [FaultInjected, BrokerDown, BrokerUp]


async def test_impossible_faults_say_why(world: SimWorld) -> None:
    with pytest.raises(SimFaultError, match=r"unknown node 'kafka-broker-9'.*did you mean"):
        await world.kill("kafka-broker-9")
    with pytest.raises(SimFaultError, match="cannot resume sqs: it is up"):
        await world.resume("sqs")
    await world.kill("sqs")
    with pytest.raises(SimFaultError, match="cannot pause sqs: it is down"):
        await world.pause("sqs")
    with pytest.raises(SimFaultError, match=r"unknown node 'kafka-broker-9'"):
        await world.add_network_fault("kafka-broker-9", NetworkFault("cut"))
    # A fault the vocabulary itself refuses never reaches the world.
    with pytest.raises(FaultError, match="unknown network fault 'slow'"):
        NetworkFault("slow")  # type: ignore[arg-type]
    with pytest.raises(FaultError, match=r"latency: missing setting\(s\) \['latency'\]"):
        NetworkFault("latency")
    with pytest.raises(FaultError, match=r"cut: unexpected setting\(s\) \['latency'\]"):
        NetworkFault("cut", latency=1.0)
    with pytest.raises(FaultError, match="latency must be a finite number >= 0"):
        NetworkFault("latency", latency=-1.0)
    with pytest.raises(FaultError, match="unknown stream 'sideways'"):
        NetworkFault("cut", stream="sideways")  # type: ignore[arg-type]
    assert {node.name for node in lab_nodes()} <= set(world.nodes)


# --- the simulated network -----------------------------------------------------------------


async def test_a_healthy_path_costs_no_time(world: SimWorld) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert world.clear_path("nats")
    await world.transmit("nats", "upstream", 10_000)
    assert loop.time() == start


async def test_a_killed_node_refuses_and_a_paused_one_answers_after_resume(
    world: SimWorld,
) -> None:
    loop = asyncio.get_running_loop()
    await world.kill("sqs")
    with pytest.raises(NodeUnreachable, match="sqs: connection refused"):
        await world.transmit("sqs")

    await world.pause("nats")
    request = asyncio.ensure_future(world.transmit("nats"))
    await asyncio.sleep(5)
    assert not request.done()  # a frozen process: the request just waits
    await world.resume("nats")
    await request
    assert loop.time() == pytest.approx(5)

    await world.pause("rabbitmq")
    hanging = asyncio.ensure_future(world.transmit("rabbitmq"))
    await asyncio.sleep(1)
    await world.kill("rabbitmq")
    with pytest.raises(NodeUnreachable, match="connection reset by peer"):
        await hanging


async def test_network_faults_delay_reset_or_cut_only_their_stream(
    world: SimWorld, recorder: Recorder
) -> None:
    loop = asyncio.get_running_loop()

    await world.add_network_fault(
        "kafka-broker-1", NetworkFault("latency", latency=0.25, stream="downstream")
    )
    start = loop.time()
    await world.transmit("kafka-broker-1", "upstream")
    assert loop.time() == start  # requests are not delayed...
    await world.transmit("kafka-broker-1", "downstream")
    assert loop.time() - start == pytest.approx(0.25)  # ... responses are
    await world.remove_network_faults("kafka-broker-1")
    assert world.clear_path("kafka-broker-1")

    await world.add_network_fault("kafka-broker-2", NetworkFault("bandwidth", rate=100))  # KB/s
    start = loop.time()
    await world.transmit("kafka-broker-2", "upstream", 50_000)
    assert loop.time() - start == pytest.approx(0.5)

    await world.add_network_fault("kafka-broker-3", NetworkFault("reset_peer", timeout=2.0))
    start = loop.time()
    with pytest.raises(NodeUnreachable, match="connection reset by peer"):
        await world.transmit("kafka-broker-3")
    assert loop.time() - start == pytest.approx(2.0)

    await world.add_network_fault("nats", NetworkFault("timeout", timeout=1.5))
    with pytest.raises(NodeUnreachable, match="connection closed"):
        await world.transmit("nats")

    await world.add_network_fault(
        "sqs", NetworkFault("timeout")
    )  # no timeout: data is silently dropped
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(world.transmit("sqs"), 30)

    await world.add_network_fault("rabbitmq", NetworkFault("cut"))
    with pytest.raises(NodeUnreachable, match="connection refused"):
        await world.transmit("rabbitmq")
    await world.remove_network_faults("rabbitmq")
    await world.transmit("rabbitmq")

    injected = [(o.fault, o.target) for o in recorder.observations if isinstance(o, FaultInjected)]
    assert injected == [
        ("latency", "kafka-broker-1"),
        ("bandwidth", "kafka-broker-2"),
        ("reset_peer", "kafka-broker-3"),
        ("timeout", "nats"),
        ("timeout", "sqs"),
        ("cut", "rabbitmq"),
    ]
    healed = [(o.fault, o.target) for o in recorder.observations if isinstance(o, FaultHealed)]
    assert healed == [("latency", "kafka-broker-1"), ("cut", "rabbitmq")]
    (latency,) = [
        o for o in recorder.observations if isinstance(o, FaultInjected) and o.fault == "latency"
    ]
    assert dict(latency.params) == {"stream": "downstream", "latency": "0.25"}


async def test_latency_jitter_comes_from_the_seeded_rng() -> None:
    async def delays(seed: int) -> list[float]:
        world = SimWorld(seed=seed)
        await world.add_network_fault("nats", NetworkFault("latency", latency=0.1, jitter=0.05))
        loop = asyncio.get_running_loop()
        measured = []
        for _ in range(5):
            start = loop.time()
            await world.transmit("nats")
            measured.append(round(loop.time() - start, 9))
        return measured

    first = await delays(3)
    assert first == await delays(3)
    assert first != await delays(4)
    assert all(0.05 <= d <= 0.15 for d in first)
    assert len(set(first)) > 1


# --- background work -----------------------------------------------------------------------


async def test_spawned_tasks_are_cancelled_on_close_and_their_errors_kept() -> None:
    world = SimWorld()

    async def forever() -> None:
        await asyncio.sleep(10**9)

    async def broken() -> None:
        raise RuntimeError("model bug")

    sleeper = world.spawn(forever())
    world.spawn(broken())
    await asyncio.sleep(0)
    await world.aclose()
    assert sleeper.cancelled()
    assert [str(e) for e in world.errors] == ["model bug"]


async def test_until_state_waits_for_the_node(world: SimWorld) -> None:
    loop = asyncio.get_running_loop()
    await world.kill("kafka-controller")
    waiter = asyncio.ensure_future(world.until_state("kafka-controller", NodeState.UP))
    restart = asyncio.ensure_future(world.restart("kafka-controller"))
    assert await waiter is NodeState.UP
    await restart
    assert loop.time() == pytest.approx(2.0)  # the controller's start-up time


# --- fast construction of per-message dataclasses ------------------------------------------


def test_slot_builders_build_what_the_constructor_builds() -> None:
    build = slot_builder(
        Delivered,
        (
            "at",
            "broker",
            "destination",
            "message_id",
            "consumer",
            "key",
            "partition",
            "position",
            "delivery_count",
            "redelivered",
        ),
    )
    assert shortcut_applies(Delivered, [f.name for f in dataclasses.fields(Delivered)])
    fast = build(1.5, "sim:kafka", "t", "m-1", "c", None, 2, 7, 3, True)
    normal = Delivered(
        at=1.5,
        broker="sim:kafka",
        destination="t",
        message_id="m-1",
        consumer="c",
        key=None,
        partition=2,
        position=7,
        delivery_count=3,
        redelivered=True,
    )
    assert fast == normal
    assert hash(fast) == hash(normal)
    assert repr(fast) == repr(normal)
    assert fast.to_dict() == normal.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.position = 8  # type: ignore[misc]


def test_slot_builders_fall_back_when_the_class_is_not_what_they_expect() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Grown:
        a: int
        b: int = 0  # a field the builder does not know about: it must get its default

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    build_grown = slot_builder(Grown, ("a",))
    assert not shortcut_applies(Grown, ("a",))
    assert build_grown(1) == Grown(1, 0)
    assert not shortcut_applies(NoSlots, ("a",))
    assert slot_builder(NoSlots, ("a",))(5) == NoSlots(5)


def test_the_simulator_builds_its_per_message_objects_the_fast_way() -> None:
    """If an observation or record class changes shape, this says the simulator lost its
    shortcut (it still works, just slower): update the field lists in kafka.py."""
    from mqlab.brokers.kafka.api import KafkaRecord, RecordMetadata

    for cls in (Produced, Delivered, KafkaRecord, RecordMetadata):
        names = [f.name for f in dataclasses.fields(cls)]
        assert shortcut_applies(cls, names), cls.__name__
    from mqlab.brokers.sim.kafka import consumer, log, producer

    builders = (producer._new_produced, consumer._new_delivered, producer._new_metadata)
    assert all(b.__name__ == "build" for b in (*builders, log.new_record))
