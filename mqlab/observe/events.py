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
            if f.name in payload:
                payload[f.name] = _frozen(payload[f.name])
        return cls(**payload)


def _frozen(value: Any) -> Any:
    """JSON's lists as the tuples the fields hold, at every depth (a Rebalanced assignment is
    a tuple of (member, tuple of partitions)), so a decoded observation equals the original."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


# --- messages ---------------------------------------------------------------------------


DEAD_LETTER_PRODUCER = "dead-letter-writer"
"""The ``producer`` of a :class:`Produced` that is a consumer writing a failed message aside
itself (Kafka has no broker-side dead-letter queue): not a new message, its copy."""


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


# --- patterns: retries ------------------------------------------------------------------
# What ``mqlab.patterns.retry.retry`` reports. ``message_id`` names the retried operation (a
# message's id when its handling is retried, otherwise the name the caller gave), so the three
# kinds of one operation join on it. Numbering, the same everywhere in mqlab: ``call`` counts
# every call from 1 (call 1 is the initial one); ``attempt`` numbers the *retries* from 0, so
# attempt n is call n + 2 and its exponential delay is ``base * 2**n``.


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryAttempted(Observation):
    """One call of a retried operation finished: ``outcome`` is ``succeeded`` or ``failed``;
    a failure carries the error and how it was classified (``transient`` errors may be
    retried, ``permanent`` ones never are). ``duration`` is the call's own time in seconds."""

    kind: ClassVar[str] = "retry_attempted"
    message_id: str
    call: int
    outcome: str
    duration: float = 0.0
    error: str = ""
    error_class: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Observation):
    """A retry policy decided to try again after ``delay`` seconds. ``attempt`` is the retry's
    number counted from 0 (0 = the first retry); ``error`` is what the failed call raised."""

    kind: ClassVar[str] = "retry_scheduled"
    message_id: str
    attempt: int
    delay: float
    strategy: str
    error: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryGaveUp(Observation):
    """A retried operation stopped without succeeding. ``reason`` is what stopped it:
    ``attempts`` (the retry limit), ``deadline`` (the next delay would end past the total-time
    budget), ``budget`` (the shared token-bucket retry budget was empty) or ``permanent``
    (the error is one that retrying cannot fix). ``calls`` is how many calls were made and
    ``elapsed`` the seconds since the first one started."""

    kind: ClassVar[str] = "retry_gave_up"
    message_id: str
    reason: str
    calls: int
    elapsed: float
    error: str = ""


# --- patterns: idempotency --------------------------------------------------------------
# What the idempotency helpers of ``mqlab.patterns.idempotency`` report. ``key`` is the
# idempotency key (usually the message id, prefixed by the consumer or group it counts for),
# ``store`` names the dedup store (``redis``, ``postgres``, ``memory`` ...).


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class DedupMiss(Observation):
    """An idempotency key was not found: the work will run. ``expired`` is True when the store
    knows the key was there and its TTL ran out (the in-memory store knows; Redis forgets the
    key entirely, so on Redis a late redelivery is a plain miss)."""

    kind: ClassVar[str] = "dedup_miss"
    key: str
    store: str
    expired: bool = False


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class DedupHit(Observation):
    """An idempotency key was found: the work is not done again. ``state`` is ``done`` (it
    was processed) or ``processing`` (another consumer holds the short-lived marker and may
    still be working on it)."""

    kind: ClassVar[str] = "dedup_hit"
    key: str
    store: str
    state: str = "done"


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class DedupRecorded(Observation):
    """An idempotency key was written with ``state`` ``done`` or ``processing``; ``ttl`` is
    its lifetime in seconds (None: it never expires, as in the database table)."""

    kind: ClassVar[str] = "dedup_recorded"
    key: str
    store: str
    state: str = "done"
    ttl: float | None = None


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class EffectApplied(Observation):
    """A business write changed ``entity`` from ``before`` to ``after``. ``operation`` is the
    write as text (``SET balance = 500``, ``INCREMENT balance BY 50``); ``idempotent`` says
    whether applying it again would change the state again (natural idempotency)."""

    kind: ClassVar[str] = "effect_applied"
    entity: str
    operation: str
    before: int
    after: int
    message_id: str
    idempotent: bool


