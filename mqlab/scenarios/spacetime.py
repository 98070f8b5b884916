"""The space-time diagram of a run: lanes, arrows, marks and bands, folded from observations.

A run is easiest to understand as a picture in which time runs left to right and every
participant has a horizontal *lane*: each producer, each broker node that a fault touched, each
place messages wait (a Kafka partition, a RabbitMQ or SQS queue, the NATS stream) and each
consumer. A message is a chain of arrows across the lanes (produce: producer to partition;
delivery: partition to consumer; a dead-letter hop: queue to queue), and what happens on a lane
is a mark (processed, acked, committed, a crash, a leader change). Faults are bands across the
whole picture; a broker node that was down is a band on its own lane.

:func:`build_diagram` is pure: observations in, a :class:`Diagram` out
(:mod:`mqlab.scenarios.spacetime_model`), with times and an order but no geometry.
:mod:`mqlab.scenarios.html_report` lays it out as SVG. The fates that the marks show (lost,
duplicated, dead-lettered, produce failed, aborted) come from folding the very same observations
into a :class:`~mqlab.scenarios.ledger.Ledger`, so the picture can never disagree with the
ledger beside it.

Names are shown without the run's namespace (``mq-3f2a9c-orders`` is drawn as ``orders``), and
a few things the observations name in the broker's terms are drawn in the scenario's: NATS
reports deliveries and acks under the durable consumer's name, which several of the scenario's
consumers can share, so each delivery is put on the lane of the consumer that went on to
process it (see :class:`_ConsumerNames`).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Literal, cast

from mqlab.observe.events import (
    DEAD_LETTER_PRODUCER,
    Acked,
    BrokerDown,
    BrokerUp,
    Committed,
    ConsumerCrashed,
    ConsumerStarted,
    DeadLettered,
    Delivered,
    Expired,
    FaultHealed,
    FaultInjected,
    LeaderChanged,
    Nacked,
    Observation,
    Processed,
    ProcessingFailed,
    Produced,
    ProduceFailed,
    ProduceRequested,
    Rebalanced,
    TransactionEnded,
)
from mqlab.scenarios.ledger import Ledger
from mqlab.scenarios.report import NATS_ADVISORY_PREFIX, describe
from mqlab.scenarios.spacetime_model import (
    DEFAULT_MAX_MESSAGES,
    FATES,
    LANE_ORDER,
    Arrow,
    ArrowKind,
    Band,
    BandKind,
    Diagram,
    Fate,
    Instant,
    Lane,
    LaneKind,
    Mark,
    MarkKind,
)

# --- names ------------------------------------------------------------------------------

_NAMESPACE = re.compile(r"^(mq-[0-9a-z]+)[-.]")


def detect_namespace(observations: list[Observation]) -> str | None:
    """The run's namespace (``mq-3f2a9c``): the prefix most destinations share, or None."""
    counts: Counter[str] = Counter()
    for observation in observations:
        if isinstance(observation, Produced | Delivered):
            match = _NAMESPACE.match(observation.destination)
            if match:
                counts[match.group(1)] += 1
    return counts.most_common(1)[0][0] if counts else None


class _Names:
    """Strips the run's namespace from broker-side names for display."""

    def __init__(self, namespace: str | None) -> None:
        self.prefixes = (f"{namespace}-", f"{namespace}.") if namespace else ()

    def short(self, name: str) -> str:
        for prefix in self.prefixes:
            if name.startswith(prefix) and len(name) > len(prefix):
                return name[len(prefix) :]
        return name


