"""Hidden check of the saga-compensation exercise: eight orders through the learner's saga.

Each order is a saga of three steps (reserve stock, charge the card, book a courier), run by
the learner's ``run_saga(log, saga_id, steps)``. The services behind the steps belong to the
check, and each order's plan (seeded) says what they do: answer, refuse (``StepRejected``:
nothing applied), apply and then lose the answer (an error), apply and then not answer
before the step's timeout, fail a compensation once before or after it took effect. One
order's process is killed mid-saga: on ``sim`` the crash goes through the learner's code as
:class:`~mqlab.patterns.harness.Crashed` and the learner's module is loaded afresh; on the
lab the process is SIGKILLed and the grader starts a new one. Either way the learner's
``recover(log, steps)`` must finish that saga from the saga log, the only thing that
survives (PostgreSQL on the lab, memory on ``sim``).

The services report what really happened (they are the truth, not the learner's log): an
action started, applied, refused or failed; a compensation started, applied; every change
of a resource is an ``EffectApplied``. Services deduplicate on the idempotency key they are
given, so a repeated call with the same key changes nothing, and a repeated refund under a
new key refunds again. The check reports ``SagaStarted`` when it asks for a saga and
``SagaEnded`` when the learner's code hands it back, with the outcome the services show.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.grader.loops import fresh_module
from mqlab.observe.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    EffectApplied,
    SagaEnded,
    SagaStarted,
    SagaStepFailed,
    SagaStepStarted,
    SagaStepSucceeded,
)
from mqlab.patterns import postgres
from mqlab.patterns.database import BusinessDatabase, MemoryDatabase, PostgresDatabase
from mqlab.patterns.harness import Crashed, CrashHook
from mqlab.patterns.saga import MemorySagaLog, SagaLog, StepRejected
from mqlab.patterns.saga_log_postgres import PostgresSagaLog

STEP_TIMEOUT = 1.0
HANG = 30.0
"""How long a step that "does not answer" takes to answer after all."""
TIMEOUT_SLACK = 0.3
"""How late past its timeout a step may be abandoned and still count as on time."""
SAGA_TYPE = "place-order"
ORDERS = 8


@dataclass(frozen=True, slots=True)
class Service:
    """One step's service: the resource it changes and its operations' names."""

    step: str
    resource: str
    action: str
    compensation: str


SERVICES = (
    Service("reserve_stock", "stock", "reserve", "release"),
    Service("charge_card", "card", "charge", "refund"),
    Service("book_courier", "courier", "book", "cancel"),
)


class ServiceUnavailable(Exception):
    """A service that broke while (or after) handling a call."""


@dataclass(frozen=True, slots=True)
class Step:
    """What the learner's saga runs (the task documents it)."""

    name: str
    timeout: float
    action: Callable[[str, str], Awaitable[None]]
    compensation: Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class OrderPlan:
    """What the services do for one order.

    ``actions``: step -> ``ok``, ``reject``, ``lost`` (applies, then errors) or ``slow``
    (applies, then answers only after ``HANG`` seconds). ``compensations``: step ->
    ``fails-before`` or ``fails-after`` (the first call fails, before or after applying).
    ``crash``: (point, step) where the process dies (``action_applied`` or
    ``compensation_applied``), or None.
    """

    saga_id: str
    actions: dict[str, str]
    compensations: dict[str, str] = field(default_factory=dict)
    crash: tuple[str, str] | None = None

    def describe(self) -> str:
        parts = [f"{step} {kind}" for step, kind in self.actions.items() if kind != "ok"]
        parts += [f"{step} compensation {kind}" for step, kind in self.compensations.items()]
        if self.crash:
            parts.append(f"process killed at {self.crash[0]} of {self.crash[1]}")
        return ", ".join(parts) or "every step answers"


