"""The simulated kafka: the server model (``server``) and the simulated adapter (``client``)."""
