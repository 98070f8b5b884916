"""The saga orchestrator: a multi-service transaction as steps with compensations, that
survives a crash of the orchestrator itself.

A saga runs its steps' actions in order; when one fails, it runs the compensations of the
steps before it in reverse order, so the system ends either with every step applied or with
everything undone. What makes that hold in practice, and what the cheat sheet's template
misses:

* **The saga id is the key of a persistent log** (:class:`SagaLog`: PostgreSQL on the lab,
  :mod:`mqlab.patterns.saga_log_postgres`; in memory on ``sim``). Every transition is
  written *before* the orchestrator acts on it (step started, step succeeded or failed,
  compensation started ...). The template ignores its ``saga_id`` and keeps ``completed``
  in memory, so a process killed mid-saga leaves charged cards and reserved stock that
  nobody ever undoes. Running a saga id that the log already knows does not run it again: a
  finished saga returns its recorded outcome, an unfinished one is recovered.
* **Recovery reads the log** (:meth:`SagaOrchestrator.recover`, run when a process starts).
  The rule, in order:

  1. finished (``completed`` / ``compensated``) or ``parked``: leave it (parked waits for a
     human, see :meth:`SagaOrchestrator.retry_parked`);
  2. ``compensating`` (a failure was recorded): go on compensating. The compensation that was
     running when the process died is in doubt and runs again, which is safe because
     compensations are idempotent (below);
  3. ``running``, no step in doubt (the crash fell between two log records): resume forward
     from the next step;
  4. ``running``, a step in doubt (its start is logged, its end is not: it may or may not have
     applied): if the step is marked ``idempotent``, run it again with the same idempotency
     key and resume forward; otherwise compensate, *including* that step, because it may have
     applied.
* **Per-step timeouts** (``SagaStep.timeout``, required): the template hard-codes 30 s for
  every step. A timed-out step *may have applied* (the charge went through, the answer was
  lost), so it is compensated too, as is any step that failed with an unknown error. Only a
  step that raises :class:`StepRejected` (a definite "no": out of stock, card declined) is
  known to have had no effect and is not compensated.
* **A failing compensation is retried with backoff** (:class:`CompensationRetry`, the retry
  module's :class:`~mqlab.patterns.retry.Backoff`), and when the attempts run out the saga is
  **parked**: its status in the log becomes ``parked`` with the reason and every step's state,
  a :class:`~mqlab.observe.events.SagaParked` observation says so, and
  :meth:`SagaOrchestrator.parked` lists what waits for a human. The template only logs the
  error and carries on, which leaves the system half-compensated with no trace in any state.
* **Compensations must be idempotent**, because a compensation in doubt after a crash runs
  again. Each step's context carries a stable ``compensation_id`` (``<saga id>/<step>/
  compensation``, the same on every attempt and after every restart) that is also written into
  the log with each compensation record; the compensated service deduplicates on it (see
  :mod:`mqlab.patterns.order_saga`: the refund is a posting guarded by ``INSERT INTO processed``
  of that id, in the same transaction). Likewise each action gets a stable
  ``idempotency_key``, which is what lets an ``idempotent`` step run again safely.

Crash points (the detail is the step name, or the saga id for the saga-level ones):
``saga_started``, ``step_started`` (logged, action not run), ``action_done`` (the action
returned, not yet logged), ``step_succeeded``, ``step_failed``, ``compensation_started``,
``compensation_done`` (returned, not yet logged), ``compensation_succeeded``.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mqlab.observe.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    SagaEnded,
    SagaParked,
    SagaRecovered,
    SagaStarted,
    SagaStepFailed,
    SagaStepStarted,
    SagaStepSucceeded,
)
from mqlab.patterns.harness import CrashHook, Reporter, no_crash
from mqlab.patterns.retry import Backoff, RandomSource, Strategy

SagaStatus = Literal["running", "compensating", "completed", "compensated", "parked"]
FINISHED: frozenset[str] = frozenset({"completed", "compensated"})

EntryKind = Literal[
    "saga_started",
    "step_started",
    "step_succeeded",
    "step_failed",
    "compensation_started",
    "compensation_succeeded",
    "compensation_failed",
    "recovered",
    "parked",
    "retried",
    "ended",
]


class StepRejected(Exception):
    """Raised by an action to say "no, and nothing happened" (out of stock, card declined):
    the step is known to have had no effect, so it is not compensated."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an action or a compensation gets.

    Attributes:
        saga_id: the saga's id.
        step: the step's name.
        data: the saga's data: what it was started with, plus what earlier steps returned.
        attempt: 1 for the first run of this action (or compensation), 2 for the next ...
    """

    saga_id: str
    step: str
    data: Mapping[str, Any]
    attempt: int = 1

    @property
    def idempotency_key(self) -> str:
        """The action's key: the same on every run of this step of this saga."""
        return f"{self.saga_id}/{self.step}"

    @property
    def compensation_id(self) -> str:
        """The compensation's key: the same on every attempt and after every restart."""
        return compensation_id(self.saga_id, self.step)