def _plans(rng: random.Random) -> list[OrderPlan]:
    names = [s.step for s in SERVICES]

    def actions(**changed: str) -> dict[str, str]:
        return {name: changed.get(name, "ok") for name in names}

    failing = rng.sample(names, 3)  # a failure at each step, each of another kind
    kinds = ["reject", "lost", "slow"]
    rng.shuffle(kinds)
    plans = [
        {"actions": actions()},
        *({"actions": actions(**{step: kind})} for step, kind in zip(failing, kinds, strict=True)),
        {
            "actions": actions(book_courier=rng.choice(["reject", "lost"])),
            "compensations": {rng.choice(names[:2]): "fails-before"},
        },
        {
            "actions": actions(book_courier=rng.choice(["reject", "lost"])),
            "compensations": {rng.choice(names[:2]): "fails-after"},
        },
        {"actions": actions(charge_card="slow")},
    ]
    if rng.random() < 0.5:
        crash: dict[str, Any] = {
            "actions": actions(),
            "crash": ("action_applied", rng.choice(names)),
        }
    else:
        crash = {
            "actions": actions(book_courier="reject"),
            "crash": ("compensation_applied", rng.choice(names[:2])),
        }
    plans.insert(rng.randint(1, len(plans)), crash)
    return [OrderPlan(f"order-{n}", **plan) for n, plan in enumerate(plans, start=1)]


# --- the services ----------------------------------------------------------------------------


