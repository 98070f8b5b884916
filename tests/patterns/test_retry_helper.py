"""The async ``retry`` helper on the simulator's virtual clock: its observations, its limits,
its budget and its classification (permanent errors are never retried)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from mqlab.brokers.base import BrokerUnavailable
from mqlab.brokers.sim.clock import run_virtual
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import (
    Observation,
    RetryAttempted,
    RetryGaveUp,
    RetryScheduled,
)
from mqlab.patterns.retry import (
    Backoff,
    ErrorClass,
    GiveUpReason,
    PermanentError,
    RetryError,
    RetryPolicy,
    Strategy,
    TransientError,
    classifier,
    classify_error,
    retry,
)
from mqlab.patterns.retry_budget import RetryBudget

pytestmark = pytest.mark.sim

EXPONENTIAL = Backoff(Strategy.EXPONENTIAL, 0.1, 1.0)


class Flaky:
    """An operation that raises the scripted errors in turn, then returns ``"done"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls_at: list[float] = []

    async def __call__(self) -> str:
        loop = asyncio.get_running_loop()
        self.calls_at.append(loop.time())
        await asyncio.sleep(0.01)  # the call itself takes a little time
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def observed(
    body: Callable[[ObservationBus], Awaitable[object]],
) -> tuple[object, list[Observation]]:
    """Run ``body(bus)`` on a fresh virtual loop with a recording bus on its clock; return
    what it returned (or raised) and the observations."""
    recorder = Recorder()

    async def main() -> object:
        loop = asyncio.get_running_loop()
        bus = ObservationBus(clock=loop.time)
        bus.subscribe(recorder)
        try:
            return await body(bus)
        except RetryError as error:
            return error

    return run_virtual(main()), recorder.observations


def test_transient_errors_are_retried_with_the_policys_delays_on_virtual_time() -> None:
    operation = Flaky(TimeoutError("slow"), ConnectionResetError("reset"))
    result, observations = observed(
        lambda bus: retry(operation, RetryPolicy(EXPONENTIAL), name="job-1", bus=bus)
    )
    assert result == "done"
    # Call 1 at 0; it fails at 0.01, waits 0.1 (attempt 0); call 2 fails at 0.12, waits 0.2.
    assert operation.calls_at == pytest.approx([0.0, 0.11, 0.32])
    kinds = [(o.kind, getattr(o, "call", getattr(o, "attempt", None))) for o in observations]
    assert kinds == [
        ("retry_attempted", 1),
        ("retry_scheduled", 0),
        ("retry_attempted", 2),
        ("retry_scheduled", 1),
        ("retry_attempted", 3),
    ]
    scheduled = [o for o in observations if isinstance(o, RetryScheduled)]
    assert [s.delay for s in scheduled] == pytest.approx([0.1, 0.2])
    assert scheduled[0].error == "TimeoutError: slow"
    assert all(s.strategy == "exponential" and s.message_id == "job-1" for s in scheduled)
    attempted = [o for o in observations if isinstance(o, RetryAttempted)]
    assert [a.outcome for a in attempted] == ["failed", "failed", "succeeded"]
    assert [a.error_class for a in attempted] == ["transient", "transient", ""]
    assert attempted[0].duration == pytest.approx(0.01)
    # Stamped by the bus on the virtual clock: the moment each call ended.
    assert [a.at for a in attempted] == pytest.approx([0.01, 0.12, 0.33])


def test_a_permanent_error_is_never_retried() -> None:
    operation = Flaky(ValueError("amount must be positive"))
    error, observations = observed(
        lambda bus: retry(operation, RetryPolicy(EXPONENTIAL, max_retries=5), bus=bus)
    )
    assert isinstance(error, RetryError)
    assert error.reason is GiveUpReason.PERMANENT
    assert error.calls == 1
    assert isinstance(error.__cause__, ValueError)
    assert len(operation.calls_at) == 1
    assert not [o for o in observations if isinstance(o, RetryScheduled)]
    (gave_up,) = [o for o in observations if isinstance(o, RetryGaveUp)]
    assert (gave_up.reason, gave_up.calls) == ("permanent", 1)
    assert gave_up.error == "ValueError: amount must be positive"


