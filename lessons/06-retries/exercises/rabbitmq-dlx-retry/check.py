"""Hidden check of the rabbitmq-dlx-retry exercise: poison and transient failures through
the learner's dead-letter topology.

The learner declares the work, wait and parking queues; the check publishes 12 orders to the
work queue and runs the learner's ``consume`` with a handler that fails on purpose: two
seeded orders are poison (every attempt raises), two fail twice with a transient error and
succeed at their third, the rest succeed (each attempt takes 20 ms; a success is reported
as ``Processed``). Which order fails how is reported as a fault on it, so a
counter-example names it.

The loop runs until every order is processed or in the parking queue, or one order has been
delivered 40 times (a loop that never parks or never waits), or nothing has been delivered
for 5 s. Then it is cancelled, and once half a second has passed since the last delivery
(so that reading the parking queue back is no "early retry") the check takes every message
out of the parking queue and reports it as ``DeadLettered`` there.

``retry-delay-respected`` holds the deliveries of each order 0.5 s apart;
``parked-after-attempts`` wants a parked order delivered exactly 4 times and none more often;
``nothing-lost`` wants each order processed or parked (a stay in the wait queue does not
count).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import ModuleType

from mqlab.brokers.rabbitmq.api import NotFound, RabbitDelivery, RabbitMQAPI
from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.grader.loops import RunningLoop, wait_until
from mqlab.observe.events import DeadLettered, Observation, Processed, Produced

QUEUE = "orders"
WAIT_QUEUE = "orders.wait"
PARKING_QUEUE = "orders.parked"
RETRY_DELAY_MS = 500
MAX_ATTEMPTS = 4
ORDERS = 12
POISON = 2
TRANSIENT = 2
TRANSIENT_FAILURES = 2
WORK_SECONDS = 0.02
HOT_LOOP_DELIVERIES = 40
RUN_SECONDS = 30.0
IDLE_SECONDS = 5.0


class PoisonMessage(ValueError):
    """The order can never be handled (what the handler raises for a poison message)."""


class DependencyDown(ConnectionError):
    """The inventory service is down for now (the transient failure)."""


class Orders:
    """The handler the learner's loop calls, and what it saw."""

    def __init__(self, ctx: GradingContext, poison: set[str], transient: set[str]) -> None:
        self.ctx = ctx
        self.poison = poison
        self.transient = transient
        self.deliveries: Counter[str] = Counter()
        self.last_delivery = 0.0
        self.processed: set[str] = set()
        self.parked: set[str] = set()
        self.parking_queue = ""

    async def handle(self, delivery: RabbitDelivery) -> None:
        message_id = delivery.message_id
        self.deliveries[message_id] += 1
        self.last_delivery = asyncio.get_running_loop().time()
        await asyncio.sleep(WORK_SECONDS)
        if message_id in self.poison:
            raise PoisonMessage(f"{message_id}: the order cannot be parsed")
        if message_id in self.transient and self.deliveries[message_id] <= TRANSIENT_FAILURES:
            raise DependencyDown(f"{message_id}: the inventory service is unavailable")
        self.processed.add(message_id)
        self.ctx.emit(Processed, message_id=message_id, consumer="orders-consumer", group=QUEUE)

    def __call__(self, observation: Observation) -> None:
        """Follow the learner's publishes to the parking queue (or dead-lettering there)."""
        if isinstance(observation, Produced):
            where = observation.destination
        elif isinstance(observation, DeadLettered):
            where = observation.target
        else:
            return
        if where == self.parking_queue:
            self.parked.add(observation.message_id)

    def settled(self, orders: list[str]) -> bool:
        return all(o in self.processed or o in self.parked for o in orders)

    def spinning(self) -> bool:
        return any(n >= HOT_LOOP_DELIVERIES for n in self.deliveries.values())


async def _read_parking_queue(ctx: GradingContext, rabbit: RabbitMQAPI, orders: list[str]) -> None:
    """Take every message out of the parking queue, reporting it as parked there (nothing,
    if the learner never declared it)."""
    while True:
        try:
            delivery = await rabbit.get(PARKING_QUEUE)
        except NotFound:
            return
        if delivery is None:
            return
        if delivery.message_id not in orders:
            raise LearnerMistake(
                f"the parking queue holds a message with id {delivery.message_id!r}, which "
                "is none of the orders: publish it there with message_id=delivery.message_id"
            )
        ctx.emit(
            DeadLettered,
            source=rabbit.qualify(QUEUE),
            target=rabbit.qualify(PARKING_QUEUE),
            message_id=delivery.message_id,
            reason="parked",
        )
        await delivery.ack()


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    rabbit = ctx.broker
    assert isinstance(rabbit, RabbitMQAPI)
    orders = [f"order-{n:02d}" for n in range(1, ORDERS + 1)]
    failing = ctx.rng.sample(orders, POISON + TRANSIENT)
    poison, transient = set(failing[:POISON]), set(failing[POISON:])
    await learner_function(learner, "declare_topology")(
        rabbit,
        queue=QUEUE,
        wait_queue=WAIT_QUEUE,
        parking_queue=PARKING_QUEUE,
        retry_delay_ms=RETRY_DELAY_MS,
    )
    handler = Orders(ctx, poison, transient)
    handler.parking_queue = rabbit.qualify(PARKING_QUEUE)
    unsubscribe = ctx.bus.subscribe(handler)
    try:
        for order in orders:
            if order in poison:
                ctx.fault("poison", order, fails="always")
            elif order in transient:
                ctx.fault("transient", order, fails=TRANSIENT_FAILURES)
            await rabbit.publish("", QUEUE, f'{{"order": "{order}"}}'.encode(), message_id=order)
        running = learner_function(learner, "consume")(
            rabbit,
            queue=QUEUE,
            parking_queue=PARKING_QUEUE,
            handle=handler.handle,
            max_attempts=MAX_ATTEMPTS,
        )
        loop = RunningLoop("orders-consumer", "consume", running)
        try:
            await wait_until(
                lambda: handler.settled(orders) or handler.spinning(),
                [loop],
                timeout=RUN_SECONDS,
                idle=IDLE_SECONDS,
                progress=lambda: sum(handler.deliveries.values()),
            )
        finally:
            await loop.stop()
        clock = asyncio.get_running_loop()
        quiet_until = handler.last_delivery + RETRY_DELAY_MS / 1000
        await asyncio.sleep(max(0.0, quiet_until - clock.time()))
        await _read_parking_queue(ctx, rabbit, orders)
    finally:
        unsubscribe()
