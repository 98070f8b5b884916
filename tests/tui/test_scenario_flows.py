"""The scenario, replay, broker picker and help flows, driven with the Pilot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mqlab.brokers.kafka.api import KafkaNode
from mqlab.lab.doctor import Finding
from mqlab.observe.events import Produced
from mqlab.scenarios.library import find
from mqlab.scenarios.session import RunSession
from mqlab.scenarios.verdict import RunResult
from mqlab.tui.app import MqlabApp
from mqlab.tui.feed import LINES_PER_FRAME
from mqlab.tui.messages import SnapshotTaken
from mqlab.tui.models.snapshots import KafkaSnapshot
from mqlab.tui.screens.broker_picker import BrokerPicker
from mqlab.tui.screens.help import HelpScreen
from mqlab.tui.screens.library import ScenarioLibrary
from mqlab.tui.screens.replay import ReplayScreen
from mqlab.tui.screens.scenario import ScenarioScreen
from mqlab.tui.widgets.scenario.timeline import Timeline
from tests.tui.conftest import until, until_shown

pytestmark = pytest.mark.sim


def _scenario_screen(app: MqlabApp) -> ScenarioScreen:
    screen = app.screen
    assert isinstance(screen, ScenarioScreen)
    return screen


async def test_library_opens_a_scenario_and_runs_it_on_sim(
    make: Callable[..., MqlabApp],
) -> None:
    app = make(speed=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await until_shown(pilot, "Every kind of step")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ScenarioLibrary), "the library")
        await until_shown(pilot, "at-least-once-crash")
        await pilot.press("enter")  # the first scenario of the first topic
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "a scenario")
        screen = _scenario_screen(app)
        await until_shown(pilot, "Press a number to predict")
        answer = screen.scenario.predict.answer if screen.scenario.predict else 0
        await pilot.press(str(answer + 1))
        await until(pilot, lambda: screen.result is not None, "the run's result", timeout=120)
        await until_shown(
            pilot, "final", "Your prediction held.", "produced", f"PASS on {screen.broker}"
        )
        assert screen.result is not None
        assert screen.result.verdict == "pass"


async def test_a_fault_from_the_keyboard_changes_the_partition_view(
    make: Callable[..., MqlabApp],
) -> None:
    # Started at a tenth of real time (the run would take 20 s), so it is surely still going
    # when the leaders are drawn and the clock is stopped below; at 2x it took under two
    # seconds and could end before a loaded machine drew the leaders.
    app = make(speed=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_scenario(find("kafka-partition-ordering"))
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
        screen = _scenario_screen(app)
        await pilot.press("r")
        await until(
            pilot,
            lambda: any(p.leader >= 0 for p in screen.kafka.partitions.values()),
            "the partitions' leaders",
        )
        # Paused while the kill is asked for, so the run cannot end before the key press
        # reaches it. A fault applies while the clock stands still; the election after it
        # needs the clock again.
        screen.apply_speed(0)
        await pilot.press("v")
        before = {key: p.leader for key, p in screen.kafka.partitions.items()}
        killed = before[min(before)]
        await pilot.press("k")
        await until_shown(pilot, "done: kill leader")
        screen.apply_speed(2.0)
        await until(
            pilot,
            lambda: screen.kafka.brokers.get(killed) is False,
            f"broker {killed} drawn as down",
        )
        await until_shown(pilot, f"✗ {killed} down")
        # The status line says why the run may go on with little moving.
        await until_shown(pilot, f"running, kafka-broker-{killed} down")
        await until(
            pilot,
            lambda: screen.kafka.partitions[min(before)].leader not in (killed, -1),
            "a new leader for the partition",
        )
        topic, partition = min(before)
        leader = screen.kafka.partitions[(topic, partition)].leader
        await until_shown(pilot, f"{topic}:{partition} leader {leader}")
        screen.apply_speed(None)  # flat out to the end
        await until(pilot, lambda: screen.result is not None, "the run's end", timeout=120)
        assert any(o.kind == "fault_injected" for o in screen.result.observations)  # type: ignore[union-attr]
        await until_shown(pilot, "final", "lost")


async def test_the_ledger_grows_live_with_the_expectations(
    make: Callable[..., MqlabApp],
) -> None:
    # A quarter of real time: the writer's 30 sends take 8 s, not 2 s, so a test held back by
    # a loaded machine still sees the count drawn before the last send (at 1x it once read
    # the count after the writer had finished, and waited for more in vain).
    app = make(speed=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_scenario(find("kafka-leader-failover"), autostart=True)
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
        screen = _scenario_screen(app)
        await until_shown(pilot, "so far (the run is going on)")
        await until(pilot, lambda: screen.picture.summary.produced >= 3, "3 produced drawn")
        first = screen.picture.summary.produced
        assert first < 30, "the writer had already finished: nothing left to see grow"
        await until_shown(pilot, "not processed (yet)", "✓ 0")  # duplicated: 0 expected
        await until(pilot, lambda: screen.picture.summary.produced > first, "more produced")
        await pilot.press("space")
        await until_shown(pilot, "paused")
        await pilot.press("space")
        await until_shown(pilot, "running")
        await pilot.press("escape")  # back: the run is stopped and cleaned up
        await until(pilot, lambda: not isinstance(app.screen, ScenarioScreen), "the map")
        assert screen.live is not None
        assert screen.live.finished


async def test_a_snapshot_arriving_after_the_run_ended_is_not_drawn(
    make: Callable[..., MqlabApp],
) -> None:
    app = make(speed=None)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_scenario(find("kafka-leader-failover"), autostart=True)
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
        screen = _scenario_screen(app)
        await until(pilot, lambda: screen.result is not None, "the run's end", timeout=120)
        ended = dict(screen.kafka.brokers)
        assert ended
        assert all(ended.values())  # the run restarted the broker it killed
        every_broker_down = KafkaSnapshot(
            brokers=tuple(KafkaNode(node, "sim", 0, False) for node in ended),
            topics=(),
            groups=(),
            controller_id=0,
        )
        screen.on_snapshot_taken(SnapshotTaken(every_broker_down))  # polled before the end
        assert screen.kafka.brokers == ended


async def test_quit_stops_a_running_scenario_first(make: Callable[..., MqlabApp]) -> None:
    app = make(speed=0.5)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_scenario(find("kafka-leader-failover"), autostart=True)
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
        screen = _scenario_screen(app)
        await until(pilot, lambda: screen.feed.received > 0, "the run to start")
        await pilot.press("q")
        await until(pilot, lambda: screen.live is not None and screen.live.finished, "the stop")
    assert app.return_code == 0


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, RunResult]:
    """A trace of kafka-leader-failover on the simulator, and the run's result."""
    trace = tmp_path / "run.jsonl"
    return trace, RunSession(find("kafka-leader-failover"), "sim", record=trace).run_sync()


