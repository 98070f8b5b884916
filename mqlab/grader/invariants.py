"""Invariants: what must be true of a recorded history for learner code to pass.

The grader never compares printed output. A check drives the learner's code under faults and
everything that happens is an observation (a message produced, processed, an effect applied, a
retry scheduled, a saga step compensated, an event appended ...). An invariant reads that
history and either holds, saying what it proved, or does not, with a *minimal counter-example*:
the message ids, offsets, the step and the fault that exposed it, so the learner sees the one
case that breaks their code rather than a wall of numbers.

Each invariant is a plain function ``(observations, params) -> Finding`` registered under an id
that exercise files name (``invariants: [{id: nothing-lost}]``). They know nothing of any
exercise: the same ``nothing-lost`` judges an at-least-once Kafka consumer and an SQS FIFO one.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import JsonValue

from mqlab.observe.events import (
    DEAD_LETTER_PRODUCER,
    CheckEvaluated,
    CompensationStarted,
    CompensationSucceeded,
    DeadLettered,
    Delivered,
    EffectApplied,
    EventAppended,
    FaultInjected,
    Observation,
    Processed,
    Produced,
    RetryAttempted,
    RetryGaveUp,
    RetryScheduled,
    SagaEnded,
    SagaParked,
    SagaStarted,
    SagaStepFailed,
    SagaStepSucceeded,
    VersionConflict,
)

Params = Mapping[str, JsonValue]

_O = TypeVar("_O", bound=Observation)

EXAMPLES_SHOWN = 3
"""How many offending cases a counter-example lists (the first is the one to study)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """What an invariant found.

    Attributes:
        holds: whether the invariant holds on this history.
        proven: on a pass, what was shown (``30 messages, each processed: none lost``).
        problem: on a failure, one line: what broke.
        counterexample: on a failure, the evidence, first case first.
    """

    holds: bool
    proven: str = ""
    problem: str = ""
    counterexample: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Invariant:
    """A named property of a history."""

    id: str
    title: str
    judge: Callable[[Sequence[Observation], Params], Finding]
    params: tuple[str, ...] = field(default=())
    """The parameter names it takes (documented on its function)."""


INVARIANTS: dict[str, Invariant] = {}


def _invariant(
    id: str, title: str, *params: str
) -> Callable[
    [Callable[[Sequence[Observation], Params], Finding]],
    Callable[[Sequence[Observation], Params], Finding],
]:
    def register(
        judge: Callable[[Sequence[Observation], Params], Finding],
    ) -> Callable[[Sequence[Observation], Params], Finding]:
        INVARIANTS[id] = Invariant(id, title, judge, params)
        return judge

    return register


def judge(invariant_id: str, observations: Sequence[Observation], params: Params) -> Finding:
    """Judge one invariant by id. A ``prefix`` parameter narrows the history to the
    observations whose ``message_id`` starts with it (others without a message id stay).

    Raises:
        KeyError: no invariant has that id.
        ValueError: a parameter of the wrong type.
    """
    invariant = INVARIANTS[invariant_id]
    prefix = params.get("prefix")
    if prefix is not None:
        if not isinstance(prefix, str):
            raise ValueError("parameter 'prefix' must be a string")
        observations = [
            o
            for o in observations
            if not isinstance(getattr(o, "message_id", None), str)
            or str(getattr(o, "message_id", "")).startswith(prefix)
        ]
    return invariant.judge(observations, {k: v for k, v in params.items() if k != "prefix"})


# --- helpers ------------------------------------------------------------------------------


def _of(observations: Iterable[Observation], kind: type[_O]) -> list[_O]:
    return [o for o in observations if isinstance(o, kind)]


def _number(params: Params, name: str, default: float | None = None) -> float:
    value = params.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"parameter {name!r} must be a finite number, got {value!r}")
    return float(value)


def _strings(params: Params, name: str) -> list[str]:
    value = params.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"parameter {name!r} must be a list of strings")
    return [str(v) for v in value]