def compensation_id(saga_id: str, step: str) -> str:
    """The stable id of ``step``'s compensation in saga ``saga_id``."""
    return f"{saga_id}/{step}/compensation"


StepAction = Callable[[StepContext], Awaitable[Mapping[str, Any] | None]]
"""An action or compensation. An action may return values for later steps (a reservation
id): they are logged with its success and merged into the saga's data."""


@dataclass(frozen=True, slots=True)
class SagaStep:
    """One step: an action, the compensation that undoes it, and how long each may take.

    Attributes:
        name: unique within the saga.
        action: does the step's work (raise :class:`StepRejected` for a definite "no").
        compensation: undoes it; must be idempotent and must succeed (as a no-op) if the
            action never happened, since a timed-out action is compensated without knowing.
        timeout: seconds the action may take; after that it counts as failed *and* maybe
            applied.
        compensation_timeout: seconds one compensation attempt may take (the step's
            ``timeout`` when None).
        idempotent: running the action again with the same idempotency key is harmless, so
            recovery may resume a saga whose crash left this step in doubt.
    """

    name: str
    action: StepAction
    compensation: StepAction
    timeout: float
    compensation_timeout: float | None = None
    idempotent: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a saga step needs a name")
        for what, seconds in (
            ("timeout", self.timeout),
            ("compensation_timeout", self.compensation_timeout),
        ):
            if seconds is not None and not seconds > 0:
                raise ValueError(f"step {self.name}: {what} must be positive (got {seconds})")


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    """A saga type: a name (stored in the log, so recovery finds the steps again) and steps."""

    name: str
    steps: tuple[SagaStep, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"saga {self.name}: it has no steps")
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"saga {self.name}: step names repeat: {', '.join(duplicates)}")

    def step(self, name: str) -> SagaStep:
        """The step called ``name``.

        Raises:
            KeyError: no such step.
        """
        for candidate in self.steps:
            if candidate.name == name:
                return candidate
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class CompensationRetry:
    """How hard a compensation is tried before the saga is parked.

    Attributes:
        attempts: attempts per compensation (the first included).
        backoff: delay between attempts (the retry module's strategies; capped exponential
            by default).
    """

    attempts: int = 5
    backoff: Backoff = field(
        default_factory=lambda: Backoff(Strategy.EXPONENTIAL, base=0.2, cap=5.0)
    )

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a compensation needs at least one attempt")


# --- the log ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One record of the saga log (``seq`` from 1, in the order they were written)."""

    seq: int
    kind: EntryKind
    step: str = ""
    attempt: int = 0
    compensation_id: str = ""
    error: str = ""
    may_have_applied: bool = False
    results: Mapping[str, Any] = field(default_factory=dict)


StepState = Literal["not_started", "in_doubt", "succeeded", "failed", "rejected"]
CompensationState = Literal["none", "in_doubt", "succeeded", "failed"]

