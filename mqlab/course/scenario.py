"""The scenario format: what a course author writes in ``scenarios/*.yaml``.

A scenario is a short script against one *channel* (a Kafka topic, a RabbitMQ queue, an SQS
queue, a NATS stream: whatever the broker calls the place messages wait), a list of steps
(produce, consume with an acknowledgement policy, inject a fault, heal it, wait, check the
broker's own state) and the outcome the learner is asked to predict. The same script runs on
every broker it lists, and on the simulator; system-specific settings live under the system's
name so that a Kafka topic's replication factor and a RabbitMQ queue's priority sit side by
side in one file.

The field docstrings below are the format's reference documentation (``scenarios/README.md``
explains it with examples). Every model forbids unknown keys, so a typo is an error with its
line number, not a silently ignored setting.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)

from mqlab.brokers.faults import NetworkFault, NetworkFaultKind, ProcessFault
from mqlab.brokers.registry import SYSTEM_NAMES, SystemName
from mqlab.course.loader import (
    Document,
    Location,
    read_document,
    validate_document,
)
from mqlab.course.scenario_references import reference_problems

SCENARIO_FORMAT_VERSION = 1

# The systems and the fault kinds come from the brokers' one table and one vocabulary
# (BrokerChoice is spelled out so that a wrong name's message lists every choice in one line;
# tests/brokers/test_registry.py holds it to the table).
System = SystemName
BrokerChoice = Literal["kafka", "rabbitmq", "sqs", "nats", "sim"]
SYSTEMS: tuple[System, ...] = SYSTEM_NAMES

FaultAction = ProcessFault
ToxicKind = NetworkFaultKind
Service = Literal["postgres", "redis"]
"""Lab services a pattern scenario uses on a real run (the simulator stands in for them)."""
SERVICES: tuple[Service, ...] = ("postgres", "redis")
LAB_TARGET = "lab"
"""The real run of a scenario without a broker that uses several services."""
AckPolicy = Literal["after", "before", "never"]
CrashPoint = Literal["after_receive", "after_processing", "before_ack", "after_ack"]
ErrorPolicy = Literal["requeue", "drop", "dead_letter", "ignore"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")

MAX_SCENARIO_BYTES = 1024 * 1024
"""A scenario file larger than this (1 MiB) is refused before it is parsed; the library's
scenarios are 1-3 KiB."""

MAX_STEPS = 500
"""Most steps in one scenario (the library's longest has 17)."""

MAX_MESSAGES_BYTES = 16 * 1024 * 1024
"""Most bytes of message bodies one produce step may send (``count`` x body length): every
message is built before the first is sent."""

# Bounds on text: generous for what the field is for, small enough that a pasted log or a
# generated file cannot cost seconds and hundreds of MB on every load.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""A name, key, label, target or template: at most 200 characters."""
Prose = Annotated[str, StringConstraints(max_length=10_000)]
"""Text shown to the learner (summary, explanation, note): at most 10,000 characters."""
Line = Annotated[str, StringConstraints(min_length=1, max_length=300)]
"""One line shown to the learner (a title, a question, a choice): at most 300 characters."""

Seconds = Annotated[float, Field(gt=0, le=3600)]
"""A duration in seconds: more than 0, at most an hour (a scenario runs in seconds)."""


def _template(value: str) -> str:
    """Check a text template: ``{i}`` and ``{n}`` with an optional short format, nothing else.

    A template is formatted for every message; an unknown placeholder would fail in the middle
    of a run, and a format such as ``{i:>999999999}`` would build gigabytes.
    """
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError:
        raise ValueError(
            "a '{' or '}' without its partner (write {{ and }} for literal braces)"
        ) from None
    for _literal, field_name, format_spec, _conversion in parts:
        if field_name is None:
            continue
        if field_name not in ("i", "n"):
            raise ValueError(
                f"unknown placeholder {{{field_name}}}: templates know {{i}} (the message's "
                "index) and {n} (the count)"
            )
        if format_spec and not re.fullmatch(r"[<>^]?0?\d{0,2}[dxX]?", format_spec):
            raise ValueError(
                f"format {{{field_name}:{format_spec}}} is not supported (use e.g. {{i:03d}})"
            )
    return value


Template = Annotated[Name, AfterValidator(_template)]
"""A name-sized text template with ``{i}`` / ``{n}`` placeholders."""
BodyTemplate = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_template)]
"""A message body template, at most 10,000 characters."""


