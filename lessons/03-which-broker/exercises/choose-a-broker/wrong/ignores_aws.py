"""Wrong on purpose: a tree that never asks 'AWS?' (self-hosted answers everywhere)."""

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


REASONS = {
    "sqs": "fully managed competing-consumer queue with visibility timeout and a DLQ",
    "rabbitmq-tasks": "acks, prefetch and dead-letter exchanges, run by you",
    "kafka-stream": "a replicated log: every group reads it at its own pace, and can replay",
    "rabbitmq-routing": "topic and headers exchanges route on the broker; priority queues",
    "sns-sqs": "SNS copies each message into a queue per subscriber, managed",
    "kafka-fanout": "one log, one consumer group per subscriber; late subscribers replay",
    "rabbitmq-fanout": "a fanout exchange copies each message into every bound queue",
    "kafka-transactions": "output records and input offsets commit in one transaction",
    "sqs-fifo": "MessageDeduplicationId drops a retried send within 5 minutes",
    "idempotent-consumer": "the only general answer for effects outside the broker",
    "sqs-sns": "nothing to provision, patch or scale",
    "nats": "one small self-hosted binary, JetStream for persistence",
    "low-latency": "in-memory forwarding (NATS) or push delivery (RabbitMQ)",
}


def _leaf(requirements: Any) -> str:
    need = requirements.need
    if need == "task-queue":
        return "rabbitmq-tasks"
    if need == "event-stream":
        return "kafka-stream"
    if need == "routing":
        return "rabbitmq-routing"
    if need == "fan-out":
        return "kafka-fanout" if requirements.replay else "rabbitmq-fanout"
    if need == "exactly-once":
        return {
            "inside-kafka": "kafka-transactions",
            "producer-retries": "sqs-fifo",
            "external": "idempotent-consumer",
        }[requirements.effect]
    if need == "zero-ops":
        return "nats"
    return "low-latency"


def choose(requirements: Any) -> Recommendation:
    leaf = _leaf(requirements)
    return Recommendation(leaf, [REASONS[leaf]], consumer_must_dedupe=leaf != "kafka-transactions")
