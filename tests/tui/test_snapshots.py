"""Snapshot tests: every screen and live widget at 80x24 and 120x40.

What could differ between two runs is frozen: the theme (``MQLAB_THEME``), the seed (0), the
pace (flat out, so a run's end is its whole deterministic trace), and the broker snapshots,
which a live run polls at moments that vary: each test that shows a live view applies a fixed
snapshot once the run and its pollers have ended. Nothing on screen shows a wall clock, and no
screen has a blinking cursor. Update with ``pytest tests/tui --snapshot-update`` and look at
the SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from mqlab.brokers.kafka.api import (
    GroupInfo,
    GroupMember,
    GroupOffset,
    KafkaNode,
    PartitionInfo,
    TopicInfo,
    TopicPartition,
)
from mqlab.brokers.rabbitmq.api import BindingInfo, ExchangeInfo, QueueInfo
from mqlab.lab.doctor import Finding
from mqlab.observe.events import (
    AggregateLoaded,
    CompensationSucceeded,
    EventAppended,
    Observation,
    RetryAttempted,
    RetryGaveUp,
    RetryScheduled,
    SagaEnded,
    SagaParked,
    SagaStarted,
    SagaStepFailed,
    SagaStepSucceeded,
)
from mqlab.scenarios.library import find
from mqlab.scenarios.session import RunSession
from mqlab.tui.app import MqlabApp
from mqlab.tui.models.snapshots import KafkaSnapshot, RabbitSnapshot
from mqlab.tui.screens.broker_picker import BrokerPicker
from mqlab.tui.screens.fault_menu import FaultMenu
from mqlab.tui.screens.lesson import LessonScreen
from mqlab.tui.screens.replay import ReplayScreen
from mqlab.tui.screens.scenario import ScenarioScreen
from tests.tui.conftest import until, until_shown

pytestmark = pytest.mark.sim

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
Steer = Callable[[Pilot[object]], Awaitable[None]]


def _kafka_snapshot() -> KafkaSnapshot:
    topic = "mq-sim001-transfers"
    return KafkaSnapshot(
        brokers=(
            KafkaNode(1, "sim", 0, True),
            KafkaNode(2, "sim", 0, False),
            KafkaNode(3, "sim", 0, True),
        ),
        topics=(TopicInfo(topic, (PartitionInfo(0, 1, (2, 1, 3), (1, 3), 0, 30, 30),), 3),),
        groups=(
            GroupInfo(
                "mq-sim001-transfers-group",
                "Stable",
                (GroupMember("reader-1", "reader", (TopicPartition(topic, 0),)),),
                (GroupOffset(topic, 0, 24, 30),),
            ),
        ),
        controller_id=0,
    )


def _rabbit_snapshot() -> RabbitSnapshot:
    return RabbitSnapshot(
        exchanges=(ExchangeInfo("mq-sim001-jobs", "direct"),),
        bindings=(BindingInfo("mq-sim001-jobs", "mq-sim001-jobs", "jobs"),),
        queues=(
            QueueInfo(
                "mq-sim001-jobs", 4, 2, 1, max_priority=10, dead_letter_exchange="mq-sim001-dlx"
            ),
        ),
    )


def _patterns() -> list[Observation]:
    observations: list[Observation] = []
    for client in range(3):
        name = f"client-{client}"
        for call in range(1, 4):
            at = client * 0.1 + call * 0.5
            outcome = "succeeded" if call == 3 and client != 2 else "failed"
            observations.append(
                RetryAttempted(
                    at=at, broker="patterns", message_id=name, call=call, outcome=outcome
                )
            )
            if outcome == "failed" and call < 3:
                delay = 0.2 * 2**call + client * 0.05
                observations.append(
                    RetryScheduled(
                        at=at,
                        broker="patterns",
                        message_id=name,
                        attempt=call - 1,
                        delay=delay,
                        strategy="full",
                    )
                )
        if client == 2:
            observations.append(
                RetryGaveUp(
                    at=1.8,
                    broker="patterns",
                    message_id=name,
                    reason="attempts",
                    calls=3,
                    elapsed=1.6,
                )
            )
    steps = ("reserve", "charge", "ship")
    observations += [
        SagaStarted(at=2, broker="patterns", saga_id="order-1", saga="checkout", steps=steps),
        SagaStepSucceeded(at=2.1, broker="patterns", saga_id="order-1", step="reserve"),
        SagaStepSucceeded(at=2.2, broker="patterns", saga_id="order-1", step="charge"),
        SagaStepFailed(
            at=2.3, broker="patterns", saga_id="order-1", step="ship", error="no courier"
        ),
        CompensationSucceeded(
            at=2.4, broker="patterns", saga_id="order-1", step="charge", compensation_id="c1"
        ),
        CompensationSucceeded(
            at=2.5, broker="patterns", saga_id="order-1", step="reserve", compensation_id="c2"
        ),
        SagaEnded(
            at=2.6, broker="patterns", saga_id="order-1", outcome="compensated", failed_step="ship"
        ),
        SagaStarted(at=3, broker="patterns", saga_id="order-2", saga="checkout", steps=steps),
        SagaStepSucceeded(at=3.1, broker="patterns", saga_id="order-2", step="reserve"),
        SagaStepFailed(
            at=3.2, broker="patterns", saga_id="order-2", step="charge", error="card declined"
        ),
        SagaParked(
            at=3.3,
            broker="patterns",
            saga_id="order-2",
            step="reserve",
            reason="release keeps failing",
        ),
    ]
    for version, event in enumerate(["Opened", "Deposited", "Withdrawn", "Deposited"], start=1):
        observations.append(
            EventAppended(
                at=4 + version,
                broker="patterns",
                aggregate_id="account-7",
                event_type=event,
                version=version,
            )
        )
    observations.append(
        AggregateLoaded(
            at=9,
            broker="patterns",
            aggregate_id="account-7",
            version=4,
            events_replayed=2,
            snapshot_version=2,
        )
    )
    return observations


async def _settled(pilot: Pilot[object], selector: str) -> None:
    """Wait until a widget's content stops growing (a Markdown widget lays out its blocks
    over several refreshes, and the scrollbar follows)."""
    widget = pilot.app.screen.query_one(selector)
    sizes: list[object] = []

    def stable() -> bool:
        sizes.append(widget.virtual_size)
        return len(sizes) >= 5 and len(set(map(str, sizes[-5:]))) == 1

    await until(pilot, stable, f"{selector} to settle")


async def _course_map(pilot: Pilot[object]) -> None:
    """Wait until the course map is whole: the lessons load after the first paint, and the
    details pane is laid out a frame after its text changed."""
    await until_shown(pilot, "○ Every kind of step", "enter: open it where you stopped")


async def _finished_run(pilot: Pilot[object], scenario_id: str, tab: str, snapshot: object) -> None:
    app = pilot.app
    assert isinstance(app, MqlabApp)
    await _course_map(pilot)
    app.open_scenario(find(scenario_id), autostart=True)
    await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario")
    screen = app.screen
    assert isinstance(screen, ScenarioScreen)
    await until(pilot, lambda: screen.result is not None, "the run's end", timeout=120)
    await until(pilot, lambda: not any(w.is_running for w in screen.workers), "the workers' end")
    await until(pilot, lambda: screen.ledger_settled, "the final ledger drawn")
    screen.apply_snapshot(snapshot)  # snapshots polled during the run are not drawn after it
    await pilot.press(tab)


async def _lesson_step(
    pilot: Pilot[object], kind: str, keys: tuple[str, ...] = (), shown: tuple[str, ...] = ()
) -> None:
    """Open the fixture lesson at the step of ``kind``, press ``keys``, wait until every one
    of ``shown`` is on screen (a run's reveal can take a while), then until the step's layout
    has settled."""
    app = pilot.app
    await _course_map(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, LessonScreen), "the lesson")
    screen = app.screen
    assert isinstance(screen, LessonScreen)
    await until(pilot, lambda: screen.view is not None, "the first step")
    while screen.player.current.kind != kind:
        await pilot.press("right")
        await until(
            pilot,
            lambda: screen.view is not None and screen.view.play is screen.player.current,
            "the next step",
        )
    for key in keys:
        await pilot.press(key)
    if shown:
        await until_shown(pilot, *shown, timeout=120)
    await _settled(pilot, "#step")


LIBRARY_SCENARIOS = (
    "at-least-once-crash",
    "kafka-leader-failover",
    "kafka-partition-ordering",
    "rabbitmq-priority-queue",
    "sqs-fifo-group-order",
    "nats-ack-wait-max-deliver",
)


def _library_content(folder: Path) -> Path:
    """A content dir whose scenarios are :data:`LIBRARY_SCENARIOS` (links to the real files)."""
    content = folder / "library-content"
    scenarios = content / "scenarios"
    scenarios.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2] / "scenarios"
    for name in LIBRARY_SCENARIOS:
        link = scenarios / f"{name}.yaml"
        if not link.exists():
            link.symlink_to(root / f"{name}.yaml")
    return content


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    RunSession(find("kafka-leader-failover"), "sim", record=path).run_sync()
    return path


def _steer_cases(
    trace_path: Callable[[], Path],
) -> dict[str, tuple[dict[str, object], Steer | None]]:
    async def course_map(pilot: Pilot[object]) -> None:
        await _course_map(pilot)

    async def library(pilot: Pilot[object]) -> None:
        await _course_map(pilot)
        await pilot.press("s")
        await until_shown(pilot, "at-least-once-crash", "enter: open it")  # list and details

    async def scenario_intro(pilot: Pilot[object]) -> None:
        app = pilot.app
        assert isinstance(app, MqlabApp)
        await _course_map(pilot)
        app.open_scenario(find("kafka-leader-failover"))
        await until_shown(pilot, "Press a number to predict")

    async def ledger(pilot: Pilot[object]) -> None:
        await _finished_run(pilot, "kafka-leader-failover", "l", _kafka_snapshot())
        await until_shown(pilot, "final")

    async def kafka_view(pilot: Pilot[object]) -> None:
        await _finished_run(pilot, "kafka-leader-failover", "v", _kafka_snapshot())
        await until_shown(pilot, "controller 0")

    async def rabbitmq_view(pilot: Pilot[object]) -> None:
        await _finished_run(pilot, "rabbitmq-priority-queue", "v", _rabbit_snapshot())
        await until_shown(pilot, "exchange jobs")

    async def patterns(pilot: Pilot[object]) -> None:
        app = pilot.app
        assert isinstance(app, MqlabApp)
        await scenario_intro(pilot)
        screen = app.screen
        assert isinstance(screen, ScenarioScreen)
        for observation in _patterns():
            screen.feed(observation)
        await pilot.press("p")
        await until_shown(pilot, "PARKED")

    async def faults(pilot: Pilot[object]) -> None:
        await scenario_intro(pilot)
        pilot.app.push_screen(FaultMenu("kafka", ["reader"]))
        await until_shown(pilot, "Break something")

    async def replay(pilot: Pilot[object]) -> None:
        app = pilot.app
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen), "the replay")
        for _ in range(6):
            await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await until(pilot, lambda: screen.player.position == 6, "six steps")
        await until(pilot, lambda: screen.ledger_settled, "the ledger of six counted and drawn")
        await until_shown(pilot, "paused · 6/", "so far (the run is going on)")

    async def picker(pilot: Pilot[object]) -> None:
        await _course_map(pilot)
        findings = [
            Finding("kafka installed", "ok", "3.9.1"),
            Finding("kafka running", "ok", "127.0.0.1:19091"),
            Finding(
                "rabbitmq installed",
                "missing",
                "rabbitmq-server is not installed",
                "mqlab lab install rabbitmq",
            ),
            Finding("sqs installed", "ok", "5.2.1"),
            Finding("sqs running", "down", "sqs: killed", "mqlab lab fault restart sqs"),
            Finding("nats installed", "ok", "2.15.1"),
            Finding("nats running", "ok", "127.0.0.1:14232"),
        ]
        pilot.app.push_screen(BrokerPicker("sim", findings))
        await until_shown(pilot, "Where should scenarios run?")

    async def help_screen(pilot: Pilot[object]) -> None:
        await _course_map(pilot)
        await pilot.press("question_mark")
        await until_shown(pilot, "Getting around")
        await _settled(pilot, "#help-text")

    async def read(pilot: Pilot[object]) -> None:
        # The diagram is drawn in a worker: its caption and its first line.
        await _lesson_step(pilot, "read", shown=("drawn from the simulator's cluster", "CLUSTER"))

    async def quiz_wrong(pilot: Pilot[object]) -> None:
        await _lesson_step(pilot, "quiz", ("3",), shown=("Not quite.",))

    async def quiz_right(pilot: Pilot[object]) -> None:
        await _lesson_step(pilot, "quiz", ("1",), shown=("Right.",))

    async def predict(pilot: Pilot[object]) -> None:
        await _lesson_step(pilot, "predict", ("2",), shown=("prediction held",))

    async def experiment(pilot: Pilot[object]) -> None:
        await _lesson_step(pilot, "experiment", ("1",), shown=("10 done",))

    async def exercise(pilot: Pilot[object]) -> None:
        await _lesson_step(pilot, "exercise", shown=("mqlab check full-jitter",))

    async def decision(pilot: Pilot[object]) -> None:
        await _lesson_step(pilot, "decision", ("2",), shown=("Do you run on AWS?",))

    async def decision_leaf(pilot: Pilot[object]) -> None:
        await _lesson_step(pilot, "decision", ("2", "1"), shown=("Recommendation: SQS",))

    no_options: dict[str, object] = {}
    return {
        "course_map": (no_options, course_map),
        "library": (no_options, library),
        "scenario_intro": (no_options, scenario_intro),
        "scenario_ledger": ({"speed": None}, ledger),
        "scenario_kafka_view": ({"speed": None}, kafka_view),
        "scenario_rabbitmq_view": ({"speed": None}, rabbitmq_view),
        "scenario_patterns": (no_options, patterns),
        "fault_menu": (no_options, faults),
        "replay": ({"speed": 0, "replay": trace_path}, replay),
        "broker_picker": (no_options, picker),
        "help": (no_options, help_screen),
        "lesson_read": (no_options, read),
        "lesson_quiz_wrong": (no_options, quiz_wrong),
        "lesson_quiz_right": (no_options, quiz_right),
        "lesson_predict": (no_options, predict),
        "lesson_experiment": (no_options, experiment),
        "lesson_exercise": (no_options, exercise),
        "lesson_decision": (no_options, decision),
        "lesson_decision_leaf": (no_options, decision_leaf),
    }


CASES = list(_steer_cases(Path).keys())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES)
def test_screen(
    case: str,
    size: tuple[int, int],
    make: Callable[..., MqlabApp],
    trace: Path,
    snap_compare: Callable[..., bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case == "library":
        # A fixed set of scenarios: the list must not change whenever one is added.
        monkeypatch.setenv("MQLAB_CONTENT_DIR", str(_library_content(trace.parent)))
    options, steer = _steer_cases(lambda: trace)[case]
    options = {key: (value() if callable(value) else value) for key, value in options.items()}
    assert snap_compare(make(**options), terminal_size=size, run_before=steer)
