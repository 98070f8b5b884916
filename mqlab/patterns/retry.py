"""Retries: backoff formulas, error classification, retry limits and an observable retry loop.

A retry is only safe and only useful under three conditions, and this module gives each one a
name the caller has to think about:

- *what* to retry: :func:`classify_error` (or a classifier the caller supplies) sorts errors
  into transient (a timeout, a dropped connection, a serialization failure: trying again may
  work) and permanent (a validation error, a bug: trying again only repeats the failure, and
  multiplies the load on a dependency that is already failing). Permanent errors are never
  retried; an error nobody classified counts as permanent, because retrying the unknown is how
  retry storms start.
- *when* to retry: a :class:`Backoff` strategy turns "the n-th retry" into a delay. The pure
  functions below are the formulas; each takes its randomness from a :class:`RandomSource`
  (``random.Random`` fits) so that a seed fixes every delay on the simulator, while production
  code passes an unseeded generator per process: clients that share a seed share their jitter
  and retry in lockstep, which is exactly what jitter is there to prevent.
- *how long* to keep retrying: :class:`RetryPolicy` bounds the retries by count, by a
  total-time budget (the SLA) and, across many operations, by a shared token-bucket
  :class:`~mqlab.patterns.retry_budget.RetryBudget`.

Attempt numbering (the same everywhere in mqlab, observations included): ``attempt`` numbers
the *retries* from 0. Attempt 0 is the first retry, made after the initial call failed, and its
exponential delay is ``base * 2**0 = base``; attempt n is the (n + 1)-th retry and the
(n + 2)-th call. Where calls are counted (``RetryAttempted.call``), the initial call is call 1.

What the course's cheat sheet leaves out, and this module does:

- Exponential backoff needs the cap *inside* the jitter: ``uniform(0, min(cap, base * 2**n))``
  (the cheat sheet has this right for full jitter). Without a cap, attempt 30 waits 34 years.
- Decorrelated jitter, written ``min(cap, random(base, prev * 3))``, does not say what ``prev``
  is for the first retry (it must be ``base``, so the first delay is drawn from
  ``[base, 3 * base]``; a ``prev`` of 0 gives an inverted range), and its cap clips the draw
  instead of bounding it: once ``prev`` reaches the cap, two thirds of the draws land *exactly*
  on the cap, so the clients that got there fall back into lockstep. The cap must bound the
  random upper end: ``uniform(base, min(cap, prev * 3))``.
- Equal jitter (half the exponential delay fixed, half random) is missing; it is one of the
  strategies the contention experiment compares.
- "Total time within SLA: 1+2+4+8+15 = 30s for 60s SLA": the sum is right (five retries of an
  exponential backoff from 1 s, the fifth capped at 15 s instead of 16 s), and what it means is
  that the *waits* take half the SLA, leaving 30 s for the six calls themselves: each call
  needs a timeout of at most 5 s, or the SLA does not hold. :func:`worst_case_duration` does
  that sum, and :class:`RetryPolicy` enforces both halves (``call_timeout`` and
  ``deadline``). With jitter the waits are shorter on average, never longer than these bounds.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeVar

from mqlab.brokers.base import BrokerUnavailable, OperationTimedOut
from mqlab.observe.events import Observation, RetryAttempted, RetryGaveUp, RetryScheduled
from mqlab.patterns.harness import loop_clock
from mqlab.patterns.retry_budget import RetryBudget

if TYPE_CHECKING:
    from mqlab.observe.bus import ObservationBus

T = TypeVar("T")


class RandomSource(Protocol):
    """Where jitter comes from: ``random.Random`` (seeded on the simulator and in tests)."""

    def uniform(self, a: float, b: float, /) -> float:
        """A number drawn uniformly from ``[a, b]``."""
        ...


# --- the formulas ---------------------------------------------------------------------------

_LARGEST_USEFUL_EXPONENT = 2100
"""``base * 2**n`` exceeds every finite float (and so every cap) for n above this, whatever
the base's size (the smallest positive float is about 2**-1074): the cap applies."""


def _check_range(base: float, cap: float) -> None:
    if not (math.isfinite(base) and math.isfinite(cap)):
        raise ValueError(f"base and cap must be finite numbers (got base={base}, cap={cap})")
    if base < 0:
        raise ValueError(f"base must not be negative (got {base})")
    if cap < base:
        raise ValueError(f"cap ({cap}) must not be smaller than base ({base})")


