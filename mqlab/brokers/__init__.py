"""Broker adapters: one package per system (Kafka, RabbitMQ, SQS/SNS, NATS JetStream) plus the
simulator, all laid out the same way.

``mqlab.brokers.<system>.api`` is the system's interface in its own vocabulary (with its error
classes), ``mqlab.brokers.<system>.client`` the real adapter, and ``mqlab.brokers.sim.<system>``
the simulated server model (``server``) and adapter (``client``). Both adapters implement the
interface, so a scenario, lesson or test written against it runs on either.
:mod:`mqlab.brokers.registry` holds the table of systems, the typed broker reference
(``kafka``, ``sim:kafka``) and the factory that builds an adapter for one;
:mod:`mqlab.brokers.faults` is the one vocabulary of injected faults.
"""
