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
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mqlab.course.loader import ContentError, load_model

SCENARIO_FORMAT_VERSION = 1

System = Literal["kafka", "rabbitmq", "sqs", "nats"]
BrokerChoice = Literal["kafka", "rabbitmq", "sqs", "nats", "sim"]
SYSTEMS: tuple[System, ...] = ("kafka", "rabbitmq", "sqs", "nats")

FaultAction = Literal["kill", "pause", "resume", "restart"]
ToxicKind = Literal["latency", "timeout", "reset_peer", "bandwidth", "cut"]
AckPolicy = Literal["after", "before", "never"]
CrashPoint = Literal["after_receive", "after_processing", "before_ack", "after_ack"]
ErrorPolicy = Literal["requeue", "drop", "dead_letter", "ignore"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- channel ------------------------------------------------------------------------------


class KafkaChannel(_Strict):
    """Kafka settings of the channel's topic."""

    partitions: int = Field(1, ge=1, le=64)
    """Number of partitions."""
    replication_factor: int = Field(3, ge=1, le=3)
    """Copies of each partition (the lab has three brokers, whose default
    min.insync.replicas is 2: a topic with fewer than 2 replicas refuses acks=all writes)."""
    config: dict[str, str] = Field(default_factory=dict)
    """Topic configs, e.g. ``min.insync.replicas: "2"`` (values are strings, as in Kafka)."""


class RabbitChannel(_Strict):
    """RabbitMQ settings of the channel's queue (and where it is published)."""

    exchange: str = ""
    """Exchange producers publish to ("" = the default exchange, routing key = queue name)."""
    exchange_type: Literal["direct", "topic", "fanout", "headers"] = "direct"
    """Type of ``exchange`` when it is declared by the scenario."""
    max_priority: int | None = Field(None, ge=1, le=255)
    """x-max-priority: make the queue a priority queue."""
    message_ttl_ms: int | None = Field(None, ge=0)
    """x-message-ttl for the queue."""
    prefetch: int = Field(10, ge=1)
    """Consumers' prefetch (unacknowledged deliveries in flight per consumer)."""
    queues: dict[str, list[str]] = Field(default_factory=dict)
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

    subjects: list[str] = Field(default_factory=list)
    """Subjects the stream captures (relative to the run's namespace; default ``<channel>.>``)."""
    ack_wait: float = Field(30.0, gt=0)
    """Seconds before an unacknowledged message is redelivered."""
    duplicate_window: float = Field(120.0, ge=0)
    """Seconds the stream remembers Nats-Msg-Id values."""


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
    """RabbitMQ: how long a failed message waits in the retry queue (TTL) before it comes back
    (the DLX + TTL delayed-retry pattern). Ignored elsewhere."""


class Channel(_Strict):
    """Where the scenario's messages go, with each system's own settings."""

    name: str = "orders"
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
    body: str = "message {i}"
    """Body template."""
    key: str | None = None
    """Key template (Kafka key, SQS FIFO group id and routing key default)."""
    keys: int | None = Field(None, ge=1)
    """Cycle through ``keys`` keys: message i gets key ``key-{i % keys}``."""
    routing_key: str | None = None
    """RabbitMQ routing key / NATS subject suffix template (default: the key or the channel)."""
    priorities: list[int] = Field(default_factory=list)
    """RabbitMQ: priority of message i is ``priorities[i % len]``."""
    dedup_id: str | None = None
    """Dedup id template: SQS FIFO MessageDeduplicationId, NATS Nats-Msg-Id."""
    poison: list[int] = Field(default_factory=list)
    """Indexes of poison messages: every consumer fails to process them."""
    flaky: dict[int, int] = Field(default_factory=dict)
    """Index -> number of attempts that fail before processing succeeds (a transient error,
    what retries with backoff exist for)."""
    repeat: str | None = None
    """Label of an earlier produce step: send the same messages (same ids) again, as a
    producer does when it retries after a lost acknowledgement."""
    label: str | None = None
    """Name this step so a later ``repeat`` can refer to it."""
    producer: ProducerSettings = ProducerSettings()
    rate: float | None = Field(None, gt=0)
    """Messages per second (default: as fast as acknowledgements come back)."""
    background: bool = False
    """Keep producing while the next steps run (join it with ``join``)."""
    expect_failures: bool = False
    """Failed sends are part of the lesson: record them and go on instead of stopping."""
    to: str | None = None
    """Another destination than the channel (a RabbitMQ exchange, an SNS topic name)."""


class Crash(_Strict):
    """Kill the consumer process with SIGKILL at an exact point of its loop."""

    after: int = Field(ge=1)
    """Crash while handling the ``after``-th message (1-based)."""
    point: CrashPoint = "after_processing"
    """Where in the loop: after_receive, after_processing, before_ack, after_ack."""


class Consume(_Strict):
    """Run a consumer until it has processed ``count`` messages or the channel stays quiet."""

    name: str = "consumer"
    """Consumer name (also how later steps refer to it)."""
    group: str | None = None
    """Kafka consumer group / NATS durable (default: ``<channel>-group``)."""
    source: str | None = None
    """Another queue than the channel (e.g. a dead-letter or fan-out queue)."""
    count: int | None = Field(None, ge=1)
    """Stop after processing this many messages."""
    idle: float = Field(2.0, gt=0)
    """Stop when nothing arrives for this many seconds."""
    max_time: float = Field(60.0, gt=0)
    """Hard limit for the whole step, in seconds."""
    ack: AckPolicy = "after"
    """before: ack/commit first, then process (at-most-once); after: process, then ack
    (at-least-once); never: do not acknowledge (messages come back)."""
    on_error: ErrorPolicy = "requeue"
    """What a failed processing (a poison message) does: requeue (redeliver), drop,
    dead_letter (reject to the DLQ / park), ignore (ack anyway)."""
    idempotent: bool = False
    """Remember processed message ids and skip redeliveries (an idempotent consumer)."""
    processing_time: float = Field(0.0, ge=0)
    """Seconds the business logic takes per message (a slow consumer)."""
    crash: Crash | None = None
    """Crash at an exact point (see :class:`Crash`)."""
    background: bool = False
    """Run while the next steps run (stop it with ``stop``/``crash``, or ``join`` it)."""
    from_beginning: bool = False
    """Kafka: seek to the log start (replay); NATS: deliver policy all (default anyway)."""
    start_sequence: int | None = Field(None, ge=1)
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
    target: str
    """A process name: kafka-broker-1..3, kafka-controller, rabbitmq, sqs, nats; or a role:
    ``broker`` (the system's broker; on Kafka the leader of partition 0), ``leader``,
    ``follower-1`` / ``follower-2`` (Kafka: replicas of partition 0 that are not the leader)."""


class Toxic(_Strict):
    """A network fault between the clients and a broker (Toxiproxy on the lab)."""

    kind: ToxicKind
    """latency, timeout (stop answering), reset_peer (reset connections), bandwidth, cut
    (disable the proxy: connections refused)."""
    target: str
    """The broker's proxy name (same names as processes: kafka-broker-2, rabbitmq ...) or a
    role as in :class:`Fault` (``broker``, ``leader``)."""
    latency_ms: int = Field(0, ge=0)
    jitter_ms: int = Field(0, ge=0)
    timeout_ms: int = Field(0, ge=0)
    rate_kb: int = Field(0, ge=0)


class Heal(_Strict):
    """Undo network faults on ``target`` (all toxics removed, proxy enabled)."""

    target: str


class WaitFor(_Strict):
    """Wait until a check holds (polling the broker), at most ``timeout`` seconds."""

    until: Check
    timeout: float = Field(30.0, gt=0)


class Check(_Strict):
    """A fact about the broker's own state (read through ``inspect()``), not the ledger.

    Exactly one of the fields is set.
    """

    isr_size: int | None = None
    """Kafka: every partition of the channel has an ISR of this size."""
    min_isr_size: int | None = None
    """Kafka: every partition's ISR has at least this many replicas."""
    lag: int | None = None
    """Kafka: the default group's total lag on the channel."""
    depth: int | None = None
    """RabbitMQ / SQS: messages in the channel's queue (ready + unacked / visible + in
    flight); NATS: messages in the stream."""
    dead_letter_depth: int | None = None
    """Messages in the dead-letter queue (RabbitMQ parking queue, SQS DLQ, Kafka DLQ topic)."""
    alive_brokers: int | None = None
    """Kafka: brokers registered in the cluster metadata."""
    online: bool | None = None
    """Kafka: every partition of the channel has a live leader (true) or some has none."""
    leader_moved: bool | None = None
    """Kafka: every partition's leader is a live broker other than the one that led it when
    the channel was created (an election happened). Waiting for this rather than for a
    count of alive brokers avoids reading a stale view right after a kill."""

    group: str | None = None
    """Not a fact but a qualifier: the consumer group ``lag`` is about (default: the
    channel's default group, ``<channel>-group``)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Check:
        chosen = [name for name, value in self if value is not None and name != "group"]
        if len(chosen) != 1:
            raise ValueError("a check names exactly one fact (isr_size, lag, depth ...)")
        return self


class Step(_Strict):
    """One step; exactly one action key is set."""

    produce: Produce | None = None
    consume: Consume | None = None
    stop: str | None = None
    """Close a background consumer cleanly (it leaves its group)."""
    crash: str | None = None
    """SIGKILL a background consumer now."""
    join: str | None = None
    """Wait for a background consumer or producer (by name / label) to finish."""
    fault: Fault | None = None
    toxic: Toxic | None = None
    heal: Heal | None = None
    wait: float | WaitFor | None = None
    """Seconds to wait, or ``{until: <check>, timeout: s}``."""
    check: Check | None = None
    note: str | None = None
    """Text shown in the timeline (explain what is about to happen)."""
    only: list[BrokerChoice] = Field(default_factory=list)
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
    """Consumer group assignment changes (Kafka)."""
    priority_inversions: Count | None = None
    """Messages processed after a lower-priority message (0 = perfect priority order)."""
    broker_duplicates: Count | None = None
    """Sends the broker itself recognised as duplicates and dropped."""
    skipped_duplicates: Count | None = None
    """Redeliveries an idempotent consumer recognised and did not process again."""


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
    """Ledger expectations for every broker, with per-broker overrides."""

    kafka: LedgerExpectation | None = None
    rabbitmq: LedgerExpectation | None = None
    sqs: LedgerExpectation | None = None
    nats: LedgerExpectation | None = None
    groups: dict[str, GroupExpectation] = Field(default_factory=dict)
    """Per-group expectations, by the group's name in the scenario (a consume step's
    ``group``, or its ``source`` queue, or ``<channel>-group`` by default)."""

    def for_system(self, system: str) -> dict[str, Count]:
        """The merged expectations for ``system`` (overrides win)."""
        base: dict[str, Count] = {
            name: value
            for name, value in self
            if value is not None and name not in SYSTEMS and name != "groups"
        }
        override = getattr(self, system, None)
        if isinstance(override, LedgerExpectation):
            base.update({name: value for name, value in override if value is not None})
        return base


class Prediction(_Strict):
    """The question the learner answers before the run."""

    question: str
    choices: list[str] = Field(min_length=2)
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
    id: str
    """Unique slug, also the file name without ``.yaml``."""
    title: str
    topic: str
    """Course topic (delivery-guarantees, kafka, rabbitmq, sqs, nats, network, ...)."""
    summary: str
    """One or two sentences: what the scenario shows."""
    brokers: list[BrokerChoice] = Field(min_length=1)
    """Systems it runs on; ``sim`` means: also on the simulator for each listed system."""
    predict: Prediction | None = None
    channel: Channel = Channel()
    steps: list[Step] = Field(min_length=1)
    expect: Expectations = Expectations()
    explain: str = ""
    """What happened and why, shown after the verdict."""
    nondeterministic: dict[BrokerChoice, str] = Field(default_factory=dict)
    """Brokers on which the exact numbers may vary between runs, and why. On those the
    expectations must use comparisons (">0") rather than exact numbers."""

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

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if not self.systems:
            raise ValueError("brokers must name at least one system (kafka, rabbitmq, sqs, nats)")
        labels = {s.produce.label for s in self.steps if s.produce and s.produce.label}
        for step in self.steps:
            if step.produce and step.produce.repeat and step.produce.repeat not in labels:
                raise ValueError(f"produce.repeat {step.produce.repeat!r} names no labelled step")
        return self


WaitFor.model_rebuild()
Step.model_rebuild()


def load_scenario(path: Path) -> Scenario:
    """Load and validate one scenario file.

    Raises:
        ContentError: ``path:line: what is wrong``.
    """
    scenario = load_model(Scenario, path)
    if scenario.id != path.stem:
        raise ContentError(path, None, f"id {scenario.id!r} must match the file name {path.stem!r}")
    return scenario
