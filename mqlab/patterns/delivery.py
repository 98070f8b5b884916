"""Delivery semantics as Kafka consumer loops, each written out so the crash window shows.

The cheat sheet's table, as code that runs on the lab's Kafka and on ``sim:kafka`` (the loops
use only :mod:`mqlab.brokers.kafka.api`'s consumer and producer):

* :func:`at_most_once`: commit the offset, *then* process. A crash in between loses the
  record: the group has moved past it.
* :func:`at_least_once`: process, *then* commit. A crash in between processes the record
  again after the restart (or the rebalance): a duplicate, never a loss.
* :func:`idempotent_consumer`: at-least-once plus an idempotent apply
  (:func:`apply_in_database`, :func:`apply_with_dedup_store`). The redelivered record is
  recognised and skipped: exactly-once *effect* on an external system.
* :func:`consume_transform_produce`: Kafka transactions. The output records and the input
  offsets (``send_offsets_to_transaction``) commit in one transaction, so a read_committed
  reader downstream sees each input's output once: exactly-once *within Kafka*.
* :func:`offsets_in_database`: no Kafka commits at all. The result and the next offset
  commit in one database transaction, and on assignment the consumer seeks to the offsets
  its database has: exactly-once effect, with the database as the source of truth.

Every loop reports :class:`~mqlab.observe.events.Processed` (``group`` = the consumer group,
``skipped_duplicate`` for a recognised redelivery), so the scenario ledger counts lost,
duplicated and exactly-once records the way it does for the scenario consumers; the adapter
reports deliveries and commits itself.

Crash points (detail: the record's message id): ``after_receive``, ``after_processing``,
``after_offset_commit`` (a Kafka commit), the idempotency helpers' ``after_claim`` /
``before_commit`` / ``after_commit`` (a database commit), and for the transactional loop
``after_send``, ``after_offsets_sent``, ``after_transaction_commit`` (per batch: the detail is
the batch's first message id). A handler that raises
stops the loop with the error; whatever the loop had not committed comes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import (
    KafkaConsumer,
    KafkaProducer,
    KafkaRecord,
    ProducerFenced,
    TopicPartition,
)
from mqlab.observe.events import OffsetRestored, OffsetStored, Processed
from mqlab.patterns.database import BusinessDatabase, Transaction
from mqlab.patterns.harness import CrashHook, Reporter, no_crash
from mqlab.patterns.idempotency import (
    DedupStore,
    Outcome,
    check_process_record,
    process_in_one_transaction,
)

Handler = Callable[[KafkaRecord], Awaitable[None]]
"""The business logic of one record (outside any database transaction)."""

TransactionalHandler = Callable[[Transaction, KafkaRecord], Awaitable[None]]
"""The business logic of one record as writes in the caller's database transaction."""

ApplyOnce = Callable[[KafkaRecord], Awaitable[Outcome]]
"""Applies a record's effect unless it was applied before (see :func:`apply_in_database`)."""


@dataclass(frozen=True, slots=True)
class Until:
    """When a loop stops (whichever comes first).

    Attributes:
        count: records handled (processed or recognised as duplicates).
        idle: seconds without a record.
        max_time: seconds in all.
        stop: set it to stop after the current record.
    """

    count: int | None = None
    idle: float = 5.0
    max_time: float | None = None
    stop: asyncio.Event | None = None


@dataclass(slots=True)
class LoopOutcome:
    """How a loop ended: records ``handled``, of which ``applied`` had their effect applied
    and ``skipped`` were recognised duplicates; ``stopped_by`` is count, idle, max_time or
    stop."""

    handled: int = 0
    applied: int = 0
    skipped: int = 0
    stopped_by: str = ""


class _Clock:
    """The stop conditions of one loop run (on the running loop's clock: virtual on sim)."""

    def __init__(self, until: Until) -> None:
        self.until = until
        self.loop = asyncio.get_running_loop()
        self.started = self.last_record = self.loop.time()

    def reason_to_stop(self, outcome: LoopOutcome) -> str:
        now, until = self.loop.time(), self.until
        if until.stop is not None and until.stop.is_set():
            return "stop"
        if until.count is not None and outcome.handled >= until.count:
            return "count"
        if until.max_time is not None and now - self.started >= until.max_time:
            return "max_time"
        if now - self.last_record >= until.idle:
            return "idle"
        return ""

    def poll_wait(self) -> float:
        """How long the next poll may wait for a record."""
        left = self.until.idle - (self.loop.time() - self.last_record)
        return max(0.01, min(1.0, left))

    def saw_records(self) -> None:
        self.last_record = self.loop.time()