def _heals(fault: FaultInjected, earlier: Sequence[FaultInjected]) -> bool:
    """A resume, or the restart of a target an earlier fault killed or paused."""
    if fault.fault == "resume":
        return True
    return fault.fault == "restart" and any(
        e.target == fault.target and e.fault in ("kill", "pause") for e in earlier
    )


def _last_fault_before(
    observations: Sequence[Observation], at: float, about: str | None = None
) -> str:
    """The latest injected fault at or before ``at``, as text (what exposed the problem).

    With ``about`` (a message id), the latest fault that names it (as its target or one of
    its parameters: a crash while handling it, its duplicate delivery) is preferred to
    whatever fault came last. Recoveries (a resume, the restart of a broker that was killed
    or paused) are passed over: they put the lab back together, they exposed nothing.
    """
    faults = [o for o in observations if isinstance(o, FaultInjected) and o.at <= at]
    faults = [f for number, f in enumerate(faults) if not _heals(f, faults[:number])]
    if not faults:
        return "no fault had been injected yet"
    naming = [f for f in faults if about in (f.target, *(v for _, v in f.params))]
    last = naming[-1] if about is not None and naming else faults[-1]
    params = " ".join(f"{k}={v}" for k, v in last.params)
    return f"after the fault: {last.fault} {last.target} {params}".rstrip()


def _deliveries_of(observations: Sequence[Observation], message_id: str) -> str:
    """Who received ``message_id`` and when, as text: a message applied twice was almost always
    received twice (a redelivery after a crash, a visibility timeout that ran out mid-work), and
    the times say which. Empty where the history holds no deliveries of it (a check that hands
    the learner's code its messages itself)."""
    received = [
        f"{d.consumer} at {d.at:.2f}s (delivery {d.delivery_count})"
        for d in _of(observations, Delivered)
        if d.message_id == message_id
    ]
    return f"received by {', '.join(received)}" if received else ""


def _sent(observations: Sequence[Observation]) -> dict[str, Produced]:
    """The messages the broker acknowledged, first acknowledgement per id (a consumer's own
    dead-letter copy is not a new message)."""
    sent: dict[str, Produced] = {}
    for produced in _of(observations, Produced):
        if produced.duplicate or produced.producer == DEAD_LETTER_PRODUCER:
            continue
        sent.setdefault(produced.message_id, produced)
    return sent


def _where(produced: Produced) -> str:
    if produced.partition is not None and produced.position is not None:
        return f" (partition {produced.partition}, offset {produced.position})"
    if produced.position is not None:
        return f" (position {produced.position})"
    return ""


def _examples(lines: Sequence[str]) -> tuple[str, ...]:
    shown = tuple(lines[:EXAMPLES_SHOWN])
    more = len(lines) - len(shown)
    return (*shown, f"... and {more} more") if more > 0 else shown


def _judged(counterexamples: Sequence[str], *, proven: str, problem: str) -> Finding:
    """The finding of an invariant that looked for counterexamples: it holds when there are
    none (``proven`` says what was shown), else it fails with ``problem`` and the first few."""
    if not counterexamples:
        return Finding(True, proven=proven)
    return Finding(False, problem=problem, counterexample=_examples(counterexamples))


# --- messages -----------------------------------------------------------------------------


def _fault_after_delivery(observations: Sequence[Observation], message_id: str) -> str | None:
    """The first fault after ``message_id`` was last delivered: the crash (or rebalance) that
    took it from the consumer that had it. None when it was never delivered, or nothing
    happened after."""
    delivered = [d.at for d in _of(observations, Delivered) if d.message_id == message_id]
    if not delivered:
        return None
    faults = [o for o in observations if isinstance(o, FaultInjected) and o.at >= delivered[-1]]
    faults = [f for number, f in enumerate(faults) if not _heals(f, faults[:number])]
    if not faults:
        return None
    params = " ".join(f"{k}={v}" for k, v in faults[0].params)
    return f"after the fault: {faults[0].fault} {faults[0].target} {params}".rstrip()


