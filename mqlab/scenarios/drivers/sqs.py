"""Scenario driver for SQS: the channel is a queue (``.fifo`` for FIFO), ack is DeleteMessage.

SQS has no "nack": a consumer gives a message back by setting its visibility timeout to 0, or
simply by not deleting it, in which case it reappears when the timeout runs out. Dead-lettering
is the queue's redrive policy: the broker moves a message to the DLQ once it has been received
``maxReceiveCount`` times, so the consumer never has to count.
"""

from __future__ import annotations

from mqlab.brokers.base import Broker
from mqlab.brokers.sqs.api import SqsAPI, SqsMessage
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

MAX_LONG_POLL = 20
"""SQS caps long polling at 20 seconds."""


class SqsSession(ConsumerSession):
    """Receive / delete loop on one queue."""

    driver: SqsDriver

    def __init__(self, driver: SqsDriver, queue: str, step: Consume) -> None:
        self.driver = driver
        self.queue = queue
        self.name = step.name
        self.group = driver.sqs.unqualify(queue)
        self.batch = min(step.batch, 10)  # ReceiveMessage returns at most 10

    async def receive(self, max_messages: int, wait: float) -> list[Incoming]:
        messages = await self.driver.sqs.receive(
            self.queue,
            max_messages=min(max_messages, self.batch),
            wait_time=min(max(wait, 0.0), MAX_LONG_POLL),
            consumer=self.name,
        )
        return [
            Incoming(
                message_id=m.message_id,
                body=m.body,
                key=m.group_id,
                native=m,
                attempt=m.receive_count,
            )
            for m in messages
        ]

    @staticmethod
    def _message(message: Incoming) -> SqsMessage:
        assert isinstance(message.native, SqsMessage)
        return message.native

    async def ack(self, message: Incoming) -> None:
        await self.driver.sqs.delete_message(
            self.queue, self._message(message).receipt_handle, consumer=self.name
        )

    async def nack(self, message: Incoming, *, requeue: bool) -> None:
        handle = self._message(message).receipt_handle
        if requeue:
            await self.driver.sqs.change_visibility(self.queue, handle, 0)
        else:
            await self.driver.sqs.delete_message(self.queue, handle, consumer=self.name)

    async def dead_letter(self, message: Incoming, attempts: int) -> bool:
        # Make it visible again at once; the redrive policy moves it to the DLQ on the
        # receive that would exceed maxReceiveCount.
        await self.driver.sqs.change_visibility(
            self.queue, self._message(message).receipt_handle, 0
        )
        return False

    async def close(self) -> None:
        # Nothing to close: received-but-undeleted messages reappear after their timeout.
        return None


