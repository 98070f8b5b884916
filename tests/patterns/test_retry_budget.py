"""The token-bucket retry budget: deposits per call, one token per retry, a refilling reserve."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqlab.patterns.retry_budget import RetryBudget

# Timing is not what these properties check: on a loaded 2-core CI machine an example can
# take longer than hypothesis's default 200 ms deadline without anything being wrong.
NO_DEADLINE = settings(deadline=None)


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_capacity_retries_then_refuses() -> None:
    budget = RetryBudget(ratio=0.1, min_retries_per_second=0.0, capacity=3, clock=ManualClock())
    assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]
    assert (budget.withdrawals, budget.refusals) == (3, 1)


def test_ten_calls_at_ratio_a_tenth_pay_for_exactly_one_retry() -> None:
    """0.1 added ten times is 0.9999999999999999 in floating point: still a whole token."""
    budget = RetryBudget(
        ratio=0.1, min_retries_per_second=0.0, capacity=10, initial=0, clock=ManualClock()
    )
    for _ in range(9):
        budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


def test_the_reserve_refills_with_time_up_to_capacity() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, min_retries_per_second=2.0, capacity=5, initial=0, clock=clock)
    assert not budget.try_withdraw()
    clock.now = 0.5
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.now = 100.0
    assert budget.balance == 5  # a long quiet spell cannot bank more than capacity


def test_deposits_stop_at_capacity() -> None:
    budget = RetryBudget(
        ratio=1.0, min_retries_per_second=0.0, capacity=2, initial=0, clock=ManualClock()
    )
    for _ in range(10):
        budget.deposit()
    assert budget.balance == 2
    assert budget.deposits == 10


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"ratio": math.nan}, "ratio"),
        ({"min_retries_per_second": -1.0}, "min_retries_per_second"),
        ({"capacity": 0.5}, "capacity"),
        ({"capacity": 2.0, "initial": 3.0}, "initial"),
    ],
)
def test_bad_settings_are_refused(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryBudget(clock=ManualClock(), **arguments)


@NO_DEADLINE
@given(
    ratio=st.floats(min_value=0.0, max_value=1.0),
    rate=st.floats(min_value=0.0, max_value=5.0),
    capacity=st.floats(min_value=1.0, max_value=20.0),
    steps=st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=2.0)), max_size=300),
)
def test_retries_never_exceed_what_was_deposited_refilled_and_held_at_the_start(
    ratio: float, rate: float, capacity: float, steps: list[tuple[bool, float]]
) -> None:
    """Whatever the mix of calls and retries: allowed retries <= capacity + ratio * calls +
    rate * elapsed (the bound that stops a retry storm), and the balance stays in range."""
    clock = ManualClock()
    budget = RetryBudget(ratio=ratio, min_retries_per_second=rate, capacity=capacity, clock=clock)
    for is_call, later in steps:
        clock.now += later
        if is_call:
            budget.deposit()
        else:
            budget.try_withdraw()
        assert 0.0 <= budget.balance <= capacity
    bound = capacity + ratio * budget.deposits + rate * clock.now
    assert budget.withdrawals <= bound + 1e-6
