"""NATS JetStream: the interface (``api``) and the real adapter on nats-py (``client``).

Importing this package imports no client library; ``client`` does.
"""
