"""Which broker? (mqlab exercise: choose-a-broker). See TASK.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recommendation:
    """A leaf of the lesson's decision tree, why it fits, and whether the consumer must
    still recognise duplicates."""

    leaf: str
    reasons: list[str] = field(default_factory=list)
    consumer_must_dedupe: bool = True


FIRST_GUESS = {
    "task-queue": "rabbitmq-tasks",
    "event-stream": "kafka-stream",
    "routing": "rabbitmq-routing",
    "fan-out": "rabbitmq-fanout",
    "exactly-once": "kafka-transactions",
    "zero-ops": "sqs-sns",
    "low-latency": "low-latency",
}


def choose(requirements: Any) -> Recommendation:
    """The leaf the tree leads to for these requirements, with reasons."""
    # TODO: this answers the first question only. Several needs have a second question
    # (AWS? replay? where does the effect land?), and every leaf comes with reasons.
    return Recommendation(FIRST_GUESS[requirements.need])
