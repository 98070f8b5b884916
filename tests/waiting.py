"""Waiting for a condition with a deadline: the one way the tests wait.

Real brokers, and the adapters' own background tasks (the Kafka cluster watcher, RabbitMQ's and
NATS's reconnect loops, the SQS probe), report what happened *later* than the call that caused
it. A test that asserts such a thing at once passes on an idle machine and fails on a busy one,
where the watcher's next round comes a little later. So a test waits for the condition, with a
deadline, and when the deadline passes it says what it waited for and the last thing it saw.

The deadline is a bound against hanging, never a speed goal: every wait ends as soon as its
condition holds, so a generous bound costs nothing on a healthy run. The async waits run on the
event loop's clock (``loop.time()``, ``asyncio.sleep``), so the shared contract suites wait in
virtual time on the simulator and in real time against the lab.

- :func:`wait_until`: a plain (blocking) wait, for processes, files and CLI state;
- :func:`eventually`: its async twin, for probes that are plain or awaitable;
- :func:`first_observation`: the first recorded observation that matches;
- :func:`answer_unless_ended`: a cross-thread request's answer, or None once its run ended;
- :func:`until_paused`: a lab process the kernel has stopped (after a SIGSTOP).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import pytest

from mqlab.observe.bus import Recorder
from mqlab.observe.events import Observation

T = TypeVar("T")
ObservationT = TypeVar("ObservationT", bound=Observation)

# How often a condition is checked again. Short, so a wait ends soon after the condition holds;
# long enough that polling a broker does not become load of its own.
INTERVAL = 0.05

Describe = str | Callable[[], str]


def _describe(describe: Describe) -> str:
    return describe() if callable(describe) else describe


def _timed_out(timeout: float, describe: Describe, last: str) -> None:
    pytest.fail(f"not within {timeout:g}s: {_describe(describe)} (last seen: {last})")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    describe: Describe,
    *,
    interval: float = INTERVAL,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate()`` until it returns something truthy, and return that.

    Args:
        predicate: checked at once, then every ``interval`` seconds.
        timeout: seconds until the test fails.
        describe: what is waited for (or a function that says it at failure time, with the
            state it found), for the failure message.
        retry_on: exceptions that mean "not yet" (a server that is still restarting) instead
            of failing the test at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = predicate()
        except retry_on as error:
            last = f"{type(error).__name__}: {error}"
        else:
            if answer:
                return answer
            last = repr(answer)
        if time.monotonic() >= deadline:
            _timed_out(timeout, describe, last)
        time.sleep(interval)


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    timeout: float,
    describe: Describe,
    *,
    accept: Callable[[T], object] = bool,
    interval: float = INTERVAL,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``probe()`` (plain or async) until ``accept(answer)`` holds, and return the answer.

    Between two calls the event loop runs, so the adapter's background tasks make progress.
    The clock is the loop's, so on the simulator the wait costs no wall time.

    Args:
        probe: what to ask (``broker.describe_topic`` ...), or a condition returning a bool.
        timeout: seconds (of the loop's clock) until the test fails.
        describe: what is waited for, for the failure message (see :func:`wait_until`).
        accept: whether an answer is the one waited for; truthiness by default.
        retry_on: exceptions that mean "not yet" (``BrokerError`` while a broker is down).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            answer = probe()
            if inspect.isawaitable(answer):
                answer = await answer
        except retry_on as error:
            last = f"{type(error).__name__}: {error}"
        else:
            settled = cast(T, answer)
            if accept(settled):
                return settled
            last = repr(settled)
        if loop.time() >= deadline:
            _timed_out(timeout, describe, last)
        await asyncio.sleep(interval)


async def first_observation(
    recorder: Recorder,
    kind: type[ObservationT],
    timeout: float,
    matches: Callable[[ObservationT], bool] = lambda _: True,
) -> ObservationT:
    """The first observation of ``kind`` the recorder holds that ``matches``, waiting for it.

    Observations come from the adapter's callbacks and background tasks, so one that the test
    caused may not have been recorded yet when the call that caused it returns.
    """

    def found() -> ObservationT | None:
        return next((o for o in recorder.observations if isinstance(o, kind) and matches(o)), None)

    def seen_kinds() -> str:
        return f"a matching {kind.__name__}; recorded {[o.kind for o in recorder.observations]}"

    found_observation = await eventually(found, timeout, seen_kinds)
    assert found_observation is not None
    return found_observation


def answer_unless_ended(
    future: concurrent.futures.Future[T],
    ended: Callable[[], bool],
    timeout: float,
    describe: Describe,
) -> T | None:
    """The future's answer, or None when ``ended()`` says the run that was to answer it is over.

    A request that a run (``RunSession.request_snapshot`` / ``request_judged``) does not reach
    before it ends stays pending for ever, so a fixed timeout on the future fails a run that
    merely ended, or that a loaded machine slowed, meanwhile. ``timeout`` only bounds a run
    that neither answers nor ends.
    """
    deadline = time.monotonic() + timeout
    while not future.done():
        if ended() and not future.done():
            return None
        if time.monotonic() >= deadline:
            _timed_out(timeout, describe, "still pending")
        concurrent.futures.wait([future], timeout=INTERVAL)
    return future.result()


async def until_paused(process: str, timeout: float) -> None:
    """Until the kernel has stopped the lab's ``process``: SIGSTOP takes effect when the process
    is next scheduled, which on a busy machine is not at once, and until then it still answers."""
    from mqlab.lab import process as proc
    from mqlab.lab.supervisor import Lab

    def state() -> str:
        record = Lab().record(process)
        return "gone" if record is None else proc.process_state(record)

    await eventually(
        lambda: asyncio.to_thread(state),
        timeout,
        f"{process} stopped by SIGSTOP",
        accept="paused".__eq__,
    )