def _check_attempt(attempt: int) -> None:
    if attempt < 0:
        raise ValueError(f"attempt counts retries from 0 (got {attempt})")


def exponential_delay(attempt: int, *, base: float, cap: float) -> float:
    """``min(cap, base * 2**attempt)``: attempt 0 (the first retry) waits ``base``.

    Raises:
        ValueError: a negative attempt, a negative or non-finite base, a cap below the base.
    """
    _check_range(base, cap)
    _check_attempt(attempt)
    return _capped_exponential(attempt, base, cap)


def _capped_exponential(attempt: int, base: float, cap: float) -> float:
    """The formula itself, for arguments already checked (the experiment calls it a lot)."""
    if base == 0:
        return 0.0
    if attempt > _LARGEST_USEFUL_EXPONENT:
        return cap
    try:
        return min(cap, math.ldexp(base, attempt))
    except OverflowError:
        return cap


def full_jitter_delay(attempt: int, *, base: float, cap: float, rng: RandomSource) -> float:
    """``uniform(0, min(cap, base * 2**attempt))``: the whole delay is random.

    Spreads retries the most (clients that failed together almost never retry together) at
    the price of sometimes retrying almost at once.
    """
    _check_range(base, cap)
    _check_attempt(attempt)
    return rng.uniform(0.0, _capped_exponential(attempt, base, cap))


def equal_jitter_delay(attempt: int, *, base: float, cap: float, rng: RandomSource) -> float:
    """Half of ``min(cap, base * 2**attempt)`` fixed, the other half random.

    Guarantees some back-off on every retry (never less than half the exponential delay) and
    spreads only the other half, so collisions are more likely than with full jitter.
    """
    _check_range(base, cap)
    _check_attempt(attempt)
    return _equal_jitter(_capped_exponential(attempt, base, cap), rng)


def _equal_jitter(ceiling: float, rng: RandomSource) -> float:
    half = ceiling / 2
    return half + rng.uniform(0.0, half)


def decorrelated_jitter_delay(
    previous: float | None, *, base: float, cap: float, rng: RandomSource
) -> float:
    """``uniform(base, min(cap, 3 * previous))``, with ``previous = base`` for the first retry.

    Each delay grows from the one before it rather than from the attempt number, so a client's
    delays wander instead of doubling. Unlike the cheat sheet's ``min(cap, random(base,
    prev * 3))`` the cap bounds the range instead of clipping the draw (see the module
    docstring), and the range never drops below ``base`` even if ``previous`` came from
    elsewhere and is smaller than ``base / 3``.

    Raises:
        ValueError: a negative or non-finite base, a cap below the base, a negative previous.
    """
    _check_range(base, cap)
    if previous is not None and not (math.isfinite(previous) and previous >= 0):
        raise ValueError(f"previous delay must be a finite, non-negative number (got {previous})")
    return _decorrelated_jitter(previous, base, cap, rng)


def _decorrelated_jitter(
    previous: float | None, base: float, cap: float, rng: RandomSource
) -> float:
    if previous is None:
        previous = base
    return rng.uniform(base, max(base, min(cap, 3 * previous)))


class Strategy(StrEnum):
    """The backoff strategies the course compares (the values are the CLI's names)."""

    NONE = "none"
    """Retry at once: no back-off at all (the baseline of the contention experiment)."""
    EXPONENTIAL = "exponential"
    """``min(cap, base * 2**attempt)``, no jitter: clients that fail together retry together."""
    FULL_JITTER = "full-jitter"
    """``uniform(0, min(cap, base * 2**attempt))``."""
    EQUAL_JITTER = "equal-jitter"
    """Half of the exponential delay fixed, half uniform."""
    DECORRELATED_JITTER = "decorrelated-jitter"
    """``uniform(base, min(cap, 3 * previous))``, starting from ``previous = base``."""


STRATEGY_ALIASES: dict[str, Strategy] = {
    "full": Strategy.FULL_JITTER,
    "equal": Strategy.EQUAL_JITTER,
    "decorrelated": Strategy.DECORRELATED_JITTER,
    "exponential-no-jitter": Strategy.EXPONENTIAL,
}
"""Short names the CLI accepts too (``--strategy full``)."""