class _ConsumerNames:
    """Which of the scenario's consumers an observation's consumer name means.

    The scenario's consumers are the names in ``ConsumerStarted``, ``Processed``,
    ``ProcessingFailed`` and ``ConsumerCrashed``. A ``Delivered`` under another name (NATS
    names the durable) belongs to the consumer that processed that message next, before it
    was delivered again; failing that, to the latest started consumer of the group of that
    name that had not crashed yet. ``Acked``/``Nacked`` follow the message's last delivery.
    Whatever is still unknown gets a lane of its own name.
    """

    def __init__(self, observations: list[Observation], names: _Names) -> None:
        self.names = names
        self.known: list[str] = []
        self.started: list[tuple[int, str, str]] = []
        """(index, consumer, group) of every ConsumerStarted."""
        self.crashed_at: dict[str, int] = {}
        seen: set[str] = set()
        for index, observation in enumerate(observations):
            name: str | None = None
            if isinstance(observation, ConsumerStarted):
                name = names.short(observation.consumer)
                self.started.append((index, name, names.short(observation.group)))
            elif isinstance(observation, Processed | ProcessingFailed | ConsumerCrashed):
                name = names.short(observation.consumer)
            if isinstance(observation, ConsumerCrashed):
                self.crashed_at.setdefault(names.short(observation.consumer), index)
            if name is not None and name not in seen:
                seen.add(name)
                self.known.append(name)
        self._delivery_owner = self._delivery_owners(observations)
        self._last_delivery: dict[str, str] = {}

    def _delivery_owners(self, observations: list[Observation]) -> dict[int, str]:
        """Delivered index -> the known consumer that processed the message next."""
        owners: dict[int, str] = {}
        open_delivery: dict[str, int] = {}
        for index, observation in enumerate(observations):
            if isinstance(observation, Delivered):
                open_delivery[observation.message_id] = index
            elif isinstance(observation, Processed | ProcessingFailed):
                delivered = open_delivery.pop(observation.message_id, None)
                if delivered is not None:
                    owners[delivered] = self.names.short(observation.consumer)
        return owners

    def _by_group(self, name: str, index: int) -> str | None:
        group = self.names.short(name)
        candidates = [
            consumer
            for started, consumer, consumer_group in self.started
            if consumer_group == group
            and started <= index
            and self.crashed_at.get(consumer, index) >= index
        ]
        return candidates[-1] if candidates else None

    def resolve(self, name: str, index: int, observation: Observation) -> str:
        """The consumer (lane name) ``name`` stands for at observation ``index``."""
        short = self.names.short(name)
        if short in self.known:
            resolved = short
        elif isinstance(observation, Delivered) and index in self._delivery_owner:
            resolved = self._delivery_owner[index]
        elif isinstance(observation, Acked | Nacked) and (
            observation.message_id in self._last_delivery
        ):
            resolved = self._last_delivery[observation.message_id]
        else:
            resolved = self._by_group(name, index) or short or "consumer"
        if isinstance(observation, Delivered):
            self._last_delivery[observation.message_id] = resolved
        return resolved


# --- building ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """An element before thinning and ranking: observation indexes instead of instants."""

    what: Literal["arrow", "mark", "band"]
    kind: str
    start: int
    end: int
    text: str
    message_id: str | None = None
    source: str = ""
    target: str = ""
    lane: str | None = None
    label: str = ""
    healed: bool = True
    commit_key: tuple[str, str, int] | None = None


