"""What the runner needs from a system: set up the channel, produce, consume, check state.

One driver per system translates the scenario vocabulary (channel, produce, consume with an
acknowledgement policy) into that system's own calls on its adapter interface. Because the
simulator implements the same interfaces, the same driver runs a scenario on the real broker and
on ``sim``: the only difference is the adapter object it is given.

The consume loop itself is shared (:mod:`mqlab.scenarios.consumer`) and deliberately explicit,
because it is exactly what learners must see: receive, (ack), process, (ack), and where a crash
falls in between.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mqlab.brokers.base import Broker, BrokerError
from mqlab.course.scenario import Check, Consume, Produce, Scenario
from mqlab.observe.events import DeadLettered, Observation, ProduceFailed
from mqlab.scenarios.ledger import Ledger

POISON_MARK = "POISON"
"""Bodies starting with this word fail every consumer's processing (a poison message)."""
FLAKY_MARK = "FLAKY"
"""Bodies starting with ``FLAKY<n>`` fail their first n processing attempts (a transient
error), then succeed."""


class CheckNotSupported(BrokerError):
    """A check that makes no sense on this system (e.g. ISR on RabbitMQ)."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message a produce step sends."""

    index: int
    message_id: str
    body: str
    key: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    dedup_id: str | None = None

    @property
    def poison(self) -> bool:
        """Whether consumers will fail on it."""
        return self.body.startswith(POISON_MARK)


@dataclass(slots=True)
class Incoming:
    """A received message, whatever the system called it (``native`` keeps the original)."""

    message_id: str
    body: str
    key: str | None
    native: object
    attempt: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def poison(self) -> bool:
        """Whether processing must fail whatever the attempt."""
        return self.body.startswith(POISON_MARK)

    def fails_on(self, attempt: int) -> bool:
        """Whether processing fails on this attempt (poison: always; flaky: the first n)."""
        if self.poison:
            return True
        if self.body.startswith(FLAKY_MARK):
            digits = self.body[len(FLAKY_MARK) :].split(" ", 1)[0]
            return digits.isdigit() and attempt <= int(digits)
        return False


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check against the broker's own state."""

    holds: bool
    observed: str
    description: str


class ConsumerSession(ABC):
    """A consumer as the shared consume loop drives it."""

    name: str
    group: str
    driver: Driver
    """The driver that opened this session (its ``broker`` is the adapter it receives on)."""
    rewinds_on_requeue: bool = False
    """True where giving a message back means rewinding the position (Kafka): the rest of
    the fetched batch will be fetched again, so the loop must drop it, or those messages
    would be processed twice."""

    @abstractmethod
    async def receive(self, max_messages: int, wait: float) -> list[Incoming]:
        """Up to ``max_messages`` messages, waiting at most ``wait`` seconds."""

    @abstractmethod
    async def ack(self, message: Incoming) -> None:
        """Acknowledge (Kafka: commit offset + 1; RabbitMQ ack; SQS delete; NATS ack)."""

    @abstractmethod
    async def nack(self, message: Incoming, *, requeue: bool) -> None:
        """Give the message back (requeue) or drop it."""

    @abstractmethod
    async def dead_letter(self, message: Incoming, attempts: int) -> bool:
        """Handle a failed message under the channel's dead-letter settings.

        Returns True when the message left the main flow (parked / dead-lettered), False when
        it will be retried.
        """

    @abstractmethod
    async def close(self) -> None:
        """Stop cleanly (Kafka: leave the group; RabbitMQ: cancel, unacked go back)."""

    async def crash(self) -> None:
        """Vanish without closing (in-process runs only; a worker process is SIGKILLed)."""
        await self.close()

    async def held_up(self) -> bool:
        """True while an empty receive does not mean an empty channel: the consumer cannot
        receive yet (a Kafka member waiting for its group to assign partitions, a connection
        down and reconnecting) or knows of messages it has not been given yet (a Kafka member
        behind the end of its partitions, a fetch cut off on the way).

        The consume loop does not count that time as idle, so a network cut longer than the
        step's ``idle`` does not end the consumer before the messages come back; the step's
        ``max_time`` still bounds the wait, so a broker that never returns ends the step.

        This default is the single-node systems' test (RabbitMQ, SQS, NATS): the adapter has
        reported its node down and not up again (its connection dropped and is being reopened,
        or requests cannot reach it). Kafka has its own."""
        return bool(self.driver.broker.nodes_down)


