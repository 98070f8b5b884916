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

The kinds the pattern library reports are in :mod:`mqlab.observe.pattern_events` and the base
class with its registry in :mod:`mqlab.observe.observation`; both are re-exported here, so every
observation is imported from this one module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mqlab.observe import pattern_events
from mqlab.observe.observation import Observation, observation_kinds, registered
from mqlab.observe.pattern_events import *  # noqa: F403  (re-exported: see __all__)

__all__ = [  # this module's kinds and the base; every pattern kind is added below
    "DEAD_LETTER_PRODUCER",
    "Acked",
    "BrokerDown",
    "BrokerUp",
    "CheckEvaluated",
    "Committed",
    "ConsumerCrashed",
    "ConsumerStarted",
    "DeadLettered",
    "Delivered",
    "Expired",
    "FaultHealed",
    "FaultInjected",
    "LeaderChanged",
    "Nacked",
    "Note",
    "Observation",
    "Processed",
    "ProcessingFailed",
    "ProduceFailed",
    "ProduceRequested",
    "Produced",
    "Rebalanced",
    "RunEnded",
    "RunStarted",
    "TransactionEnded",
    "observation_kinds",
]
__all__ += pattern_events.__all__


# --- messages ---------------------------------------------------------------------------


DEAD_LETTER_PRODUCER = "dead-letter-writer"
"""The ``producer`` of a :class:`Produced` that is a consumer writing a failed message aside
itself (Kafka has no broker-side dead-letter queue): not a new message, its copy."""


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceFailed(Observation):
    """A send was not acknowledged (NotEnoughReplicas, timeout, connection lost ...)."""

    kind: ClassVar[str] = "produce_failed"
    destination: str
    message_id: str
    error: str
    producer: str = ""
    key: str | None = None


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered(Observation):
    """A consumer received a message. ``delivery_count`` starts at 1; ``redelivered`` is the
    broker's own flag (RabbitMQ redelivered, SQS ApproximateReceiveCount > 1, NATS
    num_delivered > 1). Kafka has neither a flag nor a counter: its re-reads are always
    ``redelivered=False``, ``delivery_count=1``, and show as repeated message ids."""

    kind: ClassVar[str] = "delivered"
    destination: str
    message_id: str
    consumer: str
    key: str | None = None
    partition: int | None = None
    position: int | None = None
    delivery_count: int = 1
    redelivered: bool = False


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingFailed(Observation):
    """The consumer's business logic failed for a message (a poison message, a transient
    error), and what the consumer did about it: ``then`` is ``retry`` (it will be delivered
    again), ``dead_letter`` (moved aside), ``drop`` (settled without processing), ``ignore``
    (acknowledged anyway) or ``lost`` (it was acknowledged before processing: at-most-once)."""

    kind: ClassVar[str] = "processing_failed"
    message_id: str
    consumer: str
    attempt: int
    error: str
    then: str
    group: str = ""


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class Acked(Observation):
    """A consumer settled a message positively (RabbitMQ ack, SQS DeleteMessage, NATS ack)."""

    kind: ClassVar[str] = "acked"
    destination: str
    message_id: str
    consumer: str


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class Nacked(Observation):
    """A consumer settled a message negatively (RabbitMQ nack/reject, NATS nak/term, SQS
    visibility set to 0). ``requeue`` says whether the broker will deliver it again."""

    kind: ClassVar[str] = "nacked"
    destination: str
    message_id: str
    consumer: str
    requeue: bool


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class Committed(Observation):
    """A Kafka consumer group committed ``offset`` (the next offset to read) for a partition."""

    kind: ClassVar[str] = "committed"
    group: str
    topic: str
    partition: int
    offset: int
    consumer: str = ""


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered(Observation):
    """A message moved to a dead-letter destination (RabbitMQ DLX, SQS redrive, NATS max
    deliver reached, or a consumer's own parking lot)."""

    kind: ClassVar[str] = "dead_lettered"
    source: str
    target: str
    message_id: str
    reason: str


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class Expired(Observation):
    """A message was dropped because its TTL ran out and nothing dead-lettered it."""

    kind: ClassVar[str] = "expired"
    destination: str
    message_id: str


