"""The simulator's NATS JetStream: subjects, streams, pull consumers and sequences on virtual time.

Layout (the same in every simulated system): this module is the server model
(:class:`SimNatsServer`), its data is in :mod:`~mqlab.brokers.sim.nats.streams` and subject
matching in :mod:`~mqlab.brokers.sim.nats.subjects`; the simulated adapter,
:class:`~mqlab.brokers.sim.nats.client.SimNatsBroker`, is in :mod:`~mqlab.brokers.sim.nats.client`
and its consumers in :mod:`~mqlab.brokers.sim.nats.consumer`.

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
from collections import deque
from typing import TypeVar

from mqlab.brokers.nats.api import (
    MAX_DELIVERIES_ADVISORY,
    MSG_ID_HEADER,
    ConsumerInfo,
    NatsSnapshot,
    NoStreamForSubject,
    PullConsumerConfig,
    StreamConfig,
)
from mqlab.brokers.sim.clock import TIMER_SLACK
from mqlab.brokers.sim.nats import subjects as nats_subjects
from mqlab.brokers.sim.nats.streams import (
    Consumer,
    CoreSubscriber,
    Handout,
    Pending,
    Stored,
    Stream,
    refused,
)
from mqlab.brokers.sim.world import NodeChange, NodeState, SimServer, SimWorld
from mqlab.observe.events import (
    DeadLettered,
    Expired,
)

_T = TypeVar("_T")

NODE = "nats"
"""The simulated node (the lab's process name) that faults target."""

SOURCE = "sim:nats"
"""``broker`` field of the observations the server itself emits (advisories, expiry)."""


MAX_ACK_PENDING = 1000
"""nats-server's default max_ack_pending for a consumer that sets none (the adapters do not)."""
DEFAULT_DUPLICATE_WINDOW = 120.0
"""nats-server's duplicate window when a stream asks for none."""


class SimNatsServer(SimServer):
    """One nats-server with JetStream in a simulated world, shared by its adapters."""

    model_key = "nats"

    def __init__(self, world: SimWorld) -> None:
        super().__init__(world)
        self.streams: dict[str, Stream] = {}
        self.subscribers: list[CoreSubscriber] = []

    # --- streams ------------------------------------------------------------------------

    def add_stream(self, name: str, config: StreamConfig) -> Stream:
        """Create the stream, or update it when it exists with other settings."""
        operation = "add stream"
        for subject in config.subjects:
            if not nats_subjects.valid_filter(subject):
                raise refused(operation, name, "invalid subject", 10052)
        for index, subject in enumerate(config.subjects):
            for later in config.subjects[index + 1 :]:
                if nats_subjects.overlap(subject, later):
                    raise refused(
                        operation, name, f'subject "{subject}" overlaps with "{later}"', 10052
                    )
        for existing in self.streams.values():
            if existing.name == name:
                continue
            if any(nats_subjects.overlap(a, b) for a in config.subjects for b in existing.subjects):
                raise refused(operation, name, "subjects overlap with an existing stream", 10065)
        if config.max_age > 0 and config.duplicate_window > config.max_age:
            raise refused(
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
            stream = Stream(name, settings)
            self.streams[name] = stream
            return stream
        if stream.config != settings:
            if "workqueue" in (stream.retention, config.retention) and (
                stream.retention != config.retention
            ):
                raise refused(
                    operation,
                    name,
                    "stream configuration update can not change retention policy to/from workqueue",
                    10052,
                )
            stream.config = settings
            self._enforce_limits(stream)
        return stream

    def stream(self, name: str, operation: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            raise refused(operation, name, "stream not found", 10059)
        return stream

    def delete_stream(self, name: str) -> None:
        stream = self.streams.pop(name, None)
        if stream is None:
            raise refused("delete stream", name, "stream not found", 10059)
        stream.alive = False
        if stream.age_timer is not None:
            stream.age_timer.cancel()
        for consumer in list(stream.consumers.values()):
            self._drop_consumer(consumer)

    # --- publishing ---------------------------------------------------------------------

    def publish(
        self, subject: str, data: bytes, headers: dict[str, str], *, acked: bool
    ) -> tuple[Stream | None, int, bool]:
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
        message = Stored(sequence, subject, bytes(data), dict(headers), now)
        stream.messages[sequence] = message
        stream.by_subject.setdefault(subject, deque()).append(sequence)
        stream.bytes += message.size
        self._enforce_limits(stream)
        for consumer in stream.consumers.values():
            if consumer.wants(subject):
                consumer.notify()
        return stream, sequence, False

    # --- consumers ----------------------------------------------------------------------

    def add_consumer(self, stream_name: str, name: str, config: PullConsumerConfig) -> Consumer:
        """Create a durable consumer, or bind to (and update) an existing one, as the
        adapter's ``config`` asks."""
        operation = "add consumer"
        target = f"{stream_name}/{name}"
        filter_subject, deliver_policy = config.filter_subject, config.deliver_policy
        stream = self.stream(stream_name, operation)
        if filter_subject is not None and not nats_subjects.valid_filter(filter_subject):
            raise refused(operation, target, "consumer filter subject is not valid", 10093)
        existing = stream.consumers.get(name)
        if existing is not None:
            if existing.deliver_policy != deliver_policy:
                raise refused(operation, target, "deliver policy can not be updated", 10012)
            existing.ack_wait = config.ack_wait
            existing.max_deliver = config.max_deliver
            existing.filter_subject = filter_subject
            return existing
        if stream.retention == "workqueue":
            if deliver_policy != "all":
                raise refused(
                    operation, target, "consumer must be deliver all on workqueue stream", 10101
                )
            for other in stream.consumers.values():
                if filter_subject is None and other.filter_subject is None:
                    raise refused(
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
                    raise refused(
                        operation, target, "filtered consumer not unique on workqueue stream", 10100
                    )
        start = self._start_sequence(
            stream, filter_subject, deliver_policy, config.start_sequence, config.start_time
        )
        consumer = Consumer(
            stream,
            name,
            filter_subject=filter_subject,
            ack_wait=config.ack_wait,
            max_deliver=config.max_deliver,
            deliver_policy=deliver_policy,
            start_sequence=start,
        )
        stream.consumers[name] = consumer
        return consumer

    def consumer(self, stream_name: str, name: str, operation: str) -> Consumer:
        stream = self.stream(stream_name, operation)
        consumer = stream.consumers.get(name)
        if consumer is None:
            raise refused(operation, f"{stream_name}/{name}", "consumer not found", 10014)
        return consumer

    def delete_consumer(self, stream_name: str, name: str) -> None:
        consumer = self.consumer(stream_name, name, "delete consumer")
        self._drop_consumer(consumer)
        stream = consumer.stream
        if stream.retention != "limits":
            for sequence in list(stream.messages):
                self._release_if_done(stream, sequence)

    def pull(self, consumer: Consumer, batch: int) -> list[Handout]:
        """Hand out up to ``batch`` messages now: redeliveries first, then new ones."""
        handouts: list[Handout] = []
        while len(handouts) < batch and consumer.alive:
            handout = self._next_for(consumer)
            if handout is None:
                break
            handouts.append(handout)
        return handouts

    def ack(self, consumer: Consumer, sequence: int, *, terminate: bool = False) -> bool:
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

    def nak(self, consumer: Consumer, sequence: int, delay: float | None) -> None:
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

    def in_progress(self, consumer: Consumer, sequence: int) -> None:
        pending = consumer.pending.get(sequence)
        if pending is None:
            return
        self._start_ack_wait(consumer, sequence, pending)

    def consumer_info(self, consumer: Consumer) -> ConsumerInfo:
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

    def subscribe(self, subscriber: CoreSubscriber) -> None:
        self.subscribers.append(subscriber)

    def unsubscribe(self, subscriber: CoreSubscriber) -> None:
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
        stream: Stream,
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
                if message.time >= (start_time or 0.0) - TIMER_SLACK:
                    return sequence
            return last + 1
        return first

    def _next_for(self, consumer: Consumer) -> Handout | None:
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

    def _hand_out(self, consumer: Consumer, message: Stored, delivered: int) -> Handout:
        consumer.consumer_sequence += 1
        pending = consumer.pending.get(message.sequence)
        if pending is None:
            pending = Pending(consumer.consumer_sequence, 0.0)
            consumer.pending[message.sequence] = pending
        pending.consumer_sequence = consumer.consumer_sequence
        self._start_ack_wait(consumer, message.sequence, pending)
        return Handout(
            message=message,
            stream=consumer.stream.name,
            consumer=consumer.name,
            consumer_sequence=consumer.consumer_sequence,
            num_delivered=delivered,
        )

    def _start_ack_wait(self, consumer: Consumer, sequence: int, pending: Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        pending.deadline = self.world.now() + consumer.ack_wait
        pending.timer = asyncio.get_running_loop().call_at(
            pending.deadline, self._ack_wait_expired, consumer, sequence, pending
        )

    def _ack_wait_expired(self, consumer: Consumer, sequence: int, pending: Pending) -> None:
        if consumer.pending.get(sequence) is not pending or not consumer.alive:
            return
        pending.timer = None
        consumer.queue_redelivery(sequence)

    def _give_up(self, consumer: Consumer, sequence: int, message: Stored, delivered: int) -> None:
        """max_deliver reached: the message leaves the consumer's pending set for good and
        the server publishes its advisory (the message stays in the stream)."""
        self._forget_pending(consumer, sequence)
        stream = consumer.stream
        self.emit(
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
    def _forget_pending(consumer: Consumer, sequence: int) -> None:
        pending = consumer.pending.pop(sequence, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()

    def _drop_consumer(self, consumer: Consumer) -> None:
        consumer.alive = False
        for pending in consumer.pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        consumer.stream.consumers.pop(consumer.name, None)
        consumer.notify()

    def _release_if_done(self, stream: Stream, sequence: int) -> None:
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

    def _remove(self, stream: Stream, sequence: int) -> Stored | None:
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

    def _enforce_limits(self, stream: Stream) -> None:
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

    def _expire_old(self, stream: Stream) -> None:
        if stream.age_timer is not None:
            stream.age_timer.cancel()
            stream.age_timer = None
        max_age = float(stream.config["max_age"])
        if max_age <= 0 or not stream.alive:
            return
        now = self.world.now()
        while stream.messages:
            oldest = stream.messages[stream.first_sequence]
            if oldest.time + max_age > now + TIMER_SLACK:
                stream.age_timer = asyncio.get_running_loop().call_at(
                    oldest.time + max_age, self._expire_old, stream
                )
                return
            self._remove(stream, oldest.sequence)
            self.emit(
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
