"""Where the screens' observations come from: live runs, trace players, paces, themes, the
broker picker's choices (no terminal)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

from mqlab.lab.doctor import Finding
from mqlab.observe.bus import Recorder
from mqlab.scenarios.library import find
from mqlab.scenarios.session import RunSession
from mqlab.tui import runs
from mqlab.tui.runs import LiveRun, TracePlayer, faster, slower, speed_label
from mqlab.tui.screens.broker_picker import broker_choices
from mqlab.tui.theme import default_theme

pytestmark = pytest.mark.sim


def _wait(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    RunSession(find("kafka-partition-ordering"), "sim", record=path).run_sync()
    return path


def test_a_paused_trace_plays_one_observation_per_step(trace: Path) -> None:
    player = TracePlayer(trace, speed=0)
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(player.run()))
    thread.start()
    try:
        assert player.feed.take().count == 0  # paused: nothing plays by itself
        player.step()
        _wait(lambda: player.position == 1, "one step")
        player.step()
        player.step()
        _wait(lambda: player.position == 3, "two more steps")
        assert player.feed.take().newest[0].kind == "run_started"
        player.set_speed(None)
        thread.join(30)
    finally:
        player.cancel()
        thread.join(30)
    assert player.position == len(player.observations)
    assert results[0] is not None


def test_a_cancelled_replay_ends_without_a_result(trace: Path) -> None:
    player = TracePlayer(trace, speed=0)
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(player.run()))
    thread.start()
    player.cancel()
    thread.join(30)
    assert results == [None]
    assert player.finished


def test_a_live_run_cancelled_before_it_began_does_not_begin() -> None:
    live = LiveRun(find("kafka-leader-failover"), "sim", speed=0.2)
    live.cancel()
    assert live.run() is None
    assert live.finished
    assert live.feed.take().count == 0


def test_a_live_run_cancelled_while_it_runs_stops_after_its_cleanup() -> None:
    # A quarter of real time: the 30 sends (at 15 a second) take 8 s, so the cancel lands
    # before the last one even when a loaded machine holds this thread back for seconds (at
    # 1x the whole script took 2 s, and a late cancel would find it done).
    live = LiveRun(find("kafka-leader-failover"), "sim", speed=0.25)
    recorder = Recorder()
    live.session.subscribe(recorder)
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(live.run()))
    thread.start()
    _wait(lambda: len(live.feed) > 5, "the run to produce")
    live.cancel()
    live.cancel()  # a second cancel is not sent: it would interrupt the cleanup
    thread.join(60)
    assert results == [None]
    assert live.feed.take().newest[-1].kind == "run_ended"
    kinds = [o.kind for o in recorder.observations]
    assert kinds[-1] == "run_ended"  # the cleanup ran to its end
    assert kinds.count("produced") < 30  # it stopped before the end of the script


def test_a_live_run_is_paced_and_snapshotted() -> None:
    live = LiveRun(find("kafka-leader-failover"), "sim", speed=5.0)
    snapshots: list[object] = []
    runner = threading.Thread(target=live.run)
    poller = threading.Thread(
        target=live.poll_snapshots, args=(lambda snapshot, _: snapshots.append(snapshot), 0.05)
    )
    runner.start()
    poller.start()
    runner.join(120)
    poller.join(30)
    assert live.finished
    assert snapshots
    assert live.feed.take().newest[-1].kind == "run_ended"


def test_the_poller_stops_with_the_run_even_when_a_request_is_never_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that ends before getting to a snapshot request leaves it pending for ever: the
    poller must notice the end, not wait out its patience (here ten minutes)."""
    monkeypatch.setattr(runs, "SNAPSHOT_PATIENCE_SECONDS", 600.0)
    live = LiveRun(find("kafka-leader-failover"), "sim", speed=5.0)
    asked: list[concurrent.futures.Future[object | None]] = []

    def never_answered() -> concurrent.futures.Future[object | None]:
        asked.append(concurrent.futures.Future())
        return asked[-1]

    monkeypatch.setattr(live.session, "request_snapshot", never_answered)
    poller = threading.Thread(target=live.poll_snapshots, args=(lambda *_: None, 0.05))
    poller.start()
    _wait(lambda: bool(asked), "the first snapshot request")
    live.run()
    poller.join(60)
    assert not poller.is_alive()
    assert len(asked) == 1
    assert asked[0].cancelled()  # given up on, not left behind


def test_paces_step_up_and_down() -> None:
    assert faster(1.0) == 2.0
    assert slower(1.0) == 0.5
    assert faster(50.0) is None  # past the fastest pace: flat out
    assert slower(None) == 50.0
    assert slower(0.25) == 0.25
    assert speed_label(0) == "paused"
    assert speed_label(None) == "flat out"
    assert speed_label(2.0) == "2x"


@pytest.mark.parametrize(
    ("environment", "theme"),
    [
        ({}, "mqlab-dark"),
        ({"COLORFGBG": "0;15"}, "mqlab-light"),
        ({"COLORFGBG": "15;0"}, "mqlab-dark"),
        ({"COLORFGBG": "0;default;7"}, "mqlab-light"),
        ({"MQLAB_THEME": "light", "COLORFGBG": "15;0"}, "mqlab-light"),
        ({"MQLAB_THEME": "dark", "COLORFGBG": "0;15"}, "mqlab-dark"),
    ],
)
def test_the_theme_follows_the_terminal(environment: dict[str, str], theme: str) -> None:
    assert default_theme(environment) == theme


def test_broker_choices_from_the_doctor() -> None:
    findings = [
        Finding("kafka installed", "ok", "3.9.1"),
        Finding("kafka running", "ok", "127.0.0.1:19091"),
        Finding(
            "kafka reachable", "down", "proxy port 19191 does not answer", "mqlab lab up kafka"
        ),
        Finding("nats installed", "ok", "2.15.1"),
        Finding("nats running", "ok", "127.0.0.1:14232"),
    ]
    choices = {choice.name: choice for choice in broker_choices(findings)}
    assert choices["sim"].available
    assert not choices["kafka"].available
    assert choices["kafka"].fix == "mqlab lab up kafka"
    assert choices["nats"].available
    assert not choices["rabbitmq"].available  # the doctor says nothing about it: not up
    assert all(not c.available for c in broker_choices(None) if c.name != "sim")
