"""A consume step's ``idle`` means "no messages while the broker can be reached".

A consumer cut off from its broker receives nothing, but its channel is not empty: the time
it is held up (a connection down and reconnecting, a Kafka member that knows of records it has
not been given) does not count as idle, so a cut longer than ``idle`` does not end it before
the messages come back (the race a fresh-clone CI run hit on RabbitMQ: lost 18 of 30). The
step's ``max_time`` still ends it when the broker never returns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mqlab.course.scenario import Consume
from mqlab.observe.bus import ObservationBus
from mqlab.scenarios.consumer import consume_loop
from mqlab.scenarios.drivers.base import ConsumerSession, Incoming
from mqlab.scenarios.library import find
from mqlab.scenarios.session import run_scenario
from tests.scenarios._cases import explain_failure

SYSTEMS = ("kafka", "rabbitmq", "sqs", "nats")

LONG_CUT = """\
format_version: 1
id: long-cut
title: A cut four times longer than the consumer's idle window
topic: network
summary: The consumer gives up after 1 s without messages; the network is cut for 4 s.
brokers: [kafka, rabbitmq, sqs, nats, sim]
channel:
  name: telemetry
  sqs: {visibility_timeout: 2}
  nats: {ack_wait: 2}
steps:
  - produce: {count: 30}
  - consume: {name: collector, processing_time: 0.1, background: true, idle: 1, max_time: 60}
  - wait: 1
  - toxic: {kind: cut, target: broker}
  - wait: 4
  - heal: {target: broker}
  - join: collector
expect:
  produced: 30
  lost: 0
"""


def _long_cut(tmp_path: Path) -> Path:
    path = tmp_path / "long-cut.yaml"
    path.write_text(LONG_CUT)
    return path


@pytest.mark.sim
@pytest.mark.parametrize("system", SYSTEMS)
def test_a_cut_longer_than_idle_does_not_end_the_consumer_on_the_simulator(
    tmp_path: Path, system: str
) -> None:
    result = run_scenario(find(str(_long_cut(tmp_path))), f"sim:{system}", seed=7)
    assert result.passed, explain_failure(result)
    assert result.summary.processed_once + result.summary.duplicated == 30


@pytest.mark.parametrize(
    "system",
    [
        pytest.param(
            system, marks=[getattr(pytest.mark, system), pytest.mark.toxiproxy, pytest.mark.lab]
        )
        for system in SYSTEMS
    ],
)
def test_a_cut_longer_than_idle_does_not_end_the_consumer_on_the_real_broker(
    tmp_path: Path, system: str
) -> None:
    result = run_scenario(find(str(_long_cut(tmp_path))), system, seed=7)
    assert result.restore_problem is None, result.restore_problem
    assert result.passed, explain_failure(result)


class _ScriptedSession(ConsumerSession):
    """A consumer whose broker is away for its first ``away_for`` receives (``None``: for
    ever), then hands out ``messages`` one per receive."""

    def __init__(self, messages: int, away_for: int | None) -> None:
        self.name = "scripted"
        self.group = "g"
        self._left = messages
        self._away_for = away_for
        self.receives_while_away = 0

    def _away(self) -> bool:
        return self._away_for is None or self.receives_while_away < self._away_for

    async def receive(self, max_messages: int, wait: float) -> list[Incoming]:
        if self._away():
            self.receives_while_away += 1
            await asyncio.sleep(wait)
            return []
        if self._left == 0:
            await asyncio.sleep(wait)
            return []
        self._left -= 1
        return [Incoming(message_id=f"m{self._left}", body="x", key=None, native=None)]

    async def held_up(self) -> bool:
        return self._away()

    async def ack(self, message: Incoming) -> None:
        pass

    async def nack(self, message: Incoming, *, requeue: bool) -> None:
        pass

    async def dead_letter(self, message: Incoming, attempts: int) -> bool:
        return True

    async def close(self) -> None:
        pass


async def test_time_held_up_is_not_idle_and_the_window_restarts_when_the_hold_ends() -> None:
    # Away for five polls, each a whole idle window long: the old loop ended at the first.
    session = _ScriptedSession(messages=3, away_for=5)
    step = Consume(name="scripted", idle=0.05, max_time=30)
    outcome = await consume_loop(session, step, ObservationBus(), "test")
    assert session.receives_while_away == 5
    assert (outcome.processed, outcome.stopped_by) == (3, "idle")


async def test_a_broker_that_never_returns_ends_the_step_at_max_time() -> None:
    session = _ScriptedSession(messages=3, away_for=None)
    step = Consume(name="scripted", idle=0.05, max_time=0.5)
    outcome = await consume_loop(session, step, ObservationBus(), "test")
    assert (outcome.processed, outcome.stopped_by) == (0, "max_time")


async def test_a_reachable_empty_channel_still_ends_the_step_when_idle() -> None:
    session = _ScriptedSession(messages=0, away_for=0)
    step = Consume(name="scripted", idle=0.05, max_time=30)
    outcome = await consume_loop(session, step, ObservationBus(), "test")
    assert (outcome.processed, outcome.stopped_by) == (0, "idle")
