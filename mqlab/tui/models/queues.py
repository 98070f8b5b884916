"""RabbitMQ, SQS and NATS as the live widgets draw them.

What all three share is folded from observations into a :class:`FlowView`: per destination,
what was sent, delivered, settled and dead-lettered, which messages are in flight (delivered,
not yet settled) and, per key (an SQS FIFO message group), what waits behind them. That works
during a replay too. Each system's snapshot adds what only the broker knows: RabbitMQ's
exchanges, bindings and ready/unacked counts, SQS's visible/in-flight/delayed counts and DLQ
depth, NATS's stream sequences and consumer ack floors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mqlab.observe.events import (
    Acked,
    DeadLettered,
    Delivered,
    Nacked,
    Observation,
    Processed,
    Produced,
    ProduceRequested,
)
from mqlab.tui.models import short_name
from mqlab.tui.models.snapshots import NatsSnapshot, RabbitSnapshot, SqsSnapshot


@dataclass
class InFlight:
    """A message delivered and not settled yet."""

    message_id: str
    destination: str
    consumer: str
    delivered_at: float
    delivery_count: int
    key: str | None


@dataclass
class DestinationFlow:
    """Counts for one queue, exchange, subject or stream, from observations."""

    name: str
    produced: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    nacked: int = 0


@dataclass
class FlowView:
    """Message flow folded from observations, for the queue-like systems."""

    destinations: dict[str, DestinationFlow] = field(default_factory=dict)
    in_flight: dict[str, InFlight] = field(default_factory=dict)
    """message id -> its open delivery."""
    dead_letter_paths: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(source, target, reason) -> messages moved along it."""
    waiting_by_key: Counter[str] = field(default_factory=Counter)
    """key (SQS FIFO message group) -> messages produced and not yet delivered."""
    waiting_by_priority: Counter[int] = field(default_factory=Counter)
    """priority -> messages produced and not yet processed (RabbitMQ priority queues)."""
    now: float = 0.0
    """The latest observation's time (virtual seconds on the simulator)."""
    version: int = 0
    _keys: dict[str, str] = field(default_factory=dict)
    _priorities: dict[str, int] = field(default_factory=dict)
    _delivered_once: set[str] = field(default_factory=set)

    def __call__(self, observation: Observation) -> None:
        """Fold one observation (Kafka's and the runner's are ignored, except the produce
        requests that carry keys and priorities)."""
        self.now = max(self.now, observation.at)
        if "kafka" in observation.broker:
            return
        match observation:
            case ProduceRequested(message_id=mid, key=key, priority=priority):
                if key:
                    self._keys[mid] = key
                if priority is not None:
                    self._priorities[mid] = priority
                return
            case Produced(duplicate=False):
                self._flow(observation.destination).produced += 1
                key = observation.key or self._keys.get(observation.message_id)
                if key:
                    self.waiting_by_key[key] += 1
                priority = self._priorities.get(observation.message_id)
                if priority is not None:
                    self.waiting_by_priority[priority] += 1
            case Delivered():
                flow = self._flow(observation.destination)
                flow.delivered += 1
                flow.redelivered += int(observation.redelivered)
                key = observation.key or self._keys.get(observation.message_id)
                if observation.message_id not in self._delivered_once:
                    self._delivered_once.add(observation.message_id)
                    if key and self.waiting_by_key[key] > 0:
                        self.waiting_by_key[key] -= 1
                self.in_flight[observation.message_id] = InFlight(
                    observation.message_id,
                    short_name(observation.destination),
                    observation.consumer,
                    observation.at,
                    observation.delivery_count,
                    key,
                )
            case Acked():
                self._flow(observation.destination).acked += 1
                self.in_flight.pop(observation.message_id, None)
            case Nacked():
                self._flow(observation.destination).nacked += 1
                self.in_flight.pop(observation.message_id, None)
            case Processed(skipped_duplicate=False):
                priority = self._priorities.pop(observation.message_id, None)
                if priority is not None and self.waiting_by_priority[priority] > 0:
                    self.waiting_by_priority[priority] -= 1
                return
            case DeadLettered():
                path = (short_name(observation.source), short_name(observation.target))
                self.dead_letter_paths[(*path, observation.reason)] += 1
                self.in_flight.pop(observation.message_id, None)
            case _:
                return
        self.version += 1

    def blocked_groups(self) -> dict[str, tuple[InFlight, int]]:
        """Keys whose head message is in flight while others wait behind it (FIFO
        head-of-line blocking): key -> (the in-flight head, how many wait)."""
        heads: dict[str, InFlight] = {}
        for delivery in self.in_flight.values():
            if delivery.key and delivery.key not in heads:
                heads[delivery.key] = delivery
        return {
            key: (head, self.waiting_by_key[key])
            for key, head in sorted(heads.items())
            if self.waiting_by_key[key] > 0
        }

    def _flow(self, destination: str) -> DestinationFlow:
        name = short_name(destination)
        flow = self.destinations.get(name)
        if flow is None:
            flow = self.destinations[name] = DestinationFlow(name)
        return flow


@dataclass
class QueueSystemView:
    """One queue-like system: its observation flow and its latest snapshot."""

    system: str
    """``rabbitmq``, ``sqs`` or ``nats``."""
    flow: FlowView = field(default_factory=FlowView)
    snapshot: RabbitSnapshot | SqsSnapshot | NatsSnapshot | None = None
    snapshot_at: float | None = None
    """The run time when the snapshot was applied (for the visibility timers)."""
    visibility_timeout: float | None = None
    """SQS: the queue's visibility timeout, from the scenario until a snapshot says."""
    snapshots_applied: int = 0
    ended: bool = False
    """The run is over: the snapshot is the last look before its queues were deleted."""

    def end(self) -> None:
        """Mark the run over (the view says its snapshot is the last look)."""
        self.ended = True
        self.flow.version += 1

    def __call__(self, observation: Observation) -> None:
        self.flow(observation)

    @property
    def version(self) -> int:
        """Changes with every observation folded and every snapshot applied."""
        return self.flow.version + self.snapshots_applied

    def apply_snapshot(self, snapshot: object) -> None:
        """Keep a snapshot of this system (others are ignored)."""
        if isinstance(snapshot, RabbitSnapshot | SqsSnapshot | NatsSnapshot):
            self.snapshot = snapshot
            self.snapshots_applied += 1
            self.snapshot_at = self.flow.now
            if isinstance(snapshot, SqsSnapshot):
                main = [q for q in snapshot.queues if q.dead_letter_queue is not None]
                chosen = main[0] if main else (snapshot.queues[0] if snapshot.queues else None)
                if chosen is not None:
                    self.visibility_timeout = float(chosen.visibility_timeout)

    def visible_again_in(self, delivery: InFlight) -> float | None:
        """SQS: seconds until an in-flight message becomes visible again (None: unknown)."""
        if self.visibility_timeout is None:
            return None
        return delivery.delivered_at + self.visibility_timeout - self.flow.now
