"""Where the lab's services listen: mqlab's own ports, all on 127.0.0.1.

Every address a client uses goes through here, so the adapters, the tests and the CLI agree on
one table. The ports are deliberately *not* the standard ones (9092, 5672, 4222, 6379, 5432): a
learner may already run those services, and mqlab must never talk to (or stop) someone else's.

Clients connect to the *public* port. For the brokers that port belongs to a Toxiproxy proxy in
front of the real listener (the *upstream* port), so network faults can be injected per broker.
Redis and PostgreSQL are support services (idempotency stores), reached directly.

Override the whole table with ``MQLAB_PORT_OFFSET`` (added to every port), e.g. to run two labs
side by side, or a single port with ``MQLAB_PORT_<NAME>`` (for example ``MQLAB_PORT_REDIS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

HOST = "127.0.0.1"

# name -> default port. Public ports are 1xxxx, upstream (behind Toxiproxy) ports are 2xxxx.
DEFAULT_PORTS: dict[str, int] = {
    "toxiproxy_api": 18474,
    "kafka_controller": 19090,
    "kafka_broker_1": 19091,  # public: Toxiproxy -> kafka_broker_1_upstream
    "kafka_broker_2": 19092,
    "kafka_broker_3": 19093,
    "kafka_broker_1_upstream": 29091,
    "kafka_broker_2_upstream": 29092,
    "kafka_broker_3_upstream": 29093,
    # Broker-to-broker replication, never proxied. 28xxx rather than 291xx so that two labs
    # whose MQLAB_PORT_OFFSETs differ by 100 do not collide (upstream 29091+100 = 29191).
    "kafka_broker_1_internal": 28091,
    "kafka_broker_2_internal": 28092,
    "kafka_broker_3_internal": 28093,
    "rabbitmq": 15682,
    "rabbitmq_upstream": 25682,
    "rabbitmq_management": 15683,
    "rabbitmq_dist": 25683,
    "rabbitmq_epmd": 14369,
    "nats": 14232,
    "nats_upstream": 24232,
    "nats_monitor": 18232,
    "sqs": 14566,  # moto server: SQS and SNS on one endpoint
    "sqs_upstream": 24566,
    "redis": 16389,
    "postgres": 15442,
}

KAFKA_BROKER_IDS = (1, 2, 3)
KAFKA_CONTROLLER_ID = 0


def port(name: str) -> int:
    """Return the configured port for ``name`` (see :data:`DEFAULT_PORTS`).

    Raises:
        KeyError: ``name`` is not one of the lab's ports.
    """
    default = DEFAULT_PORTS[name]
    explicit = os.environ.get(f"MQLAB_PORT_{name.upper()}")
    if explicit:
        return int(explicit)
    return default + int(os.environ.get("MQLAB_PORT_OFFSET", "0"))


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Client-facing addresses of every lab service (what the adapters connect to)."""

    kafka_bootstrap: str
    rabbitmq_url: str
    rabbitmq_management_url: str
    nats_url: str
    sqs_endpoint: str
    redis_url: str
    postgres_dsn: str
    toxiproxy_api: str

    @classmethod
    def local(cls) -> Endpoints:
        """The endpoints of the local lab started by ``mqlab lab up``."""
        brokers = ",".join(f"{HOST}:{port(f'kafka_broker_{i}')}" for i in KAFKA_BROKER_IDS)
        return cls(
            kafka_bootstrap=brokers,
            rabbitmq_url=f"amqp://guest:guest@{HOST}:{port('rabbitmq')}/",
            rabbitmq_management_url=f"http://{HOST}:{port('rabbitmq_management')}",
            nats_url=f"nats://{HOST}:{port('nats')}",
            sqs_endpoint=f"http://{HOST}:{port('sqs')}",
            redis_url=f"redis://{HOST}:{port('redis')}/0",
            postgres_dsn=f"postgresql://mqlab@{HOST}:{port('postgres')}/mqlab",
            toxiproxy_api=f"http://{HOST}:{port('toxiproxy_api')}",
        )