class _Strict(BaseModel):
    # allow_inf_nan=False: every float field of the format refuses .nan, .inf and -.inf.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- channel ------------------------------------------------------------------------------


class KafkaChannel(_Strict):
    """Kafka settings of the channel's topic."""

    partitions: int = Field(1, ge=1, le=64)
    """Number of partitions."""
    replication_factor: int = Field(3, ge=1, le=3)
    """Copies of each partition (the lab has three brokers, whose default
    min.insync.replicas is 2: a topic with fewer than 2 replicas refuses acks=all writes)."""
    config: dict[Name, Name] = Field(default_factory=dict, max_length=50)
    """Topic configs, e.g. ``min.insync.replicas: "2"`` (values are strings, as in Kafka)."""


class RabbitChannel(_Strict):
    """RabbitMQ settings of the channel's queue (and where it is published)."""

    exchange: Annotated[str, StringConstraints(max_length=200)] = ""
    """Exchange producers publish to ("" = the default exchange, routing key = queue name)."""
    exchange_type: Literal["direct", "topic", "fanout", "headers"] = "direct"
    """Type of ``exchange`` when it is declared by the scenario."""
    max_priority: int | None = Field(None, ge=1, le=255)
    """x-max-priority: make the queue a priority queue."""
    message_ttl_ms: int | None = Field(None, ge=0, le=86_400_000)
    """x-message-ttl for the queue (at most a day)."""
    prefetch: int = Field(10, ge=1, le=65_535)
    """Consumers' prefetch (unacknowledged deliveries in flight per consumer)."""
    queues: dict[Name, Annotated[list[Name], Field(max_length=50)]] = Field(
        default_factory=dict, max_length=50
    )
    """More queues bound to ``exchange``: name -> binding keys (topic patterns for a topic
    exchange; ignored by fanout). Consume them with ``consume.source``."""


class SqsChannel(_Strict):
    """SQS settings of the channel's queue."""

    fifo: bool = False
    """A FIFO queue (the name gets ``.fifo``): per-group order and deduplication."""
    visibility_timeout: int = Field(30, ge=0, le=43200)
    """Seconds a received message stays invisible before another receive gets it."""
    content_based_dedup: bool = False
    """FIFO: deduplicate by a hash of the body when no dedup id is given."""
    delay_seconds: int = Field(0, ge=0, le=900)
    """Queue-level delivery delay."""
    duplicate_rate: float = Field(0.0, ge=0, le=1)
    """Simulator only: share of standard-queue receives that leave a duplicate behind, as
    AWS occasionally does. 0 by default so lessons are deterministic (and moto, the lab's SQS
    server, never duplicates); set it to show why consumers must be idempotent anyway."""
    reorder_rate: float = Field(0.0, ge=0, le=1)
    """Simulator only: chance that neighbouring messages swap in a standard-queue receive."""


class NatsChannel(_Strict):
    """NATS JetStream settings of the channel's stream and consumers."""

    subjects: list[Name] = Field(default_factory=list, max_length=50)
    """Subjects the stream captures (relative to the run's namespace; default ``<channel>.>``)."""
    ack_wait: Seconds = 30.0
    """Seconds before an unacknowledged message is redelivered."""
    duplicate_window: float = Field(120.0, ge=0, le=86_400)
    """Seconds the stream remembers Nats-Msg-Id values (at most a day)."""


class DeadLetter(_Strict):
    """Move a message aside after it failed ``after_attempts`` deliveries.

    Each system does it its own way: RabbitMQ dead-letters a rejected message to a DLX bound to
    a parking queue, SQS's redrive policy moves it at ``maxReceiveCount``, NATS stops
    redelivering at ``max_deliver`` (and emits an advisory), and Kafka has no broker-side DLQ:
    the consumer publishes to a ``<channel>-dlq`` topic itself.
    """

    after_attempts: int = Field(3, ge=1, le=100)
    """Deliveries before the message is moved aside."""
    retry_delay_ms: int = Field(1000, ge=0, le=600_000)
    """How long a failed message waits before its next attempt. RabbitMQ: the TTL of the
    retry queue it is dead-lettered into (the DLX + TTL delayed-retry pattern); Kafka: the
    consumer pauses before rewinding (which holds up the whole partition). SQS and NATS wait
    their own way: the visibility timeout and ack_wait."""


