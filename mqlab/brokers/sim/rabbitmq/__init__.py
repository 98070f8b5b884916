"""The simulated rabbitmq: the server model (``server``) and the simulated adapter (``client``)."""
