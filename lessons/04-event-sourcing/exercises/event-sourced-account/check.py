"""Hidden check of the event-sourced-account exercise: commands, and two writers racing.

Three accounts get their commands through the learner's ``execute(store, account_id,
command)``: first one at a time (open, deposits, a withdrawal that is allowed and one that is
not), then in races: two writers, each with its own connection to the store, load the same
account at the same version (the store holds each writer's first load until both have
loaded) and each runs a command that is valid on what it loaded. Two deposits must both
land (the loser reloads and tries again); of two withdrawals that together overdraw, one
must be refused after the reload.

The store is a stream per account, in the lab's PostgreSQL (``--broker postgres``) or in
memory on ``sim``. Like EventStoreDB's, its append takes the stream revision the writer read
(``expected_version``: the number of events the writer saw) and refuses the append if the
stream has moved on; the events are stored as the writer made them, ``version`` field
included, so what the learner writes into an event is what projections downstream will
read. The store reports ``EventAppended`` for each stored event and ``VersionConflict`` for
each refusal; ``checks-hold`` reads every stream back and rebuilds it with the learner's
``Account.load_from_events``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.observe.events import EventAppended, VersionConflict
from mqlab.patterns import postgres
from mqlab.patterns.event_sourcing import CommandRejected, DomainEvent, VersionConflictError

ACCOUNTS = ("acct-1", "acct-2", "acct-3")
RACE_GATE_SECONDS = 2.0
"""How long a racing writer's first load waits for the other writer to load too."""
EVENT_TYPES = {"AccountOpened", "MoneyDeposited", "MoneyWithdrawn"}


class Race:
    """Holds both writers' first load of a race until each has loaded: then both decide on
    the same version, which is the race a real system has now and then."""

    def __init__(self) -> None:
        self.arrived = 0
        self.both = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= 2:
            self.both.set()
        try:
            async with asyncio.timeout(RACE_GATE_SECONDS):
                await self.both.wait()
        except TimeoutError:
            return  # the other writer never loaded: go on alone


@dataclass
class Streams:
    """The event streams in memory (``sim``): they stand for the database server, shared
    by both writers' stores."""

    events: dict[str, list[DomainEvent]] = field(default_factory=dict)


class AccountStore:
    """One writer's connection to the event store (the interface the task describes).

    Args:
        ctx: the check's context (observations, the lab's PostgreSQL on a real run).
        writer: this connection's name in observations.
        streams: the in-memory streams on ``sim`` (None on a real run).
    """

    def __init__(self, ctx: GradingContext, writer: str, streams: Streams | None) -> None:
        self._ctx = ctx
        self.writer = writer
        self.name = writer  # what the library's EventStore calls its store, for its Repository
        self._streams = streams
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self.race: Race | None = None
        self._raced = False

    def _table(self) -> sql.Identifier:
        return postgres.table(self._ctx.namespace, "account_events")

    async def open(self) -> None:
        if self._streams is not None:
            return
        self._connection = await postgres.connect(self._ctx.postgres_dsn)
        await postgres.create_tables(
            self._connection,
            self._ctx.namespace,
            [
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (position bigserial PRIMARY KEY, "
                    "aggregate_id text NOT NULL, version integer NOT NULL, "
                    "event_id text NOT NULL, event_type text NOT NULL, "
                    "ts double precision NOT NULL, data jsonb NOT NULL)"
                ).format(self._table())
            ],
        )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    def race_with(self, race: Race | None) -> None:
        """Make this writer's next load wait for the other writer's (None: no race)."""
        self.race, self._raced = race, False

    async def load(self, account_id: str, after_version: int = 0) -> list[DomainEvent]:
        """The account's events in the order the stream has them (oldest first), from the
        ``after_version + 1``-th on (the library's ``EventStore.load`` takes it too)."""
        events = (await self._read(account_id))[after_version:]
        if self.race is not None and not self._raced:
            self._raced = True
            await self.race.arrive()
        return events

    async def _read(self, account_id: str) -> list[DomainEvent]:
        if self._streams is not None:
            return list(self._streams.events.get(account_id, []))
        assert self._connection is not None
        cursor = await self._connection.execute(
            sql.SQL(
                "SELECT event_id, aggregate_id, event_type, version, ts, data FROM {} "
                "WHERE aggregate_id = %s ORDER BY position"
            ).format(self._table()),
            (account_id,),
        )
        return [
            DomainEvent(row[0], row[1], row[2], int(row[3]), float(row[4]), dict(row[5]))
            for row in await cursor.fetchall()
        ]

    async def append(
        self, account_id: str, events: Sequence[DomainEvent], expected_version: int | None
    ) -> None:
        """Append ``events`` to the account's stream, all or none, if the stream holds
        exactly ``expected_version`` events (None: whatever it holds).

        Raises:
            VersionConflictError: the stream has another number of events.
        """
        events = list(events)
        _check_events(account_id, events, expected_version)
        if not events:
            return
        try:
            if self._streams is not None:
                stream = self._streams.events.setdefault(account_id, [])
                _compare(account_id, expected_version, len(stream))
                stream.extend(events)
            else:
                await self._append_to_postgres(account_id, events, expected_version)
        except VersionConflictError as conflict:
            self._ctx.emit(
                VersionConflict,
                aggregate_id=account_id,
                expected_version=conflict.expected,
                actual_version=conflict.actual,
                store=self.writer,
            )
            raise
        for event in events:
            self._ctx.emit(
                EventAppended,
                aggregate_id=account_id,
                event_type=event.event_type,
                version=event.version,
                event_id=event.event_id,
                store=self.writer,
            )

    async def _append_to_postgres(
        self, account_id: str, events: list[DomainEvent], expected_version: int | None
    ) -> None:
        assert self._connection is not None
        connection = self._connection
        async with connection.transaction():
            # One appender per stream at a time: the count and the insert see the same stream.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"{self._ctx.namespace}/{account_id}",),
            )
            cursor = await connection.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE aggregate_id = %s").format(self._table()),
                (account_id,),
            )
            row = await cursor.fetchone()
            _compare(account_id, expected_version, int(row[0]) if row else 0)
            for event in events:
                await connection.execute(
                    sql.SQL(
                        "INSERT INTO {} (aggregate_id, version, event_id, event_type, ts, data) "
                        "VALUES (%s, %s, %s, %s, %s, %s)"
                    ).format(self._table()),
                    (
                        account_id,
                        event.version,
                        event.event_id,
                        event.event_type,
                        event.timestamp,
                        json.dumps(dict(event.data)),
                    ),
                )


