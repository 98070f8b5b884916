"""Hidden check of the offsets-with-the-data exercise: a crash at every boundary between the
credit, its COMMIT and the position, and whether each deposit was credited exactly once.

The topic holds 30 deposits on two partitions (seeded accounts and amounts). The learner's
``consume`` runs as a member of the group with the business database behind a watcher
(:class:`~mqlab.grader.database.WatchedDatabase`): it reports each credit as an
``EffectApplied`` only once its transaction has committed, and it has the crash points. Four
stages follow, each with a new member started from the learner's file (a new process on the
lab, where only PostgreSQL and Kafka keep anything; the module loaded again on ``sim``, where
the in-memory database stands for the server and keeps its rows):

1. the member dies right after the COMMIT of its 5th to 9th credit (before anything else:
   a Kafka commit, or a second transaction for the offset);
2. it dies inside a transaction, after its 2nd to 4th credit and before the COMMIT, with
   the rest of the polled batch still to do;
3. it dies right after the 2nd to 4th COMMIT that moved a stored offset;
4. a member runs until every deposit is credited, or nothing moves for 8 s.

A stage whose crash point never comes (an offset never stored) ends with the crash anyway
once nothing has moved for 8 s, so on the lab stage N is always phase N. ``no-double-effect``
and ``nothing-lost`` judge the committed credits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import ModuleType

from mqlab.brokers.kafka.api import KafkaAPI
from mqlab.grader.context import GradingContext, learner_function
from mqlab.grader.database import WatchedDatabase, business_database
from mqlab.grader.loops import (
    GradedKafkaConsumer,
    RunningLoop,
    fresh_module,
    open_learner_consumer,
    produce_in_turn,
    run_to_crash,
    wait_until,
)
from mqlab.observe.events import EffectApplied, Observation
from mqlab.patterns import postgres
from mqlab.patterns.database import BusinessDatabase
from mqlab.patterns.harness import CrashHook, no_crash

TOPIC = "deposits"
GROUP = "balances"
PARTITIONS = 2
ACCOUNTS = ("acct-1", "acct-2", "acct-3")
DEPOSITS = 30
STAGE_SECONDS = 25.0
IDLE_SECONDS = 8.0


@dataclass(frozen=True, slots=True)
class Deposit:
    """One record: credit ``amount`` to ``account``."""

    message_id: str
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class Stage:
    """One consumer's life: it dies the ``occurrence``-th time it reaches ``point`` (None:
    it runs until every deposit is credited)."""

    point: str | None
    occurrence: int = 0


def _plan(ctx: GradingContext) -> tuple[list[Deposit], list[Stage]]:
    """Drawn first from the seed, so every phase on the lab draws the same."""
    deposits = [
        Deposit(f"dep-{n:02d}", ctx.rng.choice(ACCOUNTS), ctx.rng.randint(1, 20) * 5)
        for n in range(1, DEPOSITS + 1)
    ]
    stages = [
        Stage("after_effect_commit", ctx.rng.randint(5, 9)),
        Stage("after_business_write", ctx.rng.randint(2, 4)),
        Stage("after_offset_commit", ctx.rng.randint(2, 4)),
        Stage(None),
    ]
    return deposits, stages


def _record_at(topic: str, partition: int, offset: int) -> str:
    """The deposit at ``offset`` of ``partition``: deposits alternate between partitions."""
    return f"dep-{offset * PARTITIONS + partition + 1:02d}"


class Credited:
    """The deposits with a committed credit (from earlier phases too, on the lab), and a
    counter of everything that moved, for the idle rule."""

    def __init__(self, already: set[str]) -> None:
        self.message_ids = set(already)
        self.events = 0

    def __call__(self, observation: Observation) -> None:
        if isinstance(observation, EffectApplied):
            self.message_ids.add(observation.message_id)
            self.events += 1

    def all_of(self, deposits: list[Deposit]) -> bool:
        return all(d.message_id in self.message_ids for d in deposits)


async def _produce(kafka: KafkaAPI, deposits: list[Deposit]) -> None:
    records = [
        (d.message_id, json.dumps({"account": d.account, "amount": d.amount}).encode())
        for d in deposits
    ]
    await produce_in_turn(
        kafka,
        kafka.qualify(TOPIC),
        records,
        partitions=PARTITIONS,
        producer_name="deposits-service",
    )


async def _start(
    ctx: GradingContext,
    module: ModuleType,
    kafka: KafkaAPI,
    database: BusinessDatabase,
    name: str,
    crash: CrashHook = no_crash,
) -> tuple[GradedKafkaConsumer, RunningLoop]:
    opened = await open_learner_consumer(module, kafka, kafka.qualify(TOPIC), kafka.qualify(GROUP))
    consumer = GradedKafkaConsumer(opened)
    db = WatchedDatabase(database, ctx, crash, record_at=_record_at)
    running = learner_function(module, "consume")(consumer, db)
    return consumer, RunningLoop(name, "consume", running)


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    kafka = ctx.broker
    assert isinstance(kafka, KafkaAPI)
    deposits, stages = _plan(ctx)
    first_stage = ctx.phase - 1  # on the lab each earlier phase ended in its stage's crash
    if first_stage == 0:
        await _produce(kafka, deposits)
    database = await business_database(ctx)
    credited = Credited({p.message_id for p in await database.postings()})
    unsubscribe = ctx.bus.subscribe(credited)
    module = learner
    try:
        for number, stage in enumerate(stages[first_stage:], start=first_stage + 1):
            name = f"member-{number}"
            if stage.point is None:
                consumer, loop = await _start(ctx, module, kafka, database, name)
                try:
                    await wait_until(
                        lambda: credited.all_of(deposits),
                        [loop],
                        timeout=STAGE_SECONDS,
                        idle=IDLE_SECONDS,
                        progress=lambda: credited.events,
                    )
                finally:
                    await loop.stop()
                    await consumer.close()
                continue
            crash = ctx.crash_hook(stage.point, occurrence=stage.occurrence)
            consumer, loop = await _start(ctx, module, kafka, database, name, crash)
            await run_to_crash(
                ctx,
                consumer,
                loop,
                point=stage.point,
                progress=lambda: credited.events,
                timeout=STAGE_SECONDS,
                idle=IDLE_SECONDS,
            )
            module = fresh_module(learner)  # the next member starts from nothing
    finally:
        unsubscribe()
        await database.close()


async def cleanup(ctx: GradingContext) -> None:
    """Drop the run's schema (tables and rows) from the lab's PostgreSQL."""
    await postgres.drop_namespace(ctx.postgres_dsn, ctx.namespace)