async def test_replay_at_a_chosen_pace_with_pause_and_step(
    make: Callable[..., MqlabApp], recorded: tuple[Path, RunResult]
) -> None:
    trace, result = recorded
    app = make(replay=trace, speed=0)  # paused from the start
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen), "the replay")
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await until_shown(pilot, "paused · 0/")
        await pilot.press("n")
        await until(pilot, lambda: screen.player.position == 1, "one step")
        await pilot.press("n")
        await until(pilot, lambda: screen.player.position == 2, "a second step")
        await until_shown(pilot, "run kafka-leader-failover")
        await pilot.press("space")  # play on, at the last pace (1x)
        await until(pilot, lambda: screen.player.position > 2, "playing on")
        screen.apply_speed(None)
        await until(pilot, lambda: screen.result is not None, "the replay's end")
        assert screen.result is not None
        assert screen.result.to_json() == result.to_json()
        await until_shown(pilot, "PASS on sim:kafka")


async def test_broker_picker_greys_out_what_the_lab_lacks(
    make: Callable[..., MqlabApp],
) -> None:
    findings = [
        Finding("kafka installed", "ok", "3.9.1"),
        Finding(
            "kafka running",
            "down",
            "kafka-broker-2: killed",
            "mqlab lab fault restart kafka-broker-2",
        ),
        Finding(
            "rabbitmq installed",
            "missing",
            "rabbitmq-server not installed",
            "mqlab lab install rabbitmq",
        ),
        Finding("sqs installed", "ok", "5.2.1"),
        Finding("sqs running", "ok", "127.0.0.1:14566"),
        Finding("nats installed", "ok", "2.15.1"),
    ]
    app = make()
    chosen: list[str | None] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await until_shown(pilot, "Every kind of step")
        app.push_screen(BrokerPicker("sim", findings), chosen.append)
        await until_shown(
            pilot,
            "Where should scenarios run?",
            "kafka  unavailable: kafka-broker-2: killed",
            "fix: mqlab lab fault restart kafka-broker-2",
            "fix: mqlab lab install rabbitmq",
            "nats  unavailable: not running",
            "the lab's real broker (up)",  # sqs
        )
        picker = app.screen
        assert isinstance(picker, BrokerPicker)
        disabled = {c.name for c in picker.choices if not c.available}
        assert disabled == {"kafka", "rabbitmq", "nats"}
        await pilot.press("down")  # the cursor skips the greyed-out ones
        await pilot.press("enter")
        await until(pilot, lambda: bool(chosen), "the choice")
    assert chosen == ["sqs"]


