"""Hidden check of the retry-budget exercise: a flaky dependency the check controls.

Twenty-four operations go through the learner's ``call_with_retries``, one after another, each
against a scripted dependency (seeded): some succeed at once, some fail transiently a few
times, some hang, some are down for good, some fail permanently, some fail slowly enough that
the deadline, not the attempt limit, must stop them. The dependency reports every call itself
(``RetryAttempted`` when it ends, ``RetryScheduled`` when the next call of a failed operation
starts, with the wait measured), so the learner's loop needs to report nothing. The check
adds ``RetryGaveUp`` when the loop raises, and asserts the classifier on a table of errors
and that every recoverable operation recovered.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.observe.events import RetryAttempted, RetryGaveUp, RetryScheduled
from mqlab.patterns.retry import describe_error

MAX_CALLS = 4
DEADLINE = 6.0
CALL_TIMEOUT = 2.0
HANG = 60.0
"""How long a hanging call would take to answer (a loop without a call timeout waits it)."""
OPERATIONS_PER_KIND = 3


class ServiceError(Exception):
    """What the dependency answers with: an HTTP-like status and its reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status


TRANSIENT_ERRORS: tuple[Callable[[], Exception], ...] = (
    lambda: ServiceError(503, "service unavailable"),
    lambda: ServiceError(429, "too many requests"),
    lambda: ServiceError(502, "bad gateway"),
    lambda: ConnectionResetError("connection reset by peer"),
)
PERMANENT_ERRORS: tuple[Callable[[], Exception], ...] = (
    lambda: ServiceError(400, "bad request: amount is missing"),
    lambda: ServiceError(404, "no such account"),
    lambda: ServiceError(403, "forbidden: the token lacks payments:write"),
    lambda: KeyError("price_list_id"),
)
CLASSIFY_TABLE: tuple[tuple[Callable[[], Exception], str], ...] = (
    *((make, "transient") for make in TRANSIENT_ERRORS),
    (lambda: ServiceError(504, "gateway timeout"), "transient"),
    (TimeoutError, "transient"),
    (lambda: ConnectionRefusedError("connection refused"), "transient"),
    *((make, "permanent") for make in PERMANENT_ERRORS),
    (lambda: ServiceError(422, "unprocessable: currency XXX"), "permanent"),
    (lambda: ValueError("amount must be positive"), "permanent"),
)


@dataclass(frozen=True, slots=True)
class Call:
    """One scripted answer: after ``seconds``, ``error`` (None: success), which is
    ``error_class`` (``transient`` or ``permanent``)."""

    seconds: float
    error: Callable[[], Exception] | None = None
    error_class: str = ""


def _transient(seconds: float, rng: random.Random) -> Call:
    return Call(seconds, rng.choice(TRANSIENT_ERRORS), "transient")


def _permanent(seconds: float, rng: random.Random) -> Call:
    return Call(seconds, rng.choice(PERMANENT_ERRORS), "permanent")


@dataclass(frozen=True, slots=True)
class Script:
    """What the dependency does for one operation, call after call (the last repeats)."""

    kind: str
    fault: str
    calls: tuple[Call, ...]
    recoverable: bool
    """A loop within the budget must get this operation's result."""


def _script(kind: str, rng: random.Random) -> Script:
    fast = round(rng.uniform(0.02, 0.2), 3)
    match kind:
        case "ok":
            return Script(kind, "", (Call(fast),), recoverable=True)
        case "flaky":
            failures = rng.randint(1, MAX_CALLS - 2)
            calls = tuple(_transient(fast, rng) for _ in range(failures))
            return Script(kind, f"transient-errors count={failures}", (*calls, Call(fast)), True)
        case "hangs-once":
            return Script(kind, "hangs calls=first", (Call(HANG), Call(fast)), recoverable=True)
        case "down":
            return Script(kind, "dependency-down", (_transient(fast, rng),), recoverable=False)
        case "permanent":
            return Script(
                kind, "permanent-error on-call=1", (_permanent(fast, rng),), recoverable=False
            )
        case "transient-then-permanent":
            calls = (_transient(fast, rng), _permanent(fast, rng))
            return Script(kind, "permanent-error on-call=2", calls, recoverable=False)
        case "slow-failures":
            slow = round(rng.uniform(1.5, 1.9), 3)
            calls = (_transient(slow, rng),)
            return Script(kind, f"slow-failures each={slow}s", calls, recoverable=False)
        case _:
            return Script(kind, "hangs calls=every", (Call(HANG),), recoverable=False)


KINDS = (
    "ok",
    "flaky",
    "hangs-once",
    "down",
    "permanent",
    "transient-then-permanent",
    "slow-failures",
    "hangs-always",
)


