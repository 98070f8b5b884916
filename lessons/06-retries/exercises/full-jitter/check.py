"""Hidden check of the full-jitter exercise: many clients retrying at once.

Every client makes 10 retries with each of the learner's two delay functions, from its own
seeded random stream, and each delay is reported as a ``RetryScheduled``. The invariants then
hold the delays to their strategy's range and ask that clients at the same retry spread out.
"""

from __future__ import annotations

import math
import random
from types import ModuleType

from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.observe.events import RetryScheduled

CLIENTS = 40
RETRIES = 10
BASE = 0.1
CAP = 2.0


def _seconds(value: object, function: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LearnerMistake(f"{function} must return a number of seconds, not {value!r}")
    if not math.isfinite(value):
        raise LearnerMistake(f"{function} returned {value}, not a finite number of seconds")
    return float(value)


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    full = learner_function(learner, "full_jitter")
    decorrelated = learner_function(learner, "decorrelated_jitter")
    for client in range(CLIENTS):
        rng = random.Random(ctx.rng.getrandbits(64))
        for attempt in range(RETRIES):
            delay = _seconds(full(attempt, BASE, CAP, rng), "full_jitter")
            ctx.emit(
                RetryScheduled,
                message_id=f"full-{client}",
                attempt=attempt,
                delay=delay,
                strategy="full",
            )
        previous: float | None = None
        for attempt in range(RETRIES):
            delay = _seconds(decorrelated(previous, BASE, CAP, rng), "decorrelated_jitter")
            ctx.emit(
                RetryScheduled,
                message_id=f"decorrelated-{client}",
                attempt=attempt,
                delay=delay,
                strategy="decorrelated",
            )
            previous = delay