# --- patterns: sagas --------------------------------------------------------------------
# What ``mqlab.patterns.saga`` reports. Every saga observation carries ``saga_id``; a UI can
# draw one saga's steps and compensations by filtering on it (``SagaObservation`` is the
# common base, not itself a kind).


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaObservation(Observation):
    """Base of the saga observations (not registered: never emitted by itself)."""

    saga_id: str


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStarted(SagaObservation):
    """A saga was started (its first log record was written) with these steps in order."""

    kind: ClassVar[str] = "saga_started"
    saga: str
    steps: tuple[str, ...]


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStepStarted(SagaObservation):
    """A step's action started (logged before it runs). ``attempt`` counts runs of the same
    action: above 1 when recovery resumes an idempotent step that was in doubt."""

    kind: ClassVar[str] = "saga_step_started"
    step: str
    attempt: int = 1


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStepSucceeded(SagaObservation):
    """A step's action finished and the log says so."""

    kind: ClassVar[str] = "saga_step_succeeded"
    step: str


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStepFailed(SagaObservation):
    """A step's action failed. ``timed_out``: it ran past its timeout; ``may_have_applied``:
    the failure does not prove the action had no effect (a timeout, a lost connection), so
    the step is compensated as well."""

    kind: ClassVar[str] = "saga_step_failed"
    step: str
    error: str
    timed_out: bool = False
    may_have_applied: bool = True


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationStarted(SagaObservation):
    """A step's compensation started. ``compensation_id`` is the same on every attempt and
    after a restart: the compensated service deduplicates on it."""

    kind: ClassVar[str] = "compensation_started"
    step: str
    compensation_id: str
    attempt: int = 1


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationSucceeded(SagaObservation):
    """A step's compensation finished and the log says so."""

    kind: ClassVar[str] = "compensation_succeeded"
    step: str
    compensation_id: str
    attempt: int = 1


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationFailed(SagaObservation):
    """A compensation attempt failed. ``retry_in`` is the backoff before the next attempt, None
    when the attempts are used up (the saga is parked next)."""

    kind: ClassVar[str] = "compensation_failed"
    step: str
    compensation_id: str
    attempt: int
    error: str
    retry_in: float | None = None


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaParked(SagaObservation):
    """A saga stopped for a human: ``step``'s compensation kept failing. The saga log keeps its
    whole state; ``compensated`` lists the steps already undone, ``pending`` the steps still
    to undo (``step`` first)."""

    kind: ClassVar[str] = "saga_parked"
    step: str
    reason: str
    compensated: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaEnded(SagaObservation):
    """A saga finished: ``outcome`` is ``completed`` (every step succeeded) or
    ``compensated`` (a step failed and everything that may have applied was undone)."""

    kind: ClassVar[str] = "saga_ended"
    outcome: str
    failed_step: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaRecovered(SagaObservation):
    """An orchestrator found an unfinished saga in the log (after a restart) and decided:
    ``resume`` (go on forward), ``compensate`` (undo it) or ``continue_compensating``.
    ``in_doubt`` names the step whose action or compensation was started but not recorded as
    finished (empty when the crash fell between two records)."""

    kind: ClassVar[str] = "saga_recovered"
    decision: str
    in_doubt: str = ""
    reason: str = ""


