"""The ledger as the UI draws it: an immutable picture, counted where the ledger is folded.

The run's judge folds every observation into the ledger on the run's own thread (the runner
subscribes it); the UI never folds a second copy. When the ledger tab is due for a redraw it
asks for a :class:`LedgerPicture`, which is counted on the thread that owns the ledger
(:meth:`~mqlab.scenarios.session.RunSession.request_judged` for a live run, under the feed's
lock for a replay) and handed over whole: the UI thread only lays it out.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from mqlab.course.scenario import Scenario
from mqlab.scenarios.ledger import GroupSummary, Ledger, LedgerSummary
from mqlab.scenarios.verdict import RunJudge

IDS_SHOWN = 8
"""Message ids kept per ledger row (the rest are only counted)."""


@dataclass(frozen=True, slots=True)
class RowIds:
    """The first few message ids behind one ledger row, and how many there are."""

    first: tuple[str, ...] = ()
    """The :data:`IDS_SHOWN` smallest ids, sorted."""
    total: int = 0


@dataclass(frozen=True, slots=True)
class LedgerPicture:
    """The ledger at one moment: its numbers, per group, and the ids behind the rows."""

    summary: LedgerSummary = field(default_factory=LedgerSummary)
    groups: dict[str, GroupSummary] = field(default_factory=dict)
    ids: dict[str, RowIds] = field(default_factory=dict)
    """Row name (``lost``, ``duplicated`` ...) -> its ids."""
    scenario: Scenario | None = None
    """The scenario the judge judges against (learnt from ``run_started`` in a replay)."""
    system: str | None = None
    """The system the run reported in ``run_started`` (None before it)."""


def _row_ids(ids: set[str]) -> RowIds:
    # nsmallest rather than sorted: a long run can have a hundred thousand lost ids and only
    # eight are shown.
    return RowIds(tuple(heapq.nsmallest(IDS_SHOWN, ids)), len(ids))


def row_ids(ledger: Ledger) -> dict[str, RowIds]:
    """The message ids behind the ledger rows that have them."""
    duplicated = {m for g in ledger.groups.values() for m, n in g.processed.items() if n > 1}
    return {
        "lost": _row_ids(ledger.lost_ids()),
        "duplicated": _row_ids(duplicated),
        "dead_lettered": _row_ids(set(ledger.dead_lettered)),
        "produce_failed": _row_ids(set(ledger.failed)),
        "aborted": _row_ids(ledger.aborted & set(ledger.produced_order)),
    }


def picture_of(judge: RunJudge) -> LedgerPicture:
    """Count ``judge``'s ledger now. Must run where nothing folds into it meanwhile (the run's
    own thread, or under the lock its folds take)."""
    ledger = judge.ledger
    return LedgerPicture(
        summary=ledger.summary(),
        groups=ledger.per_group(),
        ids=row_ids(ledger),
        scenario=judge.scenario,
        system=judge.system,
    )
