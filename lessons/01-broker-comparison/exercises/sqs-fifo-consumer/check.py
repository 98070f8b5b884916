"""Hidden check of the sqs-fifo-consumer exercise: a FIFO queue, two consumers, slow work
past the visibility timeout, retried sends and two consumer deaths.

The check creates ``orders.fifo`` (visibility timeout 2 s) and sends 20 events of five
orders (each order's four steps, in order) through the learner's ``send_event``; three
seeded events are sent a second time right after, as a producer that did not hear back
would, and ``checks-hold`` asserts SQS dropped each copy. Then two of the learner's
consumers run at once, each loaded from the learner's file on its own (two processes do not
share module state). One seeded event takes 3.5 s to handle (one only, so that the other
consumer is free to receive it again once its visibility runs out), the others 50 ms; handling
reports ``Processed`` and an ``EffectApplied`` on the order. Consumer A dies just before its
3rd DeleteMessage (the message it handled comes back when its visibility runs out),
consumer B right after its 3rd; each is replaced by a new consumer. The run ends once every
event's message has been deleted and no handling is under way, or nothing happened for 12 s.

A consumer's death is in-process here, on the simulator and on the lab alike: its loop ends
with :class:`~mqlab.patterns.harness.Crashed`, and its handle on SQS refuses every call from
then on (so a visibility heartbeat it left running dies too). For SQS that is what a killed
process is: a consumer holds no connection or session the queue could notice, it simply stops
calling, and its messages come back when their visibility timeout runs out. The ``processed``
store both consumers get stands for the Redis they would share; it lives in the check, so it
outlives them as such a store would.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mqlab.brokers.sqs.api import SendResult, SqsAPI, SqsMessage, SqsQueueInfo
from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.grader.loops import RunningLoop, fresh_module, wait_until
from mqlab.observe.events import Acked, EffectApplied, Observation, Processed, Produced
from mqlab.patterns.harness import Crashed
from mqlab.patterns.idempotency import DedupStore, MemoryDedupStore

QUEUE = "orders.fifo"
VISIBILITY_TIMEOUT = 2
ORDERS = ("ord-1", "ord-2", "ord-3", "ord-4", "ord-5")
STEPS = ("placed", "paid", "packed", "shipped")
RESENT = 3
SLOW = 1
SLOW_SECONDS = 3.5
WORK_SECONDS = 0.05
DIES_AT_DELETE = 3
RUN_SECONDS = 45.0
IDLE_SECONDS = 12.0


@dataclass(frozen=True, slots=True)
class Event:
    """One step of one order: the message the service sends."""

    order: str
    step: str

    @property
    def event_id(self) -> str:
        return f"{self.order}/{self.step}"

    def body(self) -> str:
        return json.dumps({"order": self.order, "step": self.step})


class GradedSqs:
    """One consumer's handle on SQS: the adapter's calls, a crash point around
    DeleteMessage (``before_delete`` or ``after_delete``, on the ``die_at``-th call) and, once
    dead, a refusal of every call (a killed process makes none)."""

    def __init__(
        self, ctx: GradingContext, sqs: SqsAPI, name: str, point: str | None = None
    ) -> None:
        self._ctx = ctx
        self._sqs = sqs
        self.name = name
        self._point = point
        self._deletes = 0
        self._receipts: dict[str, str] = {}
        self.dead = False

    def _alive(self) -> None:
        if self.dead:
            raise Crashed("dead", self.name)

    def _crash(self, point: str, message_id: str) -> None:
        self._ctx.fault("crash", self.name, point=point, detail=message_id)
        self.dead = True
        raise Crashed(point, message_id)

    def qualify(self, logical_name: str) -> str:
        return self._sqs.qualify(logical_name)

    async def send(self, queue: str, body: str, **options: Any) -> SendResult:
        self._alive()
        return await self._sqs.send(queue, body, **options)

    async def receive(self, queue: str, **options: Any) -> list[SqsMessage]:
        self._alive()
        options.setdefault("consumer", self.name)
        messages = await self._sqs.receive(queue, **options)
        self._alive()  # died while the long poll waited: the messages never arrive
        for message in messages:
            self._receipts[message.receipt_handle] = message.message_id
        return messages

    async def delete_message(self, queue: str, receipt_handle: str, *, consumer: str = "") -> None:
        self._alive()
        self._deletes += 1
        dies_here = self._deletes == DIES_AT_DELETE
        if dies_here and self._point == "before_delete":
            self._crash("before_delete", self._message_of(receipt_handle))
        await self._sqs.delete_message(queue, receipt_handle, consumer=consumer or self.name)
        if dies_here and self._point == "after_delete":
            self._crash("after_delete", self._message_of(receipt_handle))

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        self._alive()
        await self._sqs.change_visibility(queue, receipt_handle, timeout)

    async def queue_info(self, name: str) -> SqsQueueInfo:
        self._alive()
        return await self._sqs.queue_info(name)

    def _message_of(self, receipt_handle: str) -> str:
        return self._receipts.get(receipt_handle, receipt_handle)


class Shipping:
    """The business work: each event advances its order by one step (``EffectApplied``)."""

    def __init__(self, ctx: GradingContext, slow: set[str]) -> None:
        self.ctx = ctx
        self.slow = slow
        self.steps_done: defaultdict[str, int] = defaultdict(int)
        self.deleted: set[str] = set()
        self.in_flight = 0
        self.events = 0

    def handler(self, sqs: GradedSqs) -> Callable[[SqsMessage], Awaitable[None]]:
        async def handle(message: SqsMessage) -> None:
            if sqs.dead:
                raise Crashed("dead", sqs.name)
            event = json.loads(message.body)
            order = str(event["order"])
            self.in_flight += 1
            try:
                slow = message.message_id in self.slow
                await asyncio.sleep(SLOW_SECONDS if slow else WORK_SECONDS)
            finally:
                self.in_flight -= 1
            if sqs.dead:
                raise Crashed("dead", sqs.name)  # it died meanwhile: the work never finished
            before = self.steps_done[order]
            self.steps_done[order] = before + 1
            self.ctx.emit(
                Processed, message_id=message.message_id, consumer=sqs.name, group=QUEUE, key=order
            )
            self.ctx.emit(
                EffectApplied,
                entity=order,
                operation=f"ship step {event['step']}",
                before=before,
                after=before + 1,
                message_id=message.message_id,
                idempotent=False,
            )

        return handle

    def finished(self, events: list[Event]) -> bool:
        """Every event's message was deleted and no handling is still under way (a second
        consumer may be handling a message whose visibility ran out)."""
        return self.in_flight == 0 and all(e.event_id in self.deleted for e in events)

    def __call__(self, observation: Observation) -> None:
        if isinstance(observation, Acked):
            self.deleted.add(observation.message_id)
            self.events += 1
        elif isinstance(observation, Processed):
            self.events += 1


@dataclass
class Consumer:
    sqs: GradedSqs
    loop: RunningLoop


def _start(
    ctx: GradingContext,
    module: ModuleType,
    sqs: SqsAPI,
    shipping: Shipping,
    processed: DedupStore,
    name: str,
    point: str | None = None,
) -> Consumer:
    graded = GradedSqs(ctx, sqs, name, point)
    running = learner_function(module, "consume")(
        graded, QUEUE, shipping.handler(graded), processed, name
    )
    return Consumer(graded, RunningLoop(name, "consume", running))


async def _send_all(
    ctx: GradingContext, learner: ModuleType, sqs: SqsAPI, events: list[Event], resent: set[str]
) -> None:
    send = learner_function(learner, "send_event")
    sends: defaultdict[str, list[Produced]] = defaultdict(list)

    def follow(observation: Observation) -> None:
        if isinstance(observation, Produced) and observation.broker == sqs.name:
            sends[observation.message_id].append(observation)

    unsubscribe = ctx.bus.subscribe(follow)
    try:
        for event in events:
            await send(sqs, QUEUE, event.order, event.event_id, event.body())
            if event.event_id not in sends:
                raise LearnerMistake(
                    f"the event {event.event_id!r} was sent under another id: pass "
                    "message_id=event_id to sqs.send (the grader follows each event by it)"
                )
            if event.event_id in resent:
                ctx.fault("retried-send", event.event_id, reason="the producer did not hear back")
                await send(sqs, QUEUE, event.order, event.event_id, event.body())
    finally:
        unsubscribe()
    for event_id in sorted(resent):
        copies = sends[event_id][1:]
        dropped = bool(copies) and all(p.duplicate for p in copies)
        ctx.assert_that(
            f"SQS drops the retried send of {event_id} (same MessageDeduplicationId)",
            dropped,
            "dropped as a duplicate"
            if dropped
            else "accepted as a second message: its MessageDeduplicationId differed",
        )


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    sqs = ctx.broker
    assert isinstance(sqs, SqsAPI)
    events = [Event(order, step) for order in ORDERS for step in STEPS]
    chosen = ctx.rng.sample([e.event_id for e in events], RESENT + SLOW)
    resent, slow = set(chosen[:RESENT]), set(chosen[RESENT:])
    for event_id in sorted(slow):
        ctx.fault(
            "slow-work", event_id, seconds=SLOW_SECONDS, visibility_timeout=VISIBILITY_TIMEOUT
        )
    await sqs.create_queue(QUEUE, visibility_timeout=VISIBILITY_TIMEOUT)
    await _send_all(ctx, learner, sqs, events, resent)
    shipping = Shipping(ctx, slow)
    processed = MemoryDedupStore(name="shared-store")
    unsubscribe = ctx.bus.subscribe(shipping)
    consumers = [
        _start(ctx, fresh_module(learner), sqs, shipping, processed, "consumer-a", "before_delete"),
        _start(ctx, fresh_module(learner), sqs, shipping, processed, "consumer-b", "after_delete"),
    ]
    replaced = 0
    try:
        while True:
            try:
                await wait_until(
                    lambda: shipping.finished(events),
                    [c.loop for c in consumers],
                    timeout=RUN_SECONDS,
                    idle=IDLE_SECONDS,
                    progress=lambda: shipping.events,
                )
                break
            except Crashed:
                for number, consumer in enumerate(consumers):
                    if consumer.loop.crashed:
                        replaced += 1
                        name = f"{consumer.sqs.name}-{replaced + 1}"
                        module = fresh_module(learner)  # a new process: nothing carried over
                        consumers[number] = _start(ctx, module, sqs, shipping, processed, name)
    finally:
        unsubscribe()
        for consumer in consumers:
            consumer.sqs.dead = True
            await consumer.loop.stop()