class Channel(_Strict):
    """Where the scenario's messages go, with each system's own settings."""

    name: Name = "orders"
    """Logical name; the run's namespace is prepended on the broker."""
    kafka: KafkaChannel = KafkaChannel()
    rabbitmq: RabbitChannel = RabbitChannel()
    sqs: SqsChannel = SqsChannel()
    nats: NatsChannel = NatsChannel()
    dead_letter: DeadLetter | None = None
    """Optional dead-lettering (see :class:`DeadLetter`)."""

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("use lower-case letters, digits and '-' only")
        return value


# --- steps --------------------------------------------------------------------------------


class ProducerSettings(_Strict):
    """How the producer is configured (Kafka terms; other systems ignore what they lack)."""

    acks: Literal[0, 1, "all"] = "all"
    """Kafka acks: 0 (fire and forget), 1 (leader only), all (every in-sync replica)."""
    idempotent: bool = False
    """Kafka idempotent producer: broker drops duplicates of a retried batch."""
    transaction: Literal["commit", "abort"] | None = None
    """Kafka: send the whole step in one transaction and commit or abort it."""


class Produce(_Strict):
    """Send ``count`` messages. Text fields are templates: ``{i}`` is the message index
    (0-based) and ``{n}`` the count, e.g. ``key: "customer-{i % 3}"`` is NOT supported; use
    ``keys: 3`` for that."""

    count: int = Field(1, ge=1, le=100_000)
    """How many messages."""
    body: BodyTemplate = "message {i}"
    """Body template (at most 10,000 characters)."""
    key: Template | None = None
    """Key template (Kafka key, SQS FIFO group id and routing key default)."""
    keys: int | None = Field(None, ge=1, le=100_000)
    """Cycle through ``keys`` keys: message i gets key ``key-{i % keys}``."""
    routing_key: Template | None = None
    """RabbitMQ routing key / NATS subject suffix template (default: the key or the channel)."""
    priorities: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=list, max_length=1000
    )
    """RabbitMQ: priority of message i is ``priorities[i % len]`` (0-255)."""
    dedup_id: Template | None = None
    """Dedup id template: SQS FIFO MessageDeduplicationId, NATS Nats-Msg-Id."""
    poison: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, max_length=1000)
    """Indexes of poison messages: every consumer fails to process them."""
    flaky: dict[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=dict, max_length=1000
    )
    """Index -> number of attempts that fail before processing succeeds (a transient error,
    what retries with backoff exist for)."""
    repeat: Name | None = None
    """Label of an earlier produce step: send the same messages (same ids) again, as a
    producer does when it retries after a lost acknowledgement."""
    label: Name | None = None
    """Name this step so a later ``repeat`` can refer to it (labels are unique)."""
    producer: ProducerSettings = ProducerSettings()
    rate: float | None = Field(None, gt=0, le=100_000)
    """Messages per second (default: as fast as acknowledgements come back)."""
    background: bool = False
    """Keep producing while the next steps run (join it with ``join``)."""
    expect_failures: bool = False
    """Failed sends are part of the lesson: record them and go on instead of stopping."""
    to: Name | None = None
    """Another destination than the channel (a RabbitMQ exchange, an SNS topic name)."""

    @model_validator(mode="after")
    def _messages_fit(self) -> Produce:
        for name, indexes in (("poison", list(self.poison)), ("flaky", list(self.flaky))):
            beyond = [index for index in indexes if index >= self.count]
            if beyond and self.repeat is None:
                raise ValueError(
                    f"{name} names message {beyond[0]}, but the step sends messages "
                    f"0 to {self.count - 1}"
                )
        size = self.count * len(self.body.encode("utf-8", "replace"))
        if size > MAX_MESSAGES_BYTES:
            raise ValueError(
                f"count x body is {size // (1024 * 1024)} MiB; a step may send at most "
                f"{MAX_MESSAGES_BYTES // (1024 * 1024)} MiB"
            )
        return self