class Dependency:
    """One operation's scripted dependency; reports each call as the service sees it."""

    def __init__(self, ctx: GradingContext, name: str, script: Script) -> None:
        self.ctx = ctx
        self.name = name
        self.script = script
        self.calls = 0
        self.result = f"{name}-result"
        self.started_at: float | None = None
        self.raised: set[int] = set()
        """ids of the errors this dependency raised (what a give-up may re-raise)."""
        self._last_failure: tuple[float, str] | None = None

    async def __call__(self) -> str:
        ctx = self.ctx
        now = ctx.bus.now()
        self.calls += 1
        if self.started_at is None:
            self.started_at = now
        if self._last_failure is not None:
            failed_at, error = self._last_failure
            ctx.emit(
                RetryScheduled,
                message_id=self.name,
                attempt=self.calls - 2,
                delay=round(now - failed_at, 6),
                strategy="yours",
                error=error,
            )
        answer = self.script.calls[min(self.calls, len(self.script.calls)) - 1]
        try:
            await asyncio.sleep(answer.seconds)
        except asyncio.CancelledError:
            self._failed(now, "TimeoutError: the caller stopped waiting", "transient")
            raise
        if answer.error is None:
            self._report(now, "succeeded")
            self._last_failure = None
            return self.result
        error = answer.error()
        self.raised.add(id(error))
        self._failed(now, describe_error(error), answer.error_class)
        raise error

    def _failed(self, started: float, error: str, error_class: str) -> None:
        self._report(started, "failed", error, error_class)
        self._last_failure = (self.ctx.bus.now(), error)

    def _report(self, started: float, outcome: str, error: str = "", error_class: str = "") -> None:
        self.ctx.emit(
            RetryAttempted,
            message_id=self.name,
            call=self.calls,
            outcome=outcome,
            duration=round(self.ctx.bus.now() - started, 6),
            error=error,
            error_class=error_class,
        )

    def gave_up_with(self, error: BaseException) -> bool:
        """Whether ``error`` is a give-up: one of this dependency's errors, a timeout, or an
        exception raised ``from`` one of them (anything else is a bug in the learner's loop)."""
        for candidate in (error, error.__cause__):
            if candidate is None:
                continue
            if id(candidate) in self.raised or isinstance(candidate, TimeoutError):
                return True
        return False


async def _run_operation(
    ctx: GradingContext,
    call_with_retries: Callable[..., Awaitable[Any]],
    name: str,
    script: Script,
    rng: random.Random,
) -> str:
    """Run one operation; returns what to assert about it ('' when nothing)."""
    dependency = Dependency(ctx, name, script)
    if script.fault:
        fault, *details = script.fault.split()
        ctx.fault(fault, name, **dict(detail.split("=", 1) for detail in details))
    try:
        result = await call_with_retries(
            dependency,
            max_calls=MAX_CALLS,
            deadline=DEADLINE,
            call_timeout=CALL_TIMEOUT,
            rng=rng,
        )
    except Exception as error:
        if not dependency.gave_up_with(error):
            raise
        started = dependency.started_at if dependency.started_at is not None else ctx.bus.now()
        ctx.emit(
            RetryGaveUp,
            message_id=name,
            reason="raised",
            calls=dependency.calls,
            elapsed=round(ctx.bus.now() - started, 6),
            error=describe_error(error),
        )
        if script.recoverable:
            return (
                f"gave up after {dependency.calls} call(s) with {describe_error(error)}, "
                "though the budget allowed it to succeed"
            )
        return ""
    if result != dependency.result:
        raise LearnerMistake(
            f"call_with_retries returned {result!r} for {name}, not what the operation "
            "returned: return the successful call's result, raise when you give up"
        )
    return ""


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    classify = learner_function(learner, "classify")
    call_with_retries = learner_function(learner, "call_with_retries")
    for make, expected in CLASSIFY_TABLE:
        error = make()
        got = classify(error)
        ctx.assert_that(
            f"classify({describe_error(error)}) is {expected}",
            holds=got == expected,
            observed=f"got {got!r}",
        )
    kinds = [kind for kind in KINDS for _ in range(OPERATIONS_PER_KIND)]
    ctx.rng.shuffle(kinds)
    for number, kind in enumerate(kinds, start=1):
        name = f"op-{number:02d}"
        script = _script(kind, ctx.rng)
        rng = random.Random(ctx.rng.getrandbits(64))
        problem = await _run_operation(ctx, call_with_retries, name, script, rng)
        if script.recoverable:
            ctx.assert_that(
                f"{name} ({script.fault or 'answers at once'}) gets its result",
                holds=not problem,
                observed=problem or "it did",
            )
