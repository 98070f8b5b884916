"""Idempotency programs: a consumer handed a list of deliveries, redeliveries included.

A delivery is a message number: ``deliveries: [1, 2, 3]`` hands the consumer ``m-1``, ``m-2``
and ``m-3`` in that order, and a later step with ``deliveries: [3]`` is the broker delivering
``m-3`` again (it was never acknowledged: the consumer crashed). Each message credits the
customer's wallet in the run's business database (PostgreSQL on the lab, memory on the
simulator), and every committed credit is an ``EffectApplied``, so the ledger shows what a
crash did: ``effects`` below the messages (one lost), ``effects_repeated`` above 0 (one applied
twice).

* ``idempotent-consumer``: the dedup key in the business database, in the same transaction as
  the credit (``one-transaction``) or in a transaction of its own before or after it
  (``dedup-first``, ``work-first``: the bug), or no dedup at all (``none``).
* ``redis-dedup-consumer``: the key in Redis next to the credit, in the safe order
  (``check-process-record``), with a processing marker (``claim-process-done``) or in the
  cheat sheet's order (``mark-then-process``: the key before the work), each key living
  ``ttl`` seconds.
* ``balance-consumer``: natural idempotency, no dedup: each message is an ``INCREMENT`` by an
  amount or a ``SET`` to the value it carries, optionally guarded by the account's version.
"""

from __future__ import annotations

from pydantic import JsonValue

from mqlab.observe.events import DedupHit, Note
from mqlab.patterns.database import ReportingDatabase, Transaction
from mqlab.patterns.idempotency import (
    check_process_record,
    claim_process_done,
    mark_then_process,
    process_in_one_transaction,
    process_in_separate_transactions,
)
from mqlab.patterns.programs import Param, ProgramContext, program

ACCOUNT = "wallet:ada"
"""The account every delivery credits."""

_DELIVERIES = Param(
    (list,), [1, 2, 3], "Message numbers in the order they are delivered (redeliveries too)."
)


def deliveries(ctx: ProgramContext) -> list[str]:
    """The message ids of the step's deliveries, in order.

    Raises:
        ValueError: a delivery that is not a positive whole number.
    """
    raw: JsonValue = ctx.params["deliveries"]
    assert isinstance(raw, list)
    numbers: list[str] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"deliveries are message numbers from 1, got {value!r}")
        numbers.append(f"m-{value}")
    return numbers


async def report_balance(ctx: ProgramContext, db: ReportingDatabase, handled: int) -> None:
    """A timeline line with the balance after ``handled`` deliveries."""
    balance = await db.balance(ACCOUNT)
    ctx.reporter.emit(Note, text=f"{ACCOUNT}: balance {balance} after {handled} deliveries")


@program(
    "idempotent-consumer",
    "Credit a wallet per delivery, deduplicated in the business database (or not)",
    params={
        "deliveries": _DELIVERIES,
        "variant": Param(
            (str,),
            "one-transaction",
            "Where the dedup key is written: one-transaction (with the credit), dedup-first "
            "or work-first (a transaction of its own: the bug), none (no dedup).",
            ("one-transaction", "dedup-first", "work-first", "none"),
        ),
        "amount": Param((int,), 10, "What each message credits."),
        "consumer": Param((str,), "billing", "The consumer the dedup keys belong to."),
    },
    crash_points=("after_claim", "before_commit", "after_commit", "between_transactions"),
    services=("postgres",),
)
async def idempotent_consumer(ctx: ProgramContext) -> None:
    """Handle each delivery with the chosen variant; the crash hook decides where it dies."""
    db = await ctx.database()
    variant, consumer = ctx.str_param("variant"), ctx.str_param("consumer")
    amount = ctx.int_param("amount")
    handled = 0
    for message_id in deliveries(ctx):

        async def credit(tx: Transaction, message_id: str = message_id) -> None:
            await tx.credit(ACCOUNT, amount, message_id=message_id)

        if variant == "one-transaction":
            await process_in_one_transaction(
                db, consumer, message_id, credit, reporter=ctx.reporter, crash=ctx.crash
            )
        elif variant in ("dedup-first", "work-first"):
            await process_in_separate_transactions(
                db,
                consumer,
                message_id,
                credit,
                order="dedup_first" if variant == "dedup-first" else "work_first",
                reporter=ctx.reporter,
                crash=ctx.crash,
            )
        else:
            async with db.transaction() as tx:
                await credit(tx)
            await ctx.crash("after_commit", message_id)
        handled += 1
    await report_balance(ctx, db, handled)