class Services:
    """The three services, their database (PostgreSQL on the lab, memory on ``sim``) and the
    truth about each order: what each action and compensation did."""

    def __init__(self, ctx: GradingContext, db: BusinessDatabase, plans: list[OrderPlan]) -> None:
        self.ctx = ctx
        self.db = db
        self.plans = {plan.saga_id: plan for plan in plans}
        self.calls: dict[tuple[str, str], int] = {}
        self.crash: CrashHook | None = None
        self.crash_at: tuple[str, str, str] | None = None
        self.late: list[str] = []
        """Steps that hung and were not abandoned within their timeout (what and how)."""

    def arm(self, plan: OrderPlan | None) -> None:
        """Crash where ``plan`` says (None: nowhere)."""
        if plan is None or plan.crash is None:
            self.crash, self.crash_at = None, None
            return
        point, step = plan.crash
        self.crash_at = (plan.saga_id, point, step)
        self.crash = self.ctx.crash_hook(point, detail=f"{plan.saga_id}/{step}")

    async def _reach(self, saga_id: str, point: str, step: str) -> None:
        if self.crash is not None and self.crash_at == (saga_id, point, step):
            crash, self.crash = self.crash, None
            await crash(point, f"{saga_id}/{step}")

    def _plan(self, saga_id: str) -> OrderPlan:
        plan = self.plans.get(saga_id)
        if plan is None:
            raise LearnerMistake(f"a service was called for saga {saga_id!r}, which was never run")
        return plan

    def _count(self, saga_id: str, operation: str) -> int:
        calls = self.calls.get((saga_id, operation), 0) + 1
        self.calls[(saga_id, operation)] = calls
        return calls

    async def _change(
        self, service: Service, saga_id: str, key: str, operation: str, amount: int
    ) -> bool:
        """Apply ``amount`` to the order's resource once per key; True if it changed."""
        if not isinstance(key, str) or not key:
            raise LearnerMistake(f"an idempotency key must be a non-empty string, not {key!r}")
        account = f"{service.resource}:{saga_id}"
        async with self.db.transaction() as tx:
            if not await tx.claim(service.resource, key):
                return False  # this key was applied before: same answer, no new effect
            if amount < 0 and await tx.claim(f"{service.resource}-applied", account):
                return False  # nothing was ever applied here: nothing to undo
            if amount > 0:
                await tx.claim(f"{service.resource}-applied", account)
            change = await tx.credit(account, amount, message_id=key)
        self.ctx.emit(
            EffectApplied,
            entity=account,
            operation=operation,
            before=change.before,
            after=change.after,
            message_id=f"{saga_id}/{operation}",
            idempotent=False,
        )
        return True

    def step(self, service: Service) -> Step:
        return Step(service.step, STEP_TIMEOUT, self._action(service), self._compensation(service))

    def _action(self, service: Service) -> Callable[[str, str], Awaitable[None]]:
        async def action(saga_id: str, key: str) -> None:
            plan = self._plan(saga_id)
            attempt = self._count(saga_id, service.action)
            self.ctx.emit(SagaStepStarted, saga_id=saga_id, step=service.step, attempt=attempt)
            # A refusal is definite (every call); the other faults hit the first call only.
            mode = plan.actions[service.step] if attempt == 1 else "ok"
            if plan.actions[service.step] == "reject":
                error = f"{service.step}: refused (out of stock, card declined)"
                self.ctx.emit(
                    SagaStepFailed,
                    saga_id=saga_id,
                    step=service.step,
                    error=error,
                    may_have_applied=False,
                )
                raise StepRejected(error)
            await self._change(service, saga_id, key, service.action, 1)
            await self._reach(saga_id, "action_applied", service.step)
            if mode == "lost":
                error = f"{service.step}: applied, then the connection was lost"
                self.ctx.emit(SagaStepFailed, saga_id=saga_id, step=service.step, error=error)
                raise ServiceUnavailable(error)
            if mode == "slow":
                await self._hang(saga_id, service)
            self.ctx.emit(SagaStepSucceeded, saga_id=saga_id, step=service.step)

        return action

    async def _hang(self, saga_id: str, service: Service) -> None:
        started = self.ctx.bus.now()
        try:
            await asyncio.sleep(HANG)
        except asyncio.CancelledError:
            waited = self.ctx.bus.now() - started
            self.ctx.emit(
                SagaStepFailed,
                saga_id=saga_id,
                step=service.step,
                error=f"applied, then no answer within {waited:.2f}s",
                timed_out=True,
            )
            if waited > STEP_TIMEOUT + TIMEOUT_SLACK:
                self.late.append(f"{saga_id}/{service.step}: abandoned after {waited:.2f}s")
            raise
        self.late.append(f"{saga_id}/{service.step}: still awaited when it answered, {HANG:g}s on")

    def _compensation(self, service: Service) -> Callable[[str, str], Awaitable[None]]:
        async def compensation(saga_id: str, key: str) -> None:
            plan = self._plan(saga_id)
            attempt = self._count(saga_id, service.compensation)
            self.ctx.emit(
                CompensationStarted,
                saga_id=saga_id,
                step=service.step,
                compensation_id=str(key),
                attempt=attempt,
            )
            mode = plan.compensations.get(service.step) if attempt == 1 else None
            if mode == "fails-before":
                error = f"{service.compensation}: service unavailable"
                self.ctx.emit(
                    CompensationFailed,
                    saga_id=saga_id,
                    step=service.step,
                    compensation_id=str(key),
                    attempt=attempt,
                    error=error,
                )
                raise ServiceUnavailable(error)
            await self._change(service, saga_id, key, service.compensation, -1)
            self.ctx.emit(
                CompensationSucceeded,
                saga_id=saga_id,
                step=service.step,
                compensation_id=str(key),
                attempt=attempt,
            )
            await self._reach(saga_id, "compensation_applied", service.step)
            if mode == "fails-after":
                raise ServiceUnavailable(
                    f"{service.compensation}: applied, then the answer was lost"
                )

        return compensation

    async def outcome(self, saga_id: str) -> str:
        """What the services show: ``completed`` when every step applied and nothing was
        undone, ``compensated`` otherwise (whether everything was undone is for the
        ``sagas-resolved`` invariant to say)."""
        undone = False
        for service in SERVICES:
            account = f"{service.resource}:{saga_id}"
            postings = await self.db.postings(account)
            if not any(p.amount > 0 for p in postings):
                return "compensated"
            undone = undone or any(p.amount < 0 for p in postings)
        return "compensated" if undone else "completed"


