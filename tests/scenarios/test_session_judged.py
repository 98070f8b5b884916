"""RunSession.request_judged: another thread reads the run's own judge while the run goes on,
on the run's thread, without changing the run."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from mqlab.scenarios.library import find
from mqlab.scenarios.session import RunSession
from mqlab.scenarios.verdict import RunJudge, RunResult
from tests.waiting import INTERVAL, answer_unless_ended

pytestmark = pytest.mark.sim


def _produced_so_far(judge: RunJudge) -> tuple[int, bool]:
    """(produced so far, whether this ran on the run's own thread)."""
    on_run_thread = threading.current_thread() is not threading.main_thread()
    return judge.ledger.summary().produced, on_run_thread


def test_reads_follow_the_run_and_never_change_it() -> None:
    scenario = find("kafka-leader-failover")
    undisturbed = RunSession(scenario, "sim", seed=5).run_sync()
    session = RunSession(scenario, "sim", seed=5, speed=20.0)
    results: list[RunResult] = []
    runner = threading.Thread(target=lambda: results.append(session.run_sync()))
    runner.start()
    assert session.wait_started(30)
    reads: list[tuple[int, bool]] = []
    deadline = time.monotonic() + 60
    while runner.is_alive() and time.monotonic() < deadline:
        read = session.request_judged(_produced_so_far)
        value = answer_unless_ended(read, lambda: not runner.is_alive(), 60, "a read")
        if value is not None:
            reads.append(value)
        # A UI's pace, reads between frames: back to back they starved the run of the GIL and
        # stretched its 0.7 s to 10 s. The join ends at once when the run does.
        runner.join(INTERVAL)
    runner.join(60)
    assert results, "the run did not finish"
    watched = results[0]
    assert reads, "no read while the run was going on"
    assert all(on_run_thread for _, on_run_thread in reads)
    produced = [count for count, _ in reads]
    assert produced == sorted(produced)  # the ledger only grows
    assert 0 < produced[-1] <= watched.summary.produced
    # Looking must not change what happens: same seed, same result.
    assert watched.to_json() == undisturbed.to_json()


def test_nothing_to_read_outside_a_run() -> None:
    session = RunSession(find("kafka-leader-failover"), "sim")
    assert session.request_judged(_produced_so_far).result(timeout=1) is None


def test_a_reader_that_fails_hands_its_error_back() -> None:
    session = RunSession(find("kafka-leader-failover"), "sim", speed=2.0)

    def run_until_cancelled() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            session.run_sync()

    runner = threading.Thread(target=run_until_cancelled)
    runner.start()
    try:
        assert session.wait_started(30)

        def broken(judge: RunJudge) -> int:
            raise LookupError("no such row")

        with pytest.raises(LookupError, match="no such row"):
            session.request_judged(broken).result(timeout=10)
    finally:
        session.cancel()
        runner.join(60)
    assert not runner.is_alive()