class Driver(ABC):
    """Scenario operations for one system on one adapter."""

    system: str

    def __init__(self, broker: Broker, scenario: Scenario) -> None:
        self.broker = broker
        self.scenario = scenario
        self.channel = scenario.channel
        self._failures_reported: set[str] = set()
        broker.bus.subscribe(self._note_reported_failure)

    def _note_reported_failure(self, observation: Observation) -> None:
        if isinstance(observation, ProduceFailed):
            self._failures_reported.add(observation.message_id)

    @property
    def default_group(self) -> str:
        """The group a consume step uses when it names none."""
        return f"{self.channel.name}-group"

    @abstractmethod
    async def setup(self) -> None:
        """Create the channel (and its dead-letter / fan-out resources)."""

    @abstractmethod
    async def produce(self, step: Produce, messages: list[OutgoingMessage]) -> int:
        """Send ``messages``; returns how many were acknowledged.

        Raises:
            BrokerError: a send failed and ``step.expect_failures`` is False.
        """

    def report_failed_send(
        self, destination: str, message: OutgoingMessage, error: Exception
    ) -> None:
        """Record a send the broker did not acknowledge, unless the adapter already did (one
        failure is one line in the timeline, not two)."""
        if message.message_id in self._failures_reported:
            return
        self.broker.report_produce_failed(
            destination, message.message_id, str(error) or type(error).__name__, key=message.key
        )

    async def send_each(
        self,
        step: Produce,
        messages: list[OutgoingMessage],
        destination: Callable[[OutgoingMessage], str],
        send: Callable[[OutgoingMessage], Awaitable[None]],
    ) -> int:
        """Send ``messages`` one at a time, at the step's rate; returns how many the broker
        acknowledged.

        A send the broker refuses is reported (:meth:`report_failed_send`, on
        ``destination(message)``) and stops the step, unless the step expects failures.

        Raises:
            BrokerError: a send failed and ``step.expect_failures`` is False.
        """
        acknowledged = 0
        for message in messages:
            try:
                await send(message)
                acknowledged += 1
            except BrokerError as error:
                self.report_failed_send(destination(message), message, error)
                if not step.expect_failures:
                    raise
            await pace(step)
        return acknowledged

    def report_dead_lettered(self, source: str, target: str, message_id: str, reason: str) -> None:
        """Emit ``DeadLettered``: ``message_id`` left ``source`` for good, into ``target``."""
        self.broker.emit(
            DeadLettered(
                at=self.broker.bus.now(),
                broker=self.broker.name,
                source=source,
                target=target,
                message_id=message_id,
                reason=reason,
            )
        )

    @abstractmethod
    async def open_consumer(self, step: Consume) -> ConsumerSession:
        """A started consumer for a consume step."""

    @abstractmethod
    async def check(self, check: Check) -> CheckResult:
        """Evaluate a check against the broker's state (through inspect / info calls)."""

    async def reconcile(self) -> None:
        """At the end of a run, report what only the broker knows as observations (e.g. which
        messages SQS's redrive policy moved to the DLQ without telling any consumer)."""
        return None

    async def broker_agreement(self, ledger: Ledger) -> list[CheckResult]:
        """Compare the ledger with what the broker itself reports at the end of a run, so the
        numbers a learner sees are the broker's, not only the runner's own bookkeeping."""
        return []

    async def close(self) -> None:
        """Release anything the driver opened itself (its own producers)."""
        return None

    async def resolve_fault_target(self, target: str) -> str:
        """Turn a role (``broker``) into a process / proxy name; other names pass through.

        The Kafka driver also knows ``leader`` and ``follower-N``.
        """
        return self.system if target == "broker" else target


async def queue_depth_check(
    check: Check,
    depth_of: Callable[[str], Awaitable[int]],
    *,
    channel: str,
    queue: str,
    dead_letter_queue: str | None,
    dead_letter_words: tuple[str, str],
    system_title: str,
) -> CheckResult:
    """A ``depth`` or ``dead_letter_depth`` check on a system whose channel is a queue with a
    dead-letter queue beside it (RabbitMQ's parking queue, SQS's DLQ).

    ``dead_letter_words`` says where a dead letter is in the system's own words: how the
    observed count ends ("parked") and what the expectation names ("parking queue");
    ``dead_letter_queue`` is None when the channel has no dead-letter settings.

    Raises:
        CheckNotSupported: a dead-letter check without dead-letter settings, or a Kafka check.
    """
    if check.depth is not None:
        depth = await depth_of(queue)
        return CheckResult(
            depth == check.depth, f"{depth} messages in {channel}", f"queue holds {check.depth}"
        )
    if check.dead_letter_depth is not None:
        if dead_letter_queue is None:
            raise CheckNotSupported("the channel has no dead_letter settings")
        depth = await depth_of(dead_letter_queue)
        where, holder = dead_letter_words
        return CheckResult(
            depth == check.dead_letter_depth,
            f"{depth} messages {where}",
            f"{holder} holds {check.dead_letter_depth}",
        )
    raise CheckNotSupported(f"this check is not available on {system_title} (Kafka only)")


def still_queued(held: int, unsettled: int, *, settled: str) -> CheckResult:
    """The end-of-run agreement on a queue: the broker holds exactly the messages the ledger
    never saw settled (``settled``: the system's word for it, "acked" or "deleted") nor
    dead-lettered."""
    return CheckResult(
        held == unsettled,
        f"broker holds {held}",
        f"{unsettled} messages still queued (produced, never {settled} or dead-lettered)",
    )


async def pace(step: Produce) -> None:
    """Sleep between sends when the step sets a rate (messages per second)."""
    if step.rate:
        await asyncio.sleep(1.0 / step.rate)