def _tp(record: KafkaRecord) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def _report_processed(
    reporter: Reporter, consumer: KafkaConsumer, record: KafkaRecord, *, skipped: bool
) -> None:
    reporter.emit(
        Processed,
        message_id=record.message_id,
        consumer=consumer.name,
        group=consumer.group_id,
        key=record.key.decode("utf-8", errors="replace") if record.key is not None else None,
        skipped_duplicate=skipped,
    )


def _reporter(reporter: Reporter | None) -> Reporter:
    return reporter if reporter is not None else Reporter(source="consumer")


RecordPath = Callable[[KafkaRecord], Awaitable[bool]]
"""What one record goes through in a loop, crash points and all; True when its effect was
applied, False when it was recognised as a duplicate and skipped."""


async def _record_by_record(
    consumer: KafkaConsumer, record_path: RecordPath, until: Until | None
) -> LoopOutcome:
    """Poll, and send each record down ``record_path`` until ``until`` says stop.

    The loops of the first three semantics share this and differ only in ``record_path``:
    where the offset commit stands relative to the work is the whole difference.
    """
    outcome, clock = LoopOutcome(), _Clock(until or Until())
    while not (reason := clock.reason_to_stop(outcome)):
        for record in await consumer.poll(timeout=clock.poll_wait()):
            clock.saw_records()
            outcome.handled += 1
            applied = await record_path(record)
            outcome.applied += applied
            outcome.skipped += not applied
            if clock.reason_to_stop(outcome):
                break
    outcome.stopped_by = reason
    return outcome


async def _commit_past(consumer: KafkaConsumer, record: KafkaRecord, crash: CrashHook) -> None:
    """Commit the group's offset for ``record``'s partition to the record after it, then
    pass the crash point ``after_offset_commit``."""
    await consumer.commit({_tp(record): record.offset + 1})
    await crash("after_offset_commit", record.message_id)


async def _processed(
    report: Reporter,
    consumer: KafkaConsumer,
    record: KafkaRecord,
    crash: CrashHook,
    *,
    skipped: bool = False,
) -> None:
    """Report ``record`` processed (or skipped as a duplicate), then pass the crash point
    ``after_processing``."""
    _report_processed(report, consumer, record, skipped=skipped)
    await crash("after_processing", record.message_id)


