"""Kafka: the interface (``api``), the real adapter on aiokafka (``client``) and its wire helpers.

Importing this package imports no client library; ``client`` does.
"""