@program(
    "redis-dedup-consumer",
    "Credit a wallet per delivery, deduplicated with keys in Redis that expire",
    params={
        "deliveries": _DELIVERIES,
        "order": Param(
            (str,),
            "check-process-record",
            "check-process-record (the safe order), claim-process-done (a processing "
            "marker first) or mark-then-process (the cheat sheet's: the key before the work).",
            ("check-process-record", "claim-process-done", "mark-then-process"),
        ),
        "ttl": Param((int, float), 60, "Seconds a processed key lives."),
        "processing_ttl": Param((int, float), 5, "Seconds a processing marker lives."),
        "amount": Param((int,), 10, "What each message credits."),
        "consumer": Param((str,), "billing", "The consumer the dedup keys belong to."),
    },
    crash_points=("after_check", "after_claim", "after_work", "after_record"),
    services=("postgres", "redis"),
)
async def redis_dedup_consumer(ctx: ProgramContext) -> None:
    """Handle each delivery with the chosen order against the run's dedup store."""
    db = await ctx.database()
    store = await ctx.dedup_store(ctx.float_param("ttl"))
    order, consumer = ctx.str_param("order"), ctx.str_param("consumer")
    amount = ctx.int_param("amount")
    handled = 0
    for message_id in deliveries(ctx):

        async def work(message_id: str = message_id) -> None:
            async with db.transaction() as tx:
                await tx.credit(ACCOUNT, amount, message_id=message_id)

        key = f"{consumer}:{message_id}"
        if order == "check-process-record":
            await check_process_record(store, key, work, reporter=ctx.reporter, crash=ctx.crash)
        elif order == "claim-process-done":
            await claim_process_done(
                store,
                key,
                work,
                processing_ttl=ctx.float_param("processing_ttl"),
                reporter=ctx.reporter,
                crash=ctx.crash,
            )
        else:
            await mark_then_process(store, key, work, reporter=ctx.reporter, crash=ctx.crash)
        handled += 1
    await report_balance(ctx, db, handled)


VERSIONS = ("versions", 0)
"""Where the version guard keeps each account's last applied version: a stored position per
key, compared and set in the business transaction (the ``consumer_offsets`` table, whose
compare-and-set is exactly a version check)."""


@program(
    "balance-consumer",
    "Apply INCREMENT or SET messages to a balance, redeliveries included (natural idempotency)",
    params={
        "deliveries": Param(
            (list,), [1, 1], "Message numbers in the order they are delivered (redeliveries too)."
        ),
        "operation": Param(
            (str,),
            "increment",
            "increment: each message adds amount; set: message n sets the balance to n x amount.",
            ("increment", "set"),
        ),
        "amount": Param((int,), 50, "The amount of each message."),
        "version_guard": Param(
            (bool,),
            False,
            "Apply a SET only if its message is newer than the account's version.",
        ),
    },
    services=("postgres",),
)
async def balance_consumer(ctx: ProgramContext) -> None:
    """Apply every delivery as it comes, with no dedup store at all."""
    db = await ctx.database()
    increment = ctx.str_param("operation") == "increment"
    amount, guard = ctx.int_param("amount"), bool(ctx.params["version_guard"])
    group, (topic, partition) = ACCOUNT, VERSIONS
    handled = 0
    for message_id in deliveries(ctx):
        number = int(message_id.removeprefix("m-"))
        handled += 1
        if increment:
            async with db.transaction() as tx:
                await tx.credit(ACCOUNT, amount, message_id=message_id)
            continue
        if not guard:
            async with db.transaction() as tx:
                await tx.set_balance(ACCOUNT, number * amount, message_id=message_id)
            continue
        stored = (await db.stored_offsets(group, [VERSIONS])).get(VERSIONS, 0)
        applied = False
        if number > stored:
            async with db.transaction() as tx:
                # The compare-and-set refuses if another delivery moved the version since
                # it was read: the SET and the new version commit together or not at all.
                applied = await tx.advance_offset(group, topic, partition, start=stored, end=number)
                if applied:
                    await tx.set_balance(ACCOUNT, number * amount, message_id=message_id)
        if not applied:
            ctx.reporter.emit(DedupHit, key=message_id, store=db.name, state="superseded")
    await report_balance(ctx, db, handled)
