"""Retry programs: a retried call to a dependency that fails, and retries under contention.

``retry-call`` makes one or more operations against an inventory service, each through
:func:`mqlab.patterns.retry.retry`, and the service fails the way real ones do:

* **a permanent error**: the request itself is wrong (more items than the stock holds). On the
  lab the service is a row in PostgreSQL with ``CHECK (stock >= 0)``, so the error is a real
  ``CheckViolation`` (SQLSTATE 23514) and :func:`~mqlab.patterns.retry.classify_error` calls it
  permanent: one call, no retry, whatever the retry limit says;
* **an outage**: the row is locked by another session (a maintenance job) for the service's
  first ``outage_calls`` calls, and each call asks for the row with ``FOR UPDATE NOWAIT``, so
  it fails at once with ``LockNotAvailable`` (SQLSTATE 55P03), which is transient: retried
  with backoff. With an outage longer than every operation's retries, that is a retry storm,
  and ``budget_ratio`` puts a shared token bucket
  (:class:`~mqlab.patterns.retry_budget.RetryBudget`) in front of it.

On the simulator the service is a row in memory that raises errors carrying the same
SQLSTATEs, so the same classifier decides the same way. The outage is counted in calls, not in
seconds, so the numbers are the same on the lab and on the simulator.

``retry-contention`` is one trial of the experiment of :mod:`mqlab.patterns.contention`:
clients race for one row with optimistic-concurrency writes (a row in the lab's PostgreSQL, or
in memory on the simulator) and retry their lost races with a backoff strategy; every
client's calls and delays are observations.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from pydantic import JsonValue

from mqlab.observe.events import Note
from mqlab.patterns.contention import ContentionSettings, MemoryRow, run_trial
from mqlab.patterns.programs import Param, ProgramContext, program
from mqlab.patterns.retry import (
    Backoff,
    ErrorClass,
    RetryError,
    RetryPolicy,
    Strategy,
    classify_error,
    retry,
)
from mqlab.patterns.retry_budget import RetryBudget

_STRATEGIES = tuple(strategy.value for strategy in Strategy)

SKU = "lamp"


class InventoryService(Protocol):
    """The dependency the retried operations call."""

    async def reserve(self, quantity: int) -> None:
        """Take ``quantity`` items from the stock (raises what the service raises)."""
        ...

    async def close(self) -> None:
        """End the outage if it is still on and release connections."""
        ...


class _SqlStateError(Exception):
    """An error of the in-memory service, carrying the SQLSTATE PostgreSQL would give."""

    sqlstate = ""


class _LockNotAvailable(_SqlStateError):
    sqlstate = "55P03"


class _CheckViolation(_SqlStateError):
    sqlstate = "23514"


class MemoryInventory:
    """The service on the simulator: a stock that cannot go below 0, and an outage that
    refuses the first ``outage_calls`` calls."""

    def __init__(self, stock: int, outage_calls: int) -> None:
        self.stock = stock
        self._outage_left = outage_calls

    async def reserve(self, quantity: int) -> None:
        if self._outage_left > 0:
            self._outage_left -= 1
            raise _LockNotAvailable(f"could not obtain lock on row in relation inventory ({SKU})")
        if self.stock - quantity < 0:
            raise _CheckViolation(
                'new row for relation "inventory" violates check constraint "stock_not_negative"'
            )
        self.stock -= quantity

    async def close(self) -> None:
        return None


class PostgresInventory:
    """The service on the lab: one row of ``inventory`` in the run's schema.

    Each call is ``SELECT ... FOR UPDATE NOWAIT`` and an ``UPDATE`` in one transaction on the
    service's connection (calls take turns on it, as a connection pool of one would). The
    outage is a second connection that holds the row's lock in an open transaction until the
    service has refused ``outage_calls`` calls.
    """

    def __init__(self, dsn: str, namespace: str, stock: int, outage_calls: int) -> None:
        self.dsn = dsn
        self.namespace = namespace
        self.stock = stock
        self._outage_left = outage_calls
        self._connection: Any = None
        self._blocker: Any = None
        self._lock = asyncio.Lock()

    def _sql(self, text: str) -> Any:
        from psycopg import sql

        from mqlab.patterns.postgres import table

        return sql.SQL(text).format(inventory=table(self.namespace, "inventory"))

    async def setup(self) -> None:
        """Create the row with its stock and, for an outage, lock it from another session."""
        from mqlab.patterns import postgres

        self._connection = await postgres.connect(self.dsn)
        await postgres.create_tables(
            self._connection,
            self.namespace,
            [
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {inventory} (sku text PRIMARY KEY, stock integer "
                    "NOT NULL CONSTRAINT stock_not_negative CHECK (stock >= 0))"
                )
            ],
        )
        await self._connection.execute(
            self._sql(
                "INSERT INTO {inventory} (sku, stock) VALUES (%s, %s) "
                "ON CONFLICT (sku) DO UPDATE SET stock = EXCLUDED.stock"
            ),
            (SKU, self.stock),
        )
        if self._outage_left > 0:
            self._blocker = await postgres.connect(self.dsn)
            await self._blocker.execute("BEGIN")
            await self._blocker.execute(
                self._sql("SELECT stock FROM {inventory} WHERE sku = %s FOR UPDATE"), (SKU,)
            )

    async def reserve(self, quantity: int) -> None:
        import psycopg

        async with self._lock:
            try:
                async with self._connection.transaction():
                    await self._connection.execute(
                        self._sql("SELECT stock FROM {inventory} WHERE sku = %s FOR UPDATE NOWAIT"),
                        (SKU,),
                    )
                    await self._connection.execute(
                        self._sql("UPDATE {inventory} SET stock = stock - %s WHERE sku = %s"),
                        (quantity, SKU),
                    )
            except psycopg.errors.LockNotAvailable:
                self._outage_left -= 1
                if self._outage_left <= 0:
                    await self._end_outage()
                raise

    async def _end_outage(self) -> None:
        if self._blocker is not None:
            blocker, self._blocker = self._blocker, None
            await blocker.execute("ROLLBACK")
            await blocker.close()

    async def close(self) -> None:
        await self._end_outage()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


def _retry_everything(error: Exception) -> ErrorClass:
    """The naive classifier a teaching variant uses: every error is worth another try."""
    return ErrorClass.TRANSIENT


def _number(value: JsonValue) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@program(
    "retry-call",
    "Operations against a failing inventory service, retried with backoff (and a budget)",
    params={
        "operations": Param((int,), 1, "How many operations run at once (each retried)."),
        "quantity": Param((int,), 1, "Items each operation reserves (above stock: permanent)."),
        "stock": Param((int,), 100, "Items in stock."),
        "outage_calls": Param(
            (int,), 0, "The service refuses its first N calls (a lock held elsewhere)."
        ),
        "strategy": Param((str,), "exponential", "The backoff strategy.", _STRATEGIES),
        "base": Param((int, float), 0.01, "The backoff's base delay in seconds."),
        "cap": Param((int, float), 0.2, "The backoff's cap in seconds."),
        "max_retries": Param((int,), 3, "Retries after the first call of each operation."),
        "classify": Param(
            (str,),
            "by-error",
            "by-error: permanent errors are never retried; everything: retry them too (a bug).",
            ("by-error", "everything"),
        ),
        "budget_ratio": Param(
            (int, float, type(None)), None, "A shared retry budget's ratio (null: no budget)."
        ),
        "budget_capacity": Param((int, float), 10, "Most tokens the budget holds."),
        "budget_initial": Param((int, float), 0, "Tokens the budget starts with."),
        "budget_per_second": Param(
            (int, float), 0, "Tokens the budget's reserve refills per second."
        ),
    },
    services=("postgres",),
)
async def retry_call(ctx: ProgramContext) -> None:
    """Run the operations at once, each through ``retry()``, and report how they ended."""
    stock, outage = ctx.int_param("stock"), ctx.int_param("outage_calls")
    service: MemoryInventory | PostgresInventory
    if ctx.simulated:
        service = MemoryInventory(stock, outage)
    else:
        service = PostgresInventory(ctx.endpoints.postgres_dsn, ctx.namespace, stock, outage)
        await service.setup()
    ratio = _number(ctx.params["budget_ratio"])
    budget = None
    if ratio is not None:
        budget = RetryBudget(
            ratio=ratio,
            min_retries_per_second=ctx.float_param("budget_per_second"),
            capacity=ctx.float_param("budget_capacity"),
            initial=ctx.float_param("budget_initial"),
        )
    policy = RetryPolicy(
        Backoff(
            Strategy(ctx.str_param("strategy")), ctx.float_param("base"), ctx.float_param("cap")
        ),
        max_retries=ctx.int_param("max_retries"),
        budget=budget,
    )
    classify = _retry_everything if ctx.str_param("classify") == "everything" else classify_error
    quantity = ctx.int_param("quantity")
    outcomes: list[str] = []

    async def operation(number: int) -> None:
        try:
            await retry(
                lambda: service.reserve(quantity),
                policy,
                name=f"reserve-{number}",
                bus=ctx.reporter.bus,
                broker=ctx.reporter.source,
                rng=ctx.rng,
                classify=classify,
            )
            outcomes.append("reserved")
        except RetryError as error:
            outcomes.append(f"gave up ({error.reason})")

    try:
        async with asyncio.TaskGroup() as group:
            for number in range(1, ctx.int_param("operations") + 1):
                group.create_task(operation(number))
    finally:
        await service.close()
    summary = ", ".join(f"{outcomes.count(o)} {o}" for o in sorted(set(outcomes)))
    ctx.reporter.emit(Note, text=f"retry-call: {summary}")


@program(
    "retry-contention",
    "Clients race for one row with optimistic writes and retry their lost races",
    params={
        "clients": Param((int,), 10, "How many clients write the row once each."),
        "strategy": Param((str,), "exponential", "The backoff strategy.", _STRATEGIES),
        "base": Param((int, float), 0.005, "The backoff's base delay in seconds."),
        "cap": Param((int, float), 0.2, "The backoff's cap in seconds."),
        "delay_mean": Param((int, float), 0.01, "Mean network delay of a request (seconds)."),
        "delay_sd": Param((int, float), 0.0, "Its standard deviation (0: every request alike)."),
    },
    services=("postgres",),
)
async def retry_contention(ctx: ProgramContext) -> None:
    """One trial of the contention experiment on the run's bus."""
    from mqlab.patterns.contention_postgres import MAX_CLIENTS, PostgresRow

    clients = ctx.int_param("clients")
    if not ctx.simulated and clients > MAX_CLIENTS:
        raise ValueError(f"retry-contention on PostgreSQL takes at most {MAX_CLIENTS} clients")
    settings = ContentionSettings(
        clients,
        ctx.float_param("base"),
        ctx.float_param("cap"),
        ctx.float_param("delay_mean"),
        ctx.float_param("delay_sd"),
    )
    strategy = Strategy(ctx.str_param("strategy"))
    bus, source = ctx.reporter.bus, ctx.reporter.source
    if ctx.simulated:
        result = await run_trial(MemoryRow(), strategy, settings, ctx.rng, bus=bus, broker=source)
    else:
        async with PostgresRow(ctx.endpoints.postgres_dsn, clients) as row:
            result = await run_trial(row, strategy, settings, ctx.rng, bus=bus, broker=source)
    ctx.reporter.emit(
        Note,
        text=(
            f"{strategy.value}: {clients} clients, {result.conflicts} lost races, "
            f"{result.calls} requests (reads and writes), the last write confirmed after "
            f"{result.completion * 1000:.0f} ms; the row's version is {result.final_version}"
        ),
    )
