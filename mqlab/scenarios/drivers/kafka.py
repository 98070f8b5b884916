"""Scenario driver for Kafka: the channel is a topic, acknowledging is committing an offset.

Kafka has no per-message acknowledgement and no broker-side dead-letter queue, and the driver
shows that honestly: "ack" commits ``offset + 1`` for the record's partition (which also
acknowledges every earlier record of that partition), "requeue" seeks back so the same offset
is fetched again, and dead-lettering is the consumer's own job: it writes the record to a
``<channel>-dlq`` topic and commits past it.
"""

from __future__ import annotations

import asyncio

from mqlab.brokers.base import Broker, BrokerError
from mqlab.brokers.kafka.api import (
    KafkaAPI,
    KafkaConsumer,
    KafkaProducer,
    KafkaRecord,
    TopicInfo,
    TopicPartition,
)
from mqlab.course.scenario import Check, Consume, Produce, Scenario
from mqlab.observe.events import DEAD_LETTER_PRODUCER, TransactionEnded
from mqlab.scenarios.drivers.base import (
    CheckNotSupported,
    CheckResult,
    ConsumerSession,
    Driver,
    Incoming,
    OutgoingMessage,
)
from mqlab.scenarios.ledger import Ledger

SCENARIO_SESSION_TIMEOUT = 3.0
"""Consumer session timeout in scenarios: how long a killed member keeps its partitions."""


class KafkaSession(ConsumerSession):
    """A Kafka group member driven by the consume loop."""

    driver: KafkaDriver

    rewinds_on_requeue = True

    def __init__(self, driver: KafkaDriver, consumer: KafkaConsumer, step: Consume) -> None:
        self.driver = driver
        self.consumer = consumer
        self.step = step
        self.name = step.name
        self.group = driver.kafka.unqualify(consumer.group_id)
        self._replay_pending = step.from_beginning

    async def receive(self, max_messages: int, wait: float) -> list[Incoming]:
        records = await self.consumer.poll(max_records=max_messages, timeout=wait)
        if self._replay_pending and self.consumer.assignment():
            # Replay: once partitions are assigned, rewind them; whatever this poll returned
            # will be fetched again from the log start.
            self._replay_pending = False
            await self.consumer.seek_to_beginning()
            return []
        return [self._incoming(record) for record in records]

    @staticmethod
    def _incoming(record: KafkaRecord) -> Incoming:
        return Incoming(
            message_id=record.message_id,
            body=record.value.decode(errors="replace"),
            key=record.key.decode(errors="replace") if record.key is not None else None,
            native=record,
        )

    @staticmethod
    def _record(message: Incoming) -> KafkaRecord:
        assert isinstance(message.native, KafkaRecord)
        return message.native

    async def ack(self, message: Incoming) -> None:
        record = self._record(message)
        tp = TopicPartition(record.topic, record.partition)
        await self.consumer.commit({tp: record.offset + 1})

    async def nack(self, message: Incoming, *, requeue: bool) -> None:
        record = self._record(message)
        tp = TopicPartition(record.topic, record.partition)
        if requeue:
            # Kafka cannot "give back" one record: rewinding the position is how a consumer
            # retries it (and everything after it on that partition).
            await self.consumer.seek(tp, record.offset)
        else:
            await self.consumer.commit({tp: record.offset + 1})

    async def dead_letter(self, message: Incoming, attempts: int) -> bool:
        """Retry in place (after ``retry_delay_ms``), or write the record to the DLQ topic.

        Kafka has neither per-message redelivery nor a broker-side DLQ: retrying means
        rewinding the partition, and waiting before the retry holds up every later record of
        that partition. That is the cost a learner should see; production consumers move
        failing records to a retry topic instead of blocking.
        """
        settings = self.driver.channel.dead_letter
        if settings is None or attempts < settings.after_attempts:
            if settings is not None and settings.retry_delay_ms:
                await asyncio.sleep(settings.retry_delay_ms / 1000)
            await self.nack(message, requeue=True)
            return False
        record = self._record(message)
        producer = await self.driver.dlq_producer()
        await producer.send(
            self.driver.dlq_topic,
            record.value,
            key=record.key,
            headers=record.headers,
            message_id=message.message_id,
        )
        self.driver.report_dead_lettered(
            record.topic, self.driver.dlq_topic, message.message_id, f"failed {attempts} times"
        )
        await self.ack(message)
        return True

    async def close(self) -> None:
        await self.consumer.close()

    async def held_up(self) -> bool:
        # A new member gets partitions only when the group has rebalanced, which can take a
        # session timeout if a crashed member still holds them. One node down is no reason
        # (the others lead its partitions soon), but records known to be there are.
        return not self.consumer.assignment() or await self.consumer.behind()

    async def crash(self) -> None:
        # The simulator's consumer vanishes without leaving the group, so the group notices
        # only after the session timeout, exactly like a kill -9 (the real adapter closes).
        await self.consumer.crash()


