"""Typed observations: everything that happens to a message, a consumer or a broker.

Adapters (real and simulated) emit these; the TUI draws them, the scenario runner folds them
into a ledger, and ``mqlab run --record`` writes them as JSONL. They are small frozen
dataclasses rather than pydantic models because the simulator emits hundreds of thousands per
second and a trace must round-trip exactly.

Vocabulary: ``destination`` is whatever a message is sent to in the broker's own terms (a Kafka
topic, a RabbitMQ exchange or queue, an SQS queue, a NATS subject); ``position`` is where it
landed (a Kafka offset, a NATS stream sequence; ``None`` where the broker has no such thing).
``message_id`` is mqlab's own id, carried in a header, so one message can be followed from
produce to processing across retries and redeliveries whatever the broker calls it.

Every observation has ``at``: seconds on a monotonic clock (the simulator's virtual clock on
``sim``), so a trace replays in the order and at the pace it happened.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

_REGISTRY: dict[str, type[Observation]] = {}

_O = TypeVar("_O", bound="type[Observation]")


def _observation(cls: _O) -> _O:
    """Register an observation class under its ``kind`` so traces can be read back."""
    _REGISTRY[cls.kind] = cls
    return cls


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """Base of every observation.

    Attributes:
        at: monotonic seconds (virtual seconds on the simulator).
        broker: the adapter name that saw it (``kafka``, ``rabbitmq``, ``sqs``, ``nats``,
            ``sim-kafka`` ...), or ``lab`` / ``runner`` for events from those layers.
    """

    kind: ClassVar[str] = "observation"
    at: float
    broker: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``kind`` first (the shape of one trace line)."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": self.kind, **body}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Observation:
        """Rebuild an observation written by :meth:`to_dict`.

        Raises:
            ValueError: unknown ``kind`` or fields that do not belong to it.
        """
        payload = dict(data)
        kind = payload.pop("kind", None)
        cls = _REGISTRY.get(str(kind))
        if cls is None:
            raise ValueError(f"unknown observation kind {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(payload) - names
        if unknown:
            raise ValueError(f"{kind}: unexpected fields {sorted(unknown)}")
        for f in dataclasses.fields(cls):
            if f.name in payload and isinstance(payload[f.name], list):
                payload[f.name] = tuple(
                    tuple(v) if isinstance(v, list) else v for v in payload[f.name]
                )
        return cls(**payload)


# --- messages ---------------------------------------------------------------------------


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Produced(Observation):
    """A broker acknowledged a message (Kafka offset assigned, RabbitMQ confirm, SQS MessageId,
    NATS PubAck). ``duplicate`` is True when the broker says it dropped it as a duplicate
    (NATS Nats-Msg-Id, SQS FIFO dedup id, Kafka idempotent producer retry)."""

    kind: ClassVar[str] = "produced"
    destination: str
    message_id: str
    key: str | None = None
    partition: int | None = None
    position: int | None = None
    producer: str = ""
    duplicate: bool = False


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceFailed(Observation):
    """A send was not acknowledged (NotEnoughReplicas, timeout, connection lost ...)."""

    kind: ClassVar[str] = "produce_failed"
    destination: str
    message_id: str
    error: str
    producer: str = ""
    key: str | None = None


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered(Observation):
    """A consumer received a message. ``delivery_count`` starts at 1; ``redelivered`` is the
    broker's own flag (RabbitMQ redelivered, SQS ApproximateReceiveCount > 1, NATS
    num_delivered > 1, Kafka: the offset was delivered to this group before)."""

    kind: ClassVar[str] = "delivered"
    destination: str
    message_id: str
    consumer: str
    key: str | None = None
    partition: int | None = None
    position: int | None = None
    delivery_count: int = 1
    redelivered: bool = False


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Processed(Observation):
    """The consumer's business logic finished for a message (what "processed once" counts).

    ``group`` is who the processing counts for: a Kafka consumer group, a RabbitMQ/SQS queue, a
    NATS durable. The same message processed by two groups (fan-out, replay by a new group) is
    not a duplicate; processed twice within one group is. ``skipped_duplicate`` marks a
    redelivery that an idempotent consumer recognised and did not apply again.
    """

    kind: ClassVar[str] = "processed"
    message_id: str
    consumer: str
    group: str = ""
    key: str | None = None
    skipped_duplicate: bool = False


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Acked(Observation):
    """A consumer settled a message positively (RabbitMQ ack, SQS DeleteMessage, NATS ack)."""

    kind: ClassVar[str] = "acked"
    destination: str
    message_id: str
    consumer: str


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Nacked(Observation):
    """A consumer settled a message negatively (RabbitMQ nack/reject, NATS nak/term, SQS
    visibility set to 0). ``requeue`` says whether the broker will deliver it again."""

    kind: ClassVar[str] = "nacked"
    destination: str
    message_id: str
    consumer: str
    requeue: bool


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Committed(Observation):
    """A Kafka consumer group committed ``offset`` (the next offset to read) for a partition."""

    kind: ClassVar[str] = "committed"
    group: str
    topic: str
    partition: int
    offset: int
    consumer: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered(Observation):
    """A message moved to a dead-letter destination (RabbitMQ DLX, SQS redrive, NATS max
    deliver reached, or a consumer's own parking lot)."""

    kind: ClassVar[str] = "dead_lettered"
    source: str
    target: str
    message_id: str
    reason: str


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Expired(Observation):
    """A message was dropped because its TTL ran out and nothing dead-lettered it."""

    kind: ClassVar[str] = "expired"
    destination: str
    message_id: str


# --- consumers and groups ---------------------------------------------------------------


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Rebalanced(Observation):
    """A consumer group's assignment changed. ``assignment`` maps member -> list of
    ``"topic:partition"``; ``generation`` is Kafka's generation id (0 where unknown)."""

    kind: ClassVar[str] = "rebalanced"
    group: str
    generation: int
    assignment: tuple[tuple[str, tuple[str, ...]], ...]
    reason: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerCrashed(Observation):
    """A consumer died without closing cleanly (an injected kill -9 or an exception)."""

    kind: ClassVar[str] = "consumer_crashed"
    consumer: str
    point: str
    detail: str = ""


# --- cluster and lab --------------------------------------------------------------------


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderChanged(Observation):
    """A Kafka partition's leader or ISR changed (``leader`` -1: no leader, offline)."""

    kind: ClassVar[str] = "leader_changed"
    topic: str
    partition: int
    leader: int
    isr: tuple[int, ...]
    previous_leader: int | None = None
    previous_isr: tuple[int, ...] | None = None


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerDown(Observation):
    """A broker node (or the client's connection to it) became unreachable."""

    kind: ClassVar[str] = "broker_down"
    node: str
    detail: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerUp(Observation):
    """A broker node (or the client's connection to it) is reachable again."""

    kind: ClassVar[str] = "broker_up"
    node: str
    detail: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjected(Observation):
    """The lab or the simulator injected a fault: ``fault`` is one of the shared fault names
    (kill, pause, resume, restart, latency, timeout, reset_peer, bandwidth, partition,
    crash, poison)."""

    kind: ClassVar[str] = "fault_injected"
    fault: str
    target: str
    params: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class FaultHealed(Observation):
    """A previously injected fault was removed."""

    kind: ClassVar[str] = "fault_healed"
    fault: str
    target: str


# --- patterns ---------------------------------------------------------------------------


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Observation):
    """A retry policy decided to try again after ``delay`` seconds."""

    kind: ClassVar[str] = "retry_scheduled"
    message_id: str
    attempt: int
    delay: float
    strategy: str
    error: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStep(Observation):
    """A saga step or compensation changed state (``started``, ``succeeded``, ``failed``)."""

    kind: ClassVar[str] = "saga_step"
    saga_id: str
    step: str
    state: str
    compensation: bool = False
    error: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class EventAppended(Observation):
    """A domain event was appended to an event-sourced aggregate's stream."""

    kind: ClassVar[str] = "event_appended"
    aggregate_id: str
    event_type: str
    version: int


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Note(Observation):
    """Free text from the runner (a step started, an assertion held), shown in the timeline."""

    kind: ClassVar[str] = "note"
    text: str


def observation_kinds() -> dict[str, type[Observation]]:
    """Every registered observation kind (for docs, the TUI legend and trace validation)."""
    return dict(_REGISTRY)
