"""One module per non-Kafka lab service, all with the same shape: ``missing`` / ``install`` /
``prepare`` / ``processes`` / ``proxies`` / ``version`` (see :class:`mqlab.lab.spec.Service`).
Kafka lives in :mod:`mqlab.lab.kafka`."""
