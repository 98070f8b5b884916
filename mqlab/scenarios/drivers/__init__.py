"""One scenario driver per system (shared by the real adapters and the simulator)."""

from __future__ import annotations

import importlib

from mqlab.brokers.base import Broker
from mqlab.brokers.registry import BrokerRef, SystemName
from mqlab.course.scenario import Scenario
from mqlab.scenarios.drivers.base import Driver

DRIVERS: dict[SystemName, str] = {
    "kafka": "mqlab.scenarios.drivers.kafka:KafkaDriver",
    "rabbitmq": "mqlab.scenarios.drivers.rabbitmq:RabbitMQDriver",
    "sqs": "mqlab.scenarios.drivers.sqs:SqsDriver",
    "nats": "mqlab.scenarios.drivers.nats:NatsDriver",
}
"""Each system's driver, imported when a run needs it (every system of the table has one:
tests/brokers/test_registry.py checks it)."""


def driver_for(broker: Broker, scenario: Scenario) -> Driver:
    """The driver of ``broker``'s system, imported lazily.

    Raises:
        UnknownBroker: the adapter speaks a system the table does not know.
    """
    system = BrokerRef.of(broker.system, simulated=broker.backend == "sim").system
    module_name, _, attribute = DRIVERS[system].partition(":")
    driver_class: type[Driver] = getattr(importlib.import_module(module_name), attribute)
    return driver_class(broker, scenario)