@_invariant("nothing-lost", "nothing acknowledged is lost", "dead_letter_to")
def nothing_lost(observations: Sequence[Observation], params: Params) -> Finding:
    """Every message the broker acknowledged was processed (or moved to a dead-letter place).

    ``dead_letter_to`` (optional): only a move to a destination whose name ends with it
    counts, where a dead-letter exchange is also the way to a retry queue (a message
    rejected into the wait queue is not parked, and may still be lost from there).
    """
    sent = _sent(observations)
    if not sent:
        return Finding(False, problem="no message was acknowledged: nothing was tested")
    parking = params.get("dead_letter_to")
    if parking is not None and not isinstance(parking, str):
        raise ValueError("parameter 'dead_letter_to' must be a string")
    handled = {p.message_id for p in _of(observations, Processed) if not p.skipped_duplicate}
    handled |= {e.message_id for e in _of(observations, EffectApplied)}
    handled |= {
        d.message_id
        for d in _of(observations, DeadLettered)
        if parking is None or d.target.endswith(parking)
    }
    missing = [produced for mid, produced in sent.items() if mid not in handled]
    if not missing:
        return Finding(True, proven=f"all {len(sent)} acknowledged messages were processed")
    first = missing[0]
    lines = [f"{p.message_id}{_where(p)}: acknowledged, never processed" for p in missing]
    naming = _last_fault_before(
        observations, observations[-1].at if observations else 0, first.message_id
    )
    # A fault that names the message says most; else the one that took it from its consumer.
    names_it = any(
        first.message_id in (f.target, *(v for _, v in f.params))
        for f in _of(observations, FaultInjected)
    )
    taken = None if names_it else _fault_after_delivery(observations, first.message_id)
    fault = taken or naming
    return Finding(
        False,
        problem=f"{len(missing)} of {len(sent)} acknowledged messages were never processed "
        f"(first: {first.message_id})",
        counterexample=(*_examples(lines), fault),  # the fault stays visible however many
    )


@_invariant("no-double-effect", "no side effect is applied twice")
def no_double_effect(observations: Sequence[Observation], params: Params) -> Finding:
    """No message's business effect is applied more than once (``EffectApplied`` per entity
    and message, or, where a check reports no effects, processing per group)."""
    effects = _of(observations, EffectApplied)
    counts: Counter[tuple[str, str]] = Counter()
    first_seen: dict[tuple[str, str], EffectApplied] = {}
    if effects:
        for effect in effects:
            counts[(effect.entity, effect.message_id)] += 1
            first_seen.setdefault((effect.entity, effect.message_id), effect)
        twice = [key for key, n in counts.items() if n > 1]
        if not twice:
            return Finding(True, proven=f"{len(effects)} effects, each applied once")
        lines = []
        for entity, message_id in twice:
            applied = [e for e in effects if (e.entity, e.message_id) == (entity, message_id)]
            steps = ", ".join(f"{e.before}->{e.after}" for e in applied)
            received = _deliveries_of(observations, message_id)
            lines.append(
                f"{message_id} applied {len(applied)} times to {entity} ({steps}); "
                + (f"{received}; " if received else "")
                + _last_fault_before(observations, applied[1].at, message_id)
            )
        return Finding(
            False,
            problem=f"{len(twice)} messages changed the state more than once",
            counterexample=_examples(lines),
        )
    runs: Counter[tuple[str, str]] = Counter()
    processed = [p for p in _of(observations, Processed) if not p.skipped_duplicate]
    for p in processed:
        runs[(p.group, p.message_id)] += 1
    twice = [key for key, n in runs.items() if n > 1]
    if not processed:
        return Finding(False, problem="nothing was processed: nothing was tested")
    if not twice:
        return Finding(True, proven=f"{len(processed)} messages, each processed once")
    lines = [f"{mid} processed {runs[(g, mid)]} times by {g or 'the consumer'}" for g, mid in twice]
    return Finding(
        False,
        problem=f"{len(twice)} messages were processed more than once",
        counterexample=_examples(lines),
    )


