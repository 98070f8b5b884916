"""The workload every system runs and what one run of it measured.

The vocabulary the harness, the brokers' own perf tools (:mod:`mqlab.bench.native`), the
report, the comparison table and ``mqlab bench`` share: which targets there are, the workload's
bounds (checked once, with a one-line error for the learner), latency percentiles and the
result with the settings it was measured with. It runs nothing, so reading a result needs no
broker code.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from mqlab.brokers.registry import SystemName

BenchTarget = Literal["kafka", "rabbitmq", "sqs", "sqs-fifo", "nats"]
"""What ``mqlab bench`` measures: the four systems, with SQS's two queue types apart (the
comparison table has a column for each)."""
TARGETS: tuple[BenchTarget, ...] = get_args(BenchTarget)

TARGET_TITLES: dict[BenchTarget, str] = {
    "kafka": "Kafka",
    "rabbitmq": "RabbitMQ",
    "sqs": "SQS standard",
    "sqs-fifo": "SQS FIFO",
    "nats": "NATS JetStream",
}

MIN_SIZE = 26
"""Smallest message: the send time and the message's number stamped at the start of each
payload take up to 26 bytes (18 for the time, 8 for a number below :data:`MAX_MESSAGES`)."""
MAX_SIZE = 256 * 1024
"""Largest message: SQS's limit (256 KiB), so every system can run the same workload."""
MAX_MESSAGES = 10_000_000
MAX_IN_FLIGHT = 10_000


PIPELINES = 4
"""Windowed publish calls (``publish_many`` / ``send_many``) running at once, each with a
quarter of ``in_flight`` as its window: while one waits for its last confirms the others
keep the broker busy, and no more than ``in_flight`` sends are ever outstanding."""


class BenchInputError(ValueError):
    """A workload or target a run cannot take (one line, for the learner)."""


def parse_targets(names: Sequence[str]) -> list[BenchTarget]:
    """The targets named (every target when none), in the table's order, each once.

    Raises:
        BenchInputError: an unknown name (with a "did you mean").
    """
    if not names:
        return list(TARGETS)
    chosen: set[str] = set()
    for raw in names:
        name = raw.strip().lower().replace("_", "-")
        if name == "fifo":
            name = "sqs-fifo"
        if name not in TARGETS:
            close = difflib.get_close_matches(name, TARGETS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BenchInputError(f"unknown system {raw!r}{hint} (known: {', '.join(TARGETS)})")
        chosen.add(name)
    return [target for target in TARGETS if target in chosen]


def target_system(target: BenchTarget) -> SystemName:
    """The system whose adapter runs ``target`` (both SQS targets run on SQS's)."""
    return "sqs" if target == "sqs-fifo" else target


@dataclass(frozen=True, slots=True)
class Workload:
    """The same workload for every system.

    Attributes:
        messages: how many messages are produced (and consumed).
        size: bytes per message (the timestamp included).
        in_flight: sends awaiting their acknowledgement at once (for SQS, messages: a batch
            of ten is one request carrying ten of them).
    """

    messages: int = 10_000
    size: int = 100
    in_flight: int = 256

    def __post_init__(self) -> None:
        if not 1 <= self.messages <= MAX_MESSAGES:
            raise BenchInputError(f"--messages must be 1..{MAX_MESSAGES:,}, not {self.messages}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise BenchInputError(
                f"--size must be {MIN_SIZE}..{MAX_SIZE} bytes (the send time and number are "
                f"stamped in the first bytes; SQS takes at most 256 KiB), not {self.size}"
            )
        if not 1 <= self.in_flight <= MAX_IN_FLIGHT:
            raise BenchInputError(f"--in-flight must be 1..{MAX_IN_FLIGHT}, not {self.in_flight}")

    @property
    def max_backlog(self) -> int:
        """Messages that may be sent but not yet received before the producer waits."""
        return max(1000, 4 * self.in_flight)

    @property
    def pipelines(self) -> int:
        """Windowed publish calls at once (:data:`PIPELINES`, fewer for a tiny window)."""
        return max(1, min(PIPELINES, self.in_flight))

    @property
    def window(self) -> int:
        """The window of each windowed publish call: ``in_flight`` split over the calls."""
        return max(1, self.in_flight // self.pipelines)

    def unit_span(self, units: int, index: int) -> range:
        """The messages of unit ``index`` when the workload is cut into ``units`` units of
        (at most) equal size: what the backlog bound and the send agree on."""
        per_unit = -(-self.messages // units)
        return range(index * per_unit, min(self.messages, (index + 1) * per_unit))


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of one kind of latency, in milliseconds (nearest rank)."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        """The summary of ``seconds`` (zeros for no samples)."""
        if not seconds:
            return cls(0.0, 0.0, 0.0, 0)
        ordered = sorted(seconds)
        return cls(
            p50_ms=percentile(ordered, 0.50) * 1000,
            p99_ms=percentile(ordered, 0.99) * 1000,
            max_ms=ordered[-1] * 1000,
            samples=len(ordered),
        )

    def to_json_dict(self) -> dict[str, float | int]:
        return {
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "samples": self.samples,
        }


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``fraction`` 0.5 = median)."""
    if not ordered:
        raise ValueError("no values")
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What one run of the workload on one system measured, with the settings it ran with."""

    target: BenchTarget
    broker: str
    """``kafka`` (the lab's broker) or ``sim:kafka`` (the simulator: virtual seconds)."""
    workload: Workload
    settings: tuple[tuple[str, str], ...]
    """What the numbers depend on, in the order they are shown: acks or confirms,
    persistence, batching, the in-flight and backlog bounds, the consumer's batch."""
    sent: int
    received: int
    produce_seconds: float
    """From the first send to the last acknowledgement."""
    total_seconds: float
    """From the first send to the last message received."""
    ack_latency: Latency
    """Each send's time to acknowledgement (a batch's applies to each of its messages)."""
    end_to_end: Latency
    """Send time (stamped in the payload) to receipt, per message (its first receipt)."""
    duplicates: int = 0
    """Deliveries of a message already received: not in ``received``, the rates or the
    latencies. SQS delivers at least once, and a send retried after its answer was lost is
    stored twice where nothing deduplicates it (moto forgets a FIFO dedup id once the message
    is deleted)."""

    @property
    def simulated(self) -> bool:
        return self.broker.startswith("sim:")

    @property
    def produce_rate(self) -> float | None:
        """Messages acknowledged per second; None when no time passed (a simulated system
        that models no cost per message takes no virtual time at all)."""
        return self.sent / self.produce_seconds if self.produce_seconds > 0 else None

    @property
    def end_to_end_rate(self) -> float | None:
        """Messages received per second, from the first send to the last receipt (None as
        for :attr:`produce_rate`)."""
        return self.received / self.total_seconds if self.total_seconds > 0 else None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "broker": self.broker,
            "simulated": self.simulated,
            "messages": self.workload.messages,
            "size": self.workload.size,
            "in_flight": self.workload.in_flight,
            "settings": dict(self.settings),
            "sent": self.sent,
            "received": self.received,
            "duplicates": self.duplicates,
            "produce_seconds": round(self.produce_seconds, 6),
            "total_seconds": round(self.total_seconds, 6),
            "produce_rate": _rounded(self.produce_rate),
            "end_to_end_rate": _rounded(self.end_to_end_rate),
            "ack_latency": self.ack_latency.to_json_dict(),
            "end_to_end_latency": self.end_to_end.to_json_dict(),
        }


def _rounded(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 1)