def _compare(account_id: str, expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise VersionConflictError(account_id, expected, actual)


def _check_events(account_id: str, events: list[DomainEvent], expected: int | None) -> None:
    """What the store cannot store at all: a one-line mistake, not a stored wrong event."""
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
        raise LearnerMistake(f"expected_version must be an int (or None), not {expected!r}")
    for event in events:
        if not isinstance(event, DomainEvent):
            raise LearnerMistake(
                f"append takes DomainEvent objects (mqlab.patterns.event_sourcing), not "
                f"{type(event).__name__}"
            )
        if event.aggregate_id != account_id:
            raise LearnerMistake(
                f"an event of {event.aggregate_id!r} appended to {account_id!r}'s stream"
            )
        if event.event_type not in EVENT_TYPES:
            raise LearnerMistake(
                f"unknown event type {event.event_type!r} (the task's: "
                f"{', '.join(sorted(EVENT_TYPES))})"
            )
        if not isinstance(event.version, int) or isinstance(event.version, bool):
            raise LearnerMistake(f"an event's version must be an int, not {event.version!r}")


# --- what the check asks and what it expects -------------------------------------------------

Command = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one command: ``applied``, ``refused`` (CommandRejected) or
    ``gave-up`` (the learner's execute raised VersionConflictError)."""

    what: str
    detail: str = ""


async def _execute(
    execute: Callable[..., Awaitable[Any]], store: AccountStore, account_id: str, command: Command
) -> Outcome:
    try:
        await execute(store, account_id, command)
    except CommandRejected as refused:
        return Outcome("refused", str(refused))
    except VersionConflictError as conflict:
        return Outcome("gave-up", str(conflict))
    return Outcome("applied")


def _deposit(amount: int) -> Command:
    return lambda account: account.deposit(amount)


def _withdraw(amount: int) -> Command:
    return lambda account: account.withdraw(amount)


def _fold(events: Sequence[DomainEvent]) -> tuple[int, int | None]:
    """The balance the stored events add up to, and the first version (1-based position)
    at which it went below zero (None: never)."""
    balance, overdrawn = 0, None
    for position, event in enumerate(events, start=1):
        amount = int(event.data.get("amount", 0))
        if event.event_type == "MoneyDeposited":
            balance += amount
        elif event.event_type == "MoneyWithdrawn":
            balance -= amount
        if balance < 0 and overdrawn is None:
            overdrawn = position
    return balance, overdrawn


@dataclass
class Expectations:
    """What each account's commands must have done."""

    applied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCOUNTS, 0))


