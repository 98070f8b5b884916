"""The simulated nats: the server model (``server``) and the simulated adapter (``client``)."""