class Crash(_Strict):
    """Kill the consumer process with SIGKILL at an exact point of its loop."""

    after: int = Field(ge=1, le=100_000)
    """Crash while handling the ``after``-th message (1-based)."""
    point: CrashPoint = "after_processing"
    """Where in the loop: after_receive, after_processing, before_ack, after_ack."""


class Consume(_Strict):
    """Run a consumer until it has processed ``count`` messages or the channel stays quiet."""

    name: Name = "consumer"
    """Consumer name (also how later steps refer to it)."""
    group: Name | None = None
    """Kafka consumer group / NATS durable (default: ``<channel>-group``)."""
    source: Name | None = None
    """Another queue than the channel: RabbitMQ one of ``channel.rabbitmq.queues`` (or the
    ``<channel>-dlq`` parking queue), SQS an SNS-fed queue of the scenario (or
    ``<channel>-dlq``), Kafka the ``<channel>-dlq`` topic; on NATS a filter subject inside the
    stream's subjects (``orders.*.created``)."""
    count: int | None = Field(None, ge=1, le=1_000_000)
    """Stop after processing this many messages."""
    idle: float = Field(2.0, gt=0, le=600)
    """Stop when nothing arrives for this many seconds (at most 600). Time the consumer is
    held up by its broker (a connection down and reconnecting, a Kafka member waiting for
    partitions or behind their end) does not count; ``max_time`` still does."""
    max_time: Seconds = 60.0
    """Hard limit for the whole step, in seconds (at most 3600)."""
    ack: AckPolicy = "after"
    """before: ack/commit first, then process (at-most-once); after: process, then ack
    (at-least-once); never: do not acknowledge (messages come back)."""
    on_error: ErrorPolicy = "requeue"
    """What a failed processing (a poison message) does: requeue (redeliver), drop,
    dead_letter (reject to the DLQ / park), ignore (ack anyway)."""
    idempotent: bool = False
    """Remember processed message ids and skip redeliveries (an idempotent consumer)."""
    processing_time: float = Field(0.0, ge=0, le=60)
    """Seconds the business logic takes per message (a slow consumer; at most 60)."""
    crash: Crash | None = None
    """Crash at an exact point (see :class:`Crash`)."""
    background: bool = False
    """Run while the next steps run (stop it with ``stop``/``crash``, or ``join`` it)."""
    from_beginning: bool = False
    """Kafka: seek to the log start (replay); NATS: deliver policy all (default anyway)."""
    start_sequence: int | None = Field(None, ge=1, le=2**63 - 1)
    """NATS: start at this stream sequence (replay)."""
    isolation: Literal["read_uncommitted", "read_committed"] = "read_uncommitted"
    """Kafka isolation level."""
    assignment: Literal["range", "roundrobin"] = "range"
    """Kafka partition assignment strategy."""
    auto_commit: bool = False
    """Kafka: commit in the background every second instead of following ``ack``."""
    batch: int = Field(10, ge=1, le=1000)
    """Messages fetched per poll / receive / fetch."""


class Fault(_Strict):
    """Inject a fault into a broker process (the lab's or the simulator's)."""

    action: FaultAction
    """kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT), restart."""
    target: Name
    """A process name: kafka-broker-1..3, kafka-controller, rabbitmq, sqs, nats; or a role:
    ``broker`` (the system's broker; on Kafka the leader of partition 0), ``leader``,
    ``follower-1`` / ``follower-2`` (Kafka: replicas of partition 0 that are not the leader)."""


