"""Retry delays with jitter: the reference solution of the full-jitter exercise."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Uniform in [0, min(cap, base * 2**attempt)]: the cap bounds the draw itself."""
    return rng.uniform(0.0, min(cap, base * 2**attempt))


def decorrelated_jitter(
    previous: float | None, base: float, cap: float, rng: random.Random
) -> float:
    """Uniform in [base, min(cap, 3 * previous)], starting from previous = base."""
    upper = min(cap, 3 * (base if previous is None else previous))
    return rng.uniform(base, max(base, upper))
