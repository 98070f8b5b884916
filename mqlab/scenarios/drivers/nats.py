"""Scenario driver for NATS JetStream: the channel is a stream, consumers are durable pull
consumers, ack is a JetStream ack.

A stream keeps messages after they are acknowledged (limits retention), which is what makes
replay possible: a new durable with deliver policy "all" or a start sequence reads history
again. JetStream has no dead-letter queue; ``max_deliver`` stops redelivery, and the server
announces it with an advisory that the adapter turns into a DeadLettered observation.
"""

from __future__ import annotations

from mqlab.brokers.base import Broker
from mqlab.brokers.nats.api import JsMessage, NatsAPI, NatsPullConsumer
from mqlab.course.scenario import Check, Consume, Produce, Scenario
from mqlab.scenarios.drivers.base import (
    CheckNotSupported,
    CheckResult,
    ConsumerSession,
    Driver,
    Incoming,
    OutgoingMessage,
)
from mqlab.scenarios.ledger import Ledger


class NatsSession(ConsumerSession):
    """A durable pull consumer driven by the consume loop."""

    driver: NatsDriver

    def __init__(self, driver: NatsDriver, consumer: NatsPullConsumer, step: Consume) -> None:
        self.driver = driver
        self.consumer = consumer
        self.name = step.name
        self.group = driver.nats.unqualify(consumer.name)

    async def receive(self, max_messages: int, wait: float) -> list[Incoming]:
        messages = await self.consumer.fetch(batch=max_messages, timeout=wait)
        return [
            Incoming(
                message_id=m.message_id,
                body=m.data.decode(errors="replace"),
                key=m.subject,
                native=m,
                attempt=m.num_delivered,
            )
            for m in messages
        ]

    @staticmethod
    def _message(message: Incoming) -> JsMessage:
        assert isinstance(message.native, JsMessage)
        return message.native

    async def ack(self, message: Incoming) -> None:
        await self._message(message).ack()

    async def nack(self, message: Incoming, *, requeue: bool) -> None:
        if requeue:
            await self._message(message).nak()
        else:
            await self._message(message).term()

    async def dead_letter(self, message: Incoming, attempts: int) -> bool:
        # nak: the server redelivers until max_deliver, then gives up on the message.
        await self._message(message).nak()
        settings = self.driver.channel.dead_letter
        return settings is not None and attempts >= settings.after_attempts

    async def close(self) -> None:
        await self.consumer.close()


class NatsDriver(Driver):
    """Runs scenarios on a :class:`NatsAPI` (the lab's server or the simulator)."""

    system = "nats"

    def __init__(self, broker: Broker, scenario: Scenario) -> None:
        super().__init__(broker, scenario)
        assert isinstance(broker, NatsAPI)
        self.nats: NatsAPI = broker
        self.stream = broker.qualify(self.channel.name)
        self.durables: set[str] = set()

    def _subjects(self) -> list[str]:
        configured = self.channel.nats.subjects or [f"{self.channel.name}.>"]
        return [self.nats.subject(s) for s in configured]

    async def setup(self) -> None:
        await self.nats.add_stream(
            self.stream,
            self._subjects(),
            duplicate_window=self.channel.nats.duplicate_window,
        )

    def _subject_for(self, message: OutgoingMessage) -> str:
        suffix = message.routing_key or message.key or "event"
        return self.nats.subject(f"{self.channel.name}.{suffix}")

    async def produce(self, step: Produce, messages: list[OutgoingMessage]) -> int:
        async def publish(message: OutgoingMessage) -> None:
            await self.nats.publish(
                self._subject_for(message),
                message.body.encode(),
                msg_id=message.dedup_id,
                message_id=message.message_id,
            )

        return await self.send_each(step, messages, self._subject_for, publish)

    async def open_consumer(self, step: Consume) -> ConsumerSession:
        durable = self.nats.qualify(step.group or self.default_group)
        self.durables.add(durable)
        dead_letter = self.channel.dead_letter
        filter_subject = self.nats.subject(step.source) if step.source else None
        consumer = await self.nats.pull_consumer(
            self.stream,
            durable,
            filter_subject=filter_subject,
            ack_wait=self.channel.nats.ack_wait,
            max_deliver=dead_letter.after_attempts if dead_letter is not None else -1,
            deliver_policy="by_start_sequence" if step.start_sequence else "all",
            start_sequence=step.start_sequence,
        )
        return NatsSession(self, consumer, step)

    async def check(self, check: Check) -> CheckResult:
        if check.depth is not None:
            info = await self.nats.stream_info(self.stream)
            return CheckResult(
                info.messages == check.depth,
                f"{info.messages} messages in the stream",
                f"stream holds {check.depth}",
            )
        raise CheckNotSupported("this check is not available on NATS")

    async def broker_agreement(self, ledger: Ledger) -> list[CheckResult]:
        results = []
        info = await self.nats.stream_info(self.stream)
        produced = len(ledger.produced_order)
        results.append(
            CheckResult(
                info.messages == produced,
                f"stream holds {info.messages}",
                f"{produced} messages kept by the stream (acked ones too: limits retention)",
            )
        )
        return results
