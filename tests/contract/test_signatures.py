"""The real and the simulated adapters have exactly the interface's public methods.

Every method of a system's interface (and of its consumer, producer, delivery and subscription
classes) takes the same parameters, in the same order, with the same defaults and annotations,
in the real adapter and in the simulator's; so does every hook the interface's methods call
(its abstract ``_publish``, ``_fetch`` ...). So code written against the interface, a lesson's
or a learner's, runs unchanged on either, and an option added to one backend cannot silently
be missing from the other. Return types may be narrower (the simulator's ``producer()``
returns its own producer class, a subclass of the interface's).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator

import pytest

from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaProducer
from mqlab.brokers.kafka.client import KafkaBroker
from mqlab.brokers.kafka.consumer import Consumer as RealKafkaConsumer
from mqlab.brokers.kafka.producer import Producer as RealKafkaProducer
from mqlab.brokers.nats.api import JsMessage, NatsAPI, NatsPullConsumer, NatsSubscription
from mqlab.brokers.nats.client import NatsBroker
from mqlab.brokers.nats.consumer import CoreSubscription, Message, PullConsumer
from mqlab.brokers.rabbitmq.api import RabbitConsumer, RabbitDelivery, RabbitMQAPI
from mqlab.brokers.rabbitmq.client import RabbitMQBroker
from mqlab.brokers.rabbitmq.consumer import Consumer as RealRabbitConsumer
from mqlab.brokers.rabbitmq.consumer import Delivery
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.kafka.consumer import SimKafkaConsumer
from mqlab.brokers.sim.kafka.producer import SimKafkaProducer
from mqlab.brokers.sim.nats.client import SimNatsBroker
from mqlab.brokers.sim.nats.consumer import SimJsMessage, SimPullConsumer, SimSubscription
from mqlab.brokers.sim.rabbitmq.client import SimRabbitMQBroker
from mqlab.brokers.sim.rabbitmq.consumer import SimDelivery, SimRabbitConsumer
from mqlab.brokers.sim.sqs.client import SimSqsBroker
from mqlab.brokers.sqs.api import SqsAPI
from mqlab.brokers.sqs.client import SqsBroker

# interface -> (real implementation, simulated implementation)
PAIRS: dict[type, tuple[type, type]] = {
    KafkaAPI: (KafkaBroker, SimKafkaBroker),
    KafkaProducer: (RealKafkaProducer, SimKafkaProducer),
    KafkaConsumer: (RealKafkaConsumer, SimKafkaConsumer),
    RabbitMQAPI: (RabbitMQBroker, SimRabbitMQBroker),
    RabbitDelivery: (Delivery, SimDelivery),
    RabbitConsumer: (RealRabbitConsumer, SimRabbitConsumer),
    SqsAPI: (SqsBroker, SimSqsBroker),
    NatsAPI: (NatsBroker, SimNatsBroker),
    JsMessage: (Message, SimJsMessage),
    NatsPullConsumer: (PullConsumer, SimPullConsumer),
    NatsSubscription: (CoreSubscription, SimSubscription),
}


def public_methods(interface: type) -> Iterator[str]:
    """The interface's public methods (the shared adapter base's included for adapters) and
    the hooks it leaves to the adapters (its abstract private methods)."""
    hooks = getattr(interface, "__abstractmethods__", frozenset())
    for name, member in inspect.getmembers(interface):
        if not callable(member) or isinstance(member, type):
            continue
        if name.startswith("_") and name not in hooks:
            continue
        yield name


def parameters(function: Callable[..., object]) -> list[tuple[str, object, object, object]]:
    """(name, kind, default, annotation) of every parameter (annotations as written)."""
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(function).parameters.values()
    ]


def cases() -> list[object]:
    return [
        pytest.param(interface, implementation, name, id=f"{implementation.__name__}.{name}")
        for interface, implementations in PAIRS.items()
        for implementation in implementations
        for name in public_methods(interface)
    ]


@pytest.mark.parametrize(("interface", "implementation", "name"), cases())
def test_a_public_method_takes_the_interfaces_parameters(
    interface: type, implementation: type, name: str
) -> None:
    assert issubclass(implementation, interface)
    expected = parameters(getattr(interface, name))
    actual = parameters(getattr(implementation, name))
    assert actual == expected, f"{implementation.__name__}.{name} differs from {interface.__name__}"


@pytest.mark.parametrize(("interface", "implementation", "name"), cases())
def test_a_public_method_returns_the_interfaces_type_or_a_narrower_one(
    interface: type, implementation: type, name: str
) -> None:
    declared = typing.get_type_hints(getattr(interface, name)).get("return")
    given = typing.get_type_hints(getattr(implementation, name)).get("return")
    if isinstance(declared, type) and isinstance(given, type):
        assert issubclass(given, declared), f"{implementation.__name__}.{name} returns {given}"
    else:
        assert given == declared, f"{implementation.__name__}.{name} returns {given}"


def test_the_check_catches_a_parameter_only_one_backend_has() -> None:
    """The comparison itself: an extra keyword (the drift this test exists for) is found."""

    class Drifted(KafkaConsumer):
        async def poll(
            self, *, max_records: int = 100, timeout: float = 1.0, extra: int = 0
        ) -> list[object]:  # type: ignore[override]
            return []

    assert parameters(Drifted.poll) != parameters(KafkaConsumer.poll)