class Toxic(_Strict):
    """A network fault between the clients and a broker (Toxiproxy on the lab)."""

    kind: ToxicKind
    """latency, timeout (stop answering), reset_peer (reset connections), bandwidth, cut
    (disable the proxy: connections refused)."""
    target: Name
    """The broker's proxy name (same names as processes except kafka-controller, which has no
    proxy: kafka-broker-2, rabbitmq ...) or a role as in :class:`Fault` (``broker``,
    ``leader``)."""
    latency_ms: int = Field(0, ge=0, le=60_000)
    """latency: added delay per packet, in milliseconds (at most a minute)."""
    jitter_ms: int = Field(0, ge=0, le=60_000)
    """latency: random variation of the delay, in milliseconds."""
    timeout_ms: int = Field(0, ge=0, le=600_000)
    """timeout / reset_peer: when to drop or reset the connection (0: at once)."""
    rate_kb: int = Field(0, ge=0, le=10_000_000)
    """bandwidth: the rate limit in KB/s."""

    def network_fault(self) -> NetworkFault:
        """This step's fault in the brokers' fault vocabulary (seconds; the keys here are
        milliseconds, as authors write them)."""
        return NetworkFault.from_milliseconds(
            self.kind,
            latency_ms=self.latency_ms,
            jitter_ms=self.jitter_ms,
            timeout_ms=self.timeout_ms,
            rate_kb=self.rate_kb,
        )


class Heal(_Strict):
    """Undo network faults on ``target`` (all toxics removed, proxy enabled)."""

    target: Name
    """The proxy (or role) a ``toxic`` step targeted."""


class WaitFor(_Strict):
    """Wait until a check holds (polling the broker), at most ``timeout`` seconds."""

    until: Check
    """The fact to wait for."""
    timeout: Seconds = 30.0
    """Give up after this many seconds (at most 3600); the check then fails."""


class Check(_Strict):
    """A fact about the broker's own state (read through ``inspect()``), not the ledger.

    Exactly one of the fields is set.
    """

    isr_size: int | None = Field(None, ge=0, le=1_000_000_000)
    """Kafka: every partition of the channel has an ISR of this size."""
    min_isr_size: int | None = Field(None, ge=0, le=1_000_000_000)
    """Kafka: every partition's ISR has at least this many replicas."""
    lag: int | None = Field(None, ge=0, le=1_000_000_000)
    """Kafka: the default group's total lag on the channel."""
    depth: int | None = Field(None, ge=0, le=1_000_000_000)
    """RabbitMQ / SQS: messages in the channel's queue (ready + unacked / visible + in
    flight); NATS: messages in the stream."""
    dead_letter_depth: int | None = Field(None, ge=0, le=1_000_000_000)
    """Messages in the dead-letter queue (RabbitMQ parking queue, SQS DLQ, Kafka DLQ topic)."""
    alive_brokers: int | None = Field(None, ge=0, le=1_000_000_000)
    """Kafka: brokers registered in the cluster metadata."""
    online: bool | None = None
    """Kafka: every partition of the channel has a live leader (true) or some has none."""
    leader_moved: bool | None = None
    """Kafka: every partition's leader is a live broker other than the one that led it when
    the channel was created (an election happened). Waiting for this rather than for a
    count of alive brokers avoids reading a stale view right after a kill."""

    group: Name | None = None
    """Not a fact but a qualifier: the consumer group ``lag`` is about (default: the
    channel's default group, ``<channel>-group``)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Check:
        chosen = [name for name, value in self if value is not None and name != "group"]
        if len(chosen) != 1:
            raise ValueError("a check names exactly one fact (isr_size, lag, depth ...)")
        return self


SERVICE_ONLY_ACTIONS = ("pattern", "note", "wait")
"""What a scenario without a broker may do (there is no channel to produce to or consume)."""


class CrashAt(_Strict):
    """Where a pattern program crashes: the ``occurrence``-th time it reaches ``point``
    (with ``detail``, when given). Each program documents its crash points."""

    point: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)]
    """A crash point of the program (``after_action``, ``between_transactions`` ...)."""
    detail: Name | None = None
    """Only count passes with this detail (a step name, a message key)."""
    occurrence: int = Field(1, ge=1, le=1000)
    """1 for the first matching pass, 2 for the second ..."""


class PatternRun(_Strict):
    """Run a program of the pattern library (a saga, an idempotent consumer, a retry loop,
    an event-sourced aggregate, an outbox ...) on this run's bus, so its observations join the
    timeline and the ledger. ``mqlab scenarios programs`` lists the programs, their
    parameters and their crash points."""

    program: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=60)]
    """The program's id."""
    params: dict[Name, JsonValue] = Field(default_factory=dict, max_length=50)
    """Its parameters (checked against the program's own list when the scenario loads)."""
    crash: CrashAt | None = None
    """Crash the program at a point: in-process on the simulator; on a real run the program
    runs in a worker process that is SIGKILLed there, so whatever it kept in memory is gone
    and only PostgreSQL, Redis or the broker remember."""