_COMPENSATION_STATES: Mapping[str, CompensationState] = {
    "compensation_started": "in_doubt",
    "compensation_succeeded": "succeeded",
    "compensation_failed": "failed",
}
"""The compensation's state after each kind of compensation record."""


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga as its log has it: what it was started with, its status and every entry."""

    saga_id: str
    saga: str
    status: SagaStatus
    data: Mapping[str, Any]
    entries: tuple[LogEntry, ...]

    def step_state(self, step: str) -> StepState:
        """What the log knows about ``step``'s action (its latest record decides)."""
        latest = self._latest(step, ("step_started", "step_succeeded", "step_failed"))
        if latest is None:
            return "not_started"
        if latest.kind == "step_failed":
            return "failed" if latest.may_have_applied else "rejected"
        return "in_doubt" if latest.kind == "step_started" else "succeeded"

    def compensation_state(self, step: str) -> CompensationState:
        """What the log knows about ``step``'s compensation (its latest record decides)."""
        latest = self._latest(step, _COMPENSATION_STATES)
        return "none" if latest is None else _COMPENSATION_STATES[latest.kind]

    def _latest(self, step: str, kinds: Container[str]) -> LogEntry | None:
        """``step``'s newest record of one of ``kinds`` (None when it has none)."""
        return next((e for e in reversed(self.entries) if e.step == step and e.kind in kinds), None)

    def attempts(self, step: str, kind: EntryKind) -> int:
        """How many ``kind`` records (``step_started``, ``compensation_started``) ``step`` has."""
        return sum(1 for e in self.entries if e.step == step and e.kind == kind)

    def current_data(self) -> dict[str, Any]:
        """The start data with every succeeded step's results merged in, in step order."""
        merged = dict(self.data)
        for entry in self.entries:
            if entry.kind == "step_succeeded":
                merged.update(entry.results)
        return merged

    def failed_step(self) -> str:
        """The step whose failure (or doubtful recovery) started the compensation, or ''."""
        for entry in self.entries:
            if entry.kind == "step_failed" or (entry.kind == "recovered" and entry.step):
                return entry.step
        return ""

    def last_error(self) -> str:
        """The newest error the log has (a failed step or compensation, a parking reason)."""
        for entry in reversed(self.entries):
            if entry.error:
                return entry.error
        return ""


class SagaLog(ABC):
    """The persistent log of sagas, keyed by saga id.

    Attributes:
        name: what observations call it (``postgres``, ``memory``).
    """

    name: str

    async def setup(self) -> None:
        """Connect and create the tables if needed."""
        return None

    async def close(self) -> None:
        """Release connections (the log stays)."""
        return None

    @abstractmethod
    async def create(self, saga_id: str, saga: str, data: Mapping[str, Any]) -> SagaRecord | None:
        """Record a new saga (status ``running``, first entry ``saga_started``).

        Returns:
            None when it was created; the existing record when ``saga_id`` is known already
            (the caller must not start it twice).
        """

    async def append(
        self,
        saga_id: str,
        kind: EntryKind,
        *,
        step: str = "",
        attempt: int = 0,
        compensation_id: str = "",
        error: str = "",
        may_have_applied: bool = False,
        results: Mapping[str, Any] | None = None,
        status: SagaStatus | None = None,
    ) -> None:
        """Append one entry (and change the saga's status, in the same write)."""
        entry = LogEntry(
            seq=0,
            kind=kind,
            step=step,
            attempt=attempt,
            compensation_id=compensation_id,
            error=error,
            may_have_applied=may_have_applied,
            results=dict(results or {}),
        )
        await self._append(saga_id, entry, status)

    @abstractmethod
    async def _append(self, saga_id: str, entry: LogEntry, status: SagaStatus | None) -> None:
        """Write ``entry`` as the saga's next one, numbered after the last (its ``seq`` is a
        placeholder), and set the saga's ``status`` unless it is None, in one write."""

    @abstractmethod
    async def load(self, saga_id: str) -> SagaRecord | None:
        """The saga's record, or None if the log has never heard of it."""

    @abstractmethod
    async def with_status(self, *statuses: SagaStatus) -> list[SagaRecord]:
        """Every saga in one of ``statuses``, oldest first."""


class MemorySagaLog(SagaLog):
    """The log in memory (the simulator): it stands for the database, so it outlives a
    simulated crash of the orchestrator that writes to it."""

    def __init__(self, *, name: str = "memory") -> None:
        self.name = name
        self._sagas: dict[str, SagaRecord] = {}

    async def create(self, saga_id: str, saga: str, data: Mapping[str, Any]) -> SagaRecord | None:
        if saga_id in self._sagas:
            return self._sagas[saga_id]
        entry = LogEntry(seq=1, kind="saga_started")
        self._sagas[saga_id] = SagaRecord(saga_id, saga, "running", dict(data), (entry,))
        return None

    async def _append(self, saga_id: str, entry: LogEntry, status: SagaStatus | None) -> None:
        record = self._sagas[saga_id]
        numbered = replace(entry, seq=len(record.entries) + 1)
        self._sagas[saga_id] = SagaRecord(
            saga_id,
            record.saga,
            status or record.status,
            record.data,
            (*record.entries, numbered),
        )

    async def load(self, saga_id: str) -> SagaRecord | None:
        return self._sagas.get(saga_id)

    async def with_status(self, *statuses: SagaStatus) -> list[SagaRecord]:
        return [r for r in self._sagas.values() if r.status in statuses]