@dataclass
class _Builder:
    """One walk over a run's observations, collecting lanes and pending elements."""

    observations: list[Observation]
    system: str
    stream: str
    names: _Names
    consumers: _ConsumerNames
    lanes: dict[str, Lane] = field(default_factory=dict)
    pending: list[_Pending] = field(default_factory=list)
    partition_of: dict[tuple[str, str], int] = field(default_factory=dict)
    """(message id, topic) -> the partition it was written to (Kafka)."""
    partitions_of_topic: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    requested: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    """message id -> indexes of ProduceRequested not yet answered."""
    copies: set[tuple[str, str]] = field(default_factory=set)
    """(message id, destination) of Produced observations that are a dead-letter copy."""
    processed_runs: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_answer: dict[str, int] = field(default_factory=dict)
    """producer lane -> index of the broker's last answer to it (Produced, ProduceFailed)."""

    # lanes

    def lane(self, key: str, kind: LaneKind, label: str) -> str:
        if key not in self.lanes:
            self.lanes[key] = Lane(key, kind, label)
        return key

    def producer_lane(self, producer: str) -> str:
        name = producer or "producer"
        return self.lane(f"producer:{name}", "producer", name)

    def consumer_lane(self, consumer: str) -> str:
        return self.lane(f"consumer:{consumer}", "consumer", consumer)

    def node_lane(self, node: str) -> str:
        return self.lane(f"node:{node}", "node", node)

    def broker_lane(self, destination: str, partition: int | None, message_id: str) -> str:
        """The lane of the place a message waits: a partition, a queue, the NATS stream."""
        if self.system == "nats":
            return self.lane(f"stream:{self.stream}", "broker", f"stream {self.stream}")
        name = self.names.short(destination)
        if self.system != "kafka":
            return self.lane(f"queue:{name}", "broker", name)
        if partition is None:
            partition = self.partition_of.get((message_id, name))
        if partition is None and len(self.partitions_of_topic[name]) == 1:
            partition = next(iter(self.partitions_of_topic[name]))
        if partition is None:
            return self.lane(f"topic:{name}", "broker", name)
        return self.lane(f"partition:{name}:{partition}", "broker", f"{name} p{partition}")

    # elements

    def arrow(
        self, kind: ArrowKind, message_id: str, source: str, target: str, start: int, end: int
    ) -> None:
        text = describe(self.observations[end]) or self.observations[end].kind
        self.pending.append(
            _Pending("arrow", kind, start, end, text, message_id, source=source, target=target)
        )

    def mark(self, kind: MarkKind, lane: str, index: int, message_id: str | None = None) -> None:
        text = describe(self.observations[index]) or self.observations[index].kind
        self.pending.append(_Pending("mark", kind, index, index, text, message_id, lane=lane))

    # the walk

    def prepare(self) -> None:
        """What later observations need from earlier and later ones: partitions, copies."""
        dead_letter_targets: set[tuple[str, str]] = set()
        for observation in self.observations:
            if isinstance(observation, DeadLettered):
                target = self.names.short(observation.target)
                dead_letter_targets.add((observation.message_id, target))
        seen: set[str] = set()
        for observation in self.observations:
            if not isinstance(observation, Produced) or observation.duplicate:
                continue
            name = self.names.short(observation.destination)
            if observation.partition is not None:
                self.partition_of.setdefault((observation.message_id, name), observation.partition)
                self.partitions_of_topic[name].add(observation.partition)
            is_copy = observation.producer == DEAD_LETTER_PRODUCER or (
                observation.message_id in seen
                and (observation.message_id, name) in dead_letter_targets
            )
            if is_copy:
                self.copies.add((observation.message_id, name))
            seen.add(observation.message_id)
        for _index, consumer, _group in self.consumers.started:
            self.consumer_lane(consumer)

    def walk(self) -> None:
        """Turn each observation into its arrow, mark or band (faults and outages are closed
        by what heals them, or by the end of the run)."""
        open_faults: list[tuple[int, FaultInjected]] = []
        down_since: dict[str, list[int]] = {}
        for index, observation in enumerate(self.observations):
            match observation:
                case ProduceRequested():
                    self.requested[observation.message_id].append(index)
                case Produced():
                    self._produced(index, observation)
                case ProduceFailed():
                    self._answered(observation.message_id)
                    lane = self.producer_lane(observation.producer)
                    self.last_answer[lane] = index
                    self.mark("produce_failed", lane, index, observation.message_id)
                case Delivered():
                    source = self.broker_lane(
                        observation.destination, observation.partition, observation.message_id
                    )
                    consumer = self.consumers.resolve(observation.consumer, index, observation)
                    target = self.consumer_lane(consumer)
                    arrow: ArrowKind = "redeliver" if observation.redelivered else "deliver"
                    self.arrow(arrow, observation.message_id, source, target, index, index)
                case Processed():
                    self._processed(index, observation)
                case ProcessingFailed():
                    lane = self.consumer_lane(self.names.short(observation.consumer))
                    self.mark("failed", lane, index, observation.message_id)
                case Acked() | Nacked():
                    consumer = self.consumers.resolve(observation.consumer, index, observation)
                    settled: MarkKind = "acked" if isinstance(observation, Acked) else "nacked"
                    lane = self.consumer_lane(consumer)
                    self.mark(settled, lane, index, observation.message_id)
                case Committed():
                    consumer = self.consumers.resolve(
                        observation.consumer or observation.group, index, observation
                    )
                    self.mark("committed", self.consumer_lane(consumer), index)
                    self.pending[-1].commit_key = (
                        observation.group,
                        observation.topic,
                        observation.partition,
                    )
                case DeadLettered():
                    self._dead_lettered(index, observation)
                case Expired():
                    lane = self.broker_lane(observation.destination, None, observation.message_id)
                    self.mark("expired", lane, index, observation.message_id)
                case ConsumerCrashed():
                    lane = self.consumer_lane(self.names.short(observation.consumer))
                    self.mark("crashed", lane, index)
                case Rebalanced():
                    for member, _partitions in observation.assignment:
                        consumer = self.consumers.resolve(member, index, observation)
                        self.mark("rebalanced", self.consumer_lane(consumer), index)
                case LeaderChanged():
                    lane = self.broker_lane(observation.topic, observation.partition, "")
                    self.mark("leader", lane, index)
                case TransactionEnded():
                    self.mark("transaction", self.producer_lane(observation.producer), index)
                case FaultInjected(fault="resume" | "restart"):
                    self.mark("fault_action", self._fault_lane(observation.target), index)
                case FaultInjected():
                    self._fault_lane(observation.target)
                    open_faults.append((index, observation))
                case FaultHealed():
                    self._healed(index, observation, open_faults)
                case BrokerDown():
                    self.node_lane(observation.node)
                    down_since.setdefault(observation.node, []).append(index)
                case BrokerUp():
                    downs = down_since.pop(observation.node, None)
                    if downs:
                        self._down_band(observation.node, downs, index, healed=True)
                case _:
                    pass
        last = len(self.observations) - 1
        for start, fault in open_faults:
            self._fault_band(start, last, fault, healed=False)
        for node, downs in down_since.items():
            self._down_band(node, downs, last, healed=False)

    def _answered(self, message_id: str) -> int | None:
        waiting = self.requested.get(message_id)
        return waiting.pop(0) if waiting else None

    def _send_start(self, producer_lane: str, request: int | None, answer: int) -> int:
        """Where a produce arrow starts: when the message was handed to the producer or, if
        the broker had not yet answered the producer's previous send, when it did.

        The runner hands a whole step's messages over at once and the producer sends them one
        after the other, so drawing each from the hand-over would turn a burst into a fan of
        arrows all starting at zero; from the previous answer, the one send that waited out
        an outage is the one long arrow.
        """
        start = request if request is not None else answer
        previous = self.last_answer.get(producer_lane)
        if previous is not None and previous > start:
            start = previous
        self.last_answer[producer_lane] = answer
        return start

    def _produced(self, index: int, observation: Produced) -> None:
        name = self.names.short(observation.destination)
        if (observation.message_id, name) in self.copies:
            return  # drawn as the dead-letter hop
        request = self._answered(observation.message_id)
        source = self.producer_lane(observation.producer)
        target = self.broker_lane(
            observation.destination, observation.partition, observation.message_id
        )
        start = self._send_start(source, request, index)
        self.arrow("produce", observation.message_id, source, target, start, index)
        if observation.duplicate:
            # It reached the broker, which recognised it and dropped it.
            self.mark("skipped", target, index, observation.message_id)

    def _processed(self, index: int, observation: Processed) -> None:
        lane = self.consumer_lane(self.names.short(observation.consumer))
        if observation.skipped_duplicate:
            self.mark("skipped", lane, index, observation.message_id)
            return
        runs = (observation.group, observation.message_id)
        self.processed_runs[runs] += 1
        kind: MarkKind = "duplicate" if self.processed_runs[runs] > 1 else "processed"
        self.mark(kind, lane, index, observation.message_id)

    def _dead_lettered(self, index: int, observation: DeadLettered) -> None:
        mid = observation.message_id
        source = self.broker_lane(observation.source, None, mid)
        if observation.target.startswith(NATS_ADVISORY_PREFIX):
            # JetStream keeps the message in the stream and publishes an advisory: no hop.
            self.mark("dead_lettered", source, index, mid)
            return
        target = self.broker_lane(observation.target, None, mid)
        self.arrow("dead_letter", mid, source, target, index, index)

    def _fault_lane(self, target: str) -> str:
        if self.names.short(target) in self.consumers.known:
            return self.consumer_lane(self.names.short(target))
        return self.node_lane(target)

    def _healed(
        self, index: int, healed: FaultHealed, open_faults: list[tuple[int, FaultInjected]]
    ) -> None:
        """Close the open fault this heals: the same fault on the same target, else the
        oldest open fault on that target (a ``kill`` healed by the restart that follows)."""

        def matches(fault: FaultInjected, same_kind: bool) -> bool:
            return fault.target == healed.target and (fault.fault == healed.fault or not same_kind)

        for same_kind in (True, False):
            for position, (start, fault) in enumerate(open_faults):
                if matches(fault, same_kind):
                    del open_faults[position]
                    self._fault_band(start, index, fault, healed=True)
                    return

    def _fault_band(self, start: int, end: int, fault: FaultInjected, *, healed: bool) -> None:
        label = f"{fault.fault} {fault.target}"
        line = describe(fault) or label
        until = "healed" if healed else "never healed before the run ended"
        text = f"{line} (from +{self._at(start):.3f}s, {until} at +{self._at(end):.3f}s)"
        self.pending.append(_Pending("band", "fault", start, end, text, label=label, healed=healed))

    def _down_band(self, node: str, downs: list[int], end: int, *, healed: bool) -> None:
        why = "; ".join(describe(self.observations[i]) or "" for i in downs if self.observations[i])
        back = describe(self.observations[end]) if healed else "still down when the run ended"
        text = f"{why}; {back} (+{self._at(downs[0]):.3f}s to +{self._at(end):.3f}s)"
        self.pending.append(
            _Pending(
                "band",
                "down",
                downs[0],
                end,
                text,
                lane=self.node_lane(node),
                label=f"{node} down",
                healed=healed,
            )
        )

    def _at(self, index: int) -> float:
        return self.observations[index].at - self.observations[0].at