@_invariant("per-key-order", "each key's messages are processed in the order they were sent")
def per_key_order(observations: Sequence[Observation], params: Params) -> Finding:
    """Per group and key, messages are first processed in the order the broker acknowledged
    them (a message overtaking an earlier one of the same key breaks it)."""
    sent = _sent(observations)
    order = {mid: index for index, mid in enumerate(sent)}
    keyed = [p for p in _of(observations, Processed) if not p.skipped_duplicate]
    if not keyed:
        return Finding(False, problem="nothing was processed: nothing was tested")
    highest: dict[tuple[str, str], tuple[int, str]] = {}
    seen: set[tuple[str, str]] = set()
    lines: list[str] = []
    keys: set[str] = set()
    for p in keyed:
        if (p.group, p.message_id) in seen or p.message_id not in order:
            continue
        seen.add((p.group, p.message_id))
        key = p.key or sent[p.message_id].key or ""
        keys.add(key)
        index = order[p.message_id]
        last = highest.get((p.group, key))
        if last is not None and index < last[0]:
            lines.append(
                f"key {key!r}: {p.message_id}{_where(sent[p.message_id])} was processed after "
                f"{last[1]}{_where(sent[last[1]])}, which was sent later"
            )
        if last is None or index > last[0]:
            highest[(p.group, key)] = (index, p.message_id)
    return _judged(
        lines,
        proven=f"{len(seen)} messages over {len(keys)} keys, each key in order",
        problem=f"{len(lines)} messages overtook an earlier one of their key",
    )


@_invariant("retry-delay-respected", "a failed message waits before it comes back", "seconds")
def retry_delay_respected(observations: Sequence[Observation], params: Params) -> Finding:
    """Consecutive deliveries of one message are at least ``seconds`` apart."""
    wanted = _number(params, "seconds")
    deliveries: defaultdict[str, list[float]] = defaultdict(list)
    for delivered in _of(observations, Delivered):
        deliveries[delivered.message_id].append(delivered.at)
    lines = []
    retried = 0
    for message_id, times in deliveries.items():
        retried += len(times) > 1
        for earlier, later in itertools.pairwise(times):
            if later - earlier < wanted - 1e-6:
                lines.append(
                    f"{message_id} came back after {later - earlier:.3f}s (wanted >= {wanted:g}s)"
                )
                break
    if not retried:
        return Finding(False, problem="no message was delivered twice: no retry was tested")
    return _judged(
        lines,
        proven=f"{retried} retried messages, each waited >= {wanted:g}s",
        problem="retries came back too soon",
    )


# --- retries ------------------------------------------------------------------------------


def _bounds(
    strategy: str, attempt: int, base: float, cap: float, previous: float | None
) -> tuple[float, float]:
    exponential = min(cap, base * 2**attempt)
    if strategy == "full":
        return 0.0, exponential
    if strategy == "equal":
        return exponential / 2, exponential
    if strategy == "decorrelated":
        upper = min(cap, (previous if previous is not None else base) * 3)
        return min(base, upper), upper
    if strategy == "exponential":
        return exponential, exponential
    raise ValueError(f"unknown strategy {strategy!r} (full, equal, decorrelated, exponential)")


@_invariant(
    "delays-within-bounds",
    "every retry delay is in its strategy's range",
    "strategy",
    "base",
    "cap",
)
def delays_within_bounds(observations: Sequence[Observation], params: Params) -> Finding:
    """Each ``RetryScheduled.delay`` lies in the range of ``strategy`` (full, equal,
    decorrelated, exponential) for its attempt, with ``base`` and ``cap`` in seconds. For
    decorrelated jitter the range depends on the previous delay of the same operation."""
    strategy = str(params.get("strategy", "full"))
    base, cap = _number(params, "base"), _number(params, "cap")
    previous: dict[str, float] = {}
    lines = []
    scheduled = _of(observations, RetryScheduled)
    if not scheduled:
        return Finding(False, problem="no retry was scheduled: nothing was tested")
    for retry in scheduled:
        low, high = _bounds(strategy, retry.attempt, base, cap, previous.get(retry.message_id))
        if not (low - 1e-9 <= retry.delay <= high + 1e-9) or not math.isfinite(retry.delay):
            lines.append(
                f"{retry.message_id} retry {retry.attempt}: delay {retry.delay:.4f}s, "
                f"{strategy} jitter allows [{low:.4f}, {high:.4f}]"
            )
        previous[retry.message_id] = retry.delay
    return _judged(
        lines,
        proven=f"{len(scheduled)} delays, each within the {strategy} range (cap {cap:g}s)",
        problem=f"{len(lines)} delays outside the {strategy} range",
    )