def parse_strategy(name: str) -> Strategy:
    """A strategy by its name or alias, case-insensitively.

    Raises:
        ValueError: an unknown name; the message lists the known ones and suggests the
            closest.
    """
    import difflib

    wanted = name.strip().lower()
    known = {strategy.value: strategy for strategy in Strategy} | STRATEGY_ALIASES
    if wanted in known:
        return known[wanted]
    close = difflib.get_close_matches(wanted, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    names = ", ".join(strategy.value for strategy in Strategy)
    raise ValueError(f"unknown strategy {name!r} ({hint}known: {names})")


@dataclass(frozen=True, slots=True)
class Backoff:
    """A strategy with its parameters: turns a retry's number into a delay.

    Attributes:
        strategy: which formula.
        base: seconds; the first retry's exponential delay (ignored by ``none``).
        cap: seconds; no delay is ever longer.

    Raises:
        ValueError: (on construction) a negative or non-finite base, a cap below the base.
    """

    strategy: Strategy
    base: float
    cap: float

    def __post_init__(self) -> None:
        _check_range(self.base, self.cap)

    def delay(self, attempt: int, previous: float | None, rng: RandomSource) -> float:
        """The delay before retry ``attempt`` (0 = the first retry), in seconds.

        Args:
            attempt: the retry's number, from 0.
            previous: the delay drawn for the retry before it (``None`` for the first); only
                decorrelated jitter uses it.
            rng: where the jitter comes from; the non-random strategies never draw from it.
        """
        # base and cap were checked on construction; the private helpers skip the checks
        # because the contention experiment asks for millions of delays.
        _check_attempt(attempt)
        match self.strategy:
            case Strategy.NONE:
                return 0.0
            case Strategy.EXPONENTIAL:
                return _capped_exponential(attempt, self.base, self.cap)
            case Strategy.FULL_JITTER:
                return rng.uniform(0.0, _capped_exponential(attempt, self.base, self.cap))
            case Strategy.EQUAL_JITTER:
                return _equal_jitter(_capped_exponential(attempt, self.base, self.cap), rng)
            case Strategy.DECORRELATED_JITTER:
                if previous is not None and not (math.isfinite(previous) and previous >= 0):
                    raise ValueError(
                        f"previous delay must be a finite, non-negative number (got {previous})"
                    )
                return _decorrelated_jitter(previous, self.base, self.cap, rng)

    def delays(self, retries: int, rng: RandomSource) -> list[float]:
        """The delays of retries 0 .. ``retries - 1`` of one operation, in order."""
        sequence: list[float] = []
        previous: float | None = None
        for attempt in range(retries):
            previous = self.delay(attempt, previous, rng)
            sequence.append(previous)
        return sequence

    def longest_delay(self, attempt: int) -> float:
        """The longest delay retry ``attempt`` can draw (what an SLA must plan for)."""
        _check_attempt(attempt)
        match self.strategy:
            case Strategy.NONE:
                return 0.0
            case Strategy.DECORRELATED_JITTER:
                # Each draw is at most 3 times the previous one, starting from base, so retry
                # n draws at most base * 3**(n + 1). Compared in logs: 3**n overflows early.
                if self.base == 0:
                    return 0.0
                if (attempt + 1) * math.log(3) >= math.log(self.cap) - math.log(self.base):
                    return self.cap
                return min(self.cap, self.base * 3.0 ** (attempt + 1))
            case _:
                return exponential_delay(attempt, base=self.base, cap=self.cap)


def worst_case_duration(backoff: Backoff, retries: int, call_timeout: float) -> float:
    """The longest an operation can take with ``retries`` retries: every wait at its longest
    plus ``retries + 1`` calls that each run into ``call_timeout``.

    The cheat sheet's example: exponential from 1 s capped at 15 s, 5 retries, 5 s per call:
    ``1 + 2 + 4 + 8 + 15 = 30`` s of waiting and ``6 * 5 = 30`` s of calls, 60 s in all.
    """
    waits = sum(backoff.longest_delay(attempt) for attempt in range(retries))
    return waits + (retries + 1) * call_timeout


# --- error classification -------------------------------------------------------------------


class ErrorClass(StrEnum):
    """Whether retrying an error can help."""

    TRANSIENT = "transient"
    """The same call may succeed later: a timeout, a lost connection, a conflict."""
    PERMANENT = "permanent"
    """The same call fails the same way: bad input, a missing permission, a bug."""


class ErrorClassifier(Protocol):
    """Decides whether an error is worth retrying (the caller's knowledge of its dependency)."""

    def __call__(self, error: Exception, /) -> ErrorClass:
        """The class of ``error``."""
        ...


class TransientError(Exception):
    """Raise (or subclass) this to say "retrying may help" whatever the classifier's defaults."""


class PermanentError(Exception):
    """Raise (or subclass) this to say "never retry this" whatever the classifier's defaults."""


TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure: the transaction lost a race; run it again
        "40P01",  # deadlock_detected: PostgreSQL aborted one side of a deadlock
        "08000",  # connection_exception
        "08003",  # connection_does_not_exist
        "08006",  # connection_failure
        "57P01",  # admin_shutdown: the server is restarting
        "55P03",  # lock_not_available (NOWAIT / lock_timeout)
    }
)
"""SQLSTATEs (PostgreSQL, read from the error's ``sqlstate`` attribute as psycopg sets it)
that a retry can cure."""


