"""RabbitMQ: the interface (``api``) and the real adapter on aio-pika and the management API
(``client``).

Importing this package imports no client library; ``client`` does.
"""