async def _sequential(
    ctx: GradingContext,
    execute: Callable[..., Awaitable[Any]],
    store: AccountStore,
    account_id: str,
    expected: Expectations,
) -> int:
    """Open the account, deposit, withdraw what is there and try to withdraw too much;
    returns the balance it should have."""
    owner = account_id.replace("acct", "owner")
    balance = 0
    steps: list[tuple[str, Command, bool, int]] = [
        (f"open {account_id}", lambda account: account.open(owner), True, 0)
    ]
    for _ in range(ctx.rng.randint(2, 3)):
        amount = ctx.rng.randint(2, 10) * 10
        steps.append((f"deposit {amount}", _deposit(amount), True, amount))
    total = sum(delta for *_, delta in steps)
    small = ctx.rng.randint(1, total // 20) * 10
    steps.append((f"withdraw {small}", _withdraw(small), True, -small))
    too_much = total - small + 10
    steps.append((f"withdraw {too_much} (more than the balance)", _withdraw(too_much), False, 0))
    for description, command, allowed, delta in steps:
        outcome = await _execute(execute, store, account_id, command)
        wanted = "applied" if allowed else "refused"
        ctx.assert_that(
            f"{account_id}: {description} is {wanted}",
            holds=outcome.what == wanted,
            observed=f"{outcome.what} {outcome.detail}".strip(),
        )
        if outcome.what == "applied":
            expected.applied[account_id] += 1
        balance += delta
    return balance


async def _race(
    ctx: GradingContext,
    execute: Callable[..., Awaitable[Any]],
    writers: tuple[AccountStore, AccountStore],
    account_id: str,
    balance: int,
    expected: Expectations,
) -> int:
    """Two writers at the same version: two deposits (both must land), or two withdrawals
    that together overdraw (exactly one must land). Returns the new expected balance."""
    race = Race()
    for writer in writers:
        writer.race_with(race)
    deposits = balance < 20 or ctx.rng.random() < 0.5  # two withdrawals need 20 to share
    if deposits:
        amounts = (ctx.rng.randint(1, 9) * 10, ctx.rng.randint(1, 9) * 10)
        commands = (_deposit(amounts[0]), _deposit(amounts[1]))
        what = f"deposits of {amounts[0]} and {amounts[1]}"
    else:
        first = ctx.rng.randint(balance // 20, balance // 10) * 10
        second = balance - first + 10
        amounts = (first, second)
        commands = (_withdraw(first), _withdraw(second))
        what = f"withdrawals of {first} and {second} from a balance of {balance}"
    ctx.fault("concurrent-writers", account_id, writers=2, commands=what)
    outcomes = await asyncio.gather(
        *(_execute(execute, w, account_id, c) for w, c in zip(writers, commands, strict=True))
    )
    for writer in writers:
        writer.race_with(None)
    applied = [o.what == "applied" for o in outcomes]
    expected.applied[account_id] += sum(applied)
    seen = ", ".join(
        f"{w.writer}: {o.what} {o.detail}".strip() for w, o in zip(writers, outcomes, strict=True)
    )
    if deposits:
        ctx.assert_that(
            f"{account_id}: two writers race with {what}; both land (the loser reloads and "
            "retries)",
            holds=all(applied),
            observed=seen,
        )
        return balance + sum(amounts)
    ctx.assert_that(
        f"{account_id}: two writers race with {what}; exactly one lands, the other is "
        "refused on the fresh balance",
        holds=sum(applied) == 1 and any(o.what == "refused" for o in outcomes),
        observed=seen,
    )
    return balance - sum(a for a, ok in zip(amounts, applied, strict=True) if ok)


async def _read_back(
    ctx: GradingContext, learner: ModuleType, store: AccountStore, expected: Expectations
) -> None:
    account_type = getattr(learner, "Account", None)
    load = getattr(account_type, "load_from_events", None)
    if account_type is None or not callable(load):
        raise LearnerMistake("the task asks for a class Account with a load_from_events method")
    for account_id in ACCOUNTS:
        store.race_with(None)
        events = await store.load(account_id)
        balance, overdrawn = _fold(events)
        ctx.assert_that(
            f"{account_id}: the stored events never take the balance below zero",
            holds=overdrawn is None,
            observed=(
                f"below zero at event {overdrawn} ({events[overdrawn - 1].event_type} "
                f"{dict(events[overdrawn - 1].data)}): a withdrawal decided on a stale "
                "balance was stored"
                if overdrawn
                else f"balance {balance}"
            ),
        )
        ctx.assert_that(
            f"{account_id}: one event stored per command applied",
            holds=len(events) == expected.applied[account_id],
            observed=f"{len(events)} events for {expected.applied[account_id]} applied commands",
        )
        rebuilt = load(account_id, events)
        version, rebuilt_balance = (
            getattr(rebuilt, "version", None),
            getattr(rebuilt, "balance", None),
        )
        ctx.assert_that(
            f"{account_id}: Account.load_from_events rebuilds the stored stream",
            holds=version == len(events) and rebuilt_balance == balance,
            observed=(
                f"version {version!r}, balance {rebuilt_balance!r}; the stream has "
                f"{len(events)} events adding up to {balance}"
            ),
        )


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    execute = learner_function(learner, "execute")
    streams = Streams() if ctx.simulated else None
    writers = (AccountStore(ctx, "writer-a", streams), AccountStore(ctx, "writer-b", streams))
    for writer in writers:
        await writer.open()
    try:
        expected = Expectations()
        for account_id in ACCOUNTS:
            balance = await _sequential(ctx, execute, writers[0], account_id, expected)
            for _ in range(2):
                balance = await _race(ctx, execute, writers, account_id, balance, expected)
        await _read_back(ctx, learner, writers[0], expected)
    finally:
        for writer in writers:
            await writer.close()


async def cleanup(ctx: GradingContext) -> None:
    """Drop the run's schema (the event table) from the lab's PostgreSQL."""
    await postgres.drop_namespace(ctx.postgres_dsn, ctx.namespace)