@_invariant("jitter-spreads", "clients retrying together spread out", "min_distinct")
def jitter_spreads(observations: Sequence[Observation], params: Params) -> Finding:
    """Operations retrying at the same attempt draw different delays: for each attempt with
    several operations, the share of distinct delays is at least ``min_distinct`` (default
    0.5). Clients that wait the same time collide again: that is what jitter prevents."""
    wanted = _number(params, "min_distinct", 0.5)
    by_attempt: defaultdict[int, list[float]] = defaultdict(list)
    for retry in _of(observations, RetryScheduled):
        by_attempt[retry.attempt].append(round(retry.delay, 6))
    crowded = {attempt: delays for attempt, delays in by_attempt.items() if len(delays) > 1}
    if not crowded:
        return Finding(False, problem="no two operations retried together: nothing was tested")
    lines = []
    for attempt, delays in sorted(crowded.items()):
        distinct = len(set(delays)) / len(delays)
        if distinct < wanted:
            common, times = Counter(delays).most_common(1)[0]
            lines.append(
                f"retry {attempt}: {times} of {len(delays)} operations waited exactly {common:g}s"
            )
    return _judged(
        lines,
        proven=f"retries spread out at each of {len(crowded)} attempts",
        problem="retrying clients stay in lockstep",
    )


@_invariant("delays-not-piled-on-cap", "retry delays do not pile up on the cap", "cap", "max_share")
def delays_not_piled_on_cap(observations: Sequence[Observation], params: Params) -> Finding:
    """At most ``max_share`` (default 0.05) of the delays are exactly ``cap``. A draw that is
    bounded by the cap lands on it with probability zero; a draw clipped to it afterwards
    lands there every time it overshoots, and those clients retry together again."""
    cap = _number(params, "cap")
    allowed = _number(params, "max_share", 0.05)
    scheduled = _of(observations, RetryScheduled)
    if not scheduled:
        return Finding(False, problem="no retry was scheduled: nothing was tested")
    on_cap = [r for r in scheduled if abs(r.delay - cap) <= 1e-9]
    share = len(on_cap) / len(scheduled)
    if share <= allowed:
        return Finding(True, proven=f"{len(on_cap)} of {len(scheduled)} delays exactly on the cap")
    lines = [f"{r.message_id} retry {r.attempt}: waited exactly the cap, {cap:g}s" for r in on_cap]
    return Finding(
        False,
        problem=f"{share:.0%} of the delays are exactly the cap ({cap:g}s): clipped, not drawn "
        "within it",
        counterexample=_examples(lines),
    )


@_invariant("permanent-never-retried", "a permanent error is never retried", "permanent")
def permanent_never_retried(observations: Sequence[Observation], params: Params) -> Finding:
    """No retry is scheduled after a call failed with an error whose text starts with one of
    ``permanent`` (the check knows which errors it raised are permanent)."""
    permanent = tuple(_strings(params, "permanent"))
    failed_permanently: dict[str, RetryAttempted] = {}
    for attempt in _of(observations, RetryAttempted):
        if attempt.outcome == "failed" and attempt.error.startswith(permanent):
            failed_permanently.setdefault(attempt.message_id, attempt)
    if not failed_permanently:
        return Finding(False, problem="no call failed with a permanent error: nothing was tested")
    lines = [
        f"{retry.message_id}: retry {retry.attempt} scheduled after "
        f"{retry.error or 'a permanent error'}"
        for retry in _of(observations, RetryScheduled)
        if retry.message_id in failed_permanently
        and retry.at >= failed_permanently[retry.message_id].at
    ]
    return _judged(
        lines,
        proven=f"{len(failed_permanently)} permanent failures, none retried",
        problem="a permanent error was retried",
    )


