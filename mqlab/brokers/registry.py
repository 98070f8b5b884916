"""Lazy registry of adapters by name: importing it imports no client library.

``"kafka"`` is the real adapter (aiokafka), ``"sim:kafka"`` the simulator's model of the same
system. An unknown name answers with the closest known one ("did you mean ...").
"""

from __future__ import annotations

import difflib
import importlib

from mqlab.brokers.base import Broker, BrokerError

SYSTEMS = ("kafka", "rabbitmq", "sqs", "nats")

BROKERS: dict[str, str] = {
    "kafka": "mqlab.brokers.kafka.client:KafkaBroker",
    "rabbitmq": "mqlab.brokers.rabbitmq.client:RabbitMQBroker",
    "sqs": "mqlab.brokers.sqs.client:SqsBroker",
    "nats": "mqlab.brokers.nats.client:NatsBroker",
    "sim:kafka": "mqlab.brokers.sim.kafka.client:SimKafkaBroker",
    "sim:rabbitmq": "mqlab.brokers.sim.rabbitmq.client:SimRabbitMQBroker",
    "sim:sqs": "mqlab.brokers.sim.sqs.client:SimSqsBroker",
    "sim:nats": "mqlab.brokers.sim.nats.client:SimNatsBroker",
}


class UnknownBroker(BrokerError):
    """A broker name that is not in the registry."""


def resolve_name(name: str) -> str:
    """Check ``name`` and return it normalised (lower case).

    Raises:
        UnknownBroker: with a "did you mean" suggestion when one is close.
    """
    normalised = name.strip().lower()
    if normalised in BROKERS:
        return normalised
    close = difflib.get_close_matches(normalised, BROKERS, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(BROKERS)
    raise UnknownBroker(f"unknown broker {name!r}{hint} (known: {known})")


def get_broker_class(name: str) -> type[Broker]:
    """Import and return the adapter class registered as ``name``."""
    module_name, _, attribute = BROKERS[resolve_name(name)].partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attribute)
    if not (isinstance(cls, type) and issubclass(cls, Broker)):
        raise TypeError(f"{BROKERS[name]} is not a Broker")
    return cls
