"""A retry loop with error classification and a budget (mqlab exercise: retry-budget).
See TASK.md."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any


def classify(error: Exception) -> str:
    """``"transient"`` (trying again may work) or ``"permanent"`` (it never will)."""
    # TODO: not every error is worth another try.
    return "transient"


async def call_with_retries(
    operation: Callable[[], Awaitable[Any]],
    *,
    max_calls: int,
    deadline: float,
    call_timeout: float,
    rng: random.Random,
) -> Any:
    """Call ``operation`` until it succeeds; return its result, or raise when you stop."""
    # TODO: this is the retry loop most code bases start with. It retries every error, five
    # times whatever max_calls says, waits for a call as long as the call takes, and never
    # looks at the clock.
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception:
            attempt += 1
            if attempt >= 5:
                raise
            await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