@_invariant("calls-within-limit", "no operation is called more often than allowed", "max_calls")
def calls_within_limit(observations: Sequence[Observation], params: Params) -> Finding:
    """No operation makes more than ``max_calls`` calls (the initial call included)."""
    limit = int(_number(params, "max_calls"))
    calls: Counter[str] = Counter(a.message_id for a in _of(observations, RetryAttempted))
    if not calls:
        return Finding(False, problem="no call was reported: nothing was tested")
    over = [f"{mid} was called {n} times (limit {limit})" for mid, n in calls.items() if n > limit]
    return _judged(
        over,
        proven=f"{len(calls)} operations, at most {limit} calls each",
        problem="an operation went past its retry limit",
    )


# --- sagas --------------------------------------------------------------------------------


@_invariant("compensations-reverse-order", "compensations run in reverse order")
def compensations_reverse_order(observations: Sequence[Observation], params: Params) -> Finding:
    """In each saga, compensations start in the reverse order of the steps they undo."""
    order: defaultdict[str, list[str]] = defaultdict(list)
    for started in _of(observations, SagaStarted):
        order[started.saga_id] = list(started.steps)
    compensating: defaultdict[str, list[str]] = defaultdict(list)
    for compensation in _of(observations, CompensationStarted):
        if compensation.step not in compensating[compensation.saga_id]:
            compensating[compensation.saga_id].append(compensation.step)
    if not compensating:
        return Finding(False, problem="no saga compensated anything: nothing was tested")
    lines = []
    for saga_id, steps in compensating.items():
        positions = [order[saga_id].index(s) for s in steps if s in order[saga_id]]
        if positions != sorted(positions, reverse=True):
            lines.append(
                f"saga {saga_id}: compensated {' -> '.join(steps)} (must be reverse order)"
            )
    return _judged(
        lines,
        proven=f"{len(compensating)} sagas compensated in reverse order",
        problem="compensations ran out of order",
    )


@_invariant("sagas-resolved", "every saga ends completed, compensated or parked")
def sagas_resolved(observations: Sequence[Observation], params: Params) -> Finding:
    """Each started saga ends: completed, compensated with every step that succeeded (or may
    have applied) undone, or parked for a human. A saga left half-done breaks it."""
    started = {s.saga_id: s for s in _of(observations, SagaStarted)}
    if not started:
        return Finding(False, problem="no saga was started: nothing was tested")
    applied: defaultdict[str, set[str]] = defaultdict(set)
    for done in _of(observations, SagaStepSucceeded):
        applied[done.saga_id].add(done.step)
    for failed in _of(observations, SagaStepFailed):
        if failed.may_have_applied:
            applied[failed.saga_id].add(failed.step)
    undone: defaultdict[str, set[str]] = defaultdict(set)
    for compensated in _of(observations, CompensationSucceeded):
        undone[compensated.saga_id].add(compensated.step)
    ended = {e.saga_id: e for e in _of(observations, SagaEnded)}
    parked = {p.saga_id for p in _of(observations, SagaParked)}
    lines = []
    for saga_id in started:
        end = ended.get(saga_id)
        if saga_id in parked:
            continue
        fault = _fault_naming(observations, saga_id)
        because = f"; {fault}" if fault else ""
        if end is None:
            lines.append(
                f"saga {saga_id}: never finished (steps applied: {sorted(applied[saga_id])})"
                f"{because}"
            )
        elif end.outcome == "compensated" and not applied[saga_id] <= undone[saga_id]:
            left = sorted(applied[saga_id] - undone[saga_id])
            lines.append(
                f"saga {saga_id}: compensated, but {', '.join(left)} still applied{because}"
            )
    return _judged(
        lines,
        proven=f"{len(started)} sagas, each completed, undone or parked",
        problem="a saga was left half-done",
    )


