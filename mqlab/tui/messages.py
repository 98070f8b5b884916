"""What the workers tell the screens, as past-tense messages.

Broker I/O never runs in a UI handler: a thread worker does it and posts one of these back.
Observations are not messages (a burst would flood the queue); they travel through the
:class:`~mqlab.tui.feed.ObservationFeed`, drained once per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from mqlab.course.library import LessonEntry
    from mqlab.lab.doctor import Finding
    from mqlab.scenarios.verdict import RunResult
    from mqlab.tui.models.ledger import LedgerPicture


@dataclass
class RunFinished(Message):
    """A run or a replay ended: ``result`` is its judged result, None when it was stopped;
    ``error`` says why it could not run at all; ``picture`` is its final ledger, counted by
    the worker that ran it."""

    result: RunResult | None
    error: str | None = None
    picture: LedgerPicture | None = None


@dataclass
class SnapshotTaken(Message):
    """The run's broker answered ``inspect()``. Only the newest one matters, so a pending
    one is replaced by the next instead of queueing up behind a busy frame."""

    snapshot: object
    requested_after: int | None = None
    """The Kafka view's :attr:`~mqlab.tui.models.kafka.KafkaView.liveness_reports` when the
    snapshot was requested (None: not stamped, the snapshot's word stands)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotTaken)


@dataclass
class FaultApplied(Message):
    """A fault asked for from the keyboard was applied."""

    description: str


@dataclass
class FaultRefused(Message):
    """A fault asked for from the keyboard could not be applied, and why."""

    description: str
    error: str


@dataclass
class LabStatusRead(Message):
    """The lab's doctor report, read in a worker (it probes every service)."""

    findings: list[Finding]
    error: str | None = None


@dataclass
class StepRunFinished(Message):
    """A lesson step's run (a prediction's scenario, an experiment's variant) ended:
    ``outcome`` is what the player returned, ``error`` why it could not run."""

    outcome: object | None
    error: str | None = None


@dataclass
class DiagramDrawn(Message):
    """A read step's diagram was drawn (from the simulator, the lab, or the example)."""

    lines: tuple[str, ...]
    note: str


@dataclass
class CourseLoaded(Message):
    """The course's lessons were loaded and checked (in a worker: validating eight lessons
    takes longer than the first frame may); ``error`` says why they could not be."""

    entries: list[LessonEntry]
    error: str | None = None