async def test_help_screen_opens_and_closes(make: Callable[..., MqlabApp]) -> None:
    app = make()
    async with app.run_test(size=(80, 24)) as pilot:
        await until_shown(pilot, "Every kind of step")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        await until_shown(pilot, "Getting around")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")


async def test_layout_stacks_when_narrow_and_spreads_when_wide(
    make: Callable[..., MqlabApp],
) -> None:
    app = make()
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_scenario(find("kafka-leader-failover"))
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
        screen = app.screen
        await until(pilot, lambda: screen.has_class("narrow"), "the narrow layout")
        timeline = screen.query_one(Timeline)
        assert timeline.size.width >= 78  # the timeline spans the width, the tabs below it
        await pilot.resize_terminal(140, 40)
        await until(pilot, lambda: not screen.has_class("narrow"), "the wide layout")
        await until(pilot, lambda: timeline.size.width < 80, "side by side")
        await until_shown(pilot, "Ledger")  # the tabs' first title, beside the timeline


async def test_a_burst_is_drawn_a_frame_at_a_time(make: Callable[..., MqlabApp]) -> None:
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_scenario(find("kafka-leader-failover"))
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
        screen = _scenario_screen(app)
        await until_shown(pilot, "Press a number to predict")
        burst = 50_000
        for index in range(burst):
            screen.feed(
                Produced(
                    at=index * 1e-5,
                    broker="sim:kafka",
                    destination="mq-sim001-transfers",
                    message_id=f"m{index:05d}",
                    partition=0,
                    position=index,
                )
            )
        assert not screen.ledger_settled  # a burst waits in the feed, uncounted
        screen.frame()  # one frame takes the whole burst
        assert not screen.ledger_settled  # taken, and its count is due
        assert screen.feed.received == burst
        assert screen.kafka.partitions[("transfers", 0)].log_end == burst  # every one folded
        timeline = screen.query_one(Timeline)
        assert timeline.lines_shown <= LINES_PER_FRAME  # but only the newest drawn
        await until_shown(pilot, "more observations (counted in the ledger)")
        # The ledger is counted off the UI thread and drawn a frame or two later.
        await until(pilot, lambda: screen.ledger_settled, "the ledger counted and drawn")
        assert screen.picture.summary.produced == burst


async def test_a_pattern_scenario_draws_its_saga(make: Callable[..., MqlabApp]) -> None:
    app = make(speed=None)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_scenario(find("saga-crash-recovery"), autostart=True)
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
        screen = _scenario_screen(app)
        await until(pilot, lambda: screen.result is not None, "the run's end", timeout=120)
        assert screen.sagas.sagas["order-1"].recovered == "resume"
        await pilot.press("p")
        await until_shown(pilot, "recovered: resume", "✓ confirm_order")
        await pilot.press("v")
        await until_shown(pilot, "runs a pattern against postgres")
