"""The ledger: every message accounted for, folded from the observation stream.

The ledger folds observations and nothing else: what the adapters and consumers reported
(Produced, Processed, DeadLettered ...) and what the runner knew before the broker answered
(ProduceRequested: keys and priorities; ConsumerStarted; TransactionEnded). Nobody writes into it
directly, so the same ledger is rebuilt from a recorded trace, and its numbers can be compared
with the broker's own state (queue depths, committed offsets).

Counting rules (per *group*: a Kafka consumer group, a queue, a NATS durable):
- produced: distinct message ids the broker acknowledged (a send the broker dropped as a
  duplicate is not a new message; a message of an aborted transaction is *aborted*, not
  produced);
- processed once / duplicated: how many times a group's business logic ran for a message
  (a redelivery an idempotent consumer skipped does not count as processing);
- lost: acknowledged, never processed by a group that consumed the channel, not dead-lettered;
- out of order: a message processed after a later-produced message of the same key.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mqlab.observe.events import (
    Acked,
    Committed,
    ConsumerStarted,
    DeadLettered,
    Delivered,
    Nacked,
    Observation,
    Processed,
    Produced,
    ProduceFailed,
    ProduceRequested,
    Rebalanced,
    TransactionEnded,
)
from mqlab.scenarios.pattern_ledger import PatternTally


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One number of the ledger as the report shows it."""

    name: str
    """The summary field (and ``expect`` key)."""
    label: str
    """What the report calls it."""
    always_shown: bool = False
    """Shown even when zero and not expected (produced, lost: the two numbers that matter)."""


LEDGER_ROWS: tuple[LedgerRow, ...] = (
    LedgerRow("produced", "produced (acknowledged by the broker)", always_shown=True),
    LedgerRow("produce_failed", "produce failed"),
    LedgerRow("aborted", "written in an aborted transaction"),
    LedgerRow("processed_once", "processed exactly once"),
    LedgerRow("duplicated", "processed more than once"),
    LedgerRow("lost", "lost", always_shown=True),
    LedgerRow("dead_lettered", "moved aside (dead-lettered; NATS: max_deliver reached)"),
    LedgerRow("out_of_order", "out of order (per key)"),
    LedgerRow("out_of_order_overall", "out of order (across keys)"),
    LedgerRow("priority_inversions", "processed after a lower priority"),
    LedgerRow("redelivered", "redeliveries"),
    LedgerRow("rebalances", "rebalances (group generations: joins and leaves included)"),
    LedgerRow("broker_duplicates", "dropped by broker dedup"),
    LedgerRow("skipped_duplicates", "skipped by idempotent consumer"),
    # patterns (retries, idempotency, sagas, event sourcing, outbox)
    LedgerRow("calls", "calls made by retried operations"),
    LedgerRow("retries", "retries scheduled"),
    LedgerRow("gave_up", "operations given up"),
    LedgerRow("permanent_retried", "permanent errors retried"),
    LedgerRow("effects", "business effects applied"),
    LedgerRow("effects_repeated", "effects applied more than once"),
    LedgerRow("dedup_hits", "duplicates recognised by a dedup store"),
    LedgerRow("sagas_completed", "sagas completed"),
    LedgerRow("sagas_compensated", "sagas compensated"),
    LedgerRow("sagas_parked", "sagas parked for a human"),
    LedgerRow("sagas_recovered", "sagas recovered after a restart"),
    LedgerRow("compensations", "compensations done"),
    LedgerRow("compensations_failed", "compensation attempts that failed"),
    LedgerRow("compensations_out_of_order", "sagas compensated out of reverse order"),
    LedgerRow("events_appended", "domain events appended"),
    LedgerRow("version_conflicts", "stale appends refused"),
    LedgerRow("projection_updates", "projection updates"),
    LedgerRow("outbox_relayed", "outbox rows relayed"),
    LedgerRow("events_unpublished", "committed writes whose event was never published"),
)
"""Every ledger number in the order the report shows them (the TUI uses the same rows)."""


