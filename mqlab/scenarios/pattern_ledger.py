"""The patterns' part of the ledger: retries, effects, sagas, domain events, the outbox.

Like the message ledger it folds observations only (what :mod:`mqlab.patterns` reports), so a
pattern scenario's trace replays to the same numbers. Each number is a plain count a scenario
can expect; the ones that name a bug (``permanent_retried``, ``effects_repeated``,
``compensations_out_of_order``, ``events_unpublished``) should be 0 where the pattern is right
and are what the teaching variants make non-zero.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from mqlab.observe.events import (
    BusinessWriteCommitted,
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    DedupHit,
    EffectApplied,
    EventAppended,
    Observation,
    OutboxRelayed,
    ProjectionUpdated,
    RetryAttempted,
    RetryGaveUp,
    RetryScheduled,
    SagaEnded,
    SagaParked,
    SagaRecovered,
    SagaStarted,
    VersionConflict,
)


@dataclass
class PatternTally:
    """Folds pattern observations; :meth:`summary` gives the ledger's pattern numbers."""

    calls: int = 0
    retries: int = 0
    gave_up: int = 0
    permanent_retried: int = 0
    effects: int = 0
    dedup_hits: int = 0
    sagas_completed: int = 0
    sagas_compensated: int = 0
    sagas_parked: int = 0
    sagas_recovered: int = 0
    compensations: int = 0
    compensations_failed: int = 0
    events_appended: int = 0
    version_conflicts: int = 0
    projection_updates: int = 0
    outbox_relayed: int = 0
    _effect_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _failed_permanently: set[str] = field(default_factory=set)
    _saga_steps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _compensation_order: defaultdict[str, list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _committed_writes: set[str] = field(default_factory=set)

    def __call__(self, observation: Observation) -> None:
        """Fold one observation (those of other kinds are ignored)."""
        match observation:
            case RetryAttempted():
                self.calls += 1
                # Only the call that a retry follows decides: an operation of the same name
                # that failed permanently earlier (another step) and transiently now is fine.
                if observation.outcome == "failed" and observation.error_class == "permanent":
                    self._failed_permanently.add(observation.message_id)
                else:
                    self._failed_permanently.discard(observation.message_id)
            case RetryScheduled():
                self.retries += 1
                if observation.message_id in self._failed_permanently:
                    self.permanent_retried += 1
            case RetryGaveUp():
                self.gave_up += 1
            case EffectApplied() if observation.before != observation.after:
                # A write that left the state as it was (a SET redelivered) is no effect:
                # that is what natural idempotency means, and it is not "applied twice".
                self.effects += 1
                self._effect_counts[(observation.entity, observation.message_id)] += 1
            case DedupHit():
                self.dedup_hits += 1
            case SagaStarted():
                self._saga_steps[observation.saga_id] = observation.steps
            case SagaEnded(outcome="completed"):
                self.sagas_completed += 1
            case SagaEnded(outcome="compensated"):
                self.sagas_compensated += 1
            case SagaParked():
                self.sagas_parked += 1
            case SagaRecovered():
                self.sagas_recovered += 1
            case CompensationStarted():
                order = self._compensation_order[observation.saga_id]
                if observation.step not in order:
                    order.append(observation.step)
            case CompensationSucceeded():
                self.compensations += 1
            case CompensationFailed():
                self.compensations_failed += 1
            case EventAppended():
                self.events_appended += 1
            case VersionConflict():
                self.version_conflicts += 1
            case ProjectionUpdated():
                self.projection_updates += 1
            case BusinessWriteCommitted():
                self._committed_writes.add(observation.message_id)
            case OutboxRelayed():
                self.outbox_relayed += 1
            case _:
                pass

    def _out_of_order(self) -> int:
        """Sagas whose compensations did not start in the reverse order of their steps."""
        count = 0
        for saga_id, compensated in self._compensation_order.items():
            steps = self._saga_steps.get(saga_id, ())
            positions = [steps.index(step) for step in compensated if step in steps]
            count += positions != sorted(positions, reverse=True)
        return count

    def summary(self, published: set[str]) -> dict[str, int]:
        """The pattern numbers; ``published`` is every message id a broker acknowledged (a
        committed business write whose event is not among them was never published)."""
        return {
            "calls": self.calls,
            "retries": self.retries,
            "gave_up": self.gave_up,
            "permanent_retried": self.permanent_retried,
            "effects": self.effects,
            "effects_repeated": sum(1 for n in self._effect_counts.values() if n > 1),
            "dedup_hits": self.dedup_hits,
            "sagas_completed": self.sagas_completed,
            "sagas_compensated": self.sagas_compensated,
            "sagas_parked": self.sagas_parked,
            "sagas_recovered": self.sagas_recovered,
            "compensations": self.compensations,
            "compensations_failed": self.compensations_failed,
            "compensations_out_of_order": self._out_of_order(),
            "events_appended": self.events_appended,
            "version_conflicts": self.version_conflicts,
            "projection_updates": self.projection_updates,
            "outbox_relayed": self.outbox_relayed,
            "events_unpublished": len(self._committed_writes - published),
        }
