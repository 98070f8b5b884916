"""The transactional outbox: publish an event if and only if the business write committed.

**The dual-write bug** (:func:`dual_write`). A service commits its database transaction and
then publishes the event that tells the world. Two systems, two writes, no transaction
spans both: a crash after the COMMIT and before the publish (or a broker that is down at
that moment) leaves the order paid and nobody downstream ever hears of it. Publishing first
is no better: a crash before the COMMIT announces a payment that never happened.

**The outbox** (:func:`write_with_outbox` and :class:`OutboxRelay`). The event is written as
a row of an ``outbox`` table *in the same transaction* as the business write, so both
commit or neither does. A separate relay reads unrelayed rows in order, publishes each and
marks it relayed. A crash of the relay after the publish and before the mark publishes the
row again on restart, so the relay is at-least-once and consumers deduplicate on the event's
``message_id`` (an idempotent consumer, :mod:`mqlab.patterns.idempotency`). Nothing is lost,
and with the dedup nothing is applied twice.

The relay holds its rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two relays never
publish the same row at the same time; with more than one relay the order across them is
not kept (run one relay per outbox when consumers need the order per key).

Both sides work with any broker through a :data:`Publisher` (:func:`kafka_publisher` for
Kafka), and on the simulator with :class:`~mqlab.patterns.database.MemoryDatabase`.

Crash points (detail: the message id): ``after_commit`` (the dual write: committed, not
published), ``after_publish`` (the relay: published, not yet marked), ``after_relay_commit``
(the batch's marks committed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from mqlab.brokers.kafka.api import KafkaProducer
from mqlab.observe.events import BusinessWriteCommitted, OutboxRelayed, OutboxWritten
from mqlab.patterns.database import BusinessDatabase, OutboxMessage, OutboxRow, Transaction
from mqlab.patterns.harness import CrashHook, Reporter, no_crash

Publisher = Callable[[OutboxMessage], Awaitable[None]]
"""Publishes one message and returns once the broker acknowledged it (raises otherwise)."""

BusinessWrite = Callable[[Transaction], Awaitable[None]]
"""The business writes of one command, in the caller's transaction."""


def kafka_publisher(producer: KafkaProducer) -> Publisher:
    """Publish outbox messages with a Kafka producer (acks as the producer was made; the
    message id goes into the ``mqlab-id`` header, where consumers read it)."""

    async def publish(message: OutboxMessage) -> None:
        await producer.send(
            message.destination,
            message.payload,
            key=message.key.encode() if message.key is not None else None,
            message_id=message.message_id,
        )

    return publish


def _reporter(reporter: Reporter | None, db: BusinessDatabase) -> Reporter:
    return reporter if reporter is not None else Reporter(source=db.name)


async def dual_write(
    db: BusinessDatabase,
    entity: str,
    write: BusinessWrite,
    message: OutboxMessage,
    publish: Publisher,
    *,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> None:
    """The bug, kept as a teaching variant: commit the business write, then publish.

    A crash at ``after_commit`` (or a failed publish) leaves the write committed and the event
    never published: lost for every consumer.
    """
    report = _reporter(reporter, db)
    async with db.transaction() as tx:
        await write(tx)
    report.emit(BusinessWriteCommitted, entity=entity, message_id=message.message_id)
    await crash("after_commit", message.message_id)
    await publish(message)


async def write_with_outbox(
    db: BusinessDatabase,
    entity: str,
    write: BusinessWrite,
    message: OutboxMessage,
    *,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> int:
    """The fix: the business write and the outbox row in one transaction.

    Returns:
        The outbox row's id (the relay publishes rows in this order).
    """
    report = _reporter(reporter, db)
    async with db.transaction() as tx:
        await write(tx)
        outbox_id = await tx.add_to_outbox(message)
    report.emit(BusinessWriteCommitted, entity=entity, message_id=message.message_id, outbox=True)
    report.emit(
        OutboxWritten,
        outbox_id=outbox_id,
        message_id=message.message_id,
        destination=message.destination,
    )
    await crash("after_commit", message.message_id)
    return outbox_id


class OutboxRelay:
    """Publishes the outbox's rows in order, at least once.

    Args:
        db: the database whose ``outbox`` table it drains.
        publish: how a row reaches the broker.
        batch: rows per database transaction; a crash republishes at most the rows of the
            batch it interrupted.
        reporter: where observations go (source: the database's name when omitted).
        crash: the crash hook.
    """

    def __init__(
        self,
        db: BusinessDatabase,
        publish: Publisher,
        *,
        batch: int = 100,
        reporter: Reporter | None = None,
        crash: CrashHook = no_crash,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.db = db
        self.publish = publish
        self.batch = batch
        self.reporter = _reporter(reporter, db)
        self.crash = crash

    async def relay_once(self) -> int:
        """Publish one batch of unrelayed rows; returns how many were relayed.

        The rows are marked relayed in the batch's transaction, which commits after the last
        publish; only then is each reported :class:`~mqlab.observe.events.OutboxRelayed`. A
        publish that fails ends the batch early: the rows published before it are marked,
        the failed one and the rest stay for the next call (in order).
        """
        relayed: list[OutboxRow] = []
        async with self.db.outbox_batch(self.batch) as batch:
            for row in batch.rows:
                try:
                    await self.publish(row.message)
                except Exception:
                    if not relayed:
                        raise
                    break
                await self.crash("after_publish", row.message.message_id)
                await batch.mark_relayed(row.outbox_id)
                relayed.append(row)
        for row in relayed:
            self.reporter.emit(
                OutboxRelayed,
                outbox_id=row.outbox_id,
                message_id=row.message.message_id,
                destination=row.message.destination,
            )
        if relayed:
            await self.crash("after_relay_commit", relayed[-1].message.message_id)
        return len(relayed)

    async def run(self, stop: asyncio.Event, *, interval: float = 0.2) -> int:
        """Relay until ``stop`` is set, polling the outbox every ``interval`` seconds when it
        is empty; returns the rows relayed."""
        total = 0
        while not stop.is_set():
            count = await self.relay_once()
            total += count
            if count == 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stop.wait()
        return total
