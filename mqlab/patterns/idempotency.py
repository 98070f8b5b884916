"""Idempotency: how a consumer makes a redelivered message harmless.

At-least-once delivery means every consumer sees some messages twice (a crash before the
ack, a rebalance before the commit, a visibility timeout that ran out). There are three ways
to make the second delivery harmless, and this module has each as working code:

1. **Dedup in the same transaction as the business write** (:func:`process_in_one_transaction`,
   PostgreSQL on the lab, :class:`~mqlab.patterns.database.MemoryDatabase` on ``sim``)::

       BEGIN;
       INSERT INTO processed (consumer, key) VALUES (...) ON CONFLICT DO NOTHING;
       -- 0 rows: a duplicate, nothing else happens. 1 row: new, so:
       UPDATE accounts SET balance = balance + 50 WHERE account = ...;
       COMMIT;

   A crash anywhere before COMMIT leaves neither the key nor the effect; a crash after it
   leaves both, and the redelivery finds the key. Exactly-once *effect*, on top of
   at-least-once delivery. :func:`process_in_separate_transactions` is the same with the key
   in a transaction of its own, kept as a named teaching variant: a crash between the two
   transactions loses the message (key first) or applies it twice (effect first).
2. **A dedup store next to the work** (:class:`RedisDedupStore`: ``SET key NX PX ttl``;
   :class:`MemoryDedupStore` on ``sim``, with TTLs on the virtual clock). The store and the
   work cannot commit together, so the *order* decides what a crash does:

   * :func:`check_process_record`: check, do the work, then record. A crash after the work and
     before the record repeats the work on redelivery: at-least-once, never lost.
   * :func:`claim_process_done`: record a short-lived ``processing`` marker first, do the work,
     then overwrite it with ``done``. While the marker lives, a concurrent second delivery
     (another consumer, a visibility timeout that ran out early) is told "in progress"
     instead of doing the work in parallel. The price: a crash during the work blocks the
     redelivery until the marker expires (its TTL must outlast the slowest normal run, or the
     marker expires under a live worker and the parallel run happens anyway), and a crash
     after the work and before ``done`` still repeats the work once the marker expires.
   * :func:`mark_then_process` is the cheat sheet's ``is_duplicate()`` order, kept as a
     teaching variant. It sets the key *before* the work, so a crash (or an exception) in
     between makes the redelivery a "duplicate" and the message is lost.

   Whatever the order, a key lives ``ttl`` seconds: a redelivery later than that is not
   recognised and is processed again. The TTL must outlive the longest redelivery delay
   (retention, a DLQ replay days later).
3. **Natural idempotency** (:class:`SetBalance` vs :class:`IncrementBalance`): an absolute
   write (``SET balance = 500``) applied twice leaves the same state; a relative one
   (``INCREMENT balance BY 50``) does not. :class:`BalanceModel` is the tiny model scenarios
   use to show it; :func:`apply_operation` does the same against the business database.

Every helper reports :class:`~mqlab.observe.events.DedupMiss` / ``DedupHit`` /
``DedupRecorded`` on a :class:`~mqlab.patterns.harness.Reporter` and awaits its crash hook at
each boundary. Crash points: ``after_check``, ``after_claim``, ``after_work``,
``before_commit``, ``after_commit``, ``between_transactions``, ``after_record`` (the detail is
the key); each function's docstring lists its own.

:class:`DedupStore` keeps its original two calls (``seen`` and ``remember``) for the scenario
consume loop, which does check-process-record itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from mqlab.observe.events import DedupHit, DedupMiss, DedupRecorded, EffectApplied
from mqlab.patterns.database import BalanceChange, BusinessDatabase, Transaction
from mqlab.patterns.harness import CrashHook, Reporter, loop_clock, no_crash

Outcome = Literal["applied", "duplicate", "in_progress"]
"""What happened to one message: the work ran (``applied``), it was recognised and skipped
(``duplicate``), or another consumer holds its ``processing`` marker (``in_progress``: settle
it so that it comes back later, for example a NATS ``nak(delay)``)."""

MarkerState = Literal["done", "processing"]

Work = Callable[[], Awaitable[None]]
"""The business logic of one message, when it is not part of a database transaction."""

TransactionalWork = Callable[[Transaction], Awaitable[None]]
"""The business logic of one message as writes in the caller's database transaction."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a dedup store has for a key: ``state`` None when nothing; ``expired`` True when
    the store knows the key existed and its TTL ran out (only the in-memory store can tell)."""

    state: MarkerState | None
    expired: bool = False


class DedupStore(ABC):
    """Remembers processed message keys, each for ``ttl`` seconds (None: for ever).

    Attributes:
        name: what observations call this store.
        ttl: lifetime of a ``done`` key in seconds.
    """

    name: str = "dedup"
    ttl: float | None = None

    @abstractmethod
    async def seen(self, key: str) -> bool:
        """Whether ``key`` is there (``done`` or ``processing``); does not record it."""

    @abstractmethod
    async def remember(self, key: str) -> bool:
        """Record ``key`` as ``done`` unless it is there; False if it was (someone else won)."""

    @abstractmethod
    async def lookup(self, key: str) -> Lookup:
        """The key's state (see :class:`Lookup`)."""

    @abstractmethod
    async def claim(self, key: str, ttl: float) -> Literal["claimed", "done", "processing"]:
        """Set a ``processing`` marker for ``ttl`` seconds unless the key is there.

        Returns:
            ``claimed`` (the marker is ours), or the state that was already there.
        """

    @abstractmethod
    async def mark_done(self, key: str) -> None:
        """Record ``key`` as ``done`` for ``ttl`` (overwriting a ``processing`` marker)."""

    @abstractmethod
    async def release(self, key: str) -> None:
        """Remove a ``processing`` marker (the work failed: let a redelivery in at once); a
        ``done`` key is left alone."""

    async def close(self) -> None:
        """Release connections."""
        return None


