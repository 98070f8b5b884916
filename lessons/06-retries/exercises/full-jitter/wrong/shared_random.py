"""Wrong on purpose: a fresh generator with a fixed seed on every call."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    own = random.Random(42)
    return own.uniform(0.0, min(cap, base * 2**attempt))


def decorrelated_jitter(
    previous: float | None, base: float, cap: float, rng: random.Random
) -> float:
    own = random.Random(42)
    upper = min(cap, 3 * (base if previous is None else previous))
    return own.uniform(base, max(base, upper))