# --- consumers and groups ---------------------------------------------------------------


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class Rebalanced(Observation):
    """A consumer group's assignment changed. ``assignment`` maps member -> list of
    ``"topic:partition"``; ``generation`` is Kafka's generation id (0 where unknown)."""

    kind: ClassVar[str] = "rebalanced"
    group: str
    generation: int
    assignment: tuple[tuple[str, tuple[str, ...]], ...]
    reason: str = ""


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerCrashed(Observation):
    """A consumer died without closing cleanly (an injected kill -9 or an exception)."""

    kind: ClassVar[str] = "consumer_crashed"
    consumer: str
    point: str
    detail: str = ""


# --- cluster and lab --------------------------------------------------------------------


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerDown(Observation):
    """A broker node (or the client's connection to it) became unreachable."""

    kind: ClassVar[str] = "broker_down"
    node: str
    detail: str = ""


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerUp(Observation):
    """A broker node (or the client's connection to it) is reachable again."""

    kind: ClassVar[str] = "broker_up"
    node: str
    detail: str = ""


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjected(Observation):
    """The lab or the simulator injected a fault: ``fault`` is one of the shared fault names
    (kill, pause, resume, restart, latency, timeout, reset_peer, bandwidth, partition,
    crash, poison)."""

    kind: ClassVar[str] = "fault_injected"
    fault: str
    target: str
    params: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class FaultHealed(Observation):
    """A previously injected fault was removed."""

    kind: ClassVar[str] = "fault_healed"
    fault: str
    target: str


# --- free text --------------------------------------------------------------------------


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class Note(Observation):
    """Free text from the runner (a step started, an assertion held), shown in the timeline."""

    kind: ClassVar[str] = "note"
    text: str


# --- runs -------------------------------------------------------------------------------
# What the scenario runner knows that the ledger and the verdict need is an observation too,
# so a recorded trace carries everything: replaying it gives the very same ledger, checks and
# verdict as the live run, without the scenario file and without a broker.


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Observation):
    """A scenario run began. ``scenario`` is the validated scenario document as JSON text, so
    a trace can be judged again on its own (even when the file was a learner's copy that has
    changed since)."""

    kind: ClassVar[str] = "run_started"
    scenario_id: str
    system: str
    simulated: bool
    seed: int
    scenario: str
    mqlab_version: str = ""


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceRequested(Observation):
    """The runner handed a message to the producer (before the broker answered): its key,
    its priority and the step that sent it. The ledger orders keys and priorities by it;
    :class:`Produced` or :class:`ProduceFailed` tells what the broker did with it."""

    kind: ClassVar[str] = "produce_requested"
    message_id: str
    step: int
    key: str | None = None
    priority: int | None = None


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerStarted(Observation):
    """A consume step started a consumer. From then on an acknowledged message that no group
    processes counts as lost, even if no group processed anything at all."""

    kind: ClassVar[str] = "consumer_started"
    consumer: str
    group: str
    step: int


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionEnded(Observation):
    """A producer's transaction was committed or aborted. The messages of an aborted
    transaction were written to the log (and reported :class:`Produced`) but are never
    visible to ``read_committed`` consumers: the ledger counts them as aborted, not produced,
    and never as lost."""

    kind: ClassVar[str] = "transaction_ended"
    producer: str
    outcome: str
    """``committed`` or ``aborted``."""
    message_ids: tuple[str, ...] = ()


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class CheckEvaluated(Observation):
    """A check against the broker's own state (not the ledger): a ``check`` step, the end of a
    ``wait: {until: ...}`` step, or the end-of-run agreement between ledger and broker
    (``step`` 0)."""

    kind: ClassVar[str] = "check_evaluated"
    step: int
    description: str
    observed: str
    holds: bool


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnded(Observation):
    """The run finished (cleanup included). ``error`` is the one-line reason it could not
    complete (empty when it did); ``restore_problem`` says what the cleanup could not put back
    (a broker that would not restart)."""

    kind: ClassVar[str] = "run_ended"
    error: str = ""
    restore_problem: str = ""
