"""What a space-time diagram is made of: lanes, arrows, marks and bands on one time axis.

:func:`mqlab.scenarios.spacetime.build_diagram` folds a run's observations into a
:class:`Diagram`; :mod:`mqlab.scenarios.html_report` lays it out as SVG. The model has times and
an order but no geometry, so both sides read it without knowing how the other works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_MAX_MESSAGES = 200
"""Most messages a diagram draws in full; past it the others are thinned out evenly (every
marked message is always drawn). 200 messages keep a report near 250 KB and readable."""

LaneKind = Literal["producer", "node", "broker", "consumer"]
"""Top to bottom: producers, broker nodes (only those a fault or an outage touched), the places
messages wait (partitions, queues, the stream), consumers."""

LANE_ORDER: tuple[LaneKind, ...] = ("producer", "node", "broker", "consumer")

ArrowKind = Literal["produce", "deliver", "redeliver", "dead_letter"]

Fate = Literal["lost", "dead_lettered", "duplicated", "produce_failed", "aborted"]
"""What the ledger says became of a message, the ones a diagram marks. In order of precedence
when one message has several (a message can be both duplicated and dead-lettered)."""

FATES: tuple[Fate, ...] = ("lost", "dead_lettered", "duplicated", "produce_failed", "aborted")

FATE_LABELS: dict[Fate, str] = {
    "lost": "lost (acknowledged by the broker, never processed, not dead-lettered)",
    "dead_lettered": "dead-lettered (moved aside for good)",
    "duplicated": "processed more than once by one group",
    "produce_failed": "produce failed (the broker never acknowledged it)",
    "aborted": "written in an aborted transaction (never visible to read_committed)",
}

MarkKind = Literal[
    "processed",
    "duplicate",
    "skipped",
    "acked",
    "nacked",
    "committed",
    "failed",
    "produce_failed",
    "crashed",
    "leader",
    "rebalanced",
    "expired",
    "lost",
    "dead_lettered",
    "transaction",
    "fault_action",
]

BandKind = Literal["fault", "down"]


@dataclass(frozen=True, slots=True)
class Instant:
    """A point on the time axis.

    ``at`` is seconds since the run's first observation (virtual seconds on the simulator);
    ``seq`` is the point's rank among every drawn point, ties in time kept in the order they
    were observed. The simulator does a lot in zero virtual time, so a layout that gives each
    rank a little room keeps simultaneous events apart while ``at`` keeps real gaps visible.
    """

    at: float
    seq: int


@dataclass(frozen=True, slots=True)
class Lane:
    """One horizontal lane."""

    key: str
    """Unique id: ``producer:NAME``, ``node:NAME``, ``partition:TOPIC:N``, ``queue:NAME``,
    ``stream:NAME``, ``topic:NAME`` or ``consumer:NAME``."""
    kind: LaneKind
    label: str
    """What the lane is called on screen (namespace stripped)."""


@dataclass(frozen=True, slots=True)
class Arrow:
    """A message moving from one lane to another."""

    kind: ArrowKind
    message_id: str
    source: str
    """Lane key it leaves."""
    target: str
    """Lane key it reaches."""
    start: Instant
    end: Instant
    text: str
    """``describe()``'s line for the observation that ends the arrow (the hover text)."""
    fate: Fate | None = None
    """The message's marked fate, if it has one (arrows of lost messages look lost)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """Something that happened on one lane at one instant."""

    kind: MarkKind
    lane: str
    when: Instant
    text: str
    message_id: str | None = None
    """The message it is about; None for marks about a lane (a crash, a leader change)."""


@dataclass(frozen=True, slots=True)
class Band:
    """A stretch of time: an injected fault (across every lane) or a broker node that was down
    (on its node lane)."""

    kind: BandKind
    label: str
    start: Instant
    end: Instant
    text: str
    lane: str | None = None
    """The node lane of a ``down`` band; None for a fault band, which spans every lane."""
    healed: bool = True
    """False when the run ended before the fault was healed (the band runs to the end)."""


@dataclass(frozen=True, slots=True)
class Diagram:
    """Everything a space-time diagram draws, in time and order (no geometry)."""

    lanes: tuple[Lane, ...]
    arrows: tuple[Arrow, ...]
    marks: tuple[Mark, ...]
    bands: tuple[Band, ...]
    fates: dict[Fate, tuple[str, ...]]
    """Every marked message id per fate (all of them, whether drawn or thinned)."""
    messages_total: int
    messages_drawn: int
    thinning: str | None
    """What was left out and how, when the run had more messages than the limit."""
    slot_times: tuple[float, ...]
    """``at`` of every ``seq``, in order (for mapping times to the axis)."""
    duration: float
    """Seconds from the first observation to the last."""