class _ReadByName:
    """Numbers read by name as well as by attribute (``summary["lost"]``, how expectations
    address them); only the numbers are names, so a misspelled one is a KeyError."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __getitem__(self, name: str) -> int:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        value: int = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True)
class LedgerSummary(_ReadByName):
    """The ledger's totals over every group: the numbers a verdict is judged on.

    Field names are the scenario format's ``expect`` keys; read one by name with
    ``summary["lost"]`` (how expectations address them) or as an attribute.
    """

    produced: int = 0
    """Distinct messages the broker acknowledged (and not aborted)."""
    produce_failed: int = 0
    """Sends the broker did not acknowledge."""
    aborted: int = 0
    """Messages written inside a transaction that was then aborted."""
    processed_once: int = 0
    """Messages some group processed, and no group more than once."""
    duplicated: int = 0
    """Messages some group processed more than once."""
    lost: int = 0
    """Acknowledged messages no group processed and nothing dead-lettered."""
    dead_lettered: int = 0
    """Messages whose last fate was a dead-letter destination."""
    out_of_order: int = 0
    """Messages processed after a later-produced message of the same key."""
    out_of_order_overall: int = 0
    """Messages processed after a later-produced message of any key."""
    priority_inversions: int = 0
    """Messages processed after a message of lower priority."""
    redelivered: int = 0
    """Deliveries the broker flagged as redeliveries."""
    rebalances: int = 0
    """Changes of a consumer group's assignment."""
    broker_duplicates: int = 0
    """Sends the broker itself dropped as duplicates."""
    skipped_duplicates: int = 0
    """Redeliveries an idempotent consumer recognised and skipped."""
    calls: int = 0
    """Calls made by retried operations (first calls included)."""
    retries: int = 0
    """Retries a retry policy scheduled."""
    gave_up: int = 0
    """Retried operations that stopped without succeeding."""
    permanent_retried: int = 0
    """Retries scheduled after an error classified as permanent (should be 0)."""
    effects: int = 0
    """Business writes that changed the state (a write that left it as it was is none)."""
    effects_repeated: int = 0
    """Messages whose business effect was applied more than once to the same entity."""
    dedup_hits: int = 0
    """Deliveries a dedup store recognised as already processed (or in progress)."""
    sagas_completed: int = 0
    """Sagas whose every step succeeded."""
    sagas_compensated: int = 0
    """Sagas that failed and undid every step that may have applied."""
    sagas_parked: int = 0
    """Sagas stopped because a compensation kept failing."""
    sagas_recovered: int = 0
    """Unfinished sagas an orchestrator found in its log after a restart."""
    compensations: int = 0
    """Compensations that finished."""
    compensations_failed: int = 0
    """Compensation attempts that failed (each is retried with backoff, until the saga is
    parked)."""
    compensations_out_of_order: int = 0
    """Sagas whose compensations did not run in the reverse order of their steps (should be 0)."""
    events_appended: int = 0
    """Domain events appended to event-sourced aggregates."""
    version_conflicts: int = 0
    """Appends refused because another writer got there first (optimistic concurrency)."""
    projection_updates: int = 0
    """Events a projection applied (a rebuild included)."""
    outbox_relayed: int = 0
    """Outbox rows the relay published."""
    events_unpublished: int = 0
    """Business writes committed whose event no producer published (the dual-write bug)."""

    def as_dict(self) -> dict[str, int]:
        """Every number by name, in report order."""
        return {row.name: self[row.name] for row in LEDGER_ROWS}


@dataclass(frozen=True, slots=True)
class GroupSummary(_ReadByName):
    """What one group (Kafka consumer group, queue, NATS durable) did with the messages."""

    processed: int = 0
    """Distinct messages the group processed."""
    runs: int = 0
    """Times the group's business logic ran (duplicates included)."""
    processed_once: int = 0
    """Messages the group processed exactly once."""
    duplicated: int = 0
    """Messages the group processed more than once."""
    out_of_order: int = 0
    """Messages the group processed after a later message of the same key."""

    def as_dict(self) -> dict[str, int]:
        """Every number by name."""
        return {name: self[name] for name in self.__dataclass_fields__}