def _fates(observations: list[Observation]) -> dict[Fate, tuple[str, ...]]:
    """The marked messages, as the ledger folds them (ids in produce order)."""
    ledger = Ledger()
    for observation in observations:
        ledger(observation)
    order = {mid: i for i, mid in enumerate(ledger.produced_order)}

    def ordered(ids: set[str]) -> tuple[str, ...]:
        return tuple(sorted(ids, key=lambda mid: (order.get(mid, len(order)), mid)))

    duplicated = {m for g in ledger.groups.values() for m, n in g.processed.items() if n > 1}
    return {
        "lost": ordered(ledger.lost_ids()),
        "dead_lettered": ordered(set(ledger.dead_lettered)),
        "duplicated": ordered(duplicated),
        "produce_failed": ordered(set(ledger.failed)),
        "aborted": ordered(ledger.aborted & set(ledger.produced_order)),
    }


def _kept_messages(
    pending: list[_Pending], marked: set[str], max_messages: int
) -> tuple[set[str] | None, list[str]]:
    """Which messages to draw (None: all of them) and every message in first-seen order."""
    order: list[str] = []
    seen: set[str] = set()
    for element in pending:
        mid = element.message_id
        if mid is not None and mid not in seen:
            seen.add(mid)
            order.append(mid)
    if len(order) <= max_messages:
        return None, order
    others = [mid for mid in order if mid not in marked]
    budget = max(0, max_messages - len(marked & seen))
    stride = len(others) / budget if budget else math.inf
    kept = {others[int(i * stride)] for i in range(budget)} if budget else set()
    return kept | (marked & seen), order