class Step(_Strict):
    """One step; exactly one action key is set."""

    produce: Produce | None = None
    consume: Consume | None = None
    stop: Name | None = None
    """Close a background consumer cleanly (it leaves its group)."""
    crash: Name | None = None
    """SIGKILL a background consumer now."""
    join: Name | None = None
    """Wait for a background consumer or producer (by name / label) to finish."""
    fault: Fault | None = None
    toxic: Toxic | None = None
    heal: Heal | None = None
    wait: Seconds | WaitFor | None = None
    """Seconds to wait (more than 0, at most 3600), or ``{until: <check>, timeout: s}``."""
    check: Check | None = None
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None
    """Text shown in the timeline (explain what is about to happen)."""
    pattern: PatternRun | None = None
    """Run a program of the pattern library (see :class:`PatternRun`)."""
    only: list[BrokerChoice] = Field(default_factory=list, max_length=5)
    """Run this step only on these brokers (e.g. a fault that exists only on Kafka)."""

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Step:
        actions = [name for name, value in self if value is not None and name != "only"]
        if len(actions) != 1:
            found = ", ".join(actions) or "none"
            raise ValueError(f"a step has exactly one action (found: {found})")
        return self

    @property
    def action(self) -> str:
        """The name of the action this step performs."""
        return next(name for name, value in self if value is not None and name != "only")

    def runs_on(self, system: str, *, sim: bool) -> bool:
        """Whether this step runs in a run on ``system`` (the simulated one when ``sim``).

        ``only: [kafka]`` runs on the real Kafka and on the simulated one; ``only: [sim]`` on
        every simulated system and no real one.
        """
        return not self.only or system in self.only or (sim and "sim" in self.only)


# --- expectations -------------------------------------------------------------------------

Count = int | Annotated[str, Field(pattern=r"^(>=|<=|>|<|==)?\s*\d+$")]
"""An exact number, or a comparison such as ``">0"`` or ``"<=3"``."""


class LedgerExpectation(_Strict):
    """What the ledger must show (omitted fields are not checked)."""

    produced: Count | None = None
    """Messages the broker acknowledged (duplicates dropped by the broker not counted)."""
    produce_failed: Count | None = None
    """Sends that were not acknowledged."""
    aborted: Count | None = None
    """Messages written inside a Kafka transaction that was then aborted (not produced, and
    never lost: no consumer was meant to see them)."""
    processed_once: Count | None = None
    """Messages processed exactly once (per group)."""
    duplicated: Count | None = None
    """Messages processed more than once in one group."""
    lost: Count | None = None
    """Acknowledged messages never processed and not dead-lettered."""
    dead_lettered: Count | None = None
    """Messages moved to a dead-letter destination."""
    out_of_order: Count | None = None
    """Messages processed after a later message of the same key (per group)."""
    out_of_order_overall: Count | None = None
    """Messages processed after a later message of any key (per group): what a topic with
    several partitions does NOT promise."""
    redelivered: Count | None = None
    """Deliveries the broker marked as redeliveries."""
    rebalances: Count | None = None
    """Kafka consumer group rebalances: new generations of the group (a member joining or
    leaving makes one; each member's report of the same generation counts once)."""
    priority_inversions: Count | None = None
    """Messages processed after a lower-priority message (0 = perfect priority order)."""
    broker_duplicates: Count | None = None
    """Sends the broker itself recognised as duplicates and dropped."""
    skipped_duplicates: Count | None = None
    """Redeliveries an idempotent consumer recognised and did not process again."""
    calls: Count | None = None
    """Calls made by retried operations (first calls included)."""
    retries: Count | None = None
    """Retries a retry policy scheduled."""
    gave_up: Count | None = None
    """Retried operations that stopped without succeeding."""
    permanent_retried: Count | None = None
    """Retries scheduled after an error classified as permanent (should be 0)."""
    effects: Count | None = None
    """Business writes that changed the state (a write that left it as it was is none)."""
    effects_repeated: Count | None = None
    """Messages whose business effect was applied more than once to the same entity."""
    dedup_hits: Count | None = None
    """Deliveries a dedup store recognised as already processed (or in progress)."""
    sagas_completed: Count | None = None
    """Sagas whose every step succeeded."""
    sagas_compensated: Count | None = None
    """Sagas that failed and undid every step that may have applied."""
    sagas_parked: Count | None = None
    """Sagas stopped because a compensation kept failing."""
    sagas_recovered: Count | None = None
    """Unfinished sagas an orchestrator found in its log after a restart."""
    compensations: Count | None = None
    """Compensations that finished."""
    compensations_failed: Count | None = None
    """Compensation attempts that failed (retried with backoff until the saga is parked)."""
    compensations_out_of_order: Count | None = None
    """Sagas whose compensations did not run in the reverse order of their steps (should be 0)."""
    events_appended: Count | None = None
    """Domain events appended to event-sourced aggregates."""
    version_conflicts: Count | None = None
    """Appends refused because another writer got there first (optimistic concurrency)."""
    projection_updates: Count | None = None
    """Events a projection applied (a rebuild included)."""
    outbox_relayed: Count | None = None
    """Outbox rows the relay published."""
    events_unpublished: Count | None = None
    """Business writes committed whose event no producer published (the dual-write bug)."""