# --- event sourcing -----------------------------------------------------------------------


@_invariant("versions-strictly-increasing", "each aggregate's versions go 1, 2, 3 ...")
def versions_strictly_increasing(observations: Sequence[Observation], params: Params) -> Finding:
    """Per aggregate, appended events carry versions 1, 2, 3 ... with no repeat and no gap."""
    versions: defaultdict[str, list[int]] = defaultdict(list)
    for appended in _of(observations, EventAppended):
        versions[appended.aggregate_id].append(appended.version)
    if not versions:
        return Finding(False, problem="no event was appended: nothing was tested")
    lines = [
        f"{aggregate}: versions {seq}"
        for aggregate, seq in versions.items()
        if seq != list(range(1, len(seq) + 1))
    ]
    return _judged(
        lines,
        proven=f"{len(versions)} aggregates, versions strictly increasing",
        problem="an aggregate's versions repeat or skip",
    )


@_invariant("conflicts-detected", "a stale writer is refused", "at_least")
def conflicts_detected(observations: Sequence[Observation], params: Params) -> Finding:
    """At least ``at_least`` (default 1) appends at a stale version were refused."""
    wanted = int(_number(params, "at_least", 1))
    conflicts = _of(observations, VersionConflict)
    if len(conflicts) >= wanted:
        return Finding(True, proven=f"{len(conflicts)} stale appends refused")
    return Finding(
        False,
        problem=f"{len(conflicts)} stale appends refused, {wanted} expected: two writers "
        "raced and both were accepted",
    )


# --- the check's own assertions -----------------------------------------------------------


@_invariant("checks-hold", "the check's own assertions hold")
def checks_hold(observations: Sequence[Observation], params: Params) -> Finding:
    """Every ``CheckEvaluated`` the check reported holds (state read back at the end, a
    decision compared with what the requirements call for ...)."""
    checks = _of(observations, CheckEvaluated)
    if not checks:
        return Finding(False, problem="the check asserted nothing")
    failed = [f"{c.description}: {c.observed}" for c in checks if not c.holds]
    return _judged(
        failed,
        proven=f"{len(checks)} assertions held",
        problem=f"{len(failed)} of {len(checks)} assertions failed",
    )


# --- exercises on the patterns (retry budget, ...) ------------------------------------------
# Added with the pattern exercises of lessons 03-07; the sections above are the grader's own.


def _faults_on(observations: Sequence[Observation], target: str) -> list[FaultInjected]:
    """The faults a check injected on one operation or message (its id as the target)."""
    return [o for o in observations if isinstance(o, FaultInjected) and o.target == target]


def _fault_text(fault: FaultInjected) -> str:
    params = " ".join(f"{k}={v}" for k, v in fault.params)
    return f"{fault.fault} {fault.target} {params}".rstrip()


def _fault_naming(observations: Sequence[Observation], about: str) -> str | None:
    """``after the fault: ...`` for the latest fault that names ``about`` (a saga or message
    id) as its target or a parameter; None when no fault does (then none is blamed)."""
    naming = [
        o
        for o in observations
        if isinstance(o, FaultInjected) and about in (o.target, *(v for _, v in o.params))
    ]
    return f"after the fault: {_fault_text(naming[-1])}" if naming else None


