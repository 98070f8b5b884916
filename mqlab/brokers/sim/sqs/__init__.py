"""The simulated sqs: the server model (``server``) and the simulated adapter (``client``)."""
