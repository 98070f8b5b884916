"""The one fault vocabulary: its units, how the scenario format and Toxiproxy map onto it, and
the scenario fault injector over both implementations (the simulated world, the lab)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mqlab.brokers.faults import (
    NETWORK_FAULT_KINDS,
    PROCESS_FAULTS,
    FaultError,
    Faults,
    LabFaults,
    NetworkFault,
)
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.world import NodeState, SimWorld
from mqlab.course.scenario import FaultAction, Toxic, ToxicKind
from mqlab.lab.faults import Toxics
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import FaultHealed, FaultInjected
from mqlab.scenarios.faults import FaultInjector


def test_the_scenario_format_speaks_the_vocabulary() -> None:
    from typing import get_args

    assert get_args(FaultAction) == PROCESS_FAULTS == ("kill", "pause", "resume", "restart")
    assert get_args(ToxicKind) == NETWORK_FAULT_KINDS
    assert "cut" in NETWORK_FAULT_KINDS
    assert "partition" not in NETWORK_FAULT_KINDS  # one name for the cut


@pytest.mark.parametrize(
    ("toxic", "fault"),
    [
        (
            Toxic(kind="latency", target="broker", latency_ms=300, jitter_ms=20, timeout_ms=9),
            NetworkFault("latency", latency=0.3, jitter=0.02),
        ),
        (
            Toxic(kind="timeout", target="broker", timeout_ms=1500),
            NetworkFault("timeout", timeout=1.5),
        ),
        (Toxic(kind="reset_peer", target="broker"), NetworkFault("reset_peer", timeout=0.0)),
        (
            Toxic(kind="bandwidth", target="broker", rate_kb=64),
            NetworkFault("bandwidth", rate=64.0),
        ),
        (Toxic(kind="cut", target="broker", latency_ms=5), NetworkFault("cut")),
    ],
)
def test_a_scenario_toxic_becomes_a_fault_in_seconds(toxic: Toxic, fault: NetworkFault) -> None:
    assert toxic.network_fault() == fault


def test_toxiproxy_gets_whole_milliseconds_and_the_cut_is_no_toxic() -> None:
    assert NetworkFault("latency", latency=0.3, jitter=0.0125).toxiproxy_attributes() == {
        "latency": 300,
        "jitter": 12,
    }
    assert NetworkFault("timeout", timeout=2.0).toxiproxy_attributes() == {"timeout": 2000}
    assert NetworkFault("bandwidth", rate=0.0).toxiproxy_attributes() == {"rate": 0}
    with pytest.raises(FaultError, match="a cut fault is not a Toxiproxy toxic"):
        NetworkFault("cut").toxiproxy_attributes()


def test_observations_show_the_settings_in_seconds() -> None:
    fault = NetworkFault("latency", stream="downstream", latency=0.25, jitter=0.0)
    assert dict(fault.describe()) == {"stream": "downstream", "jitter": "0", "latency": "0.25"}
    assert fault.applies_to("downstream")
    assert not fault.applies_to("upstream")
    assert NetworkFault("cut").applies_to("upstream")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_setting_must_be_a_finite_number(value: float) -> None:
    with pytest.raises(FaultError, match="must be a finite number"):
        NetworkFault("timeout", timeout=value)


def test_an_unknown_process_fault_is_refused_by_name() -> None:
    async def apply_nonsense() -> None:
        await SimWorld().apply("explode", "rabbitmq")  # type: ignore[arg-type]

    with pytest.raises(FaultError, match="unknown process fault 'explode'"):
        run_virtual(apply_nonsense())


def test_the_injector_restores_what_it_broke_on_the_simulated_world() -> None:
    async def break_and_restore() -> tuple[Recorder, SimWorld, list[str]]:
        world = SimWorld()
        recorder = Recorder()
        world.bus.subscribe(recorder)
        injector = FaultInjector(world.bus, world, source="sim")
        await injector.apply("kill", "nats")
        await injector.apply("pause", "rabbitmq")
        await injector.add_toxic(Toxic(kind="latency", target="sqs", latency_ms=100))
        await injector.add_toxic(Toxic(kind="cut", target="kafka-broker-2"))
        assert world.state("nats") is NodeState.DOWN
        assert world.state("rabbitmq") is NodeState.PAUSED
        assert injector.toxic_targets == {"sqs", "kafka-broker-2"}
        restored = await injector.restore_all()
        return recorder, world, restored

    recorder, world, restored = run_virtual(break_and_restore())
    assert restored == [
        "resumed rabbitmq",
        "restarted nats",
        "healed kafka-broker-2",
        "healed sqs",
    ]
    assert all(world.is_up(node) for node in ("nats", "rabbitmq"))
    assert world.network_faults == {}
    # The world reports its own faults; the injector adds no second copy of any of them.
    injected = [(o.fault, o.target) for o in recorder.observations if isinstance(o, FaultInjected)]
    assert injected == [
        ("kill", "nats"),
        ("pause", "rabbitmq"),
        ("latency", "sqs"),
        ("cut", "kafka-broker-2"),
        ("resume", "rabbitmq"),
        ("restart", "nats"),
    ]
    healed = [(o.fault, o.target) for o in recorder.observations if isinstance(o, FaultHealed)]
    assert healed == [
        ("pause", "rabbitmq"),
        ("kill", "nats"),
        ("cut", "kafka-broker-2"),
        ("latency", "sqs"),
    ]


def test_a_node_frozen_and_then_killed_is_restarted_not_resumed() -> None:
    async def freeze_kill_restore() -> tuple[SimWorld, list[str]]:
        world = SimWorld()
        injector = FaultInjector(world.bus, world, source="sim")
        await injector.apply("pause", "rabbitmq")
        await injector.apply("kill", "rabbitmq")
        return world, await injector.restore_all()

    world, restored = run_virtual(freeze_kill_restore())
    assert restored == ["restarted rabbitmq"]
    assert world.is_up("rabbitmq")


def test_the_injector_announces_a_kill_or_pause_before_it_applies_it() -> None:
    """The announcement comes while the node is still up (so a process killed during the
    fault has already said what it may break); resume and restart repair and are not
    announced."""
    announced: list[tuple[str, str, bool]] = []

    async def break_and_repair() -> None:
        world = SimWorld()

        def announce(action: str, target: str) -> None:
            announced.append((action, target, world.is_up(target)))

        injector = FaultInjector(world.bus, world, source="sim", announce=announce)
        await injector.apply("pause", "rabbitmq")
        await injector.apply("resume", "rabbitmq")
        await injector.apply("kill", "nats")
        await injector.apply("restart", "nats")

    run_virtual(break_and_repair())
    assert announced == [("pause", "rabbitmq", True), ("kill", "nats", True)]


class _SlowLabFaults(Faults):
    """Faults carried out in a thread, as the lab's are: a kill takes until ``let_kill_land``
    is set, and a cancellation of its caller does not stop it."""

    def __init__(self) -> None:
        self.let_kill_land = threading.Event()
        self.kill_started = asyncio.Event()
        self.down: set[str] = set()
        self.restarted: list[str] = []

    async def kill(self, node: str) -> None:
        self.kill_started.set()

        def land() -> None:
            self.let_kill_land.wait(10)
            self.down.add(node)

        await asyncio.to_thread(land)

    async def pause(self, node: str) -> None:
        self.down.add(node)

    async def resume(self, node: str) -> None:
        pass  # SIGCONT does nothing to a dead process

    async def restart(self, node: str) -> None:
        self.down.discard(node)
        self.restarted.append(node)

    async def add_network_fault(self, node: str, fault: NetworkFault) -> None:
        pass

    async def remove_network_faults(self, node: str) -> None:
        pass


def test_a_kill_cancelled_midway_is_waited_for_and_restored() -> None:
    """A Ctrl-C (or the grader going away) cancels a check while the lab's kill runs in its
    thread: the cancellation waits for the kill, so the clean-up restarts the broker instead of
    resuming it a moment before the kill lands (which left the lab's broker dead)."""

    async def cancel_during_the_kill() -> tuple[_SlowLabFaults, list[str]]:
        faults = _SlowLabFaults()
        injector = FaultInjector(ObservationBus(), faults)
        await injector.apply("pause", "kafka-broker-3")
        killing = asyncio.ensure_future(injector.apply("kill", "kafka-broker-3"))
        await faults.kill_started.wait()
        killing.cancel()
        await asyncio.sleep(0)  # the cancellation is delivered; the kill has not landed
        assert not killing.done()
        faults.let_kill_land.set()
        with pytest.raises(asyncio.CancelledError):
            await killing
        return faults, await injector.restore_all()

    faults, restored = asyncio.run(cancel_during_the_kill())
    assert restored == ["restarted kafka-broker-3"]
    assert faults.restarted == ["kafka-broker-3"]
    assert faults.down == set()


@pytest.mark.toxiproxy
@pytest.mark.rabbitmq
def test_the_lab_puts_a_whole_path_fault_on_both_directions_and_cuts_by_disabling() -> None:
    toxics = Toxics()
    faults = LabFaults()

    async def both_ways() -> None:
        await faults.add_network_fault("rabbitmq", NetworkFault("latency", latency=0.02))
        found = {
            (t["stream"], t["type"], t["attributes"]["latency"]) for t in toxics.list("rabbitmq")
        }
        assert found == {("upstream", "latency", 20), ("downstream", "latency", 20)}
        await faults.add_network_fault("rabbitmq", NetworkFault("cut"))
        assert toxics.proxies()["rabbitmq"]["enabled"] is False
        await faults.remove_network_faults("rabbitmq")
        assert toxics.list("rabbitmq") == []
        assert toxics.proxies()["rabbitmq"]["enabled"] is True

    try:
        asyncio.run(both_ways())
    finally:
        toxics.clear("rabbitmq")