@_invariant("within-deadline", "every operation ends within its deadline", "seconds")
def within_deadline(observations: Sequence[Observation], params: Params) -> Finding:
    """Each retried operation ends at most ``seconds`` after its first call started: waits
    and calls together stay inside the SLA. An operation's calls are its ``RetryAttempted``
    (``at`` is when a call ended, ``duration`` how long it ran); it ends with its last call
    or with its ``RetryGaveUp``, whichever comes later."""
    deadline = _number(params, "seconds")
    calls: defaultdict[str, list[RetryAttempted]] = defaultdict(list)
    for attempt in _of(observations, RetryAttempted):
        calls[attempt.message_id].append(attempt)
    if not calls:
        return Finding(False, problem="no call was reported: nothing was tested")
    gave_up: dict[str, RetryGaveUp] = {g.message_id: g for g in _of(observations, RetryGaveUp)}
    lines = []
    longest = 0.0
    for operation, made in calls.items():
        started = min(a.at - a.duration for a in made)
        ends = [a.at for a in made]
        if operation in gave_up:
            ends.append(gave_up[operation].at)
        ended = max(ends)
        took = ended - started
        longest = max(longest, took)
        if took <= deadline + 1e-6:
            continue
        timeline = ", ".join(
            f"+{a.at - a.duration - started:.2f}s for {a.duration:.2f}s"
            + (f" ({a.error.split(':')[0]})" if a.error else " (ok)")
            for a in made
        )
        end = "gave up" if operation in gave_up else "last call ended"
        line = (
            f"{operation}: {end} {took:.2f}s after its first call (deadline {deadline:g}s); "
            f"calls at {timeline}"
        )
        faults = _faults_on(observations, operation)
        if faults:
            line += f"; the fault: {_fault_text(faults[0])}"
        lines.append(line)
    return _judged(
        lines,
        proven=f"{len(calls)} operations, the longest took {longest:.2f}s (deadline {deadline:g}s)",
        problem=f"{len(lines)} operations ran past their {deadline:g}s deadline",
    )


# --- broker exercises (keyed producer, delivery loops, RabbitMQ retries, SQS FIFO) ---------
# Added with the broker exercises of lessons 01, 02, 06 and 08; the sections above are others'.


@_invariant(
    "parked-after-attempts",
    "a message that keeps failing is parked after its last attempt, not before, not never",
    "attempts",
    "parking",
)
def parked_after_attempts(observations: Sequence[Observation], params: Params) -> Finding:
    """A message moved to the parking place (a ``DeadLettered`` whose target ends with
    ``parking``) was delivered exactly ``attempts`` times before it got there, and no message
    is delivered more than ``attempts`` times. Deliveries are the ``Delivered`` of the message
    from anywhere but the parking place itself (a check reading it back is no attempt).

    Parked after fewer deliveries: a transient failure got no retry. Delivered more often: a
    poison message that goes round for ever (or is parked too late).
    """
    attempts = int(_number(params, "attempts"))
    parking = params.get("parking")
    if not isinstance(parking, str) or not parking:
        raise ValueError("parameter 'parking' must be the parking queue's name (its end)")
    deliveries: defaultdict[str, list[float]] = defaultdict(list)
    for delivered in _of(observations, Delivered):
        if not delivered.destination.endswith(parking):
            deliveries[delivered.message_id].append(delivered.at)
    parked: dict[str, DeadLettered] = {}
    for moved in _of(observations, DeadLettered):
        if moved.target.endswith(parking):
            parked.setdefault(moved.message_id, moved)
    lines = []
    for message_id, times in deliveries.items():
        before = [t for t in times if message_id not in parked or t <= parked[message_id].at]
        why = "".join(
            f"; the fault: {_fault_text(f)}" for f in _faults_on(observations, message_id)[:1]
        )
        if message_id in parked and len(before) != attempts:
            lines.append(
                f"{message_id} was parked after {len(before)} "
                f"{'delivery' if len(before) == 1 else 'deliveries'}, not {attempts}{why}"
            )
        elif message_id not in parked and len(times) > attempts:
            lines.append(
                f"{message_id} was delivered {len(times)} times, {times[-1] - times[0]:.2f}s "
                f"from first to last, and never parked (limit {attempts} attempts){why}"
            )
    if not parked and not lines:
        return Finding(False, problem="no message was parked: nothing was tested")
    return _judged(
        lines,
        proven=f"{len(parked)} failing messages parked after exactly {attempts} attempts, "
        f"no message delivered more than {attempts} times",
        problem=f"{len(lines)} messages were not parked after exactly {attempts} attempts",
    )