def test_the_retry_limit_counts_retries_not_calls() -> None:
    operation = Flaky(*(TimeoutError() for _ in range(10)))
    error, observations = observed(
        lambda bus: retry(operation, RetryPolicy(EXPONENTIAL, max_retries=3), bus=bus)
    )
    assert isinstance(error, RetryError)
    assert (error.reason, error.calls) == (GiveUpReason.ATTEMPTS, 4)
    assert [o.attempt for o in observations if isinstance(o, RetryScheduled)] == [0, 1, 2]
    (gave_up,) = [o for o in observations if isinstance(o, RetryGaveUp)]
    # 4 calls of 0.01 and waits of 0.1 + 0.2 + 0.4.
    assert gave_up.elapsed == pytest.approx(0.74)


def test_the_deadline_stops_a_retry_whose_delay_would_end_past_it() -> None:
    operation = Flaky(*(TimeoutError() for _ in range(10)))
    policy = RetryPolicy(EXPONENTIAL, max_retries=None, deadline=0.5)
    error, observations = observed(lambda bus: retry(operation, policy, bus=bus))
    assert isinstance(error, RetryError)
    assert error.reason is GiveUpReason.DEADLINE
    # Calls at 0, 0.11, 0.32; the third fails at 0.33 and 0.33 + 0.4 is past 0.5.
    assert operation.calls_at == pytest.approx([0.0, 0.11, 0.32])
    (gave_up,) = [o for o in observations if isinstance(o, RetryGaveUp)]
    assert gave_up.reason == "deadline"
    assert gave_up.elapsed == pytest.approx(0.33)


def test_a_call_timeout_cuts_a_hanging_call_and_counts_as_transient() -> None:
    calls = 0

    async def hangs_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(3600)
        return "done"

    policy = RetryPolicy(EXPONENTIAL, call_timeout=2.0)

    async def body(bus: ObservationBus) -> object:
        result = await retry(hangs_once, policy, bus=bus)
        return result, asyncio.get_running_loop().time()

    (result, finished_at), observations = observed(body)
    assert result == "done"
    assert finished_at == pytest.approx(2.1)
    first = observations[0]
    assert isinstance(first, RetryAttempted)
    assert first.error_class == "transient"
    assert first.error.startswith("TimeoutError")


def test_the_deadline_also_cuts_the_call_that_is_running_when_it_passes() -> None:
    async def hangs() -> str:
        await asyncio.sleep(3600)
        return "never"

    policy = RetryPolicy(EXPONENTIAL, deadline=5.0)

    async def body(bus: ObservationBus) -> object:
        try:
            await retry(hangs, policy, bus=bus)
        except RetryError as error:
            return error.reason, asyncio.get_running_loop().time()
        return None

    (reason, ended_at), _ = observed(body)
    assert reason is GiveUpReason.DEADLINE
    assert ended_at == pytest.approx(5.0)


def test_an_empty_budget_stops_retrying_and_a_token_is_spent_only_on_a_real_retry() -> None:
    async def body(bus: ObservationBus) -> object:
        loop = asyncio.get_running_loop()
        budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, capacity=2, clock=loop.time)
        policy = RetryPolicy(EXPONENTIAL, max_retries=10, budget=budget)
        outcomes = []
        for name in ("a", "b"):
            try:
                await retry(Flaky(*(TimeoutError() for _ in range(10))), policy, name=name, bus=bus)
            except RetryError as error:
                outcomes.append((name, error.reason, error.calls))
        # A permanent error gives up before asking the budget: no refusal counted.
        try:
            await retry(Flaky(PermanentError("no")), policy, name="c", bus=bus)
        except RetryError as error:
            outcomes.append(("c", error.reason, error.calls))
        return outcomes, budget.withdrawals, budget.refusals

    (outcomes, withdrawals, refusals), observations = observed(body)
    assert outcomes == [
        ("a", GiveUpReason.BUDGET, 3),
        ("b", GiveUpReason.BUDGET, 1),
        ("c", GiveUpReason.PERMANENT, 1),
    ]
    assert (withdrawals, refusals) == (2, 2)
    assert [o.reason for o in observations if isinstance(o, RetryGaveUp)] == [
        "budget",
        "budget",
        "permanent",
    ]


