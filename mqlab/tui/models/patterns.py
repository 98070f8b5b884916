"""Retries, sagas and event sourcing as the pattern widgets draw them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from mqlab.observe.events import (
    AggregateLoaded,
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    EventAppended,
    Observation,
    RetryAttempted,
    RetryGaveUp,
    RetryScheduled,
    SagaEnded,
    SagaParked,
    SagaRecovered,
    SagaStarted,
    SagaStepFailed,
    SagaStepStarted,
    SagaStepSucceeded,
    SnapshotTaken,
    VersionConflict,
)

# --- retries ------------------------------------------------------------------------------

CallOutcome = Literal["succeeded", "failed", "gave_up"]


@dataclass
class RetryTrack:
    """One retried operation (one client's request) on the time axis."""

    operation: str
    calls: list[tuple[float, str]] = field(default_factory=list)
    """(time, outcome) of every call, ``succeeded`` or ``failed``."""
    gave_up: tuple[float, str] | None = None
    """(time, reason) when the retries stopped without success."""


@dataclass
class RetryView:
    """Every retried operation and the delays each strategy chose."""

    tracks: dict[str, RetryTrack] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """strategy -> every delay it scheduled, in seconds."""
    first_at: float | None = None
    last_at: float = 0.0
    version: int = 0

    def __call__(self, observation: Observation) -> None:
        match observation:
            case RetryAttempted():
                self._track(observation).calls.append((observation.at, observation.outcome))
            case RetryScheduled():
                self._track(observation)
                self.delays[observation.strategy].append(observation.delay)
            case RetryGaveUp():
                self._track(observation).gave_up = (observation.at, observation.reason)
            case _:
                return
        if self.first_at is None:
            self.first_at = observation.at
        self.last_at = max(self.last_at, observation.at)
        self.version += 1

    @property
    def empty(self) -> bool:
        """No retry observed."""
        return not self.tracks

    def _track(self, observation: RetryAttempted | RetryScheduled | RetryGaveUp) -> RetryTrack:
        track = self.tracks.get(observation.message_id)
        if track is None:
            track = self.tracks[observation.message_id] = RetryTrack(observation.message_id)
        return track


# --- sagas --------------------------------------------------------------------------------

StepState = Literal["pending", "running", "done", "failed", "compensating", "compensated", "stuck"]


@dataclass
class SagaState:
    """One saga: its steps in order, each step's state, and how it ended."""

    saga_id: str
    name: str
    steps: tuple[str, ...]
    states: dict[str, StepState] = field(default_factory=dict)
    compensation_order: list[str] = field(default_factory=list)
    """Steps in the order their compensations succeeded (must be the reverse of forward)."""
    outcome: str = ""
    """``completed``, ``compensated`` or ``parked`` once it ended."""
    parked_reason: str = ""
    recovered: str = ""
    """The recovery decision after a restart, if any."""


@dataclass
class SagaView:
    """Every saga of the run."""

    sagas: dict[str, SagaState] = field(default_factory=dict)
    version: int = 0

    def __call__(self, observation: Observation) -> None:
        match observation:
            case SagaStarted():
                self.sagas[observation.saga_id] = SagaState(
                    observation.saga_id,
                    observation.saga,
                    observation.steps,
                    dict.fromkeys(observation.steps, "pending"),
                )
            case SagaStepStarted():
                self._set(observation.saga_id, observation.step, "running")
            case SagaStepSucceeded():
                self._set(observation.saga_id, observation.step, "done")
            case SagaStepFailed():
                self._set(observation.saga_id, observation.step, "failed")
            case CompensationStarted():
                self._set(observation.saga_id, observation.step, "compensating")
            case CompensationSucceeded():
                self._set(observation.saga_id, observation.step, "compensated")
                saga = self.sagas.get(observation.saga_id)
                if saga is not None:
                    saga.compensation_order.append(observation.step)
            case CompensationFailed(retry_in=None):
                self._set(observation.saga_id, observation.step, "stuck")
            case SagaParked():
                saga = self.sagas.get(observation.saga_id)
                if saga is not None:
                    saga.outcome = "parked"
                    saga.parked_reason = observation.reason
                    saga.states[observation.step] = "stuck"
            case SagaEnded():
                saga = self.sagas.get(observation.saga_id)
                if saga is not None:
                    saga.outcome = observation.outcome
            case SagaRecovered():
                saga = self.sagas.get(observation.saga_id)
                if saga is not None:
                    saga.recovered = observation.decision
            case _:
                return
        self.version += 1

    @property
    def empty(self) -> bool:
        """No saga observed."""
        return not self.sagas

    def _set(self, saga_id: str, step: str, state: StepState) -> None:
        saga = self.sagas.get(saga_id)
        if saga is not None and step in saga.states:
            saga.states[step] = state


# --- event sourcing -----------------------------------------------------------------------


@dataclass
class AggregateState:
    """One aggregate: its event stream and what the last rebuild gave."""

    aggregate_id: str
    events: list[tuple[int, str]] = field(default_factory=list)
    """(version, event type) in the order they were appended."""
    loaded_version: int | None = None
    events_replayed: int = 0
    snapshot_version: int | None = None
    conflicts: list[tuple[int, int, str]] = field(default_factory=list)
    """(expected, actual, how detected) for every version conflict."""

    @property
    def version(self) -> int:
        """The stream's version: the highest appended event's."""
        return max((v for v, _ in self.events), default=0)


@dataclass
class EventLogView:
    """Every aggregate's event log beside its rebuilt state."""

    aggregates: dict[str, AggregateState] = field(default_factory=dict)
    version: int = 0

    def __call__(self, observation: Observation) -> None:
        match observation:
            case EventAppended():
                aggregate = self._aggregate(observation.aggregate_id)
                aggregate.events.append((observation.version, observation.event_type))
            case AggregateLoaded():
                aggregate = self._aggregate(observation.aggregate_id)
                aggregate.loaded_version = observation.version
                aggregate.events_replayed = observation.events_replayed
                aggregate.snapshot_version = observation.snapshot_version
            case SnapshotTaken():
                self._aggregate(observation.aggregate_id).snapshot_version = observation.version
            case VersionConflict():
                self._aggregate(observation.aggregate_id).conflicts.append(
                    (observation.expected_version, observation.actual_version, observation.detected)
                )
            case _:
                return
        self.version += 1

    @property
    def empty(self) -> bool:
        """No event-sourcing observation."""
        return not self.aggregates

    def _aggregate(self, aggregate_id: str) -> AggregateState:
        aggregate = self.aggregates.get(aggregate_id)
        if aggregate is None:
            aggregate = self.aggregates[aggregate_id] = AggregateState(aggregate_id)
        return aggregate