def classify_error(error: Exception) -> ErrorClass:
    """mqlab's default classification.

    Transient: :class:`TransientError`; ``TimeoutError`` (asyncio's included) and
    ``ConnectionError`` (refused, reset, aborted); a broker that is unreachable or timed out
    (:class:`~mqlab.brokers.base.BrokerUnavailable`, ``OperationTimedOut``); a database error
    whose SQLSTATE is in :data:`TRANSIENT_SQLSTATES`. Permanent: :class:`PermanentError`,
    validation errors (``ValueError``, which pydantic's ``ValidationError`` is, ``TypeError``,
    ``LookupError``) and everything else: an error nobody said is transient is not retried.
    """
    if isinstance(error, PermanentError):
        return ErrorClass.PERMANENT
    if isinstance(error, TransientError | TimeoutError | ConnectionError):
        return ErrorClass.TRANSIENT
    if isinstance(error, BrokerUnavailable | OperationTimedOut):
        return ErrorClass.TRANSIENT
    if getattr(error, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


def classifier(
    *,
    transient: tuple[type[Exception], ...] = (),
    permanent: tuple[type[Exception], ...] = (),
    fallback: ErrorClassifier = classify_error,
) -> ErrorClassifier:
    """A classifier that knows some more error types and asks ``fallback`` about the rest.

    ``permanent`` is checked first, so a type listed in both (or a subclass of a transient
    type listed as permanent) is never retried.
    """

    def classify(error: Exception) -> ErrorClass:
        if isinstance(error, permanent):
            return ErrorClass.PERMANENT
        if isinstance(error, transient):
            return ErrorClass.TRANSIENT
        return fallback(error)

    return classify


# --- the policy and the retry loop ----------------------------------------------------------


class GiveUpReason(StrEnum):
    """Why a retried operation stopped without succeeding (``RetryGaveUp.reason``)."""

    ATTEMPTS = "attempts"
    """The retry limit was reached."""
    DEADLINE = "deadline"
    """The next delay would have ended past the total-time budget."""
    BUDGET = "budget"
    """The shared token-bucket retry budget had no token left."""
    PERMANENT = "permanent"
    """The error was permanent: retrying cannot fix it."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How an operation is retried.

    Attributes:
        backoff: the delay before each retry.
        max_retries: retries after the initial call (so at most ``max_retries + 1`` calls);
            ``None`` for no limit, which only makes sense with a ``deadline`` or a ``budget``
            or where progress is certain (every client of the contention experiment wins its
            write eventually).
        deadline: seconds from the start of the first call within which the operation must
            end (the SLA): no retry is scheduled whose delay would end at or past it, and each
            call is cut off when it is reached.
        call_timeout: seconds one call may take before it counts as a (transient) timeout.
        budget: a retry budget shared by many operations (see
            :class:`~mqlab.patterns.retry_budget.RetryBudget`); each operation deposits
            into it once, each retry withdraws one token.

    Raises:
        ValueError: (on construction) a negative ``max_retries``, a deadline or call timeout
            that is not a positive finite number.
    """

    backoff: Backoff
    max_retries: int | None = 3
    deadline: float | None = None
    call_timeout: float | None = None
    budget: RetryBudget | None = None

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must not be negative (got {self.max_retries})")
        for name, value in (("deadline", self.deadline), ("call_timeout", self.call_timeout)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds (got {value})")


class RetryError(Exception):
    """The operation did not succeed and the policy stopped retrying.

    Attributes:
        operation: the name given to :func:`retry`.
        reason: why it stopped.
        calls: how many calls were made.
        last_error: what the last call raised (also the exception's ``__cause__``).
    """

    def __init__(
        self, operation: str, reason: GiveUpReason, calls: int, last_error: Exception
    ) -> None:
        self.operation = operation
        self.reason = reason
        self.calls = calls
        self.last_error = last_error
        super().__init__(
            f"{operation}: gave up after {calls} call(s) ({reason}): {describe_error(last_error)}"
        )


def describe_error(error: BaseException) -> str:
    """``TypeName: message`` on one line (what observations carry)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def retry(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    name: str = "operation",
    bus: ObservationBus | None = None,
    broker: str = "retry",
    clock: Callable[[], float] = loop_clock,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: RandomSource | None = None,
    classify: ErrorClassifier = classify_error,
) -> T:
    """Call ``operation`` until it succeeds or ``policy`` says stop; return its result.

    The loop, written out: call; on success return; on an error classify it; a permanent
    error stops at once; a transient one is retried unless the retry limit is reached, the
    next delay would end past the deadline, or the shared budget has no token, in that order
    (a token is only spent on a retry that will happen). Every call, every scheduled delay
    and the give-up are observations on ``bus`` (``RetryAttempted``, ``RetryScheduled``,
    ``RetryGaveUp``), stamped by the bus's clock.

    It runs unchanged on real time and on the simulator's virtual loop (where
    ``asyncio.sleep`` and the loop's clock are virtual). Only ``Exception`` is caught:
    cancellation and Ctrl-C go through.

    Args:
        operation: makes one call; it is called again for each retry.
        policy: backoff, limits and budget.
        name: the operation's name in observations (a message id when a message's handling is
            retried).
        bus: where the observations go (none are made without one).
        broker: the ``broker`` field of the observations (who saw them).
        clock: seconds, for the deadline and the calls' durations; the running loop's clock by
            default.
        sleep: waits a delay; ``asyncio.sleep`` by default.
        rng: the jitter's random source; a fresh unseeded ``random.Random`` by default (seed
            one on the simulator and in tests, never share one seed between real clients).
        classify: decides which errors are worth retrying.

    Raises:
        RetryError: the policy stopped retrying; ``reason`` says why, ``__cause__`` is the
            last error.
    """

    def report(kind: Callable[..., Observation], **fields: object) -> None:
        if bus is not None:
            bus.emit(kind(at=bus.now(), broker=broker, message_id=name, **fields))

    source = rng if rng is not None else random.Random()
    backoff = policy.backoff
    started = clock()
    ends_at = started + policy.deadline if policy.deadline is not None else None
    if policy.budget is not None:
        policy.budget.deposit()
    calls = 0
    attempt = 0
    previous_delay: float | None = None
    while True:
        calls += 1
        call_started = clock()
        limit = policy.call_timeout
        if ends_at is not None:
            remaining = ends_at - call_started
            limit = remaining if limit is None else min(limit, remaining)
        try:
            async with asyncio.timeout(limit):
                result = await operation()
        except Exception as error:
            now = clock()
            error_class = classify(error)
            failure = describe_error(error)
            report(
                RetryAttempted,
                call=calls,
                outcome="failed",
                duration=now - call_started,
                error=failure,
                error_class=error_class.value,
            )
            reason: GiveUpReason | None = None
            delay = 0.0
            if error_class is ErrorClass.PERMANENT:
                reason = GiveUpReason.PERMANENT
            elif policy.max_retries is not None and attempt >= policy.max_retries:
                reason = GiveUpReason.ATTEMPTS
            else:
                delay = backoff.delay(attempt, previous_delay, source)
                if ends_at is not None and now + delay >= ends_at:
                    reason = GiveUpReason.DEADLINE
                elif policy.budget is not None and not policy.budget.try_withdraw():
                    reason = GiveUpReason.BUDGET
            if reason is not None:
                report(
                    RetryGaveUp,
                    reason=reason.value,
                    calls=calls,
                    elapsed=now - started,
                    error=failure,
                )
                raise RetryError(name, reason, calls, error) from error
            report(
                RetryScheduled,
                attempt=attempt,
                delay=delay,
                strategy=backoff.strategy.value,
                error=failure,
            )
            await sleep(delay)
            previous_delay = delay
            attempt += 1
            continue
        report(RetryAttempted, call=calls, outcome="succeeded", duration=clock() - call_started)
        return result
