"""Hidden check of the choose-a-broker exercise: every leaf of the decision tree.

The learner's ``choose(requirements)`` is asked about three requirement sets per leaf of the
lesson's tree (13 leaves). The questions that lead to a leaf are answered as that leaf needs;
the ones the tree never asks on the way there are answered at random (seeded), because the
tree does not care about them and neither may the learner's code. Each answer is an
assertion (``ctx.assert_that``), judged by ``checks-hold``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from types import ModuleType

from mqlab.grader.context import GradingContext, LearnerMistake, learner_function

NEEDS = (
    "task-queue",
    "event-stream",
    "routing",
    "fan-out",
    "exactly-once",
    "zero-ops",
    "low-latency",
)
EFFECTS = ("inside-kafka", "producer-retries", "external")
SETS_PER_LEAF = 3


@dataclass(frozen=True, slots=True)
class Requirements:
    """What the learner's ``choose`` is given (the task documents each field)."""

    need: str
    on_aws: bool
    replay: bool
    effect: str


# leaf -> (the answers that lead there, whether the consumer must still dedupe)
LEAVES: dict[str, tuple[dict[str, object], bool]] = {
    "sqs": ({"need": "task-queue", "on_aws": True}, True),
    "rabbitmq-tasks": ({"need": "task-queue", "on_aws": False}, True),
    "kafka-stream": ({"need": "event-stream"}, True),
    "rabbitmq-routing": ({"need": "routing"}, True),
    "sns-sqs": ({"need": "fan-out", "on_aws": True}, True),
    "kafka-fanout": ({"need": "fan-out", "on_aws": False, "replay": True}, True),
    "rabbitmq-fanout": ({"need": "fan-out", "on_aws": False, "replay": False}, True),
    "kafka-transactions": ({"need": "exactly-once", "effect": "inside-kafka"}, False),
    "sqs-fifo": ({"need": "exactly-once", "effect": "producer-retries"}, True),
    "idempotent-consumer": ({"need": "exactly-once", "effect": "external"}, True),
    "sqs-sns": ({"need": "zero-ops", "on_aws": True}, True),
    "nats": ({"need": "zero-ops", "on_aws": False}, True),
    "low-latency": ({"need": "low-latency"}, True),
}

WHY_DEDUPE = {
    "sqs-fifo": "FIFO dedup drops a producer's retried sends for 5 minutes; a consumer that "
    "crashes before deleting receives the message again",
    "kafka-transactions": "inside Kafka, the transaction commits the output records and the "
    "consumed offsets together, so nothing is applied twice",
}


def _describe(requirements: Requirements) -> str:
    return (
        f"need={requirements.need}, on_aws={requirements.on_aws}, "
        f"replay={requirements.replay}, effect={requirements.effect}"
    )


def _requirement_sets(rng: random.Random) -> list[tuple[str, Requirements]]:
    cases = []
    for leaf, (answers, _) in LEAVES.items():
        for _ in range(SETS_PER_LEAF):
            free = Requirements(
                need=str(answers["need"]),
                on_aws=rng.random() < 0.5,
                replay=rng.random() < 0.5,
                effect=rng.choice(EFFECTS),
            )
            cases.append((leaf, replace(free, **answers)))
    rng.shuffle(cases)
    return cases


def _answer(value: object) -> tuple[object, object, object]:
    if value is None:
        raise LearnerMistake("choose must return a Recommendation, not None")
    missing = [
        name for name in ("leaf", "reasons", "consumer_must_dedupe") if not hasattr(value, name)
    ]
    if missing:
        raise LearnerMistake(
            f"choose returned {type(value).__name__}, which has no {', '.join(missing)}: "
            "return a Recommendation(leaf, reasons, consumer_must_dedupe)"
        )
    return value.leaf, value.reasons, value.consumer_must_dedupe


def _judge(leaf: str, got: tuple[object, object, object]) -> str:
    """What is wrong with one answer ('' when it is right)."""
    got_leaf, reasons, must_dedupe = got
    if got_leaf != leaf:
        return f"the tree leads to {leaf}, your code chose {got_leaf!r}"
    if not isinstance(reasons, list | tuple) or not any(
        isinstance(r, str) and r.strip() for r in reasons
    ):
        return f"{leaf} is right, but it comes with no reasons (reasons={reasons!r})"
    expected = LEAVES[leaf][1]
    if must_dedupe is not expected:
        why = WHY_DEDUPE.get(leaf, "the consumer receives a message again after a crash")
        return f"consumer_must_dedupe={must_dedupe!r}, but {why}"
    return ""


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    choose = learner_function(learner, "choose")
    for leaf, requirements in _requirement_sets(ctx.rng):
        problem = _judge(leaf, _answer(choose(requirements)))
        ctx.assert_that(
            _describe(requirements),
            holds=not problem,
            observed=problem or f"{leaf}, with reasons",
        )
