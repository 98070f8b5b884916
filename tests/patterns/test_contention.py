"""Retry under contention on the simulator: the model's invariants, determinism per seed, the
asyncio clients agreeing with the discrete-event model, and the ranking docs/patterns.md
states at 10, 20, 50 and 100 clients."""

from __future__ import annotations

import random
import statistics

import pytest

from mqlab.brokers.sim.clock import run_virtual
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import RetryAttempted, RetryGaveUp, RetryScheduled
from mqlab.patterns.contention import (
    ALL_STRATEGIES,
    ContentionSettings,
    MemoryRow,
    Ranking,
    StrategySummary,
    TrialResult,
    rank,
    run_trial,
    simulate,
    simulate_trial,
    summarize,
    trial_rng,
)
from mqlab.patterns.retry import Strategy
from tests.conftest import computed_once

pytestmark = pytest.mark.sim

JITTERED = (Strategy.FULL_JITTER, Strategy.EQUAL_JITTER, Strategy.DECORRELATED_JITTER)
# The defaults of `mqlab retries contention`, in seconds.
DEFAULTS = {"base": 0.010, "cap": 1.0, "delay_mean": 0.010, "delay_sd": 0.002}


def settings(clients: int) -> ContentionSettings:
    return ContentionSettings(clients, **DEFAULTS)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_every_client_writes_exactly_once_and_the_counts_add_up(strategy: Strategy) -> None:
    result = simulate_trial(strategy, settings(25), trial_rng(0, strategy, 25, 0))
    assert result.final_version == 25
    # Each try is one read and one conditional write; every lost write was tried again.
    assert result.calls == 2 * (25 + result.conflicts)
    assert 0 < result.mean_client_completion <= result.completion


def test_one_client_never_conflicts() -> None:
    result = simulate_trial(Strategy.NONE, settings(1), random.Random(0))
    assert (result.calls, result.conflicts) == (2, 0)


def test_without_network_jitter_and_backoff_the_trial_is_exact() -> None:
    """Every request takes exactly 10 ms; all clients read version 0 at 5 ms and write at
    15 ms: one wins, the rest retry at once. Each round lets exactly one more client win,
    so client k (from 1) needs k tries: 2 * (1 + 2 + 3) calls for three clients."""
    exact = ContentionSettings(3, base=0.0, cap=0.0, delay_mean=0.010, delay_sd=0.0)
    result = simulate_trial(Strategy.NONE, exact, random.Random(0))
    assert result.calls == 12
    assert result.conflicts == 3
    assert result.completion == pytest.approx(0.060)


def test_the_same_seed_gives_the_same_numbers() -> None:
    arguments = {"runs": 5, "base": 0.01, "cap": 1.0, "delay_mean": 0.01, "delay_sd": 0.002}
    first = simulate(ALL_STRATEGIES, [10, 20], seed=7, **arguments)
    again = simulate(ALL_STRATEGIES, [10, 20], seed=7, **arguments)
    other = simulate(ALL_STRATEGIES, [10, 20], seed=8, **arguments)
    assert first == again
    assert first != other
    assert [(s.clients, s.strategy) for s in first] == [
        (clients, strategy) for clients in (10, 20) for strategy in ALL_STRATEGIES
    ]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="clients"):
        ContentionSettings(0, **DEFAULTS)
    with pytest.raises(ValueError, match="delay_sd"):
        ContentionSettings(5, base=0.01, cap=1.0, delay_mean=0.01, delay_sd=float("nan"))
    with pytest.raises(ValueError, match="cap"):
        ContentionSettings(5, base=0.1, cap=0.01, delay_mean=0.01, delay_sd=0.0)
    with pytest.raises(ValueError, match="runs"):
        simulate(ALL_STRATEGIES, [5], runs=0, seed=0, **DEFAULTS)


def test_summaries_average_and_take_the_95th_percentile() -> None:
    results = [
        TrialResult(
            Strategy.NONE,
            4,
            calls=c,
            conflicts=c // 2 - 4,
            completion=t,
            mean_client_completion=t / 2,
            final_version=4,
        )
        for c, t in ((8, 1.0), (10, 2.0), (12, 3.0), (14, 10.0))
    ]
    summary = summarize(results)
    assert summary.mean_calls == 11
    assert summary.mean_completion == 4.0
    assert summary.p95_completion == 10.0
    shown = summary.to_dict()
    assert shown["mean_completion_ms"] == 4000.0
    assert {"strategy", "clients", "mean_calls", "mean_completion_ms"} <= set(shown)
    with pytest.raises(ValueError, match="different"):
        summarize([results[0], TrialResult(Strategy.FULL_JITTER, 4, 8, 0, 1.0, 0.5, 4)])


def test_rank_orders_by_calls_and_by_completion() -> None:
    def summary(strategy: Strategy, calls: float, completion: float) -> StrategySummary:
        return StrategySummary(strategy, 10, 1, calls, 0.0, completion, completion, completion)

    (ranking,) = rank(
        [
            summary(Strategy.NONE, 90, 0.1),
            summary(Strategy.FULL_JITTER, 60, 0.3),
            summary(Strategy.EXPONENTIAL, 80, 2.0),
        ]
    )
    assert ranking == Ranking(
        10,
        by_calls=(Strategy.FULL_JITTER, Strategy.EXPONENTIAL, Strategy.NONE),
        by_completion=(Strategy.NONE, Strategy.FULL_JITTER, Strategy.EXPONENTIAL),
    )