def test_a_budget_stops_a_retry_storm_against_a_dependency_that_is_down() -> None:
    """200 operations against a dependency that always times out: with three retries each it
    would see 800 calls; a budget of a tenth keeps it near 200 * 1.1."""

    async def body(bus: ObservationBus) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        budget = RetryBudget(
            ratio=0.1, min_retries_per_second=0.0, capacity=5, initial=0, clock=loop.time
        )
        policy = RetryPolicy(EXPONENTIAL, max_retries=3, budget=budget)
        calls = 0

        async def down() -> None:
            nonlocal calls
            calls += 1
            raise TimeoutError("dependency down")

        for n in range(200):
            with pytest.raises(RetryError):
                await retry(down, policy, name=f"op-{n}", bus=bus)
        return calls, budget.withdrawals

    (calls, retries), _ = observed(body)
    assert retries <= 0.1 * 200 + 1e-9
    assert calls == 200 + retries


def test_the_same_seed_gives_the_same_retries() -> None:
    policy = RetryPolicy(Backoff(Strategy.FULL_JITTER, 0.1, 5.0), max_retries=6)

    def delays(seed: int) -> list[float]:
        _, observations = observed(
            lambda bus: retry(
                Flaky(*(TimeoutError() for _ in range(10))),
                policy,
                bus=bus,
                rng=random.Random(seed),
            )
        )
        return [o.delay for o in observations if isinstance(o, RetryScheduled)]

    assert delays(3) == delays(3)
    assert delays(3) != delays(4)


def test_it_works_on_real_time_too() -> None:
    operation = Flaky(TransientError("once"))
    policy = RetryPolicy(Backoff(Strategy.EXPONENTIAL, 0.001, 0.01))
    assert asyncio.run(retry(operation, policy)) == "done"
    assert len(operation.calls_at) == 2


def test_cancellation_is_not_swallowed() -> None:
    """An outer timeout cancels the retry loop mid-wait; a loop that caught the cancellation
    would retry forever and the timeout would never surface."""

    async def main() -> float:
        operation = Flaky(*(TimeoutError() for _ in range(100)))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await retry(operation, RetryPolicy(EXPONENTIAL, max_retries=None))
        return asyncio.get_running_loop().time()

    assert run_virtual(main()) == pytest.approx(1.0)


def test_default_classification() -> None:
    class SerializationFailure(Exception):
        sqlstate = "40001"

    class UniqueViolation(Exception):
        sqlstate = "23505"

    transient = [
        TimeoutError(),
        ConnectionRefusedError(),
        TransientError(),
        BrokerUnavailable("kafka", "127.0.0.1:19091"),
        SerializationFailure(),
    ]
    permanent = [ValueError(), TypeError(), KeyError("x"), PermanentError(), UniqueViolation()]
    assert {classify_error(e) for e in transient} == {ErrorClass.TRANSIENT}
    assert {classify_error(e) for e in permanent} == {ErrorClass.PERMANENT}
    assert classify_error(RuntimeError("unknown")) is ErrorClass.PERMANENT


def test_a_custom_classifier_adds_types_and_permanent_wins() -> None:
    class RateLimited(Exception):
        pass

    class Forbidden(ConnectionError):
        pass

    classify = classifier(transient=(RateLimited,), permanent=(Forbidden,))
    assert classify(RateLimited()) is ErrorClass.TRANSIENT
    assert classify(Forbidden()) is ErrorClass.PERMANENT  # a ConnectionError, but listed
    assert classify(TimeoutError()) is ErrorClass.TRANSIENT  # the defaults still apply


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"deadline": 0.0}, "deadline"),
        ({"call_timeout": float("nan")}, "call_timeout"),
    ],
)
def test_bad_policies_are_refused(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(EXPONENTIAL, **arguments)


def test_retried_observations_round_trip_through_a_trace() -> None:
    _, observations = observed(
        lambda bus: retry(Flaky(TimeoutError(), ValueError()), RetryPolicy(EXPONENTIAL), bus=bus)
    )
    assert {o.kind for o in observations} == {"retry_attempted", "retry_scheduled", "retry_gave_up"}
    for observation in observations:
        assert Observation.from_dict(observation.to_dict()) == observation