class KafkaDriver(Driver):
    """Runs scenarios on a :class:`KafkaAPI` (the lab's cluster or the simulator's)."""

    system = "kafka"

    def __init__(self, broker: Broker, scenario: Scenario) -> None:
        super().__init__(broker, scenario)
        assert isinstance(broker, KafkaAPI)
        self.kafka: KafkaAPI = broker
        self.topic = broker.qualify(self.channel.name)
        self.dlq_topic = broker.qualify(f"{self.channel.name}-dlq")
        self._dlq_producer: KafkaProducer | None = None
        self._transaction_count = 0
        self._producers: dict[tuple[object, bool], KafkaProducer] = {}
        self.groups_used: set[str] = set()
        self.initial_leaders: dict[int, int] = {}

    async def setup(self) -> None:
        settings = self.channel.kafka
        info = await self.kafka.create_topic(
            self.topic,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config=dict(settings.config),
        )
        self.initial_leaders = {p.partition: p.leader for p in info.partitions}
        if self.channel.dead_letter is not None:
            await self.kafka.create_topic(
                self.dlq_topic, partitions=1, replication_factor=settings.replication_factor
            )

    async def dlq_producer(self) -> KafkaProducer:
        """A producer for the dead-letter topic, created on first use."""
        if self._dlq_producer is None:
            self._dlq_producer = await self.kafka.producer(acks="all", name=DEAD_LETTER_PRODUCER)
        return self._dlq_producer

    async def _producer(self, step: Produce) -> tuple[KafkaProducer, bool]:
        """The producer for a step, and whether the caller must close it.

        Plain producers are kept for the whole run, as an application keeps its producer: a
        new one would have to bootstrap again, which fails while brokers are paused even
        though the partition leader is fine. Transactional producers are per step (each
        step is one transaction with its own transactional id).
        """
        settings = step.producer
        if settings.transaction is not None:
            self._transaction_count += 1
            producer = await self.kafka.producer(
                acks="all",
                idempotent=True,
                transactional_id=self.kafka.qualify(f"tx-{self._transaction_count}"),
                name=step.label or "producer",
                request_timeout=5.0,
            )
            return producer, True
        key = (settings.acks, settings.idempotent)
        if key not in self._producers:
            self._producers[key] = await self.kafka.producer(
                acks=settings.acks,
                idempotent=settings.idempotent,
                name=f"producer-acks-{settings.acks}"
                + ("-idempotent" if settings.idempotent else ""),
                request_timeout=5.0,
            )
        return self._producers[key], False

    async def produce(self, step: Produce, messages: list[OutgoingMessage]) -> int:
        settings = step.producer
        producer, owned = await self._producer(step)
        destination = self.kafka.qualify(step.to) if step.to else self.topic

        async def send(message: OutgoingMessage) -> None:
            await producer.send(
                destination,
                message.body.encode(),
                key=message.key.encode() if message.key is not None else None,
                message_id=message.message_id,
            )

        try:
            if settings.transaction is not None:
                await producer.begin_transaction()
            acknowledged = await self.send_each(step, messages, lambda _: destination, send)
            if settings.transaction == "commit":
                await producer.commit_transaction()
            elif settings.transaction == "abort":
                await producer.abort_transaction()
            if settings.transaction is not None:
                self._report_transaction(step, settings.transaction, messages[:acknowledged])
        finally:
            if owned:
                await producer.close()
        return acknowledged

    def _report_transaction(
        self, step: Produce, outcome: str, messages: list[OutgoingMessage]
    ) -> None:
        """Tell the ledger which messages a transaction covered and how it ended: the
        records of an aborted one are in the log but never visible to read_committed."""
        self.broker.emit(
            TransactionEnded(
                at=self.broker.bus.now(),
                broker=self.broker.name,
                producer=step.label or "producer",
                outcome="committed" if outcome == "commit" else "aborted",
                message_ids=tuple(message.message_id for message in messages),
            )
        )

    async def open_consumer(self, step: Consume) -> ConsumerSession:
        group = self.kafka.qualify(step.group or self.default_group)
        self.groups_used.add(group)
        source = self.kafka.qualify(step.source) if step.source else self.topic
        consumer = await self.kafka.consumer(
            [source],
            group_id=group,
            name=step.name,
            auto_commit=step.auto_commit,
            isolation_level=step.isolation,
            assignment_strategy=step.assignment,
            max_poll_records=step.batch,
            # Kafka's default (45 s) would make every crash scenario wait most of a minute
            # for the group to notice; the lab's brokers allow sessions down to 1 s.
            session_timeout=SCENARIO_SESSION_TIMEOUT,
        )
        return KafkaSession(self, consumer, step)

    async def _topic(self, name: str | None = None) -> TopicInfo:
        return await self.kafka.describe_topic(name or self.topic)

    async def check(self, check: Check) -> CheckResult:
        if check.isr_size is not None or check.min_isr_size is not None:
            info = await self._topic()
            sizes = [len(p.isr) for p in info.partitions]
            if check.isr_size is not None:
                holds = all(size == check.isr_size for size in sizes)
                wanted = f"every ISR has {check.isr_size} replicas"
            else:
                assert check.min_isr_size is not None
                holds = all(size >= check.min_isr_size for size in sizes)
                wanted = f"every ISR has at least {check.min_isr_size} replicas"
            return CheckResult(holds, f"ISR sizes {sizes}", wanted)
        if check.lag is not None:
            group = check.group or self.default_group
            lag = await self.group_lag(self.kafka.qualify(group))
            return CheckResult(lag == check.lag, f"lag {lag}", f"{group} lag is {check.lag}")
        if check.online is not None:
            info = await self._topic()
            snapshot = await self.kafka.inspect()
            alive_ids = {node.node_id for node in snapshot.brokers if node.alive}
            leaders = [p.leader for p in info.partitions]
            online = all(leader in alive_ids for leader in leaders)
            return CheckResult(
                online == check.online,
                f"leaders {leaders}, alive brokers {sorted(alive_ids)}",
                "every partition has a live leader" if check.online else "a partition is offline",
            )
        if check.leader_moved is not None:
            info = await self._topic()
            snapshot = await self.kafka.inspect()
            alive_ids = {node.node_id for node in snapshot.brokers if node.alive}
            moved = all(
                p.leader in alive_ids and p.leader != self.initial_leaders.get(p.partition)
                for p in info.partitions
            )
            now_leading = {p.partition: p.leader for p in info.partitions}
            return CheckResult(
                moved == check.leader_moved,
                f"leaders {now_leading} (first {self.initial_leaders}), alive {sorted(alive_ids)}",
                "every partition has a new live leader"
                if check.leader_moved
                else "no partition changed leader",
            )
        if check.alive_brokers is not None:
            snapshot = await self.kafka.inspect()
            alive_count = sum(1 for node in snapshot.brokers if node.alive)
            return CheckResult(
                alive_count == check.alive_brokers,
                f"{alive_count} brokers alive",
                f"{check.alive_brokers} brokers alive",
            )
        if check.dead_letter_depth is not None:
            info = await self._topic(self.dlq_topic)
            depth = sum(p.high_watermark - p.log_start for p in info.partitions)
            return CheckResult(
                depth == check.dead_letter_depth,
                f"{depth} records in {self.kafka.unqualify(self.dlq_topic)}",
                f"dead-letter topic holds {check.dead_letter_depth}",
            )
        if check.depth is not None:
            info = await self._topic()
            depth = sum(p.high_watermark - p.log_start for p in info.partitions)
            return CheckResult(
                depth == check.depth, f"{depth} records in the topic", f"topic holds {check.depth}"
            )
        raise CheckNotSupported("this check is not available on Kafka")

    async def group_lag(self, group: str) -> int:
        """Total lag of ``group`` on the channel's topic, from the broker's committed offsets."""
        info = await self._topic()
        committed = await self.kafka.group_offsets(group)
        lag = 0
        for partition in info.partitions:
            offset = committed.get(TopicPartition(self.topic, partition.partition), 0)
            lag += partition.high_watermark - offset
        return lag

    async def broker_agreement(self, ledger: Ledger) -> list[CheckResult]:
        results: list[CheckResult] = []
        committed = ledger.committed
        # Consumers may have run in worker processes: the groups are the ones the ledger saw
        # committing, not only the ones this driver opened.
        groups = self.groups_used | {group for group, _, _ in committed}
        for group in sorted(groups):
            broker_offsets = await self.kafka.group_offsets(group)
            for (ledger_group, topic, partition), offset in committed.items():
                if ledger_group != group:
                    continue
                broker_offset = broker_offsets.get(TopicPartition(topic, partition))
                results.append(
                    CheckResult(
                        broker_offset == offset,
                        f"broker has {broker_offset}",
                        f"{self.kafka.unqualify(group)} committed offset of "
                        f"{self.kafka.unqualify(topic)}:{partition} is {offset}",
                    )
                )
        if self.channel.dead_letter is not None:
            expected = len(ledger.dead_lettered)
            results.append(await self.check(Check(dead_letter_depth=expected)))
        return results

    async def resolve_fault_target(self, target: str) -> str:
        if target not in ("broker", "leader") and not target.startswith("follower-"):
            return target
        partition = (await self._topic()).partitions[0]
        if partition.leader < 0:
            raise BrokerError("partition 0 has no leader to target")
        if target in ("broker", "leader"):
            return f"kafka-broker-{partition.leader}"
        followers = sorted(r for r in partition.replicas if r != partition.leader)
        number = target.removeprefix("follower-")
        if not number.isdigit() or not 1 <= int(number) <= len(followers):
            raise BrokerError(f"{target}: partition 0 has {len(followers)} followers")
        return f"kafka-broker-{followers[int(number) - 1]}"

    async def close(self) -> None:
        """Release the producers the driver kept for the run."""
        producers = list(self._producers.values())
        if self._dlq_producer is not None:
            producers.append(self._dlq_producer)
        self._producers.clear()
        self._dlq_producer = None
        for producer in producers:
            await producer.close()
