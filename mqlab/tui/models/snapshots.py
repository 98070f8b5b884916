"""The broker snapshot types the live views draw, imported in this one place (the broker
packages move; a move is then a one-line fix here)."""

from __future__ import annotations

from mqlab.brokers.kafka.api import KafkaSnapshot
from mqlab.brokers.nats.api import NatsSnapshot
from mqlab.brokers.rabbitmq.api import RabbitSnapshot
from mqlab.brokers.sqs.api import SqsSnapshot

__all__ = ["KafkaSnapshot", "NatsSnapshot", "RabbitSnapshot", "SqsSnapshot"]
