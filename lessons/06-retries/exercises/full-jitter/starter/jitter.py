"""Retry delays with jitter (mqlab exercise: full-jitter). See TASK.md."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """The delay before retry number ``attempt`` (0 = the first retry), in seconds."""
    # TODO: this is plain capped exponential backoff: every client waits exactly as long as
    # every other one, so they all retry at the same moment again. Add full jitter.
    return min(cap, base * 2**attempt)


def decorrelated_jitter(
    previous: float | None, base: float, cap: float, rng: random.Random
) -> float:
    """The next delay, given this client's previous delay (None before the first retry)."""
    # TODO: decorrelated jitter grows each delay from the previous one, at random.
    return base
