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

_COUNTED: dict[type[Observation], str] = {
    RetryAttempted: "calls",
    RetryScheduled: "retries",
    RetryGaveUp: "gave_up",
    DedupHit: "dedup_hits",
    SagaParked: "sagas_parked",
    SagaRecovered: "sagas_recovered",
    CompensationSucceeded: "compensations",
    CompensationFailed: "compensations_failed",
    EventAppended: "events_appended",
    VersionConflict: "version_conflicts",
    ProjectionUpdated: "projection_updates",
    OutboxRelayed: "outbox_relayed",
}
"""The observations that each count one in a ledger number, whatever they say."""

_SAGA_OUTCOMES = {"completed": "sagas_completed", "compensated": "sagas_compensated"}

_PLAIN_COUNTS = (*_COUNTED.values(), *_SAGA_OUTCOMES.values(), "effects", "permanent_retried")
"""The ledger numbers that are plain counts of observations (the others are worked out at
the end from what the tally kept)."""


@dataclass
class PatternTally:
    """Folds pattern observations; :meth:`summary` gives the ledger's pattern numbers."""

    counts: Counter[str] = field(default_factory=Counter)
    """The plain counts, by ledger number (the names in ``_PLAIN_COUNTS``)."""
    _effect_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _failed_permanently: set[str] = field(default_factory=set)
    _saga_steps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _compensation_order: defaultdict[str, list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _committed_writes: set[str] = field(default_factory=set)

    def __call__(self, observation: Observation) -> None:
        """Fold one observation (those of other kinds are ignored)."""
        counted = _COUNTED.get(type(observation))
        if counted is not None:
            self.counts[counted] += 1
        match observation:
            case RetryAttempted():
                # Only the call that a retry follows decides: an operation of the same name
                # that failed permanently earlier (another step) and transiently now is fine.
                if observation.outcome == "failed" and observation.error_class == "permanent":
                    self._failed_permanently.add(observation.message_id)
                else:
                    self._failed_permanently.discard(observation.message_id)
            case RetryScheduled() if observation.message_id in self._failed_permanently:
                self.counts["permanent_retried"] += 1
            case EffectApplied() if observation.before != observation.after:
                # A write that left the state as it was (a SET redelivered) is no effect:
                # that is what natural idempotency means, and it is not "applied twice".
                self.counts["effects"] += 1
                self._effect_counts[(observation.entity, observation.message_id)] += 1
            case SagaStarted():
                self._saga_steps[observation.saga_id] = observation.steps
            case SagaEnded() if observation.outcome in _SAGA_OUTCOMES:
                self.counts[_SAGA_OUTCOMES[observation.outcome]] += 1
            case CompensationStarted():
                order = self._compensation_order[observation.saga_id]
                if observation.step not in order:
                    order.append(observation.step)
            case BusinessWriteCommitted():
                self._committed_writes.add(observation.message_id)
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
            **{name: self.counts[name] for name in _PLAIN_COUNTS},
            "effects_repeated": sum(1 for n in self._effect_counts.values() if n > 1),
            "compensations_out_of_order": self._out_of_order(),
            "events_unpublished": len(self._committed_writes - published),
        }
