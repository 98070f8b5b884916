"""A saga with compensations (mqlab exercise: saga-compensation). See TASK.md."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mqlab.patterns.saga import SagaLog

logger = logging.getLogger(__name__)


async def run_saga(log: SagaLog, saga_id: str, steps: list[Any]) -> str:
    """Run the steps in order; undo the completed ones if one fails."""
    # TODO: this is the cheat sheet's saga. Its state lives in this process only, the step
    # that failed is never undone, and a compensation that fails is only logged.
    completed = []
    for step in steps:
        try:
            async with asyncio.timeout(step.timeout):
                await step.action(saga_id, f"{saga_id}/{step.name}")
            completed.append(step)
        except Exception:
            for done in reversed(completed):
                try:
                    await done.compensation(saga_id, f"{saga_id}/{done.name}/compensation")
                except Exception as error:
                    logger.error("compensation of %s failed: %s", done.name, error)
            return "compensated"
    return "completed"


async def recover(log: SagaLog, steps: list[Any]) -> None:
    """Called when a process starts: finish what a crash left unfinished."""
    # TODO: nothing to recover from: nothing was ever written down.