class GroupExpectation(_Strict):
    """What one group (Kafka consumer group, queue, NATS durable) must show."""

    processed: Count | None = None
    """Distinct messages the group processed."""
    runs: Count | None = None
    """Times the group's business logic ran (duplicates included)."""
    processed_once: Count | None = None
    """Messages the group processed exactly once."""
    duplicated: Count | None = None
    """Messages the group processed more than once."""
    out_of_order: Count | None = None
    """Messages the group processed after a later message of the same key."""


class Expectations(LedgerExpectation):
    """Ledger expectations for every broker, with per-broker (and per-service) overrides."""

    kafka: LedgerExpectation | None = None
    rabbitmq: LedgerExpectation | None = None
    sqs: LedgerExpectation | None = None
    nats: LedgerExpectation | None = None
    postgres: LedgerExpectation | None = None
    """A pattern scenario without a broker, run on the lab's PostgreSQL (real round trips)."""
    redis: LedgerExpectation | None = None
    """A pattern scenario without a broker, run on the lab's Redis."""
    groups: dict[str, GroupExpectation] = Field(default_factory=dict)
    """Per-group expectations, by the group's name in the scenario (a consume step's
    ``group``, or its ``source`` queue, or ``<channel>-group`` by default)."""

    def for_system(self, system: str, *, simulated: bool = False) -> dict[str, Count]:
        """The merged expectations for ``system`` (overrides win). A broker's override holds on
        its simulator too (it models that broker); a service's only on the real service (on
        ``sim`` a pattern runs on memory stores and the virtual clock, with no round trips)."""
        base: dict[str, Count] = {
            name: value
            for name, value in self
            if value is not None and name not in (*SYSTEMS, *SERVICES, "groups")
        }
        override = None if simulated and system in SERVICES else getattr(self, system, None)
        if isinstance(override, LedgerExpectation):
            base.update({name: value for name, value in override if value is not None})
        return base


class Prediction(_Strict):
    """The question the learner answers before the run."""

    question: Line
    choices: list[Line] = Field(min_length=2, max_length=10)
    answer: int = Field(ge=0)
    """Index of the right choice."""

    @model_validator(mode="after")
    def _answer_in_range(self) -> Prediction:
        if self.answer >= len(self.choices):
            raise ValueError(f"answer {self.answer} is not an index of choices")
        return self


