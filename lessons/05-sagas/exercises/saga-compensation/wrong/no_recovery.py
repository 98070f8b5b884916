"""Wrong on purpose: a saga log, and nothing that reads it when a process starts."""

from __future__ import annotations

import asyncio
from typing import Any

from mqlab.patterns.saga import SagaLog, SagaRecord, StepRejected

SAGA = "place-order"
COMPENSATION_ATTEMPTS = 5


def _action_key(saga_id: str, step: Any) -> str:
    return f"{saga_id}/{step.name}"


def _compensation_key(saga_id: str, step: Any) -> str:
    return f"{saga_id}/{step.name}/compensation"


async def run_saga(log: SagaLog, saga_id: str, steps: list[Any]) -> str:
    """Run every step in order; on a failure undo, newest first, everything that may have
    applied. Every transition is in the log before the saga acts on it."""
    await log.create(saga_id, SAGA, {})
    return await _forward(log, saga_id, steps, 0)


async def _forward(log: SagaLog, saga_id: str, steps: list[Any], start: int) -> str:
    for step in steps[start:]:
        await log.append(saga_id, "step_started", step=step.name)
        try:
            async with asyncio.timeout(step.timeout):
                await step.action(saga_id, _action_key(saga_id, step))
        except StepRejected as refusal:  # a definite "no": nothing applied
            await log.append(
                saga_id, "step_failed", step=step.name, error=str(refusal), status="compensating"
            )
            return await _compensate(log, saga_id, steps)
        except Exception as error:  # a timeout or a lost answer: it may have applied
            await log.append(
                saga_id,
                "step_failed",
                step=step.name,
                error=repr(error),
                may_have_applied=True,
                status="compensating",
            )
            return await _compensate(log, saga_id, steps)
        await log.append(saga_id, "step_succeeded", step=step.name)
    await log.append(saga_id, "ended", status="completed")
    return "completed"


async def _compensate(log: SagaLog, saga_id: str, steps: list[Any]) -> str:
    record = await log.load(saga_id)
    assert record is not None
    for step in reversed(steps):
        if record.step_state(step.name) in ("not_started", "rejected"):
            continue  # nothing can have applied
        if record.compensation_state(step.name) == "succeeded":
            continue  # undone before a crash
        if not await _undo(log, saga_id, step):
            await log.append(saga_id, "parked", step=step.name, status="parked")
            return "parked"
    await log.append(saga_id, "ended", status="compensated")
    return "compensated"


async def _undo(log: SagaLog, saga_id: str, step: Any) -> bool:
    """One compensation, retried with backoff under the same key (so a retry of one that
    did apply changes nothing)."""
    for attempt in range(1, COMPENSATION_ATTEMPTS + 1):
        await log.append(saga_id, "compensation_started", step=step.name, attempt=attempt)
        try:
            async with asyncio.timeout(step.timeout):
                await step.compensation(saga_id, _compensation_key(saga_id, step))
        except Exception as error:
            await log.append(
                saga_id, "compensation_failed", step=step.name, attempt=attempt, error=repr(error)
            )
            await asyncio.sleep(0.05 * 2**attempt)
            continue
        await log.append(saga_id, "compensation_succeeded", step=step.name, attempt=attempt)
        return True
    return False


async def recover(log: SagaLog, steps: list[Any]) -> None:
    """Finish every saga the log has unfinished: go on compensating; compensate a saga
    whose step was in doubt at the crash (started, never answered); resume the others."""
    return None  # a fresh process has nothing running


async def _recover(log: SagaLog, record: SagaRecord, steps: list[Any]) -> None:
    saga_id = record.saga_id
    if record.status == "compensating":
        await _compensate(log, saga_id, steps)
        return
    in_doubt = [s for s in steps if record.step_state(s.name) == "in_doubt"]
    if in_doubt:
        await log.append(saga_id, "recovered", step=in_doubt[0].name, status="compensating")
        await _compensate(log, saga_id, steps)
        return
    done = [s for s in steps if record.step_state(s.name) == "succeeded"]
    await _forward(log, saga_id, steps, len(done))
