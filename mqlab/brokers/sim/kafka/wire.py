"""How the simulated Kafka clients reach the cluster: a request to a group or transaction
coordinator and back, retried the way the Java client retries, plus the client settings the
producer and consumer share.

The real adapter's counterpart is :mod:`mqlab.brokers.kafka.wire`.
"""

from __future__ import annotations

import asyncio

from mqlab.brokers.base import BrokerError, OperationTimedOut
from mqlab.brokers.sim.kafka.config import (
    CoordinatorNotAvailable,
    RetriableError,
)
from mqlab.brokers.sim.kafka.server import SimKafkaCluster
from mqlab.brokers.sim.world import NodeUnreachable

RETRY_BACKOFF = 0.1
"""retry.backoff.ms: the pause before a client retries a failed request."""


class ClientClosed(BrokerError):
    """A client was used after close() or crash()."""


async def coordinator_round_trip(
    cluster: SimKafkaCluster, topic: str, key: str, timeout: float, what: str
) -> int:
    """Find ``key``'s coordinator and carry one request to it and back; returns its id.

    Raises:
        OperationTimedOut: no coordinator answered within ``timeout`` virtual seconds.
    """
    world = cluster.world
    deadline = world.now() + timeout
    last: BaseException | None = None
    while True:
        try:
            broker_id = cluster.coordinator(topic, key)
            node = cluster.node_of(broker_id)
            if not world.clear_path(node):
                remaining = max(0.0, deadline - world.now())
                await asyncio.wait_for(world.transmit(node, "upstream"), remaining)
                remaining = max(0.0, deadline - world.now())
                await asyncio.wait_for(world.transmit(node, "downstream"), remaining)
            if not cluster.broker_up(broker_id):
                raise CoordinatorNotAvailable(f"{node} does not answer")
            return broker_id
        except (RetriableError, NodeUnreachable) as error:
            last = error
        except TimeoutError:
            last = last or CoordinatorNotAvailable("no answer")
        if world.now() + RETRY_BACKOFF > deadline:
            raise OperationTimedOut(
                f"{what} for {key!r}: no coordinator answered within {timeout:g}s ({last})"
            )
        await asyncio.sleep(RETRY_BACKOFF)
