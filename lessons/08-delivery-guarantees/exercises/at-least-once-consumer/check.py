"""Hidden check of the at-least-once-consumer exercise: kill the consumer at each point of
its loop, then rebalance, and see whether every record was processed.

The topic holds 40 records on two partitions. The learner's ``consume`` runs as a member of
the group, calling the check's ``process`` (100 ms of work a record, reported as
``Processed``) and committing however it likes. Four stages follow, each with a new member
started from the learner's file (a new process on the lab, the module loaded again on
``sim``), which picks up from the group's committed offsets:

1. the member dies right after receiving the 14th to 18th record (before any work on it);
2. it dies after ``process`` returned, before whatever the loop does next (its commit);
3. it dies right after its 3rd to 6th commit;
4. a second member joins after the first has processed three records and leaves after
   processing three itself (two rebalances), and the first runs until the group's committed
   offsets reach the end of both partitions, or nothing moves for 8 s.

The seed picks the record or commit each crash hits. A stage whose crash point never comes
(a loop that never commits explicitly has no "right after a commit") ends with the crash
anyway once nothing has moved for 8 s, so on the lab stage N is always phase N. On ``sim`` a
crash is the simulated member vanishing (no commit, no LeaveGroup); on the lab it is a
SIGKILL of the whole process. ``nothing-lost`` judges the history: every record produced
must have been processed by some member at some point; repeats are allowed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType

from mqlab.brokers.kafka.api import KafkaAPI, KafkaRecord, TopicPartition
from mqlab.grader.context import GradingContext, learner_function
from mqlab.grader.loops import (
    GradedKafkaConsumer,
    RunningLoop,
    fresh_module,
    open_learner_consumer,
    produce_in_turn,
    run_to_crash,
    wait_until,
)
from mqlab.observe.events import Committed, Observation, Processed
from mqlab.patterns.harness import Crashed, CrashHook, no_crash

TOPIC = "payments"
GROUP = "payments-consumers"
PARTITIONS = 2
RECORDS = 40
WORK_SECONDS = 0.1
STAGE_SECONDS = 25.0
IDLE_SECONDS = 8.0
REBALANCE_AFTER = 3
"""Records a member processes before the other member joins or leaves."""


@dataclass(frozen=True, slots=True)
class Stage:
    """One consumer's life: it dies the ``occurrence``-th time it reaches ``point`` (None:
    it lives to the end, through the rebalances)."""

    point: str | None
    occurrence: int = 0


def _stages(ctx: GradingContext) -> list[Stage]:
    return [
        Stage("after_receive", ctx.rng.randint(14, 18)),
        Stage("after_processing", ctx.rng.randint(3, 6)),
        Stage("after_commit", ctx.rng.randint(3, 6)),
        Stage(None),
    ]


class Progress:
    """What the members did in this process: records processed per member, and the group's
    committed offset per partition (from the earlier phases' commits on, on the lab)."""

    def __init__(self, group: str, committed: dict[int, int]) -> None:
        self.group = group
        self.committed = dict(committed)
        self.processed: Counter[str] = Counter()
        self.events = 0

    def __call__(self, observation: Observation) -> None:
        if isinstance(observation, Processed):
            self.processed[observation.consumer] += 1
            self.events += 1
        elif isinstance(observation, Committed) and observation.group == self.group:
            previous = self.committed.get(observation.partition, 0)
            self.committed[observation.partition] = max(previous, observation.offset)
            self.events += 1

    def drained(self) -> bool:
        """The group committed the end of every partition."""
        end = RECORDS // PARTITIONS
        return all(self.committed.get(p, 0) >= end for p in range(PARTITIONS))


@dataclass
class Member:
    """A learner consumer the check started, and its loop."""

    consumer: GradedKafkaConsumer
    loop: RunningLoop

    async def stop(self) -> None:
        """Stop the loop, then let the consumer leave the group cleanly."""
        try:
            await self.loop.stop()
        finally:
            await self.consumer.close()


def _processor(
    ctx: GradingContext, name: str, consumer: GradedKafkaConsumer, crash: CrashHook
) -> Callable[[KafkaRecord], Awaitable[None]]:
    async def process(record: KafkaRecord) -> None:
        if consumer.dead:
            raise Crashed("dead", name)  # a dead member does no work
        await crash("after_receive", record.message_id)
        await asyncio.sleep(WORK_SECONDS)
        ctx.emit(Processed, message_id=record.message_id, consumer=name, group=GROUP)
        await crash("after_processing", record.message_id)

    return process


def _message_at(partition: int, offset: int) -> str:
    """The id of the record at ``offset`` of ``partition`` (records alternate partitions)."""
    return f"pay-{offset * PARTITIONS + partition + 1:02d}"


def _committed_record(offsets: dict[TopicPartition, int] | None) -> str:
    """A commit as the records it covers last: ``pay-17`` (the one before each offset)."""
    if offsets is None:
        return "the positions of every record polled"
    return ", ".join(
        _message_at(tp.partition, offset - 1) if offset > 0 else f"nothing on {tp.partition}"
        for tp, offset in sorted(offsets.items())
    )


async def _start(
    ctx: GradingContext,
    module: ModuleType,
    kafka: KafkaAPI,
    name: str,
    crash: CrashHook = no_crash,
) -> Member:
    opened = await open_learner_consumer(module, kafka, kafka.qualify(TOPIC), kafka.qualify(GROUP))
    consumer = GradedKafkaConsumer(opened, crash, describe=_committed_record)
    running = learner_function(module, "consume")(consumer, _processor(ctx, name, consumer, crash))
    return Member(consumer, RunningLoop(name, "consume", running))


async def _produce(ctx: GradingContext, kafka: KafkaAPI) -> None:
    payments = [(f"pay-{n:02d}", f"payment {n}".encode()) for n in range(1, RECORDS + 1)]
    await produce_in_turn(
        kafka,
        kafka.qualify(TOPIC),
        payments,
        partitions=PARTITIONS,
        producer_name="payments-service",
    )


async def _crash_stage(
    ctx: GradingContext,
    module: ModuleType,
    kafka: KafkaAPI,
    stage: Stage,
    number: int,
    progress: Progress,
) -> None:
    assert stage.point is not None
    crash = ctx.crash_hook(stage.point, occurrence=stage.occurrence)
    member = await _start(ctx, module, kafka, f"member-{number}", crash)
    await run_to_crash(
        ctx,
        member.consumer,
        member.loop,
        point=stage.point,
        progress=lambda: progress.events,
        timeout=STAGE_SECONDS,
        idle=IDLE_SECONDS,
    )


async def _rebalance_stage(
    ctx: GradingContext, module: ModuleType, kafka: KafkaAPI, number: int, progress: Progress
) -> None:
    first = await _start(ctx, module, kafka, f"member-{number}")
    members = [first]
    try:
        await wait_until(
            lambda: progress.processed[first.loop.name] >= REBALANCE_AFTER or progress.drained(),
            [first.loop],
            timeout=STAGE_SECONDS,
            idle=IDLE_SECONDS,
            progress=lambda: progress.events,
        )
        ctx.fault("rebalance", kafka.qualify(GROUP), reason="a second member joins")
        second = await _start(ctx, module, kafka, f"member-{number + 1}")
        members.append(second)
        await wait_until(
            lambda: progress.processed[second.loop.name] >= REBALANCE_AFTER or progress.drained(),
            [first.loop, second.loop],
            timeout=STAGE_SECONDS,
            idle=IDLE_SECONDS,
            progress=lambda: progress.events,
        )
        ctx.fault("rebalance", kafka.qualify(GROUP), reason="the second member leaves")
        members.remove(second)
        await second.stop()
        await wait_until(
            progress.drained,
            [first.loop],
            timeout=STAGE_SECONDS,
            idle=IDLE_SECONDS,
            progress=lambda: progress.events,
        )
    finally:
        for member in members:
            await member.stop()


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    kafka = ctx.broker
    assert isinstance(kafka, KafkaAPI)
    stages = _stages(ctx)
    first_stage = ctx.phase - 1  # on the lab each earlier phase ended in its stage's crash
    if first_stage == 0:
        await _produce(ctx, kafka)
    committed = await kafka.group_offsets(kafka.qualify(GROUP))
    progress = Progress(
        kafka.qualify(GROUP), {tp.partition: offset for tp, offset in committed.items()}
    )
    unsubscribe = ctx.bus.subscribe(progress)
    module = learner
    try:
        for number, stage in enumerate(stages[first_stage:], start=first_stage + 1):
            if stage.point is None:
                await _rebalance_stage(ctx, module, kafka, number, progress)
            else:
                await _crash_stage(ctx, module, kafka, stage, number, progress)
                module = fresh_module(learner)  # the next member starts from nothing
    finally:
        unsubscribe()