# --- the orchestrator ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SagaResult:
    """How a saga stands after :meth:`SagaOrchestrator.run` (or a recovery).

    Attributes:
        status: ``completed``, ``compensated`` or ``parked``.
        failed_step: the step whose failure started the compensation ('' when completed).
        error: the newest error ('' when completed).
        data: the saga's data (start data plus what the steps returned).
    """

    saga_id: str
    status: SagaStatus
    failed_step: str = ""
    error: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


class SagaOrchestrator:
    """Runs sagas against a :class:`SagaLog`; see the module docstring for the rules.

    Args:
        log: the persistent log.
        definitions: every saga type this orchestrator may meet in the log (recovery looks
            them up by name).
        reporter: where observations go (source: the log's name when omitted).
        crash: the crash hook (see :mod:`mqlab.patterns.harness`).
        compensation_retry: attempts and backoff for a failing compensation.
        rng: the jitter source, if the backoff has jitter (seed it on the simulator).
    """

    def __init__(
        self,
        log: SagaLog,
        definitions: Iterable[SagaDefinition],
        *,
        reporter: Reporter | None = None,
        crash: CrashHook = no_crash,
        compensation_retry: CompensationRetry | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        self.log = log
        self.definitions = {d.name: d for d in definitions}
        self.reporter = reporter if reporter is not None else Reporter(source=log.name)
        self.crash = crash
        self.compensation_retry = compensation_retry or CompensationRetry()
        self.rng: RandomSource = rng if rng is not None else random.Random()

    def _emit(self, kind: Callable[..., Any], **fields: Any) -> None:
        self.reporter.emit(kind, **fields)

    async def run(
        self, saga: str | SagaDefinition, saga_id: str, data: Mapping[str, Any] | None = None
    ) -> SagaResult:
        """Run saga ``saga_id`` of type ``saga`` to its end (completed, compensated, parked).

        A ``saga_id`` the log knows is not started again: a finished or parked saga returns
        its recorded result; an unfinished one is recovered (as after a restart).

        Raises:
            KeyError: ``saga`` is not one of this orchestrator's definitions.
        """
        definition = self._definition(saga)
        existing = await self.log.create(saga_id, definition.name, data or {})
        if existing is not None:
            return await self._recover(existing)
        self._emit(
            SagaStarted,
            saga_id=saga_id,
            saga=definition.name,
            steps=tuple(s.name for s in definition.steps),
        )
        await self.crash("saga_started", saga_id)
        return await self._forward(definition, saga_id, 0)

    def _definition(self, saga: str | SagaDefinition) -> SagaDefinition:
        if isinstance(saga, SagaDefinition):
            self.definitions.setdefault(saga.name, saga)
            return saga
        return self.definitions[saga]

    async def recover(self) -> list[SagaResult]:
        """Finish every saga the log has as ``running`` or ``compensating`` (call it when a
        process starts, before taking new work)."""
        return [
            await self._recover(record)
            for record in await self.log.with_status("running", "compensating")
        ]

    async def parked(self) -> list[SagaRecord]:
        """The sagas waiting for a human, with their whole log."""
        return await self.log.with_status("parked")

    async def retry_parked(self, saga_id: str) -> SagaResult:
        """A human fixed what made a compensation fail: compensate again (the attempts
        start over). Other statuses are returned unchanged.

        Raises:
            KeyError: the log has no such saga.
        """
        record = await self.log.load(saga_id)
        if record is None:
            raise KeyError(saga_id)
        if record.status != "parked":
            return self._result(record)
        await self.log.append(saga_id, "retried", status="compensating")
        return await self._compensate(self.definitions[record.saga], saga_id)

    async def _load(self, saga_id: str) -> SagaRecord:
        record = await self.log.load(saga_id)
        if record is None:
            raise KeyError(saga_id)
        return record

    @staticmethod
    def _result(record: SagaRecord) -> SagaResult:
        completed = record.status == "completed"
        return SagaResult(
            saga_id=record.saga_id,
            status=record.status,
            failed_step="" if completed else record.failed_step(),
            error="" if completed else record.last_error(),
            data=record.current_data(),
        )

    # -- recovery --------------------------------------------------------------------------

    async def _recover(self, record: SagaRecord) -> SagaResult:
        if record.status in FINISHED or record.status == "parked":
            return self._result(record)
        definition = self.definitions.get(record.saga)
        saga_id = record.saga_id
        if definition is None:
            reason = f"no definition of saga type {record.saga!r} to recover it with"
            await self.log.append(saga_id, "parked", error=reason, status="parked")
            self._emit(SagaParked, saga_id=saga_id, step="", reason=reason)
            return self._result(await self._load(saga_id))
        if record.status == "compensating":
            doubtful = [
                s.name
                for s in definition.steps
                if record.compensation_state(s.name) in ("in_doubt", "failed")
            ]
            await self._log_recovery(
                saga_id,
                decision="continue_compensating",
                reason="a failure was recorded",
                note="continue compensating",
                in_doubt=doubtful[-1] if doubtful else "",
            )
            return await self._compensate(definition, saga_id)
        states = [(s, record.step_state(s.name)) for s in definition.steps]
        in_doubt = next((s for s, state in states if state == "in_doubt"), None)
        if in_doubt is None:
            next_index = next(
                (i for i, (_, state) in enumerate(states) if state == "not_started"),
                len(states),
            )
            await self._log_recovery(
                saga_id,
                decision="resume",
                reason="no step in doubt",
                note="resume: no step in doubt",
            )
            return await self._forward(definition, saga_id, next_index)
        if in_doubt.idempotent:
            await self._log_recovery(
                saga_id,
                decision="resume",
                reason=f"{in_doubt.name} is idempotent: run it again",
                note=f"resume: {in_doubt.name} is idempotent",
                in_doubt=in_doubt.name,
            )
            return await self._forward(definition, saga_id, definition.steps.index(in_doubt))
        reason = f"{in_doubt.name} may have applied and is not idempotent"
        await self._log_recovery(
            saga_id,
            decision="compensate",
            reason=reason,
            note=reason,
            in_doubt=in_doubt.name,
            step=in_doubt.name,
            status="compensating",
        )
        return await self._compensate(definition, saga_id)

    async def _log_recovery(
        self,
        saga_id: str,
        *,
        decision: str,
        reason: str,
        note: str,
        in_doubt: str = "",
        step: str = "",
        status: SagaStatus | None = None,
    ) -> None:
        """Write recovery's decision to the log (``note``; ``step`` when it is the one that
        starts the compensation), then report it as a ``SagaRecovered``."""
        await self.log.append(saga_id, "recovered", step=step, error=note, status=status)
        self._emit(
            SagaRecovered, saga_id=saga_id, decision=decision, in_doubt=in_doubt, reason=reason
        )

    # -- forward ---------------------------------------------------------------------------

    async def _forward(self, definition: SagaDefinition, saga_id: str, start: int) -> SagaResult:
        for step in definition.steps[start:]:
            record = await self._load(saga_id)
            attempt = record.attempts(step.name, "step_started") + 1
            await self.log.append(saga_id, "step_started", step=step.name, attempt=attempt)
            self._emit(SagaStepStarted, saga_id=saga_id, step=step.name, attempt=attempt)
            await self.crash("step_started", step.name)
            context = StepContext(saga_id, step.name, record.current_data(), attempt)
            error, timed_out, may_have_applied = "", False, True
            results: Mapping[str, Any] | None = None
            try:
                async with asyncio.timeout(step.timeout):
                    results = await step.action(context)
            except TimeoutError:
                error, timed_out = f"no answer within {step.timeout:g}s", True
            except StepRejected as rejection:
                error, may_have_applied = _text(rejection), False
            except Exception as failure:  # any other error: it may have applied
                error = _text(failure)
            else:
                await self.crash("action_done", step.name)
                await self.log.append(
                    saga_id, "step_succeeded", step=step.name, results=results or {}
                )
                self._emit(SagaStepSucceeded, saga_id=saga_id, step=step.name)
                await self.crash("step_succeeded", step.name)
                continue
            await self.log.append(
                saga_id,
                "step_failed",
                step=step.name,
                error=error,
                may_have_applied=may_have_applied,
                status="compensating",
            )
            self._emit(
                SagaStepFailed,
                saga_id=saga_id,
                step=step.name,
                error=error,
                timed_out=timed_out,
                may_have_applied=may_have_applied,
            )
            await self.crash("step_failed", step.name)
            return await self._compensate(definition, saga_id)
        await self.log.append(saga_id, "ended", status="completed")
        self._emit(SagaEnded, saga_id=saga_id, outcome="completed")
        return self._result(await self._load(saga_id))

    # -- compensation ----------------------------------------------------------------------

    async def _compensate(self, definition: SagaDefinition, saga_id: str) -> SagaResult:
        record = await self._load(saga_id)
        # Every step whose action started, except a definite "no" (rejected): a step that
        # timed out, failed or was in doubt at a crash may have applied, so it is undone too.
        to_undo = [
            s
            for s in reversed(definition.steps)
            if record.step_state(s.name) in ("in_doubt", "succeeded", "failed")
            and record.compensation_state(s.name) != "succeeded"
        ]
        for position, step in enumerate(to_undo):
            parked = await self._compensate_step(saga_id, step, record)
            if parked is not None:
                undone = [
                    s.name
                    for s in reversed(definition.steps)
                    if record.compensation_state(s.name) == "succeeded"
                ] + [s.name for s in to_undo[:position]]
                await self.log.append(
                    saga_id, "parked", step=step.name, error=parked, status="parked"
                )
                self._emit(
                    SagaParked,
                    saga_id=saga_id,
                    step=step.name,
                    reason=parked,
                    compensated=tuple(undone),
                    pending=tuple(s.name for s in to_undo[position:]),
                )
                return self._result(await self._load(saga_id))
        await self.log.append(saga_id, "ended", status="compensated")
        final = await self._load(saga_id)
        self._emit(
            SagaEnded, saga_id=saga_id, outcome="compensated", failed_step=final.failed_step()
        )
        return self._result(final)

    async def _compensate_step(
        self, saga_id: str, step: SagaStep, record: SagaRecord
    ) -> str | None:
        """Run one compensation until it succeeds (None) or its attempts run out (the reason
        to park)."""
        policy = self.compensation_retry
        key = compensation_id(saga_id, step.name)
        timeout = step.compensation_timeout or step.timeout
        previous_delay: float | None = None
        for attempt in range(1, policy.attempts + 1):
            # Each transition is logged first, then reported; both name this attempt and the
            # compensation's stable key.
            this_attempt: dict[str, Any] = {
                "step": step.name,
                "attempt": attempt,
                "compensation_id": key,
            }
            await self.log.append(saga_id, "compensation_started", **this_attempt)
            self._emit(CompensationStarted, saga_id=saga_id, **this_attempt)
            await self.crash("compensation_started", step.name)
            context = StepContext(saga_id, step.name, record.current_data(), attempt)
            try:
                async with asyncio.timeout(timeout):
                    await step.compensation(context)
            except TimeoutError:
                error = f"no answer within {timeout:g}s"
            except Exception as failure:  # a compensation is retried whatever went wrong
                error = _text(failure)
            else:
                await self.crash("compensation_done", step.name)
                await self.log.append(saga_id, "compensation_succeeded", **this_attempt)
                self._emit(CompensationSucceeded, saga_id=saga_id, **this_attempt)
                await self.crash("compensation_succeeded", step.name)
                return None
            last = attempt == policy.attempts
            delay = None if last else policy.backoff.delay(attempt - 1, previous_delay, self.rng)
            await self.log.append(saga_id, "compensation_failed", error=error, **this_attempt)
            self._emit(
                CompensationFailed, saga_id=saga_id, error=error, retry_in=delay, **this_attempt
            )
            if delay is None:
                return f"compensation of {step.name} failed {policy.attempts} times: {error}"
            previous_delay = delay
            await asyncio.sleep(delay)
        return None  # not reached: the last attempt returns above


def _text(error: BaseException) -> str:
    """One line naming an error."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