def build_diagram(
    observations: list[Observation] | tuple[Observation, ...],
    *,
    system: str,
    stream: str = "",
    max_messages: int = DEFAULT_MAX_MESSAGES,
) -> Diagram:
    """Fold a run's observations into its space-time diagram.

    Args:
        observations: the run's observations in the order they were observed.
        system: ``kafka``, ``rabbitmq``, ``sqs`` or ``nats`` (how destinations become lanes:
            Kafka partitions, queues, the NATS stream).
        stream: the NATS stream's name (the scenario's channel); ignored elsewhere.
        max_messages: draw at most this many messages in full (marked ones always).
    """
    observed = list(observations)
    if not observed:
        return Diagram((), (), (), (), dict.fromkeys(FATES, ()), 0, 0, None, (), 0.0)
    names = _Names(detect_namespace(observed))
    builder = _Builder(observed, system, stream or "stream", names, _ConsumerNames(observed, names))
    builder.prepare()
    builder.walk()
    fates = _fates(observed)
    marked = {mid for ids in fates.values() for mid in ids}
    kept, order = _kept_messages(builder.pending, marked, max_messages)
    pending = builder.pending
    thinning = None
    if kept is not None:
        pending, commits_note = _thin(pending, kept, len(order))
        marked_drawn = len(marked & set(order))
        thinning = (
            f"{len(kept):,} of {len(order):,} messages are drawn: an even sample of the "
            f"others and all {marked_drawn:,} marked ones (lost, dead-lettered, duplicated, "
            f"failed or aborted){commits_note}. Every fault, outage, crash, leader change and "
            "rebalance is drawn."
        )
    return _freeze(
        observed,
        builder,
        pending,
        fates,
        messages_total=len(order),
        messages_drawn=len(order) if kept is None else len(kept),
        thinning=thinning,
    )


