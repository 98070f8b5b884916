"""The shared waiting helpers fail with what they waited for, and return as soon as it holds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools

import pytest

from mqlab.observe.bus import Recorder
from mqlab.observe.events import BrokerDown, BrokerUp
from tests.waiting import answer_unless_ended, eventually, first_observation, wait_until


def test_wait_until_returns_the_first_truthy_answer() -> None:
    answers = iter([0, "", "ready"])
    assert wait_until(lambda: next(answers), 5.0, "an answer", interval=0) == "ready"


def test_wait_until_fails_with_the_description_and_the_last_answer() -> None:
    depth = 3
    with pytest.raises(
        pytest.fail.Exception,
        match=r"not within 0.1s: the queue empty \(depth 3\) \(last seen: False\)",
    ):
        wait_until(
            lambda: depth == 0, 0.1, lambda: f"the queue empty (depth {depth})", interval=0.01
        )


def test_wait_until_retries_on_the_given_errors_only() -> None:
    calls = itertools.count()

    def flaky() -> bool:
        if next(calls) < 2:
            raise ConnectionError("not yet")
        return True

    assert wait_until(flaky, 5.0, "a connection", interval=0, retry_on=(ConnectionError,))
    with pytest.raises(ValueError, match="broken"):
        wait_until(lambda: int("broken"), 5.0, "a number", retry_on=(ConnectionError,))


async def test_eventually_accepts_async_probes_and_reports_errors_seen() -> None:
    answers = iter([1, 2, 3])

    async def probe() -> int:
        return next(answers)

    assert await eventually(probe, 5.0, "three", accept=lambda n: n == 3, interval=0) == 3

    async def refused() -> int:
        raise ConnectionRefusedError("port 1")

    with pytest.raises(pytest.fail.Exception, match="last seen: ConnectionRefusedError: port 1"):
        await eventually(refused, 0.1, "a broker", interval=0.01, retry_on=(OSError,))


async def test_first_observation_waits_for_one_recorded_later() -> None:
    recorder = Recorder()
    up = BrokerUp(at=1.0, broker="kafka", node="kafka-broker-2", detail="back")

    async def watcher_reports_later() -> None:
        await asyncio.sleep(0.05)
        recorder.observations.append(
            BrokerDown(at=0.5, broker="kafka", node="kafka-broker-1", detail="gone")
        )
        recorder.observations.append(up)

    reporting = asyncio.create_task(watcher_reports_later())
    found = await first_observation(recorder, BrokerUp, 5.0, lambda o: o.node == "kafka-broker-2")
    assert found is up
    await reporting
    with pytest.raises(
        pytest.fail.Exception, match=r"a matching BrokerUp; recorded \['broker_down', 'broker_up'\]"
    ):
        await first_observation(recorder, BrokerUp, 0.1, lambda o: o.node == "kafka-broker-3")


def test_answer_unless_ended_gives_the_answer_or_none_once_the_run_ended() -> None:
    answered: concurrent.futures.Future[str] = concurrent.futures.Future()
    answered.set_result("snapshot")
    assert answer_unless_ended(answered, lambda: True, 5.0, "a snapshot") == "snapshot"
    pending: concurrent.futures.Future[str] = concurrent.futures.Future()
    assert answer_unless_ended(pending, lambda: True, 5.0, "a snapshot") is None
    with pytest.raises(pytest.fail.Exception, match=r"not within 0.1s: a snapshot"):
        answer_unless_ended(pending, lambda: False, 0.1, "a snapshot")
