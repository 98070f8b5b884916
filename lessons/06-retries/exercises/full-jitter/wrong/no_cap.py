"""Wrong on purpose: full jitter that forgets the cap."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    return rng.uniform(0.0, base * 2**attempt)


def decorrelated_jitter(
    previous: float | None, base: float, cap: float, rng: random.Random
) -> float:
    upper = min(cap, 3 * (base if previous is None else previous))
    return rng.uniform(base, max(base, upper))