def _thin(pending: list[_Pending], kept: set[str], total: int) -> tuple[list[_Pending], str]:
    """Drop the elements of messages not kept; keep commits at the same ratio (and every
    partition's last commit, the offset the group ends with)."""
    ratio = max(1, round(total / max(1, len(kept))))
    last_commit: dict[tuple[str, str, int], int] = {}
    for position, element in enumerate(pending):
        if element.commit_key is not None:
            last_commit[element.commit_key] = position
    final = set(last_commit.values())
    result: list[_Pending] = []
    commits = commits_kept = 0
    for position, element in enumerate(pending):
        if element.commit_key is not None:
            commits += 1
            if (commits - 1) % ratio == 0 or position in final:
                commits_kept += 1
                result.append(element)
            continue
        if element.message_id is None or element.message_id in kept:
            result.append(element)
    note = f"; {commits_kept:,} of {commits:,} commits" if commits else ""
    return result, note


def _freeze(
    observed: list[Observation],
    builder: _Builder,
    pending: list[_Pending],
    fates: dict[Fate, tuple[str, ...]],
    *,
    messages_total: int,
    messages_drawn: int,
    thinning: str | None,
) -> Diagram:
    """Rank every drawn point and build the immutable diagram."""
    t0 = observed[0].at
    anchors = sorted(
        {i for element in pending for i in (element.start, element.end)},
        key=lambda i: (observed[i].at, i),
    )
    rank = {index: seq for seq, index in enumerate(anchors)}

    def instant(index: int) -> Instant:
        return Instant(observed[index].at - t0, rank[index])

    fate_of: dict[str, Fate] = {}
    for fate in reversed(FATES):  # the first fate in FATES wins
        for mid in fates[fate]:
            fate_of[mid] = fate
    arrows: list[Arrow] = []
    marks: list[Mark] = []
    bands: list[Band] = []
    for element in pending:
        start, end = instant(element.start), instant(element.end)
        if element.what == "arrow":
            assert element.message_id is not None
            arrows.append(
                Arrow(
                    cast(ArrowKind, element.kind),
                    element.message_id,
                    element.source,
                    element.target,
                    start,
                    end,
                    element.text,
                    fate_of.get(element.message_id),
                )
            )
        elif element.what == "mark":
            assert element.lane is not None
            marks.append(
                Mark(
                    cast(MarkKind, element.kind),
                    element.lane,
                    start,
                    element.text,
                    element.message_id,
                )
            )
        else:
            bands.append(
                Band(
                    cast(BandKind, element.kind),
                    element.label,
                    start,
                    end,
                    element.text,
                    element.lane,
                    element.healed,
                )
            )
    marks.extend(_fate_marks(arrows, fates))
    # Lanes keep the order they first appeared in within their kind; nodes go by number.
    lanes = sorted(
        builder.lanes.values(),
        key=lambda lane: (
            LANE_ORDER.index(lane.kind),
            _natural(lane.key) if lane.kind == "node" else (),
        ),
    )
    return Diagram(
        lanes=tuple(lanes),
        arrows=tuple(arrows),
        marks=tuple(marks),
        bands=tuple(bands),
        fates=fates,
        messages_total=messages_total,
        messages_drawn=messages_drawn,
        thinning=thinning,
        slot_times=tuple(observed[i].at - t0 for i in anchors),
        duration=observed[-1].at - t0,
    )


def _natural(key: str) -> tuple[object, ...]:
    """``kafka-broker-10`` after ``kafka-broker-9``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


def _fate_marks(arrows: list[Arrow], fates: dict[Fate, tuple[str, ...]]) -> list[Mark]:
    """A lost mark where each lost message reached the broker, a dead-letter mark where each
    dead-lettered message ended up (NATS marks its own, on the stream)."""
    produced_at: dict[str, Arrow] = {}
    last_hop: dict[str, Arrow] = {}
    for arrow in arrows:
        if arrow.kind == "produce":
            produced_at.setdefault(arrow.message_id, arrow)
        elif arrow.kind == "dead_letter":
            last_hop[arrow.message_id] = arrow
    marks: list[Mark] = []
    for mid in fates["lost"]:
        produce = produced_at.get(mid)
        if produce is not None:
            text = f"{mid} LOST: acknowledged by the broker, never processed, not dead-lettered"
            marks.append(Mark("lost", produce.target, produce.end, text, mid))
    for mid in fates["dead_lettered"]:
        hop = last_hop.get(mid)
        if hop is not None:
            marks.append(Mark("dead_lettered", hop.target, hop.end, hop.text, mid))
    return marks
