"""One scenario driver per system (shared by the real adapters and the simulator)."""

from __future__ import annotations

from mqlab.brokers.base import Broker
from mqlab.course.scenario import Scenario
from mqlab.scenarios.drivers.base import Driver


def driver_for(broker: Broker, scenario: Scenario) -> Driver:
    """The driver of ``broker.system``, imported lazily."""
    if broker.system == "kafka":
        from mqlab.scenarios.drivers.kafka import KafkaDriver

        return KafkaDriver(broker, scenario)
    if broker.system == "rabbitmq":
        from mqlab.scenarios.drivers.rabbitmq import RabbitMQDriver

        return RabbitMQDriver(broker, scenario)
    if broker.system == "sqs":
        from mqlab.scenarios.drivers.sqs import SqsDriver

        return SqsDriver(broker, scenario)
    if broker.system == "nats":
        from mqlab.scenarios.drivers.nats import NatsDriver

        return NatsDriver(broker, scenario)
    raise ValueError(f"no scenario driver for {broker.system!r}")