class SqsDriver(Driver):
    """Runs scenarios on an :class:`SqsAPI` (moto in the lab, or the simulator)."""

    system = "sqs"

    def __init__(self, broker: Broker, scenario: Scenario) -> None:
        super().__init__(broker, scenario)
        assert isinstance(broker, SqsAPI)
        self.sqs: SqsAPI = broker
        suffix = ".fifo" if self.channel.sqs.fifo else ""
        self.queue = broker.qualify(self.channel.name) + suffix
        self.dlq = broker.qualify(f"{self.channel.name}-dlq") + suffix
        self.topics: dict[str, str] = {}

    @property
    def fifo(self) -> bool:
        """Whether the channel is a FIFO queue."""
        return self.channel.sqs.fifo

    async def setup(self) -> None:
        settings = self.channel.sqs
        dead_letter = self.channel.dead_letter
        if dead_letter is not None:
            await self.sqs.create_queue(self.dlq, visibility_timeout=settings.visibility_timeout)
        await self.sqs.create_queue(
            self.queue,
            visibility_timeout=settings.visibility_timeout,
            delay_seconds=settings.delay_seconds,
            content_based_dedup=settings.content_based_dedup,
            dead_letter_queue=self.dlq if dead_letter is not None else None,
            max_receive_count=dead_letter.after_attempts if dead_letter is not None else None,
        )
        if any(step.produce is not None and step.produce.to for step in self.scenario.steps):
            await self.ensure_fan_out_queues()

    async def produce(self, step: Produce, messages: list[OutgoingMessage]) -> int:
        async def send(message: OutgoingMessage) -> None:
            group = (message.key or "default") if self.fifo else None
            dedup = message.dedup_id
            if self.fifo and dedup is None and not self.channel.sqs.content_based_dedup:
                dedup = message.message_id
            if step.to:
                await self._publish_to_topic(step.to, message, group, dedup)
            else:
                await self.sqs.send(
                    self.queue,
                    message.body,
                    group_id=group,
                    dedup_id=dedup,
                    message_id=message.message_id,
                )

        return await self.send_each(step, messages, lambda _: self.queue, send)

    async def _publish_to_topic(
        self, topic: str, message: OutgoingMessage, group: str | None, dedup: str | None
    ) -> None:
        """SNS fan-out: the topic is created and every scenario queue subscribed on first use."""
        arn = self.topics.get(topic)
        if arn is None:
            arn = await self.sqs.create_topic(self.sqs.qualify(topic))
            await self.sqs.subscribe_queue(arn, self.queue)
            for extra in self._fan_out_queues():
                await self.sqs.subscribe_queue(arn, extra)
            self.topics[topic] = arn
        await self.sqs.publish(
            arn, message.body, group_id=group, dedup_id=dedup, message_id=message.message_id
        )

    def _fan_out_queues(self) -> list[str]:
        return [self.sqs.qualify(name) for name in self.scenario_fan_out]

    @property
    def scenario_fan_out(self) -> list[str]:
        """Extra queues consumed by the scenario (``consume.source``) that SNS feeds too."""
        sources = {
            step.consume.source
            for step in self.scenario.steps
            if step.consume is not None and step.consume.source
        }
        return sorted(s for s in sources if s != f"{self.channel.name}-dlq")

    async def ensure_fan_out_queues(self) -> None:
        """Create the extra queues an SNS scenario consumes."""
        for name in self._fan_out_queues():
            await self.sqs.create_queue(
                name, visibility_timeout=self.channel.sqs.visibility_timeout
            )

    async def open_consumer(self, step: Consume) -> ConsumerSession:
        queue = self.queue
        if step.source:
            queue = (
                self.dlq
                if step.source == f"{self.channel.name}-dlq"
                else self.sqs.qualify(step.source)
            )
        return SqsSession(self, queue, step)

    async def _depth(self, queue: str) -> int:
        info = await self.sqs.queue_info(queue)
        return info.visible + info.in_flight + info.delayed

    async def check(self, check: Check) -> CheckResult:
        return await queue_depth_check(
            check,
            self._depth,
            channel=self.channel.name,
            queue=self.queue,
            dead_letter_queue=self.dlq if self.channel.dead_letter else None,
            dead_letter_words=("in the DLQ", "DLQ"),
            system_title="SQS",
        )

    async def reconcile(self) -> None:
        """Read the DLQ: the redrive policy moved these messages without any consumer knowing."""
        if self.channel.dead_letter is None:
            return
        seen: set[str] = set()
        while True:
            batch = await self.sqs.receive(self.dlq, max_messages=10, visibility_timeout=30)
            fresh = [m for m in batch if m.message_id not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message.message_id)
                self.report_dead_lettered(
                    self.queue, self.dlq, message.message_id, "maxReceiveCount (redrive policy)"
                )

    async def broker_agreement(self, ledger: Ledger) -> list[CheckResult]:
        if self.scenario_fan_out:
            return []
        dead_letter_check = (
            [await self.check(Check(dead_letter_depth=len(ledger.dead_lettered)))]
            if self.channel.dead_letter is not None
            else []
        )
        depth = await self._depth(self.queue)
        return [
            still_queued(depth, len(ledger.unsettled_ids()), settled="deleted"),
            *dead_letter_check,
        ]
