"""The simulated Kafka cluster's configuration, constants and the error codes its brokers answer.

The defaults are the lab's ``server.properties`` (:data:`DEFAULT_CONFIG`), so a sim run and a
lab run time out, fence and rebalance alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mqlab.brokers.base import BrokerError

SOURCE = "sim:kafka"
"""``broker`` field of the observations the cluster emits (the adapter's registry name)."""

CONTROLLER_NODE = "kafka-controller"
CONTROLLER_ID = 0
OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_TOPIC = "__transaction_state"

DEFAULT_CONFIG: dict[str, str] = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "num.partitions": "1",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "false",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.num.partitions": "10",
    "transaction.max.timeout.ms": "900000",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.max.session.timeout.ms": "1800000",
    "replica.lag.time.max.ms": "10000",
    "auto.leader.rebalance.enable": "true",
    "leader.imbalance.check.interval.seconds": "30",
    "leader.imbalance.per.broker.percentage": "10",
}
"""Broker configs of the lab's cluster (mqlab/lab/kafka.py), Kafka's defaults elsewhere."""

TOPIC_CONFIGS = frozenset({"min.insync.replicas", "unclean.leader.election.enable"})
"""Topic-level overrides the model honours (others are stored and shown, not modelled)."""


# --- errors the cluster answers with -----------------------------------------------------


class KafkaServerError(BrokerError):
    """An error code a broker returns. ``retriable`` tells the client to retry."""

    retriable = False


class RetriableError(KafkaServerError):
    """A retriable error code (the client retries until its timeout)."""

    retriable = True


class NotLeaderOrFollower(RetriableError):
    """The request went to a broker that is no longer the partition's leader."""


class LeaderNotAvailable(RetriableError):
    """The partition has no leader right now (offline or being elected)."""


class NotEnoughReplicasError(RetriableError):
    """acks=all refused: the ISR is below min.insync.replicas (retried until the timeout)."""


class NotEnoughReplicasAfterAppend(NotEnoughReplicasError):
    """Written to the leader, but the ISR shrank below min.insync.replicas before it was
    replicated: the record is in the log even though the producer gets an error."""


class CoordinatorNotAvailable(RetriableError):
    """The group or transaction coordinator's partition is offline."""


class ConnectionLost(RetriableError):
    """The broker died while the request was in flight."""


class RebalanceNeeded(RetriableError):
    """Internal: the member must (re)join the group."""


# --- configuration -----------------------------------------------------------------------


def as_bool(value: str) -> bool:
    return value.strip().lower() == "true"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The broker configs the model uses, typed (seconds instead of ms)."""

    session_timeout: float
    min_insync_replicas: int
    unclean_leader_election: bool
    default_replication_factor: int
    offsets_partitions: int
    offsets_replication_factor: int
    transaction_partitions: int
    transaction_replication_factor: int
    transaction_min_isr: int
    initial_rebalance_delay: float
    min_session_timeout: float
    max_session_timeout: float
    replica_lag_time_max: float
    auto_leader_rebalance: bool
    leader_imbalance_interval: float
    leader_imbalance_percentage: float
    raw: Mapping[str, str]

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, object] | None) -> ClusterConfig:
        """Kafka-named settings (``{"min.insync.replicas": 1}``) over :data:`DEFAULT_CONFIG`.

        Raises:
            BrokerError: an unknown setting name (with the known ones).
        """
        raw = dict(DEFAULT_CONFIG)
        for name, value in (overrides or {}).items():
            if name not in DEFAULT_CONFIG:
                raise BrokerError(
                    f"unknown simulated broker config {name!r} (known: {', '.join(raw)})"
                )
            raw[name] = str(value).lower() if isinstance(value, bool) else str(value)
        ms = 1000.0
        return cls(
            session_timeout=int(raw["broker.session.timeout.ms"]) / ms,
            min_insync_replicas=int(raw["min.insync.replicas"]),
            unclean_leader_election=as_bool(raw["unclean.leader.election.enable"]),
            default_replication_factor=int(raw["default.replication.factor"]),
            offsets_partitions=int(raw["offsets.topic.num.partitions"]),
            offsets_replication_factor=int(raw["offsets.topic.replication.factor"]),
            transaction_partitions=int(raw["transaction.state.log.num.partitions"]),
            transaction_replication_factor=int(raw["transaction.state.log.replication.factor"]),
            transaction_min_isr=int(raw["transaction.state.log.min.isr"]),
            initial_rebalance_delay=int(raw["group.initial.rebalance.delay.ms"]) / ms,
            min_session_timeout=int(raw["group.min.session.timeout.ms"]) / ms,
            max_session_timeout=int(raw["group.max.session.timeout.ms"]) / ms,
            replica_lag_time_max=int(raw["replica.lag.time.max.ms"]) / ms,
            auto_leader_rebalance=as_bool(raw["auto.leader.rebalance.enable"]),
            leader_imbalance_interval=float(raw["leader.imbalance.check.interval.seconds"]),
            leader_imbalance_percentage=float(raw["leader.imbalance.per.broker.percentage"]),
            raw=raw,
        )