@dataclass
class GroupLedger:
    """What one group did with the messages."""

    name: str
    processed: Counter[str] = field(default_factory=Counter)
    skipped_duplicates: int = 0
    out_of_order: int = 0
    out_of_order_overall: int = 0
    _highest_index_per_key: dict[str, int] = field(default_factory=dict)
    _highest_index: int = -1
    priority_inversions: int = 0
    _lowest_priority_seen: int | None = None


@dataclass
class Ledger:
    """Folds observations; read the totals through :meth:`summary`."""

    produced_order: dict[str, int] = field(default_factory=dict)
    """message id -> produce index (acknowledged, distinct)."""
    keys: dict[str, str] = field(default_factory=dict)
    priorities: dict[str, int] = field(default_factory=dict)
    """message id -> priority, from ProduceRequested (priority scenarios)."""
    aborted: set[str] = field(default_factory=set)
    """Messages written in a transaction that was then aborted (never visible, never lost)."""
    broker_duplicates: int = 0
    failed: set[str] = field(default_factory=set)
    deliveries: int = 0
    redeliveries: int = 0
    dead_lettered: set[str] = field(default_factory=set)
    rebalances: int = 0
    acked: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)
    """Messages a consumer settled negatively without requeue (gone unless dead-lettered)."""
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)
    """Last committed offset per (group, topic, partition), from Committed observations."""
    groups: dict[str, GroupLedger] = field(default_factory=dict)
    consumers_ran: bool = False
    """Set by ConsumerStarted: from then on an acknowledged message that nobody processed
    counts as lost, even if no group processed anything at all."""
    _rebalance_state: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = field(
        default_factory=dict
    )
    _generations: set[tuple[str, int]] = field(default_factory=set)
    patterns: PatternTally = field(default_factory=PatternTally)
    """The patterns' numbers (retries, effects, sagas, events, outbox)."""

    def __call__(self, observation: Observation) -> None:
        """Fold one observation (the ledger is a bus subscriber)."""
        match observation:
            case ProduceRequested(message_id=mid, key=key, priority=priority):
                self.keys.setdefault(mid, key or "")
                if priority is not None:
                    self.priorities[mid] = priority
            case ConsumerStarted():
                self.consumers_ran = True
            case TransactionEnded(outcome="aborted", message_ids=ids):
                self.aborted.update(ids)
            case Produced(duplicate=True):
                self.broker_duplicates += 1
            case Produced(message_id=mid, key=key):
                if mid not in self.produced_order:
                    self.produced_order[mid] = len(self.produced_order)
                    self.keys[mid] = key or ""
                self.failed.discard(mid)
            case ProduceFailed(message_id=mid):
                if mid not in self.produced_order:
                    self.failed.add(mid)
            case Delivered(redelivered=redelivered):
                self.deliveries += 1
                self.redeliveries += int(redelivered)
            case Processed():
                self._processed(observation)
            case DeadLettered(message_id=mid):
                self.dead_lettered.add(mid)
            case Acked(message_id=mid):
                self.acked.add(mid)
                self.dropped.discard(mid)
            case Nacked(message_id=mid, requeue=False):
                self.dropped.add(mid)
            case Committed(group=group, topic=topic, partition=partition, offset=offset):
                self.committed[(group, topic, partition)] = offset
            case Rebalanced(group=group, generation=generation, assignment=assignment):
                # A rebalance is a new generation of the group; each member reports its own
                # share of it, so one generation is counted once. Where the generation is
                # unknown (0), a change of the reported assignment counts instead.
                if generation > 0:
                    if (group, generation) not in self._generations:
                        self._generations.add((group, generation))
                        self.rebalances += 1
                elif self._rebalance_state.get(group) != assignment:
                    self._rebalance_state[group] = assignment
                    self.rebalances += 1
            case _:
                self.patterns(observation)

    def _processed(self, event: Processed) -> None:
        group = self.groups.setdefault(event.group, GroupLedger(event.group))
        # A message that came back from a dead-letter hop (RabbitMQ's DLX + TTL retry loop)
        # and was then processed is not dead-lettered: only a message's last fate counts.
        self.dead_lettered.discard(event.message_id)
        if event.skipped_duplicate:
            group.skipped_duplicates += 1
            return
        first_time = group.processed[event.message_id] == 0
        group.processed[event.message_id] += 1
        index = self.produced_order.get(event.message_id)
        if index is None or not first_time:
            return
        priority = self.priorities.get(event.message_id)
        if priority is not None:
            # An inversion: this message had a higher priority than one already processed.
            lowest = group._lowest_priority_seen
            if lowest is not None and priority > lowest:
                group.priority_inversions += 1
            group._lowest_priority_seen = priority if lowest is None else min(lowest, priority)
        key = self.keys.get(event.message_id, "")
        if index < group._highest_index_per_key.get(key, -1):
            group.out_of_order += 1
        group._highest_index_per_key[key] = max(index, group._highest_index_per_key.get(key, -1))
        if index < group._highest_index:
            group.out_of_order_overall += 1
        group._highest_index = max(index, group._highest_index)

    def unsettled_ids(self) -> set[str]:
        """Acknowledged by the broker on produce, and not yet acked, dropped or dead-lettered
        by a consumer: what should still be waiting in a queue (RabbitMQ, SQS, NATS)."""
        return self.produced_ids() - self.acked - self.dropped - self.dead_lettered

    def lost_ids(self) -> set[str]:
        """Acknowledged messages that no group processed and nobody dead-lettered.

        "No group" rather than "some group": with routing (topic exchanges, NATS filters) a
        group never sees messages that were not routed to it, which is not loss. Whether each
        group got what it should is checked per group (``expect.groups``).
        """
        if not self.groups and not self.consumers_ran:
            return set()
        processed_somewhere = {
            m for g in self.groups.values() for m, n in g.processed.items() if n > 0
        }
        return self.produced_ids() - processed_somewhere - self.dead_lettered

    def produced_ids(self) -> set[str]:
        """Acknowledged by the broker and not part of an aborted transaction."""
        return set(self.produced_order) - self.aborted

    def summary(self) -> LedgerSummary:
        """The numbers a verdict is judged on (field names are the scenario ``expect`` keys)."""
        produced = self.produced_ids()
        duplicated = {m for g in self.groups.values() for m, n in g.processed.items() if n > 1}
        processed_once = {
            m
            for m in produced
            if any(g.processed[m] for g in self.groups.values())
            and all(g.processed[m] in (0, 1) for g in self.groups.values())
        }
        return LedgerSummary(
            produced=len(produced),
            produce_failed=len(self.failed),
            aborted=len(self.aborted & set(self.produced_order)),
            processed_once=len(processed_once),
            duplicated=len(duplicated),
            lost=len(self.lost_ids()),
            dead_lettered=len(self.dead_lettered),
            out_of_order=sum(g.out_of_order for g in self.groups.values()),
            out_of_order_overall=sum(g.out_of_order_overall for g in self.groups.values()),
            priority_inversions=sum(g.priority_inversions for g in self.groups.values()),
            redelivered=self.redeliveries,
            rebalances=self.rebalances,
            broker_duplicates=self.broker_duplicates,
            skipped_duplicates=sum(g.skipped_duplicates for g in self.groups.values()),
            **self.patterns.summary(set(self.produced_order)),
        )

    def per_group(self) -> dict[str, GroupSummary]:
        """Per group: distinct messages processed, processing runs, processed once, duplicated,
        out of order (for per-group expectations and the side-by-side view)."""
        return {
            name: GroupSummary(
                processed=sum(1 for n in group.processed.values() if n > 0),
                runs=sum(group.processed.values()),
                processed_once=sum(1 for n in group.processed.values() if n == 1),
                duplicated=sum(1 for n in group.processed.values() if n > 1),
                out_of_order=group.out_of_order,
            )
            for name, group in sorted(self.groups.items())
        }
