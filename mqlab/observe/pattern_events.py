"""What the pattern library reports: retries, idempotency, sagas, event sourcing, offsets kept
in the business database, the transactional outbox.

The adapters' own observations (produced, delivered, committed ...) are in
:mod:`mqlab.observe.events`, which re-exports every kind here too, so ``from
mqlab.observe.events import SagaStarted`` is the one import to know. These are apart because
they describe what application code did with messages, not what a broker did: the scenario
ledger's pattern counts, the grader's invariants and the TUI's pattern panels read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mqlab.observe.observation import Observation, registered

__all__ = [
    "AggregateLoaded",
    "BusinessWriteCommitted",
    "CompensationFailed",
    "CompensationStarted",
    "CompensationSucceeded",
    "DedupHit",
    "DedupMiss",
    "DedupRecorded",
    "EffectApplied",
    "EventAppended",
    "OffsetRestored",
    "OffsetStored",
    "OutboxRelayed",
    "OutboxWritten",
    "ProjectionRebuilt",
    "ProjectionUpdated",
    "RetryAttempted",
    "RetryGaveUp",
    "RetryScheduled",
    "SagaEnded",
    "SagaObservation",
    "SagaParked",
    "SagaRecovered",
    "SagaStarted",
    "SagaStepFailed",
    "SagaStepStarted",
    "SagaStepSucceeded",
    "SnapshotTaken",
    "VersionConflict",
]

# --- patterns: retries ------------------------------------------------------------------
# What ``mqlab.patterns.retry.retry`` reports. ``message_id`` names the retried operation (a
# message's id when its handling is retried, otherwise the name the caller gave), so the three
# kinds of one operation join on it. Numbering, the same everywhere in mqlab: ``call`` counts
# every call from 1 (call 1 is the initial one); ``attempt`` numbers the *retries* from 0, so
# attempt n is call n + 2 and its exponential delay is ``base * 2**n``.


@registered
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


@registered
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


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class DedupMiss(Observation):
    """An idempotency key was not found: the work will run. ``expired`` is True when the store
    knows the key was there and its TTL ran out (the in-memory store knows; Redis forgets the
    key entirely, so on Redis a late redelivery is a plain miss)."""

    kind: ClassVar[str] = "dedup_miss"
    key: str
    store: str
    expired: bool = False


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class DedupHit(Observation):
    """An idempotency key was found: the work is not done again. ``state`` is ``done`` (it
    was processed) or ``processing`` (another consumer holds the short-lived marker and may
    still be working on it)."""

    kind: ClassVar[str] = "dedup_hit"
    key: str
    store: str
    state: str = "done"


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class DedupRecorded(Observation):
    """An idempotency key was written with ``state`` ``done`` or ``processing``; ``ttl`` is
    its lifetime in seconds (None: it never expires, as in the database table)."""

    kind: ClassVar[str] = "dedup_recorded"
    key: str
    store: str
    state: str = "done"
    ttl: float | None = None


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStarted(SagaObservation):
    """A saga was started (its first log record was written) with these steps in order."""

    kind: ClassVar[str] = "saga_started"
    saga: str
    steps: tuple[str, ...]


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStepStarted(SagaObservation):
    """A step's action started (logged before it runs). ``attempt`` counts runs of the same
    action: above 1 when recovery resumes an idempotent step that was in doubt."""

    kind: ClassVar[str] = "saga_step_started"
    step: str
    attempt: int = 1


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStepSucceeded(SagaObservation):
    """A step's action finished and the log says so."""

    kind: ClassVar[str] = "saga_step_succeeded"
    step: str


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationStarted(SagaObservation):
    """A step's compensation started. ``compensation_id`` is the same on every attempt and
    after a restart: the compensated service deduplicates on it."""

    kind: ClassVar[str] = "compensation_started"
    step: str
    compensation_id: str
    attempt: int = 1


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationSucceeded(SagaObservation):
    """A step's compensation finished and the log says so."""

    kind: ClassVar[str] = "compensation_succeeded"
    step: str
    compensation_id: str
    attempt: int = 1


@registered
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


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaEnded(SagaObservation):
    """A saga finished: ``outcome`` is ``completed`` (every step succeeded) or
    ``compensated`` (a step failed and everything that may have applied was undone)."""

    kind: ClassVar[str] = "saga_ended"
    outcome: str
    failed_step: str = ""


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class EventAppended(Observation):
    """A domain event was appended to an aggregate's stream at ``version``."""

    kind: ClassVar[str] = "event_appended"
    aggregate_id: str
    event_type: str
    version: int
    event_id: str = ""
    store: str = ""


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotTaken(Observation):
    """An aggregate's state at ``version`` was saved, so loading it replays only what came
    after."""

    kind: ClassVar[str] = "snapshot_taken"
    aggregate_id: str
    version: int
    store: str = ""


@registered
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


@registered
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


@registered
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


@registered
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


@registered
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


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessWriteCommitted(Observation):
    """A business transaction committed. ``outbox`` is True when the event to publish was
    committed with it (the outbox); False in the dual write, where the publish still has to
    happen and a crash now loses the event."""

    kind: ClassVar[str] = "business_write_committed"
    entity: str
    message_id: str
    outbox: bool = False


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxWritten(Observation):
    """An event was committed to the outbox table (row ``outbox_id``) with its business
    write."""

    kind: ClassVar[str] = "outbox_written"
    outbox_id: int
    message_id: str
    destination: str


@registered
@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRelayed(Observation):
    """The relay published outbox row ``outbox_id`` and marked it relayed. A crash between the
    two publishes the row again later (at-least-once): consumers deduplicate on
    ``message_id``."""

    kind: ClassVar[str] = "outbox_relayed"
    outbox_id: int
    message_id: str
    destination: str
