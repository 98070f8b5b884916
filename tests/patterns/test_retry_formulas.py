"""The backoff formulas: worked examples, then their bounds as properties (hypothesis)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqlab.patterns.retry import (
    Backoff,
    Strategy,
    decorrelated_jitter_delay,
    equal_jitter_delay,
    exponential_delay,
    full_jitter_delay,
    parse_strategy,
    worst_case_duration,
)

# Timing is not what these properties check: on a loaded 2-core CI machine an example can
# take longer than hypothesis's default 200 ms deadline without anything being wrong.
NO_DEADLINE = settings(deadline=None)


class Scripted:
    """A random source that answers from a script: uniform(a, b) = a + (b - a) * fraction."""

    def __init__(self, *fractions: float) -> None:
        self.fractions = list(fractions)
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float, /) -> float:
        self.asked.append((a, b))
        return a + (b - a) * self.fractions.pop(0)


# --- worked examples ------------------------------------------------------------------------


def test_exponential_doubles_from_base_at_attempt_0_and_stops_at_the_cap() -> None:
    delays = [exponential_delay(n, base=1.0, cap=300.0) for n in range(11)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_exponential_of_a_huge_attempt_is_the_cap_not_an_overflow() -> None:
    assert exponential_delay(10_000, base=0.1, cap=5.0) == 5.0
    assert exponential_delay(1030, base=1.0, cap=1e308) == 1e308


def test_full_jitter_draws_between_zero_and_the_capped_exponential() -> None:
    rng = Scripted(0.5, 1.0, 0.0)
    assert full_jitter_delay(3, base=1.0, cap=300.0, rng=rng) == 4.0
    assert full_jitter_delay(20, base=1.0, cap=300.0, rng=rng) == 300.0
    assert full_jitter_delay(0, base=1.0, cap=300.0, rng=rng) == 0.0
    assert rng.asked == [(0.0, 8.0), (0.0, 300.0), (0.0, 1.0)]


def test_equal_jitter_keeps_half_and_draws_the_other_half() -> None:
    rng = Scripted(0.0, 1.0)
    assert equal_jitter_delay(3, base=1.0, cap=300.0, rng=rng) == 4.0
    assert equal_jitter_delay(3, base=1.0, cap=300.0, rng=rng) == 8.0
    assert rng.asked == [(0.0, 4.0), (0.0, 4.0)]


def test_decorrelated_jitter_starts_from_base_and_the_cap_bounds_the_range() -> None:
    rng = Scripted(0.5, 0.5, 0.5)
    # First retry: previous is base, so the range is [base, 3 * base].
    assert decorrelated_jitter_delay(None, base=1.0, cap=10.0, rng=rng) == 2.0
    assert decorrelated_jitter_delay(2.0, base=1.0, cap=10.0, rng=rng) == 3.5
    # 3 * 8 = 24 is past the cap: the range is [1, 10], not [1, 24] clipped to 10.
    assert decorrelated_jitter_delay(8.0, base=1.0, cap=10.0, rng=rng) == 5.5
    assert rng.asked == [(1.0, 3.0), (1.0, 6.0), (1.0, 10.0)]


def test_the_cheat_sheets_clipped_decorrelated_jitter_piles_up_on_the_cap() -> None:
    """Why the cap must bound the range: clipping ``uniform(base, 3 * prev)`` at the cap puts
    about two thirds of the draws exactly on the cap once ``prev`` is there."""
    rng = random.Random(7)
    clipped = [min(10.0, rng.uniform(1.0, 30.0)) for _ in range(3000)]
    bounded = [decorrelated_jitter_delay(10.0, base=1.0, cap=10.0, rng=rng) for _ in range(3000)]
    assert 0.6 < sum(d == 10.0 for d in clipped) / 3000 < 0.75
    assert sum(d == 10.0 for d in bounded) < 5


def test_decorrelated_jitter_never_drops_below_base_whatever_previous_is() -> None:
    rng = Scripted(0.0, 1.0)
    assert decorrelated_jitter_delay(0.0, base=2.0, cap=10.0, rng=rng) == 2.0
    assert decorrelated_jitter_delay(0.1, base=2.0, cap=10.0, rng=rng) == 2.0


def test_none_never_waits_and_never_draws() -> None:
    rng = Scripted()
    assert Backoff(Strategy.NONE, 1.0, 10.0).delays(5, rng) == [0.0] * 5
    assert rng.asked == []


def test_backoff_delays_feed_the_previous_delay_to_decorrelated_jitter() -> None:
    rng = Scripted(1.0, 1.0, 1.0, 1.0)
    assert Backoff(Strategy.DECORRELATED_JITTER, 1.0, 20.0).delays(4, rng) == [3, 9, 20, 20]


def test_backoff_matches_the_functions() -> None:
    for strategy, function in (
        (Strategy.FULL_JITTER, full_jitter_delay),
        (Strategy.EQUAL_JITTER, equal_jitter_delay),
    ):
        backoff = Backoff(strategy, 0.1, 5.0)
        for attempt in range(12):
            expected = function(attempt, base=0.1, cap=5.0, rng=random.Random(attempt))
            assert backoff.delay(attempt, None, random.Random(attempt)) == expected
    exponential = Backoff(Strategy.EXPONENTIAL, 0.1, 5.0)
    assert [exponential.delay(n, None, Scripted()) for n in range(8)] == [
        exponential_delay(n, base=0.1, cap=5.0) for n in range(8)
    ]


@pytest.mark.parametrize(
    ("base", "cap", "message"),
    [
        (-1.0, 10.0, "must not be negative"),
        (2.0, 1.0, "must not be smaller than base"),
        (math.nan, 10.0, "finite"),
        (1.0, math.inf, "finite"),
    ],
)
def test_bad_parameters_are_refused(base: float, cap: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(Strategy.FULL_JITTER, base, cap)
    with pytest.raises(ValueError, match=message):
        exponential_delay(0, base=base, cap=cap)


def test_negative_attempts_and_previous_delays_are_refused() -> None:
    with pytest.raises(ValueError, match="counts retries from 0"):
        exponential_delay(-1, base=1.0, cap=2.0)
    with pytest.raises(ValueError, match="counts retries from 0"):
        Backoff(Strategy.FULL_JITTER, 1.0, 2.0).delay(-1, None, random.Random(0))
    with pytest.raises(ValueError, match="previous delay"):
        decorrelated_jitter_delay(-1.0, base=1.0, cap=2.0, rng=random.Random(0))
    with pytest.raises(ValueError, match="previous delay"):
        Backoff(Strategy.DECORRELATED_JITTER, 1.0, 2.0).delay(1, math.nan, random.Random(0))


def test_strategy_names_and_aliases() -> None:
    assert parse_strategy("Full") is Strategy.FULL_JITTER
    assert parse_strategy("decorrelated-jitter") is Strategy.DECORRELATED_JITTER
    with pytest.raises(ValueError, match="did you mean 'exponential'"):
        parse_strategy("exponentail")


def test_the_cheat_sheets_sla_arithmetic() -> None:
    """1+2+4+8+15 = 30 s of waiting; with 5 s per call the six calls take 30 s more: 60 s."""
    backoff = Backoff(Strategy.EXPONENTIAL, 1.0, 15.0)
    assert [backoff.longest_delay(n) for n in range(5)] == [1, 2, 4, 8, 15]
    assert worst_case_duration(backoff, retries=5, call_timeout=0.0) == 30.0
    assert worst_case_duration(backoff, retries=5, call_timeout=5.0) == 60.0
    # Jitter never makes the worst case longer (full jitter's bound is the same) ...
    assert worst_case_duration(Backoff(Strategy.FULL_JITTER, 1.0, 15.0), 5, 5.0) == 60.0
    # ... but decorrelated jitter grows by up to 3x per retry, so it reaches the cap sooner.
    decorrelated = Backoff(Strategy.DECORRELATED_JITTER, 1.0, 15.0)
    assert [decorrelated.longest_delay(n) for n in range(4)] == [3, 9, 15, 15]


# --- properties -----------------------------------------------------------------------------

bases = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=0, max_value=5000)
seeds = st.integers(min_value=0, max_value=2**32)


@NO_DEADLINE
@given(base=bases, factor=factors, attempt=attempts)
def test_exponential_is_capped_and_grows_monotonically_until_the_cap(
    base: float, factor: float, attempt: int
) -> None:
    cap = base * factor
    delay = exponential_delay(attempt, base=base, cap=cap)
    following = exponential_delay(attempt + 1, base=base, cap=cap)
    assert min(base, cap) <= delay <= cap or base == 0
    assert following >= delay
    # Below the cap each retry doubles; once there it stays.
    if delay * 2 <= cap:
        assert following == delay * 2
    else:
        assert following == cap


@NO_DEADLINE
@given(base=bases, factor=factors, attempt=attempts, seed=seeds)
def test_full_jitter_is_within_zero_and_the_capped_exponential(
    base: float, factor: float, attempt: int, seed: int
) -> None:
    cap = base * factor
    delay = full_jitter_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= exponential_delay(attempt, base=base, cap=cap) <= cap


@NO_DEADLINE
@given(base=bases, factor=factors, attempt=attempts, seed=seeds)
def test_equal_jitter_is_within_half_and_all_of_the_capped_exponential(
    base: float, factor: float, attempt: int, seed: int
) -> None:
    cap = base * factor
    ceiling = exponential_delay(attempt, base=base, cap=cap)
    delay = equal_jitter_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling <= cap


@NO_DEADLINE
@given(
    base=bases,
    factor=factors,
    previous=st.none() | st.floats(min_value=0.0, max_value=1e12, allow_nan=False),
    seed=seeds,
)
def test_decorrelated_jitter_is_within_base_and_the_cap_and_three_times_previous(
    base: float, factor: float, previous: float | None, seed: int
) -> None:
    cap = base * factor
    delay = decorrelated_jitter_delay(previous, base=base, cap=cap, rng=random.Random(seed))
    upper = max(base, min(cap, 3 * (base if previous is None else previous)))
    assert base <= delay <= upper <= cap


@NO_DEADLINE
@given(
    strategy=st.sampled_from(list(Strategy)),
    base=bases,
    factor=factors,
    retries=st.integers(min_value=0, max_value=60),
    seed=seeds,
)
def test_no_strategy_exceeds_its_longest_delay_or_the_cap(
    strategy: Strategy, base: float, factor: float, retries: int, seed: int
) -> None:
    backoff = Backoff(strategy, base, base * factor)
    for attempt, delay in enumerate(backoff.delays(retries, random.Random(seed))):
        assert 0.0 <= delay <= backoff.longest_delay(attempt) <= backoff.cap


@NO_DEADLINE
@given(strategy=st.sampled_from(list(Strategy)), seed=seeds)
def test_the_same_seed_gives_the_same_delays(strategy: Strategy, seed: int) -> None:
    backoff = Backoff(strategy, 0.01, 2.0)
    assert backoff.delays(20, random.Random(seed)) == backoff.delays(20, random.Random(seed))


def test_each_jitter_fills_its_range() -> None:
    """Bounds alone would pass for a constant: the draws must spread over the whole range."""
    rng = random.Random(1)
    full = [full_jitter_delay(3, base=1.0, cap=100.0, rng=rng) for _ in range(2000)]
    equal = [equal_jitter_delay(3, base=1.0, cap=100.0, rng=rng) for _ in range(2000)]
    decorrelated = [
        decorrelated_jitter_delay(4.0, base=1.0, cap=100.0, rng=rng) for _ in range(2000)
    ]
    for draws, low, high in ((full, 0.0, 8.0), (equal, 4.0, 8.0), (decorrelated, 1.0, 12.0)):
        span = high - low
        assert min(draws) < low + 0.05 * span
        assert max(draws) > high - 0.05 * span
        assert abs(sum(draws) / len(draws) - (low + high) / 2) < 0.05 * span
