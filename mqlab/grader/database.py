"""The business database as a check hands it to learner code: the same tables, watched.

Exercises about effects (an idempotent consumer, offsets stored with the data) give the
learner the pattern library's :class:`~mqlab.patterns.database.BusinessDatabase`
(PostgreSQL on the lab, in memory on ``sim``). A check needs two more things from it, and
:class:`WatchedDatabase` adds them without changing what the learner sees:

* **The committed truth.** A business write inside a transaction that later rolls back (the
  process died before COMMIT) never happened. So the watcher reports each business write as
  an :class:`~mqlab.observe.events.EffectApplied` only once its transaction has committed:
  ``no-double-effect`` and ``nothing-lost`` judge what the database really holds.
* **Crash points at the database's boundaries**, awaited on the check's hook with the
  message id as detail: ``after_business_write`` (inside the transaction, after a credit or
  a balance set: the COMMIT has not happened), ``after_effect_commit`` (the COMMIT of a
  transaction with a business write) and ``after_offset_commit`` (the COMMIT of a
  transaction that moved a stored consumer offset; the detail names the record at that
  offset through ``record_at``). A transaction that does both reaches both, effect first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from mqlab.grader.context import GradingContext
from mqlab.observe.events import EffectApplied
from mqlab.patterns.database import (
    BalanceChange,
    BusinessDatabase,
    OutboxBatch,
    OutboxMessage,
    OutboxRow,
    PartitionKey,
    Posting,
    Transaction,
)
from mqlab.patterns.harness import CrashHook, no_crash

RecordAt = Callable[[str, int, int], str]
"""``(topic, partition, offset) -> message id`` of the record at that offset."""


def _offset_text(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}@{offset}"


@dataclass(frozen=True, slots=True)
class _Write:
    account: str
    operation: str
    change: BalanceChange
    message_id: str


class WatchedTransaction(Transaction):
    """The learner's transaction: the library's, plus a list of what it wrote."""

    def __init__(self, inner: Transaction, crash: CrashHook) -> None:
        self._inner = inner
        self._crash = crash
        self.writes: list[_Write] = []
        self.offsets: list[tuple[str, int, int]] = []
        """``(topic, partition, next offset)`` for each offset this transaction moved."""

    async def claim(self, consumer: str, key: str) -> bool:
        return await self._inner.claim(consumer, key)

    async def credit(self, account: str, amount: int, *, message_id: str) -> BalanceChange:
        change = await self._inner.credit(account, amount, message_id=message_id)
        self.writes.append(_Write(account, f"credit {amount}", change, message_id))
        await self._crash("after_business_write", message_id)
        return change

    async def set_balance(self, account: str, value: int, *, message_id: str) -> BalanceChange:
        change = await self._inner.set_balance(account, value, message_id=message_id)
        self.writes.append(_Write(account, f"set {value}", change, message_id))
        await self._crash("after_business_write", message_id)
        return change

    async def balance(self, account: str) -> int:
        return await self._inner.balance(account)

    async def advance_offset(
        self, group: str, topic: str, partition: int, *, start: int, end: int
    ) -> bool:
        moved = await self._inner.advance_offset(group, topic, partition, start=start, end=end)
        if moved:
            self.offsets.append((topic, partition, end))
        return moved

    async def add_to_outbox(self, message: OutboxMessage) -> int:
        return await self._inner.add_to_outbox(message)


class WatchedDatabase(BusinessDatabase):
    """``inner`` as the learner uses it, reporting committed effects and reaching the crash
    points of the module docstring on ``crash``.

    Args:
        inner: the database (memory on ``sim``, PostgreSQL on the lab).
        ctx: where the ``EffectApplied`` observations go.
        crash: the check's crash hook.
        record_at: names the record at a stored offset (the one before it), for the crash
            point's detail; ``topic:partition@offset`` when omitted.
    """

    def __init__(
        self,
        inner: BusinessDatabase,
        ctx: GradingContext,
        crash: CrashHook = no_crash,
        record_at: RecordAt = _offset_text,
    ) -> None:
        self._inner = inner
        self._ctx = ctx
        self.crash = crash
        self._record_at = record_at
        self.name = inner.name
        self.namespace = inner.namespace

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._inner.transaction() as inner:
            watched = WatchedTransaction(inner, self.crash)
            yield watched
        # Only reached when the block committed: these writes are durable now.
        for write in watched.writes:
            self._ctx.emit(
                EffectApplied,
                entity=write.account,
                operation=write.operation,
                before=write.change.before,
                after=write.change.after,
                message_id=write.message_id,
                idempotent=write.operation.startswith("set"),
            )
        if watched.writes:
            await self.crash("after_effect_commit", watched.writes[0].message_id)
        for topic, partition, end in watched.offsets:
            await self.crash("after_offset_commit", self._record_at(topic, partition, end - 1))

    def outbox_batch(self, limit: int = 100) -> AbstractAsyncContextManager[OutboxBatch]:
        return self._inner.outbox_batch(limit)

    async def balance(self, account: str) -> int:
        return await self._inner.balance(account)

    async def postings(self, account: str | None = None) -> list[Posting]:
        return await self._inner.postings(account)

    async def is_claimed(self, consumer: str, key: str) -> bool:
        return await self._inner.is_claimed(consumer, key)

    async def stored_offsets(
        self, group: str, partitions: Iterable[PartitionKey]
    ) -> dict[PartitionKey, int]:
        return await self._inner.stored_offsets(group, partitions)

    async def outbox(self) -> list[OutboxRow]:
        return await self._inner.outbox()
