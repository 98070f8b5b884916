"""A token-bucket retry budget: retries capped to a fraction of calls, shared by many operations.

Per-operation limits (three retries each) do not stop a retry storm: when a dependency fails
outright, every caller makes its three retries and the dependency sees four times its normal
load at the worst possible moment. A budget shared by all the operations of a client bounds
the *ratio* instead: each operation deposits ``ratio`` of a token when it starts, each retry
withdraws a whole token, so across many operations retries stay near ``ratio`` of the calls
whatever fails. A small reserve, refilled at ``min_retries_per_second``, lets a client that
makes few calls still retry now and then; ``capacity`` bounds the balance so a long healthy
period cannot save up a storm for later.

This is the idea behind gRPC's retry throttling (a token count that failures drain and
successes refill by a ratio, retries allowed only above half of it) and Finagle's
``RetryBudget`` (deposits per request, withdrawals per retry, a minimum rate of retries per
second); mqlab's version is the plain token bucket the course describes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mqlab.patterns.harness import loop_clock

_TOKEN_EPSILON = 1e-9
"""Ten deposits of 0.1 add up to 0.9999999999999999 in floating point: still a whole token."""


class RetryBudget:
    """A token bucket shared by the operations of one client.

    Args:
        ratio: tokens each operation deposits (0.1: at most about one retry per ten calls).
        min_retries_per_second: tokens the reserve refills per second of the clock.
        capacity: the most tokens the bucket holds (default: ten seconds of reserve, at least
            one token).
        initial: tokens at the start (default: full).
        clock: seconds; the running event loop's clock by default (virtual on the simulator).

    Raises:
        ValueError: a ratio outside [0, 1], a negative rate, a capacity below one token or an
            initial balance outside [0, capacity].
    """

    def __init__(
        self,
        *,
        ratio: float = 0.1,
        min_retries_per_second: float = 1.0,
        capacity: float | None = None,
        initial: float | None = None,
        clock: Callable[[], float] = loop_clock,
    ) -> None:
        if not (math.isfinite(ratio) and 0 <= ratio <= 1):
            raise ValueError(f"ratio must be between 0 and 1 (got {ratio})")
        if not (math.isfinite(min_retries_per_second) and min_retries_per_second >= 0):
            raise ValueError(
                f"min_retries_per_second must not be negative (got {min_retries_per_second})"
            )
        if capacity is None:
            capacity = max(1.0, 10 * min_retries_per_second)
        if not (math.isfinite(capacity) and capacity >= 1):
            raise ValueError(f"capacity must be at least one token (got {capacity})")
        if initial is None:
            initial = capacity
        if not (math.isfinite(initial) and 0 <= initial <= capacity):
            raise ValueError(f"initial must be between 0 and capacity (got {initial})")
        self.ratio = ratio
        self.min_retries_per_second = min_retries_per_second
        self.capacity = capacity
        self._clock = clock
        self._tokens = initial
        self._refilled_at = clock()
        self.deposits = 0
        """Operations that deposited (for reports: the denominator of the retry ratio)."""
        self.withdrawals = 0
        """Retries the budget allowed."""
        self.refusals = 0
        """Retries the budget refused."""

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._refilled_at
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.min_retries_per_second)
            self._refilled_at = now

    @property
    def balance(self) -> float:
        """Tokens available now (the reserve's refill included)."""
        self._refill()
        return self._tokens

    def deposit(self) -> None:
        """An operation starts: add ``ratio`` of a token (up to ``capacity``)."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + self.ratio)
        self.deposits += 1

    def try_withdraw(self) -> bool:
        """A retry wants to happen: take one token and return True, or refuse with False."""
        self._refill()
        if self._tokens + _TOKEN_EPSILON < 1:
            self.refusals += 1
            return False
        self._tokens = max(0.0, self._tokens - 1)
        self.withdrawals += 1
        return True
