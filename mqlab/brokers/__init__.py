"""Broker adapters: one per system (Kafka, RabbitMQ, SQS/SNS, NATS JetStream) plus the simulator.

``mqlab.brokers.api`` holds each system's interface in its own vocabulary; the real adapters
(``mqlab.brokers.kafka.client`` ...) and the simulated ones (``mqlab.brokers.sim``) implement those
interfaces, so a scenario, lesson or test written against the interface runs on either.
Resolve an adapter by name with :func:`mqlab.brokers.registry.get_broker_class`.
"""
