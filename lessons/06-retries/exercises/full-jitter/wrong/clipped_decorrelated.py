"""Wrong on purpose: the cheat sheet's decorrelated jitter, clipping the draw to the cap."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    return rng.uniform(0.0, min(cap, base * 2**attempt))


def decorrelated_jitter(
    previous: float | None, base: float, cap: float, rng: random.Random
) -> float:
    return min(cap, rng.uniform(base, 3 * (base if previous is None else previous)))