# --- the asyncio clients (what scenarios and postgres use) ----------------------------------


def test_asyncio_clients_on_virtual_time_write_once_each_with_observations() -> None:
    row = MemoryRow()
    recorder = Recorder()

    async def main() -> TrialResult:
        import asyncio

        bus = ObservationBus(clock=asyncio.get_running_loop().time)
        bus.subscribe(recorder)
        return await run_trial(row, Strategy.FULL_JITTER, settings(8), random.Random(3), bus=bus)

    result = run_virtual(main())
    assert result.final_version == 8
    assert sorted(row.writers) == list(range(8))
    succeeded = [
        o
        for o in recorder.observations
        if isinstance(o, RetryAttempted) and o.outcome == "succeeded"
    ]
    assert sorted(o.message_id for o in succeeded) == [f"client-{n}" for n in range(8)]
    scheduled = [o for o in recorder.observations if isinstance(o, RetryScheduled)]
    assert len(scheduled) == result.conflicts
    assert all(o.error.startswith("RowVersionConflict") for o in scheduled)
    assert not [o for o in recorder.observations if isinstance(o, RetryGaveUp)]
    # Virtual time: the trial's completion is the loop's, not the wall clock's.
    assert result.completion == pytest.approx(max(o.at for o in succeeded), abs=0.011)


def test_asyncio_clients_are_deterministic_per_seed_on_virtual_time() -> None:
    def once(seed: int) -> TrialResult:
        strategy = Strategy.DECORRELATED_JITTER
        return run_virtual(run_trial(MemoryRow(), strategy, settings(10), random.Random(seed)))

    assert once(5) == once(5)
    assert once(5) != once(6)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_asyncio_clients_agree_with_the_discrete_event_model(strategy: Strategy) -> None:
    """The same model twice: the means over 60 trials agree within 10 %."""
    runs = range(60)
    fast = [simulate_trial(strategy, settings(10), trial_rng(1, strategy, 10, r)) for r in runs]
    tasks = [
        run_virtual(run_trial(MemoryRow(), strategy, settings(10), trial_rng(2, strategy, 10, r)))
        for r in runs
    ]
    for measure in ("calls", "completion"):
        fast_mean = statistics.fmean(getattr(r, measure) for r in fast)
        tasks_mean = statistics.fmean(getattr(r, measure) for r in tasks)
        assert tasks_mean == pytest.approx(fast_mean, rel=0.10), measure


def test_a_row_that_fails_surfaces_its_own_error() -> None:
    class BrokenRow(MemoryRow):
        async def write(self, client: int, seen: int) -> bool:
            raise ConnectionResetError("the database went away")

    with pytest.raises(ConnectionResetError, match="went away"):
        run_virtual(run_trial(BrokenRow(), Strategy.NONE, settings(3), random.Random(0)))


# --- the ranking docs/patterns.md states ----------------------------------------------------


def _run_experiment() -> dict[int, dict[Strategy, StrategySummary]]:
    summaries = simulate(ALL_STRATEGIES, [10, 20, 50, 100], runs=40, seed=0, **DEFAULTS)
    table: dict[int, dict[Strategy, StrategySummary]] = {}
    for summary in summaries:
        table.setdefault(summary.clients, {})[summary.strategy] = summary
    return table


@pytest.fixture(scope="module")
def experiment() -> dict[int, dict[Strategy, StrategySummary]]:
    return computed_once("retry-contention-experiment", _run_experiment)


@pytest.mark.parametrize("clients", [10, 20, 50, 100])
def test_every_jitter_does_less_work_than_no_backoff_and_than_plain_exponential(
    experiment: dict[int, dict[Strategy, StrategySummary]], clients: int
) -> None:
    cell = experiment[clients]
    most_jittered = max(cell[s].mean_calls for s in JITTERED)
    assert most_jittered < cell[Strategy.EXPONENTIAL].mean_calls
    assert most_jittered < cell[Strategy.NONE].mean_calls


@pytest.mark.parametrize("clients", [10, 20, 50, 100])
def test_decorrelated_jitter_does_the_least_work_or_ties_within_five_percent(
    experiment: dict[int, dict[Strategy, StrategySummary]], clients: int
) -> None:
    cell = experiment[clients]
    (least, *_) = rank(cell.values())[0].by_calls
    if clients <= 50:
        assert least is Strategy.DECORRELATED_JITTER
    calls = [cell[s].mean_calls for s in JITTERED]
    assert cell[Strategy.DECORRELATED_JITTER].mean_calls <= 1.05 * min(calls)


@pytest.mark.parametrize("clients", [10, 20, 50, 100])
def test_no_backoff_finishes_first_and_plain_exponential_last(
    experiment: dict[int, dict[Strategy, StrategySummary]], clients: int
) -> None:
    order = rank(experiment[clients].values())[0].by_completion
    assert order[0] is Strategy.NONE
    assert order[-1] is Strategy.EXPONENTIAL
    # Of the jittered strategies equal jitter, which always waits at least half the
    # exponential delay, finishes last.
    assert order[-2] is Strategy.EQUAL_JITTER


@pytest.mark.parametrize("clients", [50, 100])
def test_no_backoff_costs_the_database_more_than_twice_the_work_of_full_jitter(
    experiment: dict[int, dict[Strategy, StrategySummary]], clients: int
) -> None:
    cell = experiment[clients]
    assert cell[Strategy.NONE].mean_calls > 2 * cell[Strategy.FULL_JITTER].mean_calls
