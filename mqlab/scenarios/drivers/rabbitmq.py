"""Scenario driver for RabbitMQ: the channel is a queue (optionally behind an exchange).

Dead-lettering uses the delayed-retry pattern the course teaches: the work queue's dead-letter
exchange routes a rejected message to a *wait* queue whose TTL sends it back to the work queue
(via the default exchange) after ``retry_delay_ms``. RabbitMQ records each trip in the message's
``x-death`` header; once the count reaches ``after_attempts`` the consumer publishes the
message to a *parking* queue (``<channel>-dlq``) and acknowledges it, so a poison message stops
circulating but is never lost.
"""

from __future__ import annotations

import asyncio

from mqlab.brokers.base import Broker
from mqlab.brokers.rabbitmq.api import RabbitConsumer, RabbitDelivery, RabbitMQAPI
from mqlab.course.scenario import Check, Consume, Produce, Scenario
from mqlab.scenarios.drivers.base import (
    CheckResult,
    ConsumerSession,
    Driver,
    Incoming,
    OutgoingMessage,
    queue_depth_check,
    still_queued,
)
from mqlab.scenarios.ledger import Ledger

AGREEMENT_SETTLE_SECONDS = 10.0
"""How long the end-of-run agreement waits for the queues' count to match the ledger. The
unacked part of the count comes from the management API, which samples the queues every
``collect_statistics_interval`` (0.5 s in the lab, later on a loaded node), so a count taken
right after the last ack can still show that message unacked (a fresh-clone run under load:
"broker holds 1" with every message acked). A real disagreement outlasts the wait and is
reported."""
AGREEMENT_POLL_SECONDS = 0.5


class RabbitSession(ConsumerSession):
    """A basic.consume subscription driven by the consume loop."""

    driver: RabbitMQDriver

    def __init__(self, driver: RabbitMQDriver, consumer: RabbitConsumer, group: str) -> None:
        self.driver = driver
        self.consumer = consumer
        self.name = consumer.name
        self.group = group

    async def receive(self, max_messages: int, wait: float) -> list[Incoming]:
        # RabbitMQ pushes deliveries up to the prefetch window; the loop handles one at a time.
        delivery = await self.consumer.next(timeout=wait)
        if delivery is None:
            return []
        rejected_here = sum(
            death.count
            for death in delivery.x_death
            if death.queue == self.consumer.queue and death.reason == "rejected"
        )
        return [
            Incoming(
                message_id=delivery.message_id,
                body=delivery.body.decode(errors="replace"),
                key=delivery.routing_key,
                native=delivery,
                attempt=rejected_here + 1,
            )
        ]

    @staticmethod
    def _delivery(message: Incoming) -> RabbitDelivery:
        assert isinstance(message.native, RabbitDelivery)
        return message.native

    async def ack(self, message: Incoming) -> None:
        await self._delivery(message).ack()

    async def nack(self, message: Incoming, *, requeue: bool) -> None:
        await self._delivery(message).nack(requeue=requeue)

    async def dead_letter(self, message: Incoming, attempts: int) -> bool:
        settings = self.driver.channel.dead_letter
        delivery = self._delivery(message)
        if settings is None:
            await delivery.nack(requeue=True)
            return False
        if attempts < settings.after_attempts:
            # Rejected without requeue -> the queue's DLX -> the wait queue -> back after TTL.
            await delivery.nack(requeue=False)
            return False
        await self.driver.rabbit.publish(
            "",
            self.driver.parking_queue,
            delivery.body,
            headers={k: v for k, v in delivery.headers.items() if k != "x-death"},
            message_id=message.message_id,
        )
        self.driver.report_dead_lettered(
            delivery.queue,
            self.driver.parking_queue,
            message.message_id,
            f"failed {attempts} times",
        )
        await delivery.ack()
        return True

    async def close(self) -> None:
        await self.consumer.close()