class MemoryDedupStore(DedupStore):
    """Keys in a dict: for the simulator, and to show why it is not enough in production
    (it lives in the consumer's process, so a restart forgets every key).

    Expiry runs on ``clock``, by default the running event loop's, so on the simulator a TTL
    runs out in virtual time and a "late redelivery" scenario costs no wall time.

    Args:
        ttl: lifetime of a ``done`` key in seconds (None: never expires).
        clock: returns the current time in seconds.
        name: what observations call this store.
    """

    def __init__(
        self,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = loop_clock,
        name: str = "memory",
    ) -> None:
        self.ttl = ttl
        self.name = name
        self._clock = clock
        self._entries: dict[str, tuple[MarkerState, float | None]] = {}

    @property
    def keys(self) -> set[str]:
        """The keys that are still alive."""
        now = self._clock()
        return {k for k, (_, expires) in self._entries.items() if expires is None or expires > now}

    def _expires(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    async def lookup(self, key: str) -> Lookup:
        entry = self._entries.get(key)
        if entry is None:
            return Lookup(None)
        state, expires = entry
        if expires is not None and expires <= self._clock():
            del self._entries[key]
            return Lookup(None, expired=True)
        return Lookup(state)

    async def seen(self, key: str) -> bool:
        return (await self.lookup(key)).state is not None

    async def remember(self, key: str) -> bool:
        if await self.seen(key):
            return False
        self._entries[key] = ("done", self._expires(self.ttl))
        return True

    async def claim(self, key: str, ttl: float) -> Literal["claimed", "done", "processing"]:
        found = await self.lookup(key)
        if found.state is not None:
            return found.state
        self._entries[key] = ("processing", self._expires(ttl))
        return "claimed"

    async def mark_done(self, key: str) -> None:
        self._entries[key] = ("done", self._expires(self.ttl))

    async def release(self, key: str) -> None:
        if (await self.lookup(key)).state == "processing":
            del self._entries[key]


_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == 'processing' then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Delete a key only while it is a processing marker, atomically (a GET then a DEL could
delete the ``done`` another consumer wrote in between)."""


class RedisDedupStore(DedupStore):
    """``SET <prefix>:<key> done NX PX ttl`` on Redis: survives consumer restarts, expires.

    The TTL is set in milliseconds (``PX``) so lessons can use short, fractional TTLs; Redis
    expires a key by itself, so after the TTL a key is simply gone (a late redelivery is a plain
    miss, indistinguishable from a new message).

    Args:
        url: Redis URL (the lab's: ``Endpoints.local().redis_url``).
        prefix: key prefix (the run's namespace), so a run's keys can be deleted together.
        ttl: seconds a ``done`` key lives; it must outlive the longest redelivery delay.
        name: what observations call this store.
    """

    def __init__(self, url: str, prefix: str, ttl: float = 86_400, *, name: str = "redis") -> None:
        import redis.asyncio as redis_asyncio

        self._redis: Any = redis_asyncio.from_url(url, socket_connect_timeout=3, socket_timeout=5)
        self.prefix = prefix
        self.ttl = ttl
        self.name = name

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def seen(self, key: str) -> bool:
        return bool(await self._redis.exists(self._key(key)))

    async def remember(self, key: str) -> bool:
        stored = await self._redis.set(self._key(key), "done", nx=True, px=_ms(self.ttl))
        return stored is not None

    async def lookup(self, key: str) -> Lookup:
        value = await self._redis.get(self._key(key))
        if value is None:
            return Lookup(None)
        # "1" is what earlier versions of this store wrote for a processed key.
        return Lookup("processing" if value == b"processing" else "done")

    async def claim(self, key: str, ttl: float) -> Literal["claimed", "done", "processing"]:
        for _ in range(3):  # the key can expire between the SET and the GET: ask again
            if await self._redis.set(self._key(key), "processing", nx=True, px=_ms(ttl)):
                return "claimed"
            found = await self.lookup(key)
            if found.state is not None:
                return found.state
        return "processing"

    async def mark_done(self, key: str) -> None:
        await self._redis.set(self._key(key), "done", px=_ms(self.ttl))

    async def release(self, key: str) -> None:
        await self._redis.eval(_RELEASE_SCRIPT, 1, self._key(key))

    async def ttl_left(self, key: str) -> float | None:
        """Seconds until ``key`` expires (None: no such key, or no expiry)."""
        milliseconds = int(await self._redis.pttl(self._key(key)))
        return milliseconds / 1000 if milliseconds >= 0 else None

    async def clear(self) -> None:
        """Delete every key under this store's prefix."""
        async for name in self._redis.scan_iter(match=f"{self.prefix}:*"):
            await self._redis.delete(name)

    async def close(self) -> None:
        await self._redis.aclose()


def _ms(seconds: float | None) -> int | None:
    """A TTL for Redis ``PX`` (at least 1 ms: ``PX 0`` is an error)."""
    return None if seconds is None else max(1, round(seconds * 1000))


# --- the orders, with a dedup store ------------------------------------------------------


def _reporter(reporter: Reporter | None, name: str) -> Reporter:
    return reporter if reporter is not None else Reporter(source=name)


@dataclass(frozen=True, slots=True)
class _KeyReport:
    """The dedup observations about one message key in one store, each order below sends
    at its own points: the key was there (``hit``), it was not (``miss``), it is now
    (``recorded``)."""

    reporter: Reporter
    store: str
    key: str

    def hit(self, state: MarkerState = "done") -> None:
        self.reporter.emit(DedupHit, key=self.key, store=self.store, state=state)

    def miss(self, *, expired: bool = False) -> None:
        self.reporter.emit(DedupMiss, key=self.key, store=self.store, expired=expired)

    def recorded(self, state: MarkerState, ttl: float | None) -> None:
        self.reporter.emit(DedupRecorded, key=self.key, store=self.store, state=state, ttl=ttl)


def _key_report(reporter: Reporter | None, store: str, key: str) -> _KeyReport:
    return _KeyReport(_reporter(reporter, store), store, key)


def _outcome_of(state: MarkerState) -> Outcome:
    """What a key that is already there means: processed (``done``), or held by another
    consumer right now (``processing``)."""
    return "duplicate" if state == "done" else "in_progress"


async def _record_done_after_work(
    dedup: _KeyReport,
    ttl: float | None,
    mark_done: Callable[[str], Awaitable[object]],
    crash: CrashHook,
) -> Outcome:
    """How both orders that check before the work end once the work has finished: crash
    point ``after_work``, the key marked ``done`` (``mark_done``: set it, or overwrite the
    ``processing`` marker) for ``ttl``, crash point ``after_record``."""
    await crash("after_work", dedup.key)
    await mark_done(dedup.key)
    dedup.recorded("done", ttl)
    await crash("after_record", dedup.key)
    return "applied"


async def check_process_record(
    store: DedupStore,
    key: str,
    work: Work,
    *,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> Outcome:
    """The safe order without a shared transaction: check, do the work, then record.

    A crash after the work and before the record means the redelivery does the work again
    (at-least-once, never lost). Two consumers that get the same message at the same time can
    both do the work: :func:`claim_process_done` closes that window.

    Crash points: ``after_check``, ``after_work``, ``after_record``.
    """
    dedup = _key_report(reporter, store.name, key)
    found = await store.lookup(key)
    if found.state is not None:
        dedup.hit(found.state)
        return _outcome_of(found.state)
    dedup.miss(expired=found.expired)
    await crash("after_check", key)
    await work()
    return await _record_done_after_work(dedup, store.ttl, store.remember, crash)


async def claim_process_done(
    store: DedupStore,
    key: str,
    work: Work,
    *,
    processing_ttl: float,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> Outcome:
    """A ``processing`` marker with a short TTL, the work, then ``done`` (see the module
    docstring for the trade-off). A failing work releases the marker so a retry can start at
    once; a crash leaves it to expire after ``processing_ttl``.

    Crash points: ``after_claim``, ``after_work``, ``after_record``.
    """
    dedup = _key_report(reporter, store.name, key)
    claimed = await store.claim(key, processing_ttl)
    if claimed != "claimed":
        dedup.hit(claimed)
        return _outcome_of(claimed)
    dedup.miss()
    dedup.recorded("processing", processing_ttl)
    await crash("after_claim", key)
    try:
        await work()
    except Exception:
        await store.release(key)
        raise
    return await _record_done_after_work(dedup, store.ttl, store.mark_done, crash)


async def mark_then_process(
    store: DedupStore,
    key: str,
    work: Work,
    *,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> Outcome:
    """The cheat sheet's ``is_duplicate()`` order, kept to show its bug: the key is set with
    ``SET NX`` *before* the work. A crash (or an exception) after the SET and before the work
    finishes turns the redelivery into a "duplicate": the message is lost.

    Crash points: ``after_record``, ``after_work``.
    """
    dedup = _key_report(reporter, store.name, key)
    if not await store.remember(key):
        dedup.hit()
        return "duplicate"
    dedup.miss()
    dedup.recorded("done", store.ttl)
    await crash("after_record", key)
    await work()
    await crash("after_work", key)
    return "applied"


# --- the orders, with the business database ----------------------------------------------


async def process_in_one_transaction(
    db: BusinessDatabase,
    consumer: str,
    key: str,
    work: TransactionalWork,
    *,
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> Outcome:
    """Claim the key and do the work in one transaction (the cheat sheet's SQL, done right).

    ``INSERT INTO processed ... ON CONFLICT DO NOTHING``: 0 rows means a duplicate and the
    transaction writes nothing; 1 row means new, so ``work(tx)`` makes the business writes in
    the same transaction, and COMMIT makes both durable at once. Crash anywhere: the key and
    the effect are both there or both missing, so a redelivery is either skipped or done for
    the first time.

    Crash points: ``after_claim``, ``before_commit`` (both inside the transaction),
    ``after_commit``.
    """
    dedup = _key_report(reporter, db.name, key)
    async with db.transaction() as tx:
        claimed = await tx.claim(consumer, key)
        if claimed:
            dedup.miss()
            await crash("after_claim", key)
            await work(tx)
            await crash("before_commit", key)
    if not claimed:
        dedup.hit()
        return "duplicate"
    dedup.recorded("done", None)
    await crash("after_commit", key)
    return "applied"


async def process_in_separate_transactions(
    db: BusinessDatabase,
    consumer: str,
    key: str,
    work: TransactionalWork,
    *,
    order: Literal["dedup_first", "work_first"] = "dedup_first",
    reporter: Reporter | None = None,
    crash: CrashHook = no_crash,
) -> Outcome:
    """The bug the single transaction fixes, kept as a teaching variant: the key and the
    business write commit in two transactions.

    ``dedup_first``: the key commits, then a crash before the business transaction makes the
    redelivery a "duplicate": the message is lost. ``work_first``: the effect commits, then a
    crash before the key's transaction makes the redelivery apply it again.

    Crash point: ``between_transactions`` (plus ``after_commit`` after the second one).
    """
    dedup = _key_report(reporter, db.name, key)
    if order == "dedup_first":
        async with db.transaction() as tx:
            claimed = await tx.claim(consumer, key)
        if not claimed:
            dedup.hit()
            return "duplicate"
        dedup.miss()
        dedup.recorded("done", None)
        await crash("between_transactions", key)
        async with db.transaction() as tx:
            await work(tx)
    else:
        if await db.is_claimed(consumer, key):
            dedup.hit()
            return "duplicate"
        dedup.miss()
        async with db.transaction() as tx:
            await work(tx)
        await crash("between_transactions", key)
        async with db.transaction() as tx:
            await tx.claim(consumer, key)
        dedup.recorded("done", None)
    await crash("after_commit", key)
    return "applied"


# --- natural idempotency -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetBalance:
    """``SET balance = value``: absolute, so applying it twice changes nothing more."""

    value: int
    idempotent = True

    def apply(self, balance: int) -> int:
        """The balance after this operation."""
        return self.value

    def __str__(self) -> str:
        return f"SET balance = {self.value}"

    async def apply_in(self, tx: Transaction, account: str, message_id: str) -> BalanceChange:
        """The same write in the business database."""
        return await tx.set_balance(account, self.value, message_id=message_id)


@dataclass(frozen=True, slots=True)
class IncrementBalance:
    """``INCREMENT balance BY amount``: relative, so every redelivery adds ``amount`` again."""

    amount: int
    idempotent = False

    def apply(self, balance: int) -> int:
        """The balance after this operation."""
        return balance + self.amount

    def __str__(self) -> str:
        return f"INCREMENT balance BY {self.amount}"

    async def apply_in(self, tx: Transaction, account: str, message_id: str) -> BalanceChange:
        """The same write in the business database."""
        return await tx.credit(account, self.amount, message_id=message_id)


BalanceOperation = SetBalance | IncrementBalance


class BalanceModel:
    """One account's balance, changed by operations carried in messages (the tiny model of
    natural idempotency: deliver the same message twice and compare SET with INCREMENT).

    Args:
        entity: the account's name in observations.
        balance: the opening balance.
        reporter: where :class:`~mqlab.observe.events.EffectApplied` goes.
    """

    def __init__(self, entity: str, balance: int = 0, *, reporter: Reporter | None = None) -> None:
        self.entity = entity
        self.balance = balance
        self.reporter = reporter if reporter is not None else Reporter(source="model")

    def apply(self, operation: BalanceOperation, message_id: str) -> int:
        """Apply one delivery of ``operation``; returns the new balance."""
        before = self.balance
        self.balance = operation.apply(before)
        self.reporter.emit(
            EffectApplied,
            entity=self.entity,
            operation=str(operation),
            before=before,
            after=self.balance,
            message_id=message_id,
            idempotent=operation.idempotent,
        )
        return self.balance


async def apply_operation(
    db: BusinessDatabase,
    account: str,
    operation: BalanceOperation,
    message_id: str,
    *,
    reporter: Reporter | None = None,
) -> BalanceChange:
    """Apply ``operation`` to ``account`` in the business database, without any dedup: what a
    consumer that relies on natural idempotency does with every delivery."""
    async with db.transaction() as tx:
        change = await operation.apply_in(tx, account, message_id)
    _reporter(reporter, db.name).emit(
        EffectApplied,
        entity=account,
        operation=str(operation),
        before=change.before,
        after=change.after,
        message_id=message_id,
        idempotent=operation.idempotent,
    )
    return change