async def at_most_once(
    consumer: KafkaConsumer,
    handle: Handler,
    *,
    until: Until | None = None,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> LoopOutcome:
    """Commit first, then process: a crash after the commit loses the record.

    The consumer must not auto-commit (``auto_commit=False``): the loop commits explicitly.
    """
    report = _reporter(reporter)

    async def commit_then_process(record: KafkaRecord) -> bool:
        await crash("after_receive", record.message_id)
        await _commit_past(consumer, record, crash)
        await handle(record)
        await _processed(report, consumer, record, crash)
        return True

    return await _record_by_record(consumer, commit_then_process, until)


async def at_least_once(
    consumer: KafkaConsumer,
    handle: Handler,
    *,
    until: Until | None = None,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> LoopOutcome:
    """Process first, then commit: a crash after processing processes the record again."""
    report = _reporter(reporter)

    async def process_then_commit(record: KafkaRecord) -> bool:
        await crash("after_receive", record.message_id)
        await handle(record)
        await _processed(report, consumer, record, crash)
        await _commit_past(consumer, record, crash)
        return True

    return await _record_by_record(consumer, process_then_commit, until)


def apply_in_database(
    db: BusinessDatabase,
    group: str,
    handle: TransactionalHandler,
    *,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> ApplyOnce:
    """Apply a record once: its id claimed in ``processed`` in the same transaction as the
    handler's writes (:func:`~mqlab.patterns.idempotency.process_in_one_transaction`)."""

    async def apply(record: KafkaRecord) -> Outcome:
        async def work(tx: Transaction) -> None:
            await handle(tx, record)

        return await process_in_one_transaction(
            db, group, record.message_id, work, reporter=reporter, crash=crash
        )

    return apply


def apply_with_dedup_store(
    store: DedupStore,
    group: str,
    handle: Handler,
    *,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> ApplyOnce:
    """Apply a record unless a dedup store (Redis) has its id: check, process, record
    (:func:`~mqlab.patterns.idempotency.check_process_record`). A crash between the work and
    the record still repeats the work: the store is not in the work's transaction."""

    async def apply(record: KafkaRecord) -> Outcome:
        async def work() -> None:
            await handle(record)

        async def crash_here(point: str, detail: str) -> None:
            await crash(point, record.message_id)  # the loops' detail: the message id

        return await check_process_record(
            store, f"{group}:{record.message_id}", work, reporter=reporter, crash=crash_here
        )

    return apply


async def idempotent_consumer(
    consumer: KafkaConsumer,
    apply_once: ApplyOnce,
    *,
    until: Until | None = None,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> LoopOutcome:
    """At-least-once (process, then commit) with an idempotent apply: a record redelivered
    after a crash is recognised and skipped, so its effect happens once."""
    report = _reporter(reporter)

    async def apply_once_then_commit(record: KafkaRecord) -> bool:
        await crash("after_receive", record.message_id)
        applied = await apply_once(record) == "applied"
        await _processed(report, consumer, record, crash, skipped=not applied)
        await _commit_past(consumer, record, crash)
        return applied

    return await _record_by_record(consumer, apply_once_then_commit, until)


@dataclass(frozen=True, slots=True)
class Output:
    """A record the transform wants produced (topic already qualified)."""

    topic: str
    value: bytes
    key: bytes | None = None


Transform = Callable[[KafkaRecord], Sequence[Output]]
"""Input record -> the records to produce for it (a pure function: it may run twice, only
one run's output commits)."""


async def consume_transform_produce(
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    transform: Transform,
    *,
    until: Until | None = None,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
    max_records: int = 100,
) -> LoopOutcome:
    """Exactly-once within Kafka: per polled batch, one transaction holds the outputs and
    the input offsets.

    ``begin_transaction``; send every output; ``send_offsets_to_transaction`` with the next
    offset of each input partition for the consumer's group; ``commit_transaction``. A crash
    anywhere before the commit leaves an open transaction that is aborted (when a producer
    with the same ``transactional_id`` starts again, or at the transaction timeout), so
    read_committed readers never see its outputs and the group's offsets stay where they
    were: the batch is consumed again and its outputs committed once. A broker error aborts
    the transaction and rewinds the consumer to its committed offsets.

    Requirements: ``producer`` is transactional; ``consumer`` does not auto-commit; readers
    of the output use ``isolation_level="read_committed"``. Fencing of a zombie (a paused
    instance that wakes up after its replacement took over) relies on the replacement
    using the *same* ``transactional_id``: aiokafka's ``send_offsets_to_transaction`` sends
    only the group id, not the group generation that newer clients add (KIP-447), so the
    transactional id is what fences. Give each consumer slot a stable one. A
    :class:`~mqlab.brokers.kafka.api.ProducerFenced` error means this instance is the zombie;
    it stops the loop.
    """
    report, outcome, clock = _reporter(reporter), LoopOutcome(), _Clock(until or Until())
    while not (reason := clock.reason_to_stop(outcome)):
        batch = await consumer.poll(max_records=max_records, timeout=clock.poll_wait())
        if not batch:
            continue
        clock.saw_records()
        if until is not None and until.count is not None:
            batch = batch[: max(0, until.count - outcome.handled)]
        first = batch[0].message_id  # the batch's crash points name its first record
        await crash("after_receive", first)
        await producer.begin_transaction()
        try:
            for record in batch:
                for number, output in enumerate(transform(record), start=1):
                    await producer.send(
                        output.topic,
                        output.value,
                        key=output.key,
                        message_id=f"{record.message_id}>{number}",
                    )
            await crash("after_send", first)
            offsets: dict[TopicPartition, int] = {}
            for record in batch:
                offsets[_tp(record)] = max(offsets.get(_tp(record), 0), record.offset + 1)
            await producer.send_offsets_to_transaction(offsets, consumer.group_id)
            await crash("after_offsets_sent", first)
            await producer.commit_transaction()
        except ProducerFenced:
            raise
        except BrokerError:
            await producer.abort_transaction()
            await _rewind(consumer, batch)
            continue
        for record in batch:
            outcome.handled += 1
            outcome.applied += 1
            _report_processed(report, consumer, record, skipped=False)
        await crash("after_transaction_commit", first)
    outcome.stopped_by = reason
    return outcome


async def _rewind(consumer: KafkaConsumer, batch: Sequence[KafkaRecord]) -> None:
    """Seek every partition of ``batch`` back to the group's committed offset (or to the
    batch's first record there when nothing is committed)."""
    first: dict[TopicPartition, int] = {}
    for record in batch:
        first.setdefault(_tp(record), record.offset)
    for tp, offset in sorted(first.items()):
        committed = await consumer.committed(tp)
        await consumer.seek(tp, committed if committed is not None else offset)


async def offsets_in_database(
    consumer: KafkaConsumer,
    db: BusinessDatabase,
    handle: TransactionalHandler,
    *,
    until: Until | None = None,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> LoopOutcome:
    """Exactly-once effect with the offsets kept next to the data, never committed to Kafka.

    Per record, one database transaction moves the group's stored offset for the partition
    from the record's offset to the next one (a compare-and-set, see
    :meth:`~mqlab.patterns.database.Transaction.advance_offset`) and makes the handler's
    writes; COMMIT makes both durable at once. When partitions are assigned, the loop seeks
    each to the offset its database has (Kafka's own committed offset is never used). If a
    record's offset is not where the database stands (the partition moved to another member
    and back during one poll, a zombie), the transaction writes nothing and the loop seeks to
    the stored offset: the database, not the consumer's position, decides.

    Crash points: ``after_receive``, ``before_commit`` (inside the transaction),
    ``after_commit``.
    """
    report, outcome, clock = _reporter(reporter), LoopOutcome(), _Clock(until or Until())
    group = consumer.group_id
    known: frozenset[TopicPartition] = frozenset()
    while not (reason := clock.reason_to_stop(outcome)):
        batch = await consumer.poll(timeout=clock.poll_wait())
        assignment = consumer.assignment()
        if assignment != known:
            newly = assignment - known
            known = assignment
            restored = await _seek_to_stored(consumer, db, group, newly, report)
            # Records of a newly assigned partition were fetched from Kafka's position, not
            # the database's: drop them; the next poll starts where the database says.
            batch = [r for r in batch if _tp(r) not in newly or _tp(r) not in restored]
        skip: set[TopicPartition] = set()
        for record in batch:
            tp = _tp(record)
            if tp in skip or tp not in known:
                continue
            clock.saw_records()
            outcome.handled += 1
            await crash("after_receive", record.message_id)
            advanced = False
            async with db.transaction() as tx:
                advanced = await tx.advance_offset(
                    group, tp.topic, tp.partition, start=record.offset, end=record.offset + 1
                )
                if advanced:
                    await handle(tx, record)
                    await crash("before_commit", record.message_id)
            if not advanced:
                outcome.skipped += 1
                _report_processed(report, consumer, record, skipped=True)
                await _seek_to_stored(consumer, db, group, {tp}, report)
                skip.add(tp)
                continue
            outcome.applied += 1
            report.emit(
                OffsetStored,
                group=group,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset + 1,
                store=db.name,
            )
            _report_processed(report, consumer, record, skipped=False)
            await crash("after_commit", record.message_id)
            if clock.reason_to_stop(outcome):
                break
    outcome.stopped_by = reason
    return outcome


async def _seek_to_stored(
    consumer: KafkaConsumer,
    db: BusinessDatabase,
    group: str,
    partitions: frozenset[TopicPartition] | set[TopicPartition],
    report: Reporter,
) -> set[TopicPartition]:
    """Seek each partition to the database's offset; returns those that had one."""
    stored = await db.stored_offsets(group, [(tp.topic, tp.partition) for tp in partitions])
    restored: set[TopicPartition] = set()
    for tp in sorted(partitions):
        offset = stored.get((tp.topic, tp.partition))
        if offset is not None:
            await consumer.seek(tp, offset)
            restored.add(tp)
        report.emit(
            OffsetRestored,
            group=group,
            topic=tp.topic,
            partition=tp.partition,
            offset=-1 if offset is None else offset,
            consumer=consumer.name,
            store=db.name,
        )
    return restored