# --- the run -------------------------------------------------------------------------------


async def _stores(ctx: GradingContext) -> tuple[BusinessDatabase, SagaLog]:
    if ctx.simulated:
        return MemoryDatabase(name="memory"), MemorySagaLog(name="memory")
    db = PostgresDatabase(ctx.postgres_dsn, ctx.namespace)
    await db.setup()
    log = PostgresSagaLog(ctx.postgres_dsn, ctx.namespace)
    await log.setup()
    return db, log


async def _recovered(
    ctx: GradingContext, services: Services, log: SagaLog, plan: OrderPlan
) -> None:
    """After recovery: the crashed saga has ended if the learner's log says it has (a saga
    the log still has running, or does not know, never finished)."""
    record = await log.load(plan.saga_id)
    if record is not None and record.status in ("completed", "compensated", "parked"):
        await _end(ctx, services, plan, None)


async def _end(ctx: GradingContext, services: Services, plan: OrderPlan, said: object) -> None:
    """The learner's code handed the saga back: report its end as the services show it."""
    outcome = await services.outcome(plan.saga_id)
    ctx.emit(SagaEnded, saga_id=plan.saga_id, outcome=outcome)
    if said is not None:
        ctx.assert_that(
            f"{plan.saga_id} ({plan.describe()}): run_saga returns what happened",
            holds=said == outcome,
            observed=f"it returned {said!r}; the services show the saga {outcome}",
        )


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    plans = _plans(ctx.rng)
    db, log = await _stores(ctx)
    services = Services(ctx, db, plans)
    steps = [services.step(service) for service in SERVICES]
    crashed = next(i for i, plan in enumerate(plans) if plan.crash)
    # A later phase on the lab starts after the planned crash: the process begins, as every
    # process must, with recovery; the crashed saga is the one it has to finish.
    start = crashed if ctx.phase > 1 else 0
    try:
        recover = learner_function(learner, "recover")
        await recover(log, steps)
        if ctx.phase > 1:
            await _recovered(ctx, services, log, plans[crashed])
            start = crashed + 1
        run_saga = learner_function(learner, "run_saga")
        for plan in plans[start:]:
            services.arm(plan)
            # Each fault names its saga and the operation it hits, as the effects name it
            # (order-3/refund), so a counter-example can say which fault exposed it.
            by_step = {service.step: service for service in SERVICES}
            for step, kind in plan.actions.items():
                if kind != "ok":
                    operation = f"{plan.saga_id}/{by_step[step].action}"
                    ctx.fault(f"step-{kind}", plan.saga_id, step=step, operation=operation)
            for step, kind in plan.compensations.items():
                operation = f"{plan.saga_id}/{by_step[step].compensation}"
                ctx.fault(f"compensation-{kind}", plan.saga_id, step=step, operation=operation)
            ctx.emit(
                SagaStarted,
                saga_id=plan.saga_id,
                saga=SAGA_TYPE,
                steps=tuple(s.step for s in SERVICES),
            )
            try:
                said = await run_saga(log, plan.saga_id, steps)
            except Crashed:
                # sim: the process is gone; a new one recovers from the log.
                services.arm(None)
                fresh = fresh_module(learner)
                await learner_function(fresh, "recover")(log, steps)
                await _recovered(ctx, services, log, plan)
                run_saga = learner_function(fresh, "run_saga")
                continue
            await _end(ctx, services, plan, said)
        ctx.assert_that(
            f"every step is abandoned within its {STEP_TIMEOUT:g}s timeout",
            holds=not services.late,
            observed="; ".join(services.late) or "each one was",
        )
    finally:
        await log.close()
        await db.close()


async def cleanup(ctx: GradingContext) -> None:
    """Drop the run's schema (saga log and services) from the lab's PostgreSQL."""
    await postgres.drop_namespace(ctx.postgres_dsn, ctx.namespace)