# --- patterns: event sourcing -----------------------------------------------------------
# What ``mqlab.patterns.event_sourcing`` reports. ``store`` names the event store
# (``postgres``, ``nats``, ``kafka``, ``memory``).


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class EventAppended(Observation):
    """A domain event was appended to an aggregate's stream at ``version``."""

    kind: ClassVar[str] = "event_appended"
    aggregate_id: str
    event_type: str
    version: int
    event_id: str = ""
    store: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class VersionConflict(Observation):
    """An append expected the aggregate at ``expected_version`` but it was at
    ``actual_version``: another writer got there first. ``detected`` is ``append`` when the
    store refused the write (optimistic concurrency) and ``replay`` when a reader found the
    clash afterwards in a log that accepted both writes (Kafka)."""

    kind: ClassVar[str] = "version_conflict"
    aggregate_id: str
    expected_version: int
    actual_version: int
    store: str = ""
    detected: str = "append"


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotTaken(Observation):
    """An aggregate's state at ``version`` was saved, so loading it replays only what came
    after."""

    kind: ClassVar[str] = "snapshot_taken"
    aggregate_id: str
    version: int
    store: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateLoaded(Observation):
    """An aggregate was rebuilt: from the snapshot at ``snapshot_version`` (None: no
    snapshot) plus ``events_replayed`` events, up to ``version``."""

    kind: ClassVar[str] = "aggregate_loaded"
    aggregate_id: str
    version: int
    events_replayed: int
    snapshot_version: int | None = None
    store: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectionUpdated(Observation):
    """A projection applied one event (``position`` is the event's place in the store's
    global order, which is what the projection remembers as its progress)."""

    kind: ClassVar[str] = "projection_updated"
    projection: str
    aggregate_id: str
    event_type: str
    version: int
    position: int


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectionRebuilt(Observation):
    """A projection was thrown away and rebuilt by replaying ``events`` events from the start
    of the store, ending at ``position``."""

    kind: ClassVar[str] = "projection_rebuilt"
    projection: str
    events: int
    position: int


# --- patterns: delivery semantics -------------------------------------------------------
# What the consumer loops of ``mqlab.patterns.delivery`` report beyond the adapters' own
# Delivered / Committed and the loops' Processed: offsets kept in the business database.


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetStored(Observation):
    """A consumer stored ``offset`` (the next one to read) for a partition in its own
    database, in the same transaction as the result of processing the record before it."""

    kind: ClassVar[str] = "offset_stored"
    group: str
    topic: str
    partition: int
    offset: int
    store: str = ""


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetRestored(Observation):
    """On assignment a consumer moved to the offset its database has for a partition
    (``offset`` -1: the database had none, so the broker's reset policy applies)."""

    kind: ClassVar[str] = "offset_restored"
    group: str
    topic: str
    partition: int
    offset: int
    consumer: str = ""
    store: str = ""


# --- patterns: transactional outbox -----------------------------------------------------
# What ``mqlab.patterns.outbox`` reports. ``message_id`` is the id the event is published
# under, which downstream consumers deduplicate on.


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessWriteCommitted(Observation):
    """A business transaction committed. ``outbox`` is True when the event to publish was
    committed with it (the outbox); False in the dual write, where the publish still has to
    happen and a crash now loses the event."""

    kind: ClassVar[str] = "business_write_committed"
    entity: str
    message_id: str
    outbox: bool = False


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxWritten(Observation):
    """An event was committed to the outbox table (row ``outbox_id``) with its business
    write."""

    kind: ClassVar[str] = "outbox_written"
    outbox_id: int
    message_id: str
    destination: str


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRelayed(Observation):
    """The relay published outbox row ``outbox_id`` and marked it relayed. A crash between the
    two publishes the row again later (at-least-once): consumers deduplicate on
    ``message_id``."""

    kind: ClassVar[str] = "outbox_relayed"
    outbox_id: int
    message_id: str
    destination: str


# --- free text --------------------------------------------------------------------------


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class Note(Observation):
    """Free text from the runner (a step started, an assertion held), shown in the timeline."""

    kind: ClassVar[str] = "note"
    text: str


# --- runs -------------------------------------------------------------------------------
# What the scenario runner knows that the ledger and the verdict need is an observation too,
# so a recorded trace carries everything: replaying it gives the very same ledger, checks and
# verdict as the live run, without the scenario file and without a broker.


@_observation
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


@_observation
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


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerStarted(Observation):
    """A consume step started a consumer. From then on an acknowledged message that no group
    processes counts as lost, even if no group processed anything at all."""

    kind: ClassVar[str] = "consumer_started"
    consumer: str
    group: str
    step: int


@_observation
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


@_observation
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


@_observation
@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnded(Observation):
    """The run finished (cleanup included). ``error`` is the one-line reason it could not
    complete (empty when it did); ``restore_problem`` says what the cleanup could not put back
    (a broker that would not restart)."""

    kind: ClassVar[str] = "run_ended"
    error: str = ""
    restore_problem: str = ""


def observation_kinds() -> dict[str, type[Observation]]:
    """Every registered observation kind (for docs, the TUI legend and trace validation)."""
    return dict(_REGISTRY)