class RabbitMQDriver(Driver):
    """Runs scenarios on a :class:`RabbitMQAPI` (the lab's node or the simulator's)."""

    system = "rabbitmq"

    def __init__(self, broker: Broker, scenario: Scenario) -> None:
        super().__init__(broker, scenario)
        assert isinstance(broker, RabbitMQAPI)
        self.rabbit: RabbitMQAPI = broker
        name = self.channel.name
        self.queue = broker.qualify(name)
        settings = self.channel.rabbitmq
        self.exchange = broker.qualify(settings.exchange) if settings.exchange else ""
        self.retry_exchange = broker.qualify(f"{name}-retry")
        self.wait_queue = broker.qualify(f"{name}-wait")
        self.parking_queue = broker.qualify(f"{name}-dlq")

    async def setup(self) -> None:
        settings = self.channel.rabbitmq
        dead_letter = self.channel.dead_letter
        if dead_letter is not None:
            await self.rabbit.declare_exchange(self.retry_exchange, "fanout")
            await self.rabbit.declare_queue(
                self.wait_queue,
                message_ttl_ms=dead_letter.retry_delay_ms,
                dead_letter_exchange="",
                dead_letter_routing_key=self.queue,
            )
            await self.rabbit.bind_queue(self.wait_queue, self.retry_exchange)
            await self.rabbit.declare_queue(self.parking_queue)
        await self.rabbit.declare_queue(
            self.queue,
            max_priority=settings.max_priority,
            message_ttl_ms=settings.message_ttl_ms,
            dead_letter_exchange=self.retry_exchange if dead_letter is not None else None,
        )
        if self.exchange:
            await self.rabbit.declare_exchange(self.exchange, settings.exchange_type)
            await self.rabbit.bind_queue(
                self.queue, self.exchange, self._main_binding(settings.exchange_type)
            )
            for extra, keys in settings.queues.items():
                queue = self.rabbit.qualify(extra)
                await self.rabbit.declare_queue(queue)
                for key in keys or [""]:
                    await self.rabbit.bind_queue(queue, self.exchange, key)

    def _main_binding(self, exchange_type: str) -> str:
        if exchange_type == "topic":
            return "#"
        if exchange_type == "direct":
            return self.channel.name
        return ""

    async def produce(self, step: Produce, messages: list[OutgoingMessage]) -> int:
        exchange = self.rabbit.qualify(step.to) if step.to else self.exchange

        async def publish(message: OutgoingMessage) -> None:
            if exchange:
                routing_key = message.routing_key or message.key or self.channel.name
            else:
                routing_key = self.queue
            await self.rabbit.publish(
                exchange,
                routing_key,
                message.body.encode(),
                priority=message.priority,
                message_id=message.message_id,
            )

        return await self.send_each(step, messages, lambda _: exchange or self.queue, publish)

    async def open_consumer(self, step: Consume) -> ConsumerSession:
        queue = self.rabbit.qualify(step.source) if step.source else self.queue
        consumer = await self.rabbit.consume(
            queue, prefetch=self.channel.rabbitmq.prefetch, name=step.name
        )
        return RabbitSession(self, consumer, group=self.rabbit.unqualify(queue))

    async def _depth(self, queue: str) -> int:
        info = await self.rabbit.queue_info(queue)
        return info.ready + info.unacked

    async def check(self, check: Check) -> CheckResult:
        return await queue_depth_check(
            check,
            self._depth,
            channel=self.channel.name,
            queue=self.queue,
            dead_letter_queue=self.parking_queue if self.channel.dead_letter else None,
            dead_letter_words=("parked", "parking queue"),
            system_title="RabbitMQ",
        )

    async def broker_agreement(self, ledger: Ledger) -> list[CheckResult]:
        if self.channel.rabbitmq.queues or self.channel.rabbitmq.exchange_type == "fanout":
            # Fan-out copies one message into several queues; the per-queue depths are
            # checked by the scenario's own checks instead.
            return []
        unsettled = len(ledger.unsettled_ids())
        if self.channel.dead_letter is None:
            depth = await self._settled_depth((self.queue,), unsettled)
            return [still_queued(depth, unsettled, settled="acked")]
        # A message rejected into the retry loop is in the wait queue, not lost.
        expected = unsettled + len(ledger.dropped - ledger.acked - ledger.dead_lettered)
        depth = await self._settled_depth((self.queue, self.wait_queue), expected)
        return [
            still_queued(depth, expected, settled="acked"),
            await self.check(Check(dead_letter_depth=len(ledger.dead_lettered))),
        ]

    async def _settled_depth(self, queues: tuple[str, ...], expected: int) -> int:
        """The messages ``queues`` hold together, read again until it is ``expected`` or
        :data:`AGREEMENT_SETTLE_SECONDS` have passed (the management API's unacked count
        lags)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AGREEMENT_SETTLE_SECONDS
        while True:
            depth = 0
            for queue in queues:
                depth += await self._depth(queue)
            if depth == expected or loop.time() >= deadline:
                return depth
            await asyncio.sleep(AGREEMENT_POLL_SECONDS)
