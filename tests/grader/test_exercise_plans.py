"""Fault plans of exercise checks that must hold for every seed (a plan that can put a
right answer in the wrong on a slow machine is a flaky grader, not a strict one)."""

from __future__ import annotations

import random

import pytest

from mqlab.grader.catalog import find_exercise
from mqlab.grader.child import _load

pytestmark = pytest.mark.sim


def test_no_consumer_crash_falls_inside_a_within_the_ttl_redelivery() -> None:
    """redis-dedup-ttl: between a message's first delivery and its redelivery "within the
    TTL" no consumer crashes. On the lab a crash is a new process, whose start can outlast
    the 3 s TTL under load; the key would be gone and the reference solution would rightly
    ship the order twice."""
    check = _load(str(find_exercise("redis-dedup-ttl").check_file), "redis_dedup_ttl_plan")
    crashes_seen = 0
    for seed in range(500):
        plan = check._plan(random.Random(seed))
        for index, delivery in enumerate(plan):
            if delivery.why != "redelivery":
                continue
            first = next(i for i, d in enumerate(plan) if d.message == delivery.message)
            between = plan[first + 1 : index]
            assert not [d for d in between if d.crash], (seed, delivery.message.message_id)
        crashes_seen += sum(1 for d in plan if d.crash)
    assert crashes_seen == 2 * 500  # both crashes are still in every plan