class Scenario(_Strict):
    """One scenario file."""

    format_version: Literal[1]
    """Always 1 for this version of mqlab."""
    id: Name
    """Unique slug, also the file name without ``.yaml`` (a copy outside ``scenarios/`` may
    keep the id of the scenario it was copied from)."""
    title: Line
    topic: Name
    """Course topic (delivery-guarantees, kafka, rabbitmq, sqs, nats, network, ...)."""
    summary: Prose
    """One or two sentences: what the scenario shows."""
    brokers: list[BrokerChoice] = Field(min_length=1, max_length=5)
    """Systems it runs on; ``sim`` means: also on the simulator for each listed system. A
    pattern scenario that needs no broker lists only ``sim`` and names its ``services``."""
    services: list[Service] = Field(default_factory=list, max_length=2)
    """Lab services its pattern steps use on a real run (``postgres``: the saga log, the
    business database, the event store; ``redis``: dedup keys). On the simulator in-memory
    stand-ins are used. A scenario with no broker runs for real as ``postgres``, ``redis`` or,
    with both, ``lab``."""
    predict: Prediction | None = None
    channel: Channel = Channel()
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    expect: Expectations = Expectations()
    explain: Prose = ""
    """What happened and why, shown after the verdict."""
    nondeterministic: dict[BrokerChoice | Service | Literal["lab"], Prose] = Field(
        default_factory=dict
    )
    """Brokers (or, for a scenario without a broker, its real target: ``postgres``,
    ``redis``, ``lab``) on which the exact numbers may vary between runs, and why. On those
    the expectations must use comparisons (">0") rather than exact numbers."""

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("use lower-case letters, digits and '-' only")
        return value

    @property
    def systems(self) -> list[System]:
        """The real systems listed (``sim`` excluded)."""
        return [b for b in self.brokers if b != "sim"]

    @property
    def runs_on_sim(self) -> bool:
        """Whether the scenario also runs on the simulator."""
        return "sim" in self.brokers

    @property
    def service_only(self) -> bool:
        """A pattern scenario without a broker: it runs against the lab's services."""
        return not self.systems

    @property
    def targets(self) -> list[str]:
        """The names of its real runs: its systems; for a scenario without a broker its one
        service (``postgres``) or ``lab`` for several."""
        if self.systems:
            return list(self.systems)
        return [self.services[0]] if len(self.services) == 1 else [LAB_TARGET]

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if not self.systems and not self.services:
            raise ValueError(
                "brokers must name at least one system (kafka, rabbitmq, sqs, nats), or the "
                "scenario names the services its pattern steps use (services: [postgres])"
            )
        if not self.systems:
            for step in self.steps:
                if step.action not in SERVICE_ONLY_ACTIONS or isinstance(step.wait, WaitFor):
                    raise ValueError(
                        f"a scenario without a broker has only pattern, note and wait steps "
                        f"(found {step.action}); add the broker it needs to brokers"
                    )
        return self

    def runs(self) -> list[tuple[System, bool]]:
        """Every broker run the scenario has: ``(system, simulated)`` for each listed system
        (none for a scenario without a broker)."""
        sims = (False, True) if self.runs_on_sim else (False,)
        return [(system, sim) for system in self.systems for sim in sims]

    def content_problems(self) -> Iterator[tuple[Location, str]]:
        """What the fields cannot check alone: names and targets that must exist.

        Checked on load, so a scenario that would fail half-way (an unknown fault target, a
        ``join`` of a consumer that never started) is refused before anything runs. See
        :class:`mqlab.course.loader.CheckedContent`.
        """
        yield from reference_problems(self)


WaitFor.model_rebuild()
Step.model_rebuild()


def load_scenario(
    path: Path, *, text: str | None = None, id_must_match_file: bool = True
) -> Scenario:
    """Load and validate one scenario file, its cross-references included.

    Args:
        path: the file.
        text: its text, when the caller already has it.
        id_must_match_file: a library file is named after its id; a learner's copy elsewhere
            may keep the id of the scenario it was copied from (pass False for it).

    Raises:
        ContentError: ``path:line: what is wrong``.
    """
    document: Document = read_document(path, text, max_bytes=MAX_SCENARIO_BYTES)
    scenario = validate_document(Scenario, document)
    if id_must_match_file and scenario.id != path.stem:
        raise document.error(
            ("id",),
            f"{scenario.id!r} must match the file name {path.stem!r} (a library scenario is "
            "named after its id; to experiment with a copy, keep it outside scenarios/)",
        )
    return scenario
