"""The simulator's NATS JetStream: subjects, streams, pull consumers and sequences on virtual time.

Layout (the same places as the real adapter in :mod:`mqlab.brokers.nats.client`): errors, the server
model (stored messages, streams, consumers, core subscriptions, :class:`SimNatsServer`), then
the message, consumer and subscription classes and :class:`SimNatsBroker` with lifecycle,
streams, publishing, consumers, inspection and the plumbing at the end.

What is modelled, because the course teaches it (checked against nats-server 2.15):

* Subjects with ``*`` / ``>`` wildcards for stream subjects, consumer filters and core
  subscriptions; streams whose subjects overlap (with another stream or among themselves)
  are refused.
* Streams with limits (``max_msgs``, ``max_age``, ``max_msgs_per_subject``; the oldest go
  first) and retention ``limits`` / ``interest`` (a message stays while a consumer that wants
  it has not acked it; with no consumer it is not kept at all) / ``workqueue`` (gone once
  acked; one consumer per subject). A ``Nats-Msg-Id`` seen inside the duplicate window is not
  stored again: the PubAck names the original sequence with ``duplicate=True``.
* Durable pull consumers with explicit acks, deliver policies ``all`` / ``last`` / ``new`` /
  ``by_start_sequence`` / ``by_start_time``, redelivery after ``ack_wait`` (redeliveries come
  before new messages), ``nak`` (with a delay), ``term``, ``in_progress``, ``max_deliver``
  (found at the next fetch, when the server also sends its max-deliveries advisory), and the
  counters exactly as the server computes them: ack floor, delivered, pending, ack pending,
  redelivered.
* Core NATS is at-most-once: a message reaches the subscriptions that exist (and whose
  connection is up) when it is published, nothing else; a JetStream publish reaches them too.
* The node keeps JetStream state across a kill (file storage, like the lab). Clients notice a
  refused/reset connection at once and a silent one after three missed pings, fail calls with
  ``BrokerUnavailable`` while disconnected and reconnect every half second.

Names and observations follow the real adapter: streams ``<namespace>-<name>``, subjects
``<namespace>.<subject>``, the same message-id scheme, errors and ``DeadLettered`` advisory
target.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mqlab.brokers.base import BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.nats.api import (
    MESSAGE_ID_HEADER,
    ConsumerInfo,
    DeliverPolicy,
    JetStreamError,
    JsMessage,
    NatsAPI,
    NatsPullConsumer,
    NatsSnapshot,
    NatsSubscription,
    NoStreamForSubject,
    PubAck,
    Retention,
    StreamInfo,
    check_name,
    check_start_position,
)
from mqlab.brokers.sim.link import (
    SIM_ADDRESS,
    connection_refused,
    connection_silent,
    first_of,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.nats import subjects as nats_subjects
from mqlab.brokers.sim.world import NodeChange, NodeState, NodeUnreachable, SimWorld
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import (
    Acked,
    BrokerDown,
    BrokerUp,
    DeadLettered,
    Delivered,
    Expired,
    Nacked,
    Observation,
    Produced,
    ProduceFailed,
)

_T = TypeVar("_T")

NODE = "nats"
"""The simulated node (the lab's process name) that faults target."""

SOURCE = "sim:nats"
"""``broker`` field of the observations the server itself emits (advisories, expiry)."""

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
"""Subject prefix of the advisory JetStream sends when a consumer gives up on a message."""
MSG_ID_HEADER = "Nats-Msg-Id"
"""JetStream's deduplication header."""

MAX_ACK_PENDING = 1000
"""nats-server's default max_ack_pending for a consumer that sets none (the adapters do not)."""
DEFAULT_DUPLICATE_WINDOW = 120.0
"""nats-server's duplicate window when a stream asks for none."""

_RECONNECT_WAIT = 0.5
_RETRY_INTERVAL = 0.25
_PING_INTERVAL = 2.0
_MAX_OUTSTANDING_PINGS = 2
_MESSAGE_OVERHEAD = 30  # bytes nats-server's file store counts per message besides its content
_EPSILON = 1e-6


# --- errors -------------------------------------------------------------------------------


def _refused(operation: str, target: str, description: str, code: int) -> JetStreamError:
    return JetStreamError(f"{operation} {target}: {description} (JetStream error {code})")


# --- the server model -----------------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
    """A message in a stream."""

    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: float

    @property
    def size(self) -> int:
        header_bytes = (
            len("NATS/1.0\r\n\r\n") + sum(len(f"{k}: {v}\r\n") for k, v in self.headers.items())
            if self.headers
            else 0
        )
        return _MESSAGE_OVERHEAD + len(self.subject) + len(self.data) + header_bytes

    @property
    def message_id(self) -> str:
        return self.headers.get(MESSAGE_ID_HEADER) or ""


@dataclass(slots=True)
class _Pending:
    """A message delivered to a consumer and not yet acknowledged."""

    consumer_sequence: int
    deadline: float
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Handout:
    """One delivery of a stored message to a consumer (what a fetch returns)."""

    message: _Stored
    stream: str
    consumer: str
    consumer_sequence: int
    num_delivered: int


class _Consumer:
    """A durable pull consumer's configuration and the server-side state it advances."""

    def __init__(
        self,
        stream: _Stream,
        name: str,
        *,
        filter_subject: str | None,
        ack_wait: float,
        max_deliver: int,
        deliver_policy: str,
        start_sequence: int,
    ) -> None:
        self.stream = stream
        self.name = name
        self.filter_subject = filter_subject
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.deliver_policy = deliver_policy
        self.next_sequence = start_sequence  # the server's o.sseq
        self.consumer_sequence = 0  # last consumer sequence handed out
        self.delivered_stream_sequence = start_sequence - 1
        self.ack_floor_stream = start_sequence - 1
        self.ack_floor_consumer = 0
        self.pending: dict[int, _Pending] = {}
        self.redelivery_counts: dict[int, int] = {}
        self.redelivery_queue: list[int] = []
        self.alive = True
        self._changed = asyncio.Event()

    def wants(self, subject: str) -> bool:
        return self.filter_subject is None or nats_subjects.matches(self.filter_subject, subject)

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def has_acked(self, sequence: int) -> bool:
        """Done with ``sequence`` (acked, termed or never meant to get it)."""
        return sequence < self.next_sequence and sequence not in self.pending

    def queue_redelivery(self, sequence: int) -> None:
        if sequence not in self.redelivery_queue:
            self.redelivery_queue.append(sequence)
            self.redelivery_queue.sort()
        self.notify()


class _Stream:
    """A stream: its configuration, its messages by sequence and its consumers."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config
        self.messages: dict[int, _Stored] = {}
        self.by_subject: dict[str, deque[int]] = {}
        self.last_sequence = 0
        self.bytes = 0
        self.dedup: dict[str, tuple[int, float]] = {}
        self.consumers: dict[str, _Consumer] = {}
        self.age_timer: asyncio.TimerHandle | None = None
        self.alive = True

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self.config["subjects"])

    @property
    def retention(self) -> str:
        return str(self.config["retention"])

    @property
    def first_sequence(self) -> int:
        return next(iter(self.messages)) if self.messages else self.last_sequence + 1

    def captures(self, subject: str) -> bool:
        return any(nats_subjects.matches(pattern, subject) for pattern in self.subjects)

    def info(self) -> StreamInfo:
        return StreamInfo(
            name=self.name,
            subjects=self.subjects,
            messages=len(self.messages),
            bytes=self.bytes,
            first_sequence=self.first_sequence,
            last_sequence=self.last_sequence,
            retention=self.retention,
            max_msgs=int(self.config["max_msgs"]),
            max_age_seconds=float(self.config["max_age"]),
            duplicate_window_seconds=float(self.config["duplicate_window"]),
        )


@dataclass(slots=True)
class _CoreSubscriber:
    """A core NATS subscription: ``deliver`` decides (it knows its client's connection)."""

    pattern: str
    deliver: Callable[[str, bytes, dict[str, str]], None]


@dataclass(slots=True)
class _StreamConfig:
    subjects: tuple[str, ...]
    retention: str
    max_msgs: int
    max_age: float
    duplicate_window: float
    max_msgs_per_subject: int


class SimNatsServer:
    """One nats-server with JetStream in a simulated world, shared by its adapters."""

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.streams: dict[str, _Stream] = {}
        self.subscribers: list[_CoreSubscriber] = []
        world.watch(self._on_node_change)

    def _emit(self, observation: Observation) -> None:
        self.world.bus.emit(observation)

    # --- streams ------------------------------------------------------------------------

    def add_stream(self, name: str, config: _StreamConfig) -> _Stream:
        """Create the stream, or update it when it exists with other settings."""
        operation = "add stream"
        for subject in config.subjects:
            if not nats_subjects.valid_filter(subject):
                raise _refused(operation, name, "invalid subject", 10052)
        for index, subject in enumerate(config.subjects):
            for later in config.subjects[index + 1 :]:
                if nats_subjects.overlap(subject, later):
                    raise _refused(
                        operation, name, f'subject "{subject}" overlaps with "{later}"', 10052
                    )
        for existing in self.streams.values():
            if existing.name == name:
                continue
            if any(nats_subjects.overlap(a, b) for a in config.subjects for b in existing.subjects):
                raise _refused(operation, name, "subjects overlap with an existing stream", 10065)
        if config.max_age > 0 and config.duplicate_window > config.max_age:
            raise _refused(
                operation, name, "duplicates window can not be larger then max age", 10052
            )
        window = config.duplicate_window
        if window <= 0:  # the server's default: two minutes, or max_age when that is shorter
            window = min(DEFAULT_DUPLICATE_WINDOW, config.max_age or DEFAULT_DUPLICATE_WINDOW)
        settings = {
            "subjects": list(config.subjects),
            "retention": config.retention,
            "max_msgs": config.max_msgs,
            "max_age": config.max_age,
            "duplicate_window": window,
            "max_msgs_per_subject": config.max_msgs_per_subject,
        }
        stream = self.streams.get(name)
        if stream is None:
            stream = _Stream(name, settings)
            self.streams[name] = stream
            return stream
        if stream.config != settings:
            if "workqueue" in (stream.retention, config.retention) and (
                stream.retention != config.retention
            ):
                raise _refused(
                    operation,
                    name,
                    "stream configuration update can not change retention policy to/from workqueue",
                    10052,
                )
            stream.config = settings
            self._enforce_limits(stream)
        return stream

    def stream(self, name: str, operation: str) -> _Stream:
        stream = self.streams.get(name)
        if stream is None:
            raise _refused(operation, name, "stream not found", 10059)
        return stream

    def delete_stream(self, name: str) -> None:
        stream = self.streams.pop(name, None)
        if stream is None:
            raise _refused("delete stream", name, "stream not found", 10059)
        stream.alive = False
        if stream.age_timer is not None:
            stream.age_timer.cancel()
        for consumer in list(stream.consumers.values()):
            self._drop_consumer(consumer)

    # --- publishing ---------------------------------------------------------------------

    def publish(
        self, subject: str, data: bytes, headers: dict[str, str], *, acked: bool
    ) -> tuple[_Stream | None, int, bool]:
        """A message on ``subject``: core subscribers get it, and the stream capturing it
        stores it (unless ``Nats-Msg-Id`` makes it a duplicate).

        Returns:
            (stream or None, sequence, duplicate).

        Raises:
            NoStreamForSubject: ``acked`` (a JetStream publish) and no stream captures it.
        """
        for subscriber in tuple(self.subscribers):
            if nats_subjects.matches(subscriber.pattern, subject):
                subscriber.deliver(subject, data, dict(headers))
        stream = next((s for s in self.streams.values() if s.captures(subject)), None)
        if stream is None:
            if acked:
                raise NoStreamForSubject(
                    f"no stream captures subject {subject!r} (nothing would store it)"
                )
            return None, 0, False
        now = self.world.now()
        window = float(stream.config["duplicate_window"])
        msg_id = headers.get(MSG_ID_HEADER)
        if msg_id is not None:
            for key in [k for k, (_, at) in stream.dedup.items() if now - at >= window]:
                del stream.dedup[key]
            known = stream.dedup.get(msg_id)
            if known is not None:
                return stream, known[0], True
        stream.last_sequence += 1
        sequence = stream.last_sequence
        if msg_id is not None:
            stream.dedup[msg_id] = (sequence, now)
        if stream.retention == "interest" and not any(
            c.wants(subject) for c in stream.consumers.values()
        ):
            return stream, sequence, False  # nobody is interested: nothing is kept
        message = _Stored(sequence, subject, bytes(data), dict(headers), now)
        stream.messages[sequence] = message
        stream.by_subject.setdefault(subject, deque()).append(sequence)
        stream.bytes += message.size
        self._enforce_limits(stream)
        for consumer in stream.consumers.values():
            if consumer.wants(subject):
                consumer.notify()
        return stream, sequence, False

    # --- consumers ----------------------------------------------------------------------

    def add_consumer(
        self,
        stream_name: str,
        name: str,
        *,
        filter_subject: str | None,
        ack_wait: float,
        max_deliver: int,
        deliver_policy: str,
        start_sequence: int | None,
        start_time: float | None,
    ) -> _Consumer:
        """Create a durable consumer, or bind to (and update) an existing one."""
        operation = "add consumer"
        target = f"{stream_name}/{name}"
        stream = self.stream(stream_name, operation)
        if filter_subject is not None and not nats_subjects.valid_filter(filter_subject):
            raise _refused(operation, target, "consumer filter subject is not valid", 10093)
        existing = stream.consumers.get(name)
        if existing is not None:
            if existing.deliver_policy != deliver_policy:
                raise _refused(operation, target, "deliver policy can not be updated", 10012)
            existing.ack_wait = ack_wait
            existing.max_deliver = max_deliver
            existing.filter_subject = filter_subject
            return existing
        if stream.retention == "workqueue":
            if deliver_policy != "all":
                raise _refused(
                    operation, target, "consumer must be deliver all on workqueue stream", 10101
                )
            for other in stream.consumers.values():
                if filter_subject is None and other.filter_subject is None:
                    raise _refused(
                        operation,
                        target,
                        "multiple non-filtered consumers not allowed on workqueue stream",
                        10099,
                    )
                if (
                    filter_subject is None
                    or other.filter_subject is None
                    or nats_subjects.overlap(filter_subject, other.filter_subject)
                ):
                    raise _refused(
                        operation, target, "filtered consumer not unique on workqueue stream", 10100
                    )
        start = self._start_sequence(
            stream, filter_subject, deliver_policy, start_sequence, start_time
        )
        consumer = _Consumer(
            stream,
            name,
            filter_subject=filter_subject,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            deliver_policy=deliver_policy,
            start_sequence=start,
        )
        stream.consumers[name] = consumer
        return consumer

    def consumer(self, stream_name: str, name: str, operation: str) -> _Consumer:
        stream = self.stream(stream_name, operation)
        consumer = stream.consumers.get(name)
        if consumer is None:
            raise _refused(operation, f"{stream_name}/{name}", "consumer not found", 10014)
        return consumer

    def delete_consumer(self, stream_name: str, name: str) -> None:
        consumer = self.consumer(stream_name, name, "delete consumer")
        self._drop_consumer(consumer)
        stream = consumer.stream
        if stream.retention != "limits":
            for sequence in list(stream.messages):
                self._release_if_done(stream, sequence)

    def pull(self, consumer: _Consumer, batch: int) -> list[_Handout]:
        """Hand out up to ``batch`` messages now: redeliveries first, then new ones."""
        handouts: list[_Handout] = []
        while len(handouts) < batch and consumer.alive:
            handout = self._next_for(consumer)
            if handout is None:
                break
            handouts.append(handout)
        return handouts

    def ack(self, consumer: _Consumer, sequence: int, *, terminate: bool = False) -> bool:
        """Ack (or term) ``sequence``; False when it was not pending (a late or repeated
        ack, which the server ignores)."""
        pending = consumer.pending.pop(sequence, None)
        if pending is None:
            return False
        if pending.timer is not None:
            pending.timer.cancel()
        if not consumer.pending:
            consumer.ack_floor_consumer = consumer.consumer_sequence
            consumer.ack_floor_stream = consumer.next_sequence - 1
        elif (
            sequence == consumer.ack_floor_stream + 1
            or pending.consumer_sequence == consumer.ack_floor_consumer + 1
        ):
            lowest = min(consumer.pending)
            consumer.ack_floor_consumer = consumer.pending[lowest].consumer_sequence - 1
            consumer.ack_floor_stream = lowest - 1
        consumer.redelivery_counts.pop(sequence, None)
        if sequence in consumer.redelivery_queue:
            consumer.redelivery_queue.remove(sequence)
        self._release_if_done(consumer.stream, sequence)
        return True

    def nak(self, consumer: _Consumer, sequence: int, delay: float | None) -> None:
        pending = consumer.pending.get(sequence)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if delay is not None and delay > 0:
            pending.deadline = self.world.now() + delay
            pending.timer = asyncio.get_running_loop().call_at(
                pending.deadline, self._ack_wait_expired, consumer, sequence, pending
            )
        else:
            consumer.queue_redelivery(sequence)

    def in_progress(self, consumer: _Consumer, sequence: int) -> None:
        pending = consumer.pending.get(sequence)
        if pending is None:
            return
        self._start_ack_wait(consumer, sequence, pending)

    def consumer_info(self, consumer: _Consumer) -> ConsumerInfo:
        stream = consumer.stream
        start = max(consumer.next_sequence, stream.first_sequence)
        num_pending = sum(
            1
            for sequence, message in stream.messages.items()
            if sequence >= start and consumer.wants(message.subject)
        )
        return ConsumerInfo(
            stream=stream.name,
            name=consumer.name,
            ack_floor=consumer.ack_floor_stream,
            delivered=consumer.delivered_stream_sequence,
            num_pending=num_pending,
            num_ack_pending=len(consumer.pending),
            num_redelivered=len(consumer.redelivery_counts),
            ack_wait_seconds=consumer.ack_wait,
            max_deliver=consumer.max_deliver,
            filter_subject=consumer.filter_subject,
            deliver_policy=consumer.deliver_policy,
        )

    # --- core ---------------------------------------------------------------------------

    def subscribe(self, subscriber: _CoreSubscriber) -> None:
        self.subscribers.append(subscriber)

    def unsubscribe(self, subscriber: _CoreSubscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)

    def snapshot(self, prefix: str) -> NatsSnapshot:
        streams = [s for name, s in sorted(self.streams.items()) if name.startswith(prefix)]
        return NatsSnapshot(
            streams=tuple(s.info() for s in streams),
            consumers=tuple(
                self.consumer_info(c)
                for s in streams
                for c in sorted(s.consumers.values(), key=lambda c: c.name)
            ),
        )

    # --- internals ----------------------------------------------------------------------

    @staticmethod
    def _start_sequence(
        stream: _Stream,
        filter_subject: str | None,
        policy: str,
        start_sequence: int | None,
        start_time: float | None,
    ) -> int:
        """Where a new consumer starts (the server's initial ``o.sseq``)."""
        first, last = stream.first_sequence, stream.last_sequence
        if policy == "new":
            return last + 1
        if policy == "last":
            for sequence in reversed(stream.messages):
                subject = stream.messages[sequence].subject
                if filter_subject is None or nats_subjects.matches(filter_subject, subject):
                    return sequence
            return last + 1
        if policy == "by_start_sequence":
            return max(start_sequence or 1, first)
        if policy == "by_start_time":
            for sequence, message in stream.messages.items():
                if message.time >= (start_time or 0.0) - _EPSILON:
                    return sequence
            return last + 1
        return first

    def _next_for(self, consumer: _Consumer) -> _Handout | None:
        stream = consumer.stream
        while consumer.redelivery_queue:
            sequence = consumer.redelivery_queue.pop(0)
            pending = consumer.pending.get(sequence)
            if pending is None:
                continue  # acked meanwhile
            message = stream.messages.get(sequence)
            if message is None:  # gone from the stream (limits): nothing to redeliver
                self._forget_pending(consumer, sequence)
                continue
            delivered = consumer.redelivery_counts.get(sequence, 1)
            if consumer.max_deliver > 0 and delivered >= consumer.max_deliver:
                self._give_up(consumer, sequence, message, delivered)
                continue
            consumer.redelivery_counts[sequence] = delivered + 1
            return self._hand_out(consumer, message, delivered + 1)
        if len(consumer.pending) >= MAX_ACK_PENDING:
            return None  # the server stops handing out new messages until some are acked
        start = max(consumer.next_sequence, stream.first_sequence)
        for sequence in range(start, stream.last_sequence + 1):
            consumer.next_sequence = sequence + 1
            message = stream.messages.get(sequence)
            if message is None or not consumer.wants(message.subject):
                continue
            consumer.delivered_stream_sequence = sequence
            return self._hand_out(consumer, message, 1)
        return None

    def _hand_out(self, consumer: _Consumer, message: _Stored, delivered: int) -> _Handout:
        consumer.consumer_sequence += 1
        pending = consumer.pending.get(message.sequence)
        if pending is None:
            pending = _Pending(consumer.consumer_sequence, 0.0)
            consumer.pending[message.sequence] = pending
        pending.consumer_sequence = consumer.consumer_sequence
        self._start_ack_wait(consumer, message.sequence, pending)
        return _Handout(
            message=message,
            stream=consumer.stream.name,
            consumer=consumer.name,
            consumer_sequence=consumer.consumer_sequence,
            num_delivered=delivered,
        )

    def _start_ack_wait(self, consumer: _Consumer, sequence: int, pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        pending.deadline = self.world.now() + consumer.ack_wait
        pending.timer = asyncio.get_running_loop().call_at(
            pending.deadline, self._ack_wait_expired, consumer, sequence, pending
        )

    def _ack_wait_expired(self, consumer: _Consumer, sequence: int, pending: _Pending) -> None:
        if consumer.pending.get(sequence) is not pending or not consumer.alive:
            return
        pending.timer = None
        consumer.queue_redelivery(sequence)

    def _give_up(
        self, consumer: _Consumer, sequence: int, message: _Stored, delivered: int
    ) -> None:
        """max_deliver reached: the message leaves the consumer's pending set for good and
        the server publishes its advisory (the message stays in the stream)."""
        self._forget_pending(consumer, sequence)
        stream = consumer.stream
        self._emit(
            DeadLettered(
                at=self.world.now(),
                broker=SOURCE,
                source=stream.name,
                target=f"{MAX_DELIVERIES_ADVISORY}.{stream.name}.{consumer.name}",
                message_id=message.message_id or f"{stream.name}#{sequence}",
                reason=(
                    f"consumer {consumer.name} reached max_deliver after {delivered} "
                    f"deliveries (stream sequence {sequence})"
                ),
            )
        )

    @staticmethod
    def _forget_pending(consumer: _Consumer, sequence: int) -> None:
        pending = consumer.pending.pop(sequence, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()

    def _drop_consumer(self, consumer: _Consumer) -> None:
        consumer.alive = False
        for pending in consumer.pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        consumer.stream.consumers.pop(consumer.name, None)
        consumer.notify()

    def _release_if_done(self, stream: _Stream, sequence: int) -> None:
        """Interest / workqueue retention: drop a message every interested consumer is done
        with."""
        if stream.retention == "limits":
            return
        message = stream.messages.get(sequence)
        if message is None:
            return
        interested = [c for c in stream.consumers.values() if c.wants(message.subject)]
        if stream.retention == "workqueue" and not interested:
            return  # a work queue keeps its work until a consumer takes it
        if all(c.has_acked(sequence) for c in interested):
            self._remove(stream, sequence)

    def _remove(self, stream: _Stream, sequence: int) -> _Stored | None:
        message = stream.messages.pop(sequence, None)
        if message is None:
            return None
        stream.bytes -= message.size
        sequences = stream.by_subject.get(message.subject)
        if sequences is not None:
            with contextlib.suppress(ValueError):
                sequences.remove(sequence)
            if not sequences:
                del stream.by_subject[message.subject]
        return message

    def _enforce_limits(self, stream: _Stream) -> None:
        per_subject = int(stream.config["max_msgs_per_subject"])
        if per_subject > 0:
            for subject in list(stream.by_subject):
                sequences = stream.by_subject.get(subject)
                while sequences and len(sequences) > per_subject:
                    self._remove(stream, sequences[0])
                    sequences = stream.by_subject.get(subject)
        max_msgs = int(stream.config["max_msgs"])
        if max_msgs > 0:
            while len(stream.messages) > max_msgs:
                self._remove(stream, stream.first_sequence)
        self._expire_old(stream)

    def _expire_old(self, stream: _Stream) -> None:
        if stream.age_timer is not None:
            stream.age_timer.cancel()
            stream.age_timer = None
        max_age = float(stream.config["max_age"])
        if max_age <= 0 or not stream.alive:
            return
        now = self.world.now()
        while stream.messages:
            oldest = stream.messages[stream.first_sequence]
            if oldest.time + max_age > now + _EPSILON:
                stream.age_timer = asyncio.get_running_loop().call_at(
                    oldest.time + max_age, self._expire_old, stream
                )
                return
            self._remove(stream, oldest.sequence)
            self._emit(
                Expired(
                    at=now,
                    broker=SOURCE,
                    destination=stream.name,
                    message_id=oldest.message_id or f"{stream.name}#{oldest.sequence}",
                )
            )

    def _on_node_change(self, change: NodeChange) -> None:
        if change.node != NODE or change.state is not NodeState.UP:
            return
        # Back up (restart or resume): waiting fetches look again.
        for stream in self.streams.values():
            for consumer in stream.consumers.values():
                consumer.notify()


# --- messages, consumers, subscriptions -----------------------------------------------------


class _SimJsMessage(JsMessage):
    """A fetched JetStream message; settling it emits Acked / Nacked."""

    def __init__(self, broker: SimNatsBroker, consumer: _Consumer, handout: _Handout) -> None:
        message = handout.message
        self._broker = broker
        self._consumer = consumer
        self._settled = False
        self.subject = message.subject
        self.stream = handout.stream
        self.stream_sequence = message.sequence
        self.consumer_sequence = handout.consumer_sequence
        self.num_delivered = handout.num_delivered
        self.data = message.data
        self.headers = dict(message.headers)

    def _claim(self, operation: str) -> None:
        # nats-py refuses a second ack/nak/term of one delivery before asking the server.
        if self._settled:
            raise JetStreamError(f"{operation}: the message was already acknowledged")

    async def ack(self) -> None:
        """Acknowledge and wait for the server to confirm it."""
        self._claim("ack")
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "ack",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.ack(consumer, self.stream_sequence),
        )
        self._settled = True
        self._broker._emit_settled(self, Acked, consumer.name)

    async def nak(self, delay: float | None = None) -> None:
        """Negative ack: JetStream redelivers (after ``delay`` seconds when given)."""
        self._claim("nak")
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "nak",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.nak(consumer, self.stream_sequence, delay),
        )
        self._settled = True
        self._broker._emit_settled(self, Nacked, consumer.name, requeue=True)

    async def term(self) -> None:
        """Terminate: this consumer will never get the message again."""
        self._claim("term")
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "term",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.ack(consumer, self.stream_sequence, terminate=True),
        )
        self._settled = True
        self._broker._emit_settled(self, Nacked, consumer.name, requeue=False)

    async def in_progress(self) -> None:
        """Still working: restart the ack-wait timer."""
        server, consumer = self._broker._require_server(), self._consumer
        await self._broker._request(
            "in_progress",
            f"{self.stream}#{self.stream_sequence}",
            lambda: server.in_progress(consumer, self.stream_sequence),
        )


class _SimPullConsumer(NatsPullConsumer):
    """A durable pull consumer bound to its stream."""

    def __init__(self, broker: SimNatsBroker, stream: str, name: str) -> None:
        self.broker = broker
        self.stream = stream
        self.name = name
        self._closed = False

    async def fetch(self, batch: int = 1, timeout: float = 1.0) -> list[JsMessage]:
        """Up to ``batch`` messages; ``[]`` when none arrive within ``timeout``.

        Returns as soon as at least one message is there (with whatever else is ready).

        Raises:
            BrokerUnavailable: the connection is down (rather than "no messages").
            JetStreamError: the consumer or its stream was deleted.
        """
        if self._closed:
            raise JetStreamError(f"consumer {self.name} on {self.stream} is closed")
        if batch < 1:
            raise JetStreamError("fetch: batch must be at least 1")
        broker = self.broker
        server = broker._require_server()
        await broker._await_link("fetch")
        world = broker.world

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)

        async def pull() -> list[tuple[_Consumer, _Handout]]:
            # The pull request: it expires at the deadline, so a server that only reads it
            # later (paused meanwhile) hands out nothing.
            await world.transmit(NODE, "upstream")
            while True:
                state = world.state(NODE)
                if state is NodeState.DOWN:
                    raise NodeUnreachable(NODE, "connection reset by peer")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                if state is NodeState.PAUSED:  # a stopped server hands nothing out
                    await first_of(remaining, world.next_change(NODE))
                    continue
                consumer = server.consumer(self.stream, self.name, "fetch")
                handouts = server.pull(consumer, batch)
                if handouts:
                    return [(consumer, handout) for handout in handouts]
                await first_of(remaining, consumer.changed(), world.next_change(NODE))

        try:
            async with asyncio.timeout(max(timeout, 0.0) + _EPSILON):
                pulled = await outlive_caller(world, pull(), f"nats fetch {self.name}")
                if pulled:
                    size = sum(len(handout.message.data) for _, handout in pulled)
                    await world.transmit(NODE, "downstream", size)
        except TimeoutError:
            if not broker._link_up:
                raise BrokerUnavailable(
                    broker.system, broker.address, "connection lost during fetch"
                ) from None
            return []  # the connection is fine: simply nothing to deliver in time
        except NodeUnreachable as error:
            broker._lose_link(error.reason)
            raise BrokerUnavailable(
                broker.system, broker.address, f"fetch failed: {error.reason}"
            ) from None
        messages: list[JsMessage] = []
        for consumer, handout in pulled:
            message = _SimJsMessage(broker, consumer, handout)
            messages.append(message)
            broker.emit(
                Delivered(
                    at=world.now(),
                    broker=broker.name,
                    destination=message.subject,
                    message_id=message.message_id,
                    consumer=self.name,
                    position=message.stream_sequence,
                    delivery_count=message.num_delivered,
                    redelivered=message.num_delivered > 1,
                )
            )
        return messages

    async def close(self) -> None:
        """Stop fetching; the durable consumer stays on the server."""
        if self._closed:
            return
        self._closed = True
        if self in self.broker._pull_consumers:
            self.broker._pull_consumers.remove(self)


