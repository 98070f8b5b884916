"""RunSession.snapshot: the broker's state while a run goes on, without changing the run."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mqlab.brokers.kafka.api import KafkaSnapshot
from mqlab.brokers.rabbitmq.api import RabbitSnapshot
from mqlab.scenarios.library import find
from mqlab.scenarios.session import RunSession
from mqlab.scenarios.verdict import RunResult
from tests.waiting import answer_unless_ended

pytestmark = pytest.mark.sim


def _poll_while_running(session: RunSession) -> tuple[RunResult, list[object]]:
    """Run ``session`` on a thread and take snapshots from this one until it ends."""
    results: list[RunResult] = []
    runner = threading.Thread(target=lambda: results.append(session.run_sync()))
    runner.start()
    assert session.wait_started(30)
    snapshots: list[object] = []
    deadline = time.monotonic() + 60
    while runner.is_alive() and time.monotonic() < deadline:
        snapshot = answer_unless_ended(
            session.request_snapshot(), lambda: not runner.is_alive(), 60, "a snapshot"
        )
        if snapshot is not None:
            snapshots.append(snapshot)
    runner.join(60)
    assert results, "the run did not finish"
    return results[0], snapshots


@pytest.mark.parametrize(
    ("scenario_id", "snapshot_type"),
    [("kafka-leader-failover", KafkaSnapshot), ("rabbitmq-priority-queue", RabbitSnapshot)],
)
def test_snapshots_show_the_run_and_never_change_it(scenario_id: str, snapshot_type: type) -> None:
    scenario = find(scenario_id)
    undisturbed = RunSession(scenario, "sim", seed=3).run_sync()
    watched, snapshots = _poll_while_running(RunSession(scenario, "sim", seed=3, speed=20.0))
    assert snapshots, "no snapshot while the run was going on"
    assert all(isinstance(s, snapshot_type) for s in snapshots)
    assert any(getattr(s, "topics", None) or getattr(s, "queues", None) for s in snapshots)
    # Looking must not change what happens: same seed, same result, observation for observation.
    assert watched.to_json() == undisturbed.to_json()
    assert [o.to_dict() for o in watched.observations] == [
        o.to_dict() for o in undisturbed.observations
    ]


def test_no_snapshot_outside_a_run() -> None:
    session = RunSession(find("kafka-leader-failover"), "sim")
    assert session.request_snapshot().result(timeout=1) is None


def test_a_snapshot_asked_for_as_the_runs_loop_closes_holds_none() -> None:
    """The run's loop can close between a request's check of it and the request itself (the
    run ended meanwhile): the answer is None, as after the run, not the loop's RuntimeError."""
    session = RunSession(find("kafka-leader-failover"), "sim")
    closed = asyncio.new_event_loop()
    closed.close()
    session._loop = closed  # the loop the run had when the request looked, closed since
    assert session.request_snapshot().result(timeout=1) is None
    assert session.request_judged(lambda judge: 1).result(timeout=1) is None