class _SimSubscription(NatsSubscription):
    """A core NATS subscription read with :meth:`next` (at-most-once)."""

    def __init__(self, broker: SimNatsBroker, subject: str) -> None:
        self._broker = broker
        self.subject = subject
        self._buffer: deque[tuple[str, bytes, dict[str, str]]] = deque()
        self._arrived = asyncio.Event()
        self._closed = False
        self._subscriber = _CoreSubscriber(subject, self._deliver)

    def _deliver(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        # Core NATS: a client that is disconnected right now simply misses the message.
        if self._closed or not self._broker._link_up:
            return
        self._buffer.append((subject, data, headers))
        self._arrived.set()

    async def next(self, timeout: float = 1.0) -> tuple[str, bytes] | None:
        """The next message, or None when nothing arrives within ``timeout``."""
        if self._closed:
            raise BrokerError(f"subscription to {self.subject} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while not self._buffer:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await within(remaining, self._arrived.wait())
            except TimeoutError:
                return None
        subject, data, headers = self._buffer.popleft()
        broker = self._broker
        broker.emit(
            Delivered(
                at=broker.world.now(),
                broker=broker.name,
                destination=subject,
                message_id=headers.get(MESSAGE_ID_HEADER) or f"{subject}@core",
                consumer=f"core:{self.subject}",
            )
        )
        return subject, data

    async def close(self) -> None:
        """Unsubscribe (messages published afterwards are simply not delivered here)."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        server = self._broker._server
        if server is not None:
            server.unsubscribe(self._subscriber)
        if self in self._broker._subscriptions:
            self._broker._subscriptions.remove(self)


# --- the adapter ------------------------------------------------------------------------------


class SimNatsBroker(NatsAPI):
    """The simulator's NATS JetStream adapter: the real adapter's interface and behaviour over
    the world's shared :class:`SimNatsServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        bus, namespace, endpoints, connect_timeout: see :class:`mqlab.brokers.base.Broker`.
        request_timeout: seconds a JetStream request may take (defaults to ``connect_timeout``).
    """

    backend = "sim"

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float | None = None,
    ) -> None:
        if world is not None and bus is not None and bus is not world.bus:
            raise BrokerError("a simulated adapter emits on its world's bus: pass one of them")
        self._owns_world = world is None
        self.world = world if world is not None else SimWorld(bus=bus)
        super().__init__(
            bus=self.world.bus,
            namespace=namespace or self.world.new_namespace(),
            endpoints=endpoints,
            connect_timeout=connect_timeout,
        )
        self.request_timeout = connect_timeout if request_timeout is None else request_timeout
        self.address = f"{SIM_ADDRESS} ({NODE})"
        self._server: SimNatsServer | None = None
        self._message_counter = itertools.count(1)
        self._pull_consumers: list[_SimPullConsumer] = []
        self._subscriptions: list[_SimSubscription] = []
        self._link_up = False
        self._link_ready = asyncio.Event()  # set while the client is connected
        self._closing = False
        self._monitor: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def _connect(self) -> None:
        world = self.world
        server = world.model("nats", lambda: SimNatsServer(world))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        # A refused port is tried again every quarter second until connect_timeout (a lab
        # still starting, a short cut), as the real adapter does.
        while (refused := connection_refused(world, NODE)) is not None:
            if loop.time() + _RETRY_INTERVAL > deadline:
                raise BrokerUnavailable(self.system, self.address, refused)
            await asyncio.sleep(_RETRY_INTERVAL)
        try:
            await within(max(0.5, deadline - loop.time()), self._handshake())
        except TimeoutError:
            raise BrokerUnavailable(self.system, self.address, "no answer") from None
        except NodeUnreachable as error:
            raise BrokerUnavailable(self.system, self.address, error.reason) from None
        self._closing = False
        self._server = server
        self._link_up = True
        self._link_ready.set()
        self._monitor = world.spawn(self._watch_link(), name=f"nats link {self.namespace}")

    async def _handshake(self) -> None:
        await self.world.transmit(NODE, "upstream")
        await self.world.transmit(NODE, "downstream")

    async def _close(self) -> None:
        self._closing = True
        for consumer in list(self._pull_consumers):
            await consumer.close()
        for subscription in list(self._subscriptions):
            await subscription.close()
        for task in (self._monitor, self._reconnector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._monitor = self._reconnector = None
        self._server = None
        self._link_up = False
        self._link_ready.clear()
        if self._owns_world:
            await self.world.aclose()

    async def cleanup(self) -> None:
        """Delete every stream (with its consumers) of this namespace."""
        if self._server is None:
            return
        server = self._server
        prefix = f"{self.namespace}-"
        for name in [n for n in server.streams if n.startswith(prefix)]:
            await self.delete_stream(name)

    # --- connection events --------------------------------------------------------------

    async def _watch_link(self) -> None:
        """React like nats-py: a refused/reset connection drops at once, a silent one after
        the outstanding pings run out."""
        world = self.world
        silent_after = _PING_INTERVAL * (_MAX_OUTSTANDING_PINGS + 1)
        while not self._closing:
            refused = connection_refused(world, NODE)
            if refused is not None:
                self._lose_link(refused)
            elif self._link_up and connection_silent(world, NODE):
                try:
                    await within(silent_after, world.next_change(NODE))
                except TimeoutError:
                    self._lose_link("stale connection (no PONG)")
                continue
            await world.next_change(NODE)

    def _lose_link(self, reason: str) -> None:
        if not self._link_up or self._closing:
            return
        self._link_up = False
        self._link_ready.clear()
        self.emit(
            BrokerDown(
                at=self.world.now(),
                broker=self.name,
                node=NODE,
                detail=f"connection to {self.address} lost ({reason})",
            )
        )
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = self.world.spawn(
                self._reconnect(), name=f"nats reconnect {self.namespace}"
            )

    async def _reconnect(self) -> None:
        world = self.world
        while not self._closing:
            await asyncio.sleep(_RECONNECT_WAIT)
            if connection_refused(world, NODE) is not None or connection_silent(world, NODE):
                continue
            try:
                await within(self.connect_timeout, self._handshake())
            except (TimeoutError, NodeUnreachable):
                continue
            self._link_up = True
            self._link_ready.set()
            self.emit(
                BrokerUp(
                    at=world.now(),
                    broker=self.name,
                    node=NODE,
                    detail=f"reconnected to {self.address}",
                )
            )
            return

    # --- streams ------------------------------------------------------------------------

    async def add_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        retention: Retention = "limits",
        max_msgs: int = -1,
        max_age: float = 0.0,
        duplicate_window: float = 120.0,
        max_msgs_per_subject: int = -1,
    ) -> StreamInfo:
        """Create the stream, or update it when it exists with other settings.

        Raises:
            JetStreamError: a bad name or setting, or subjects that overlap another stream.
        """
        stream = self._stream_name(name)
        if retention not in ("limits", "interest", "workqueue"):
            raise JetStreamError(f"add stream {stream}: unknown retention {retention!r}")
        if not subjects:
            raise JetStreamError(f"add stream {stream}: a stream needs at least one subject")
        config = _StreamConfig(
            subjects=tuple(self._subject(subject) for subject in subjects),
            retention=retention,
            max_msgs=max_msgs,
            max_age=max_age,
            duplicate_window=duplicate_window,
            max_msgs_per_subject=max_msgs_per_subject,
        )
        server = self._require_server()
        created = await self._request(
            "add stream", stream, lambda: server.add_stream(stream, config)
        )
        return created.info()

    async def delete_stream(self, name: str) -> None:
        """Delete the stream and its consumers; a stream that is already gone is fine."""
        stream = self._stream_name(name)
        server = self._require_server()

        def delete() -> None:
            if stream in server.streams:
                server.delete_stream(stream)

        await self._request("delete stream", stream, delete)

    async def stream_info(self, name: str) -> StreamInfo:
        """A stream's subjects, limits and state, fresh from the server."""
        stream = self._stream_name(name)
        server = self._require_server()
        return await self._request(
            "stream info", stream, lambda: server.stream(stream, "stream info").info()
        )

    # --- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> PubAck:
        """JetStream publish, waiting for the stream's PubAck.

        Raises:
            NoStreamForSubject: no stream captures ``subject``.
            OperationTimedOut: the PubAck did not come within ``request_timeout``.
        """
        target = self._subject(subject)
        mqlab_id = message_id or self._new_message_id()
        all_headers = {**(headers or {}), MESSAGE_ID_HEADER: mqlab_id}
        if msg_id is not None:
            all_headers[MSG_ID_HEADER] = msg_id
        try:
            if not nats_subjects.valid_subject(target):
                raise JetStreamError(f"publish {target}: invalid subject")
            server = self._require_server()
            stream, sequence, duplicate = await self._request(
                "publish",
                target,
                lambda: server.publish(target, data, all_headers, acked=True),
                nbytes=len(data),
            )
        except BrokerError as error:
            self.emit(
                ProduceFailed(
                    at=self.world.now(),
                    broker=self.name,
                    destination=target,
                    message_id=mqlab_id,
                    error=str(error),
                )
            )
            raise
        assert stream is not None  # an acked publish raises when no stream captures it
        result = PubAck(stream=stream.name, sequence=sequence, duplicate=duplicate)
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=target,
                message_id=mqlab_id,
                position=result.sequence,
                duplicate=result.duplicate,
            )
        )
        return result

    async def publish_core(self, subject: str, data: bytes) -> None:
        """Core NATS publish: no ack; only current subscribers see it (a stream capturing the
        subject stores it too, as nats-server does)."""
        target = self._subject(subject)
        if not nats_subjects.valid_subject(target):
            raise JetStreamError(f"publish {target}: invalid subject")
        mqlab_id = self._new_message_id()
        server = self._require_server()
        await self._request(
            "publish",
            target,
            lambda: server.publish(target, data, {MESSAGE_ID_HEADER: mqlab_id}, acked=False),
            nbytes=len(data),
        )
        self.emit(
            Produced(
                at=self.world.now(),
                broker=self.name,
                destination=target,
                message_id=mqlab_id,
            )
        )

    # --- consumers ----------------------------------------------------------------------

    async def pull_consumer(
        self,
        stream: str,
        durable: str,
        *,
        filter_subject: str | None = None,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        deliver_policy: DeliverPolicy = "all",
        start_sequence: int | None = None,
        start_time: float | None = None,
    ) -> NatsPullConsumer:
        """Create (or bind to) a durable pull consumer with explicit acks.

        Raises:
            JetStreamError: a missing start position for ``by_start_sequence`` /
                ``by_start_time``, an unknown stream, or a durable that exists with another
                deliver policy.
        """
        stream_name = self._stream_name(stream)
        check_name("consumer", durable)
        check_start_position(deliver_policy, start_sequence, start_time)
        if ack_wait <= 0:
            raise JetStreamError(f"add consumer {stream_name}/{durable}: ack_wait must be > 0")
        full_filter = self._subject(filter_subject) if filter_subject else None
        server = self._require_server()
        await self._request(
            "add consumer",
            f"{stream_name}/{durable}",
            lambda: server.add_consumer(
                stream_name,
                durable,
                filter_subject=full_filter,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
                deliver_policy=deliver_policy,
                start_sequence=start_sequence if deliver_policy == "by_start_sequence" else None,
                start_time=start_time if deliver_policy == "by_start_time" else None,
            ),
        )
        consumer = _SimPullConsumer(self, stream_name, durable)
        self._pull_consumers.append(consumer)
        return consumer

    async def consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        """A consumer's ack floor and pending / redelivered counts, fresh from the server."""
        stream_name = self._stream_name(stream)
        server = self._require_server()
        return await self._request(
            "consumer info",
            f"{stream_name}/{durable}",
            lambda: server.consumer_info(server.consumer(stream_name, durable, "consumer info")),
        )

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer; one that is already gone is fine."""
        stream_name = self._stream_name(stream)
        server = self._require_server()

        def delete() -> None:
            existing = server.streams.get(stream_name)
            if existing is not None and durable in existing.consumers:
                server.delete_consumer(stream_name, durable)

        await self._request("delete consumer", f"{stream_name}/{durable}", delete)

    async def subscribe(self, subject: str) -> NatsSubscription:
        """A core NATS subscription (at-most-once; ``*`` and ``>`` wildcards)."""
        target = self._subject(subject)
        if not nats_subjects.valid_filter(target):
            raise JetStreamError(f"subscribe {target}: invalid subject")
        server = self._require_server()
        subscription = _SimSubscription(self, target)
        await self._request("subscribe", target, lambda: server.subscribe(subscription._subscriber))
        self._subscriptions.append(subscription)
        return subscription

    # --- inspection ---------------------------------------------------------------------

    async def inspect(self) -> NatsSnapshot:
        """Every stream of the namespace and every consumer on them."""
        server = self._require_server()
        prefix = f"{self.namespace}-"
        return await self._request("stream list", prefix, lambda: server.snapshot(prefix))

    # --- plumbing -----------------------------------------------------------------------

    def _require_server(self) -> SimNatsServer:
        if self._server is None:
            raise BrokerError("the nats adapter is not connected (use: async with broker)")
        return self._server

    async def _await_link(self, operation: str) -> None:
        """Wait up to ``request_timeout`` for a reconnect while the connection is down (so a
        short cut delays an ack instead of losing it), as the real adapter does.

        Raises:
            BrokerUnavailable: still disconnected when the time is up.
        """
        if self._link_up:
            return
        with contextlib.suppress(TimeoutError):
            await within(self.request_timeout, self._link_ready.wait())
        if not self._link_up:
            raise BrokerUnavailable(
                self.system, self.address, f"connection lost, reconnecting ({operation})"
            )

    def _stream_name(self, name: str) -> str:
        """Streams are ``<namespace>-<name>``; an already namespaced name is kept."""
        stream = name if name.startswith(f"{self.namespace}-") else self.qualify(name)
        check_name("stream", stream)
        return stream

    def _subject(self, subject: str) -> str:
        """Subjects are ``<namespace>.<subject>``; an already namespaced subject is kept."""
        return subject if subject.startswith(f"{self.namespace}.") else self.subject(subject)

    def _new_message_id(self) -> str:
        return f"{self.namespace}-{next(self._message_counter):06d}"

    async def _request(
        self, operation: str, target: str, action: Callable[[], _T], *, nbytes: int = 0
    ) -> _T:
        async def run() -> _T:
            return action()

        return await self._request_async(operation, target, run, nbytes=nbytes)

    async def _request_async(
        self,
        operation: str,
        target: str,
        action: Callable[[], Awaitable[_T]],
        *,
        nbytes: int = 0,
    ) -> _T:
        """One request over the simulated network: refused at once while disconnected,
        bounded by ``request_timeout``."""
        self._require_server()
        await self._await_link(operation)
        world = self.world

        async def request() -> _T:
            await world.transmit(NODE, "upstream", nbytes)
            return await action()

        if world.clear_path(NODE):
            return await action()  # nothing on the way: the round trip takes no virtual time
        try:
            async with asyncio.timeout(self.request_timeout):
                # A request the client stops waiting for still reaches the server (a paused
                # one acts on it when resumed): a timed-out publish may well be stored.
                result = await outlive_caller(world, request(), f"nats {operation}")
                await world.transmit(NODE, "downstream")
                return result
        except TimeoutError:
            if not self._link_up:
                raise BrokerUnavailable(
                    self.system, self.address, f"connection lost during {operation}"
                ) from None
            raise OperationTimedOut(
                f"nats did not answer {operation} on {target} within "
                f"{self.request_timeout:g} s at {self.address}"
            ) from None
        except NodeUnreachable as error:
            self._lose_link(error.reason)
            raise BrokerUnavailable(
                self.system, self.address, f"{operation} failed: {error.reason}"
            ) from None

    def _emit_settled(
        self,
        message: _SimJsMessage,
        kind: type[Acked] | type[Nacked],
        consumer: str,
        *,
        requeue: bool = True,
    ) -> None:
        now = self.world.now()
        if kind is Acked:
            self.emit(
                Acked(
                    at=now,
                    broker=self.name,
                    destination=message.subject,
                    message_id=message.message_id,
                    consumer=consumer,
                )
            )
        else:
            self.emit(
                Nacked(
                    at=now,
                    broker=self.name,
                    destination=message.subject,
                    message_id=message.message_id,
                    consumer=consumer,
                    requeue=requeue,
                )
            )
