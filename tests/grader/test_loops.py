"""What the broker exercises' checks stand on: a learner loop run as a task (stopped,
crashed, or misbehaving, each with its own message), a Kafka consumer that dies like kill -9,
and a database that reports only committed effects. All on the simulator's virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mqlab.brokers.kafka.api import KafkaConsumer, TopicInfo, TopicPartition
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.grader.context import GradingContext, LearnerMistake
from mqlab.grader.database import WatchedDatabase
from mqlab.grader.loops import (
    GradedKafkaConsumer,
    RunningLoop,
    produce_in_turn,
    run_to_crash,
    wait_until,
)
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import Recorder
from mqlab.observe.events import EffectApplied, FaultInjected
from mqlab.patterns.database import MemoryDatabase
from mqlab.patterns.harness import Crashed, crash_at

pytestmark = pytest.mark.sim


def _virtual(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    run_virtual(test())


def _context(world: SimWorld) -> GradingContext:
    return GradingContext(
        bus=world.bus,
        seed=0,
        simulated=True,
        phase=1,
        namespace="mq-test",
        endpoints=Endpoints.local(),
    )


# --- RunningLoop and wait_until ------------------------------------------------------------


def test_a_loop_that_returns_by_itself_is_a_learner_mistake_naming_the_function() -> None:
    async def returns_early() -> None:
        await asyncio.sleep(0.1)

    async def test() -> None:
        loop = RunningLoop("member-1", "consume", returns_early())
        with pytest.raises(LearnerMistake, match=r"consume\(\) returned while there was still"):
            await wait_until(lambda: False, [loop], timeout=5.0)

    _virtual(test)


def test_a_consume_written_without_async_is_named_for_it() -> None:
    with pytest.raises(LearnerMistake, match=r"async def consume\(\.\.\.\)"):
        RunningLoop("member-1", "consume", None)


def test_a_loop_that_swallows_its_cancellation_is_named_for_it() -> None:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                continue

    async def test() -> None:
        loop = RunningLoop("member-1", "consume", stubborn())
        await asyncio.sleep(0.1)
        with pytest.raises(LearnerMistake, match="do not catch BaseException"):
            await loop.stop()

    _virtual(test)


def test_what_a_loop_raises_reaches_the_check_at_once_not_at_the_timeout() -> None:
    async def raises() -> None:
        await asyncio.sleep(0.5)
        raise KeyError("amount")

    async def test() -> None:
        loop = RunningLoop("member-1", "consume", raises())
        started = asyncio.get_running_loop().time()
        with pytest.raises(KeyError):
            await wait_until(lambda: False, [loop], timeout=60.0)
        assert asyncio.get_running_loop().time() - started < 1.0

    _virtual(test)


def test_wait_until_gives_up_when_progress_stops_for_the_idle_time() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def test() -> None:
        loop = RunningLoop("member-1", "consume", forever())
        clock = asyncio.get_running_loop()
        started = clock.time()
        held = await wait_until(lambda: False, [loop], timeout=60.0, idle=2.0, progress=lambda: 7)
        assert not held
        assert 2.0 <= clock.time() - started < 2.5
        await loop.stop()
        assert loop.ended
        assert not loop.crashed

    _virtual(test)


# --- GradedKafkaConsumer --------------------------------------------------------------------


def test_a_consumer_crashed_after_a_commit_vanishes_without_leaving_its_group() -> None:
    async def test() -> None:
        world = SimWorld(seed=0)
        recorded = Recorder()
        world.bus.subscribe(recorded)
        async with SimKafkaBroker(world=world, namespace="mq-t") as kafka:
            topic = kafka.qualify("t")
            await kafka.create_topic(topic, partitions=1, replication_factor=3)
            producer = await kafka.producer(acks="all")
            for n in range(3):
                await producer.send(topic, b"x", partition=0, message_id=f"m{n}")
            inner = await kafka.consumer([topic], group_id=kafka.qualify("g"), session_timeout=2)
            consumer = GradedKafkaConsumer(
                inner, crash_at("after_commit", occurrence=2), describe=lambda o: "m1"
            )

            async def loop_body() -> None:
                while True:
                    for record in await consumer.poll(timeout=0.5):
                        await consumer.commit({TopicPartition(topic, 0): record.offset + 1})

            loop = RunningLoop("member-1", "consume", loop_body())
            with pytest.raises(Crashed) as crash:
                await wait_until(lambda: False, [loop], timeout=10.0)
            assert crash.value.detail == "m1"
            await consumer.die(crash.value.point, loop)
            assert loop.crashed
            with pytest.raises(Crashed):
                await consumer.poll()
            await consumer.close()  # a dead member says no goodbye: nothing happens
            assert await kafka.group_offsets(kafka.qualify("g")) == {TopicPartition(topic, 0): 2}
            kinds = [type(o).__name__ for o in recorded.observations]
            assert "ConsumerCrashed" in kinds

    _virtual(test)


def test_run_to_crash_crashes_a_loop_that_never_reaches_the_point() -> None:
    class Idle(KafkaConsumer):
        name = "idle"
        group_id = "g"

        async def poll(self, *, max_records: int = 100, timeout: float = 1.0) -> list[Any]:
            await asyncio.sleep(timeout)
            return []

        async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
            return None

        async def committed(self, tp: TopicPartition) -> int | None:
            return None

        async def seek(self, tp: TopicPartition, offset: int) -> None:
            return None

        async def seek_to_beginning(self, *tps: TopicPartition) -> None:
            return None

        async def position(self, tp: TopicPartition) -> int:
            return 0

        def assignment(self) -> frozenset[TopicPartition]:
            return frozenset()

        async def behind(self) -> bool:
            return False

        async def close(self) -> None:
            return None

    async def test() -> None:
        world = SimWorld(seed=0)
        recorded = Recorder()
        world.bus.subscribe(recorded)
        ctx = _context(world)
        consumer = GradedKafkaConsumer(Idle())

        async def polls() -> None:
            while True:
                await consumer.poll(timeout=0.5)

        loop = RunningLoop("member-1", "consume", polls())
        await run_to_crash(
            ctx, consumer, loop, point="after_commit", progress=lambda: 0, timeout=30, idle=3
        )
        assert consumer.dead
        assert loop.ended
        faults = [o for o in recorded.observations if isinstance(o, FaultInjected)]
        assert [(f.fault, dict(f.params)["point"]) for f in faults] == [("crash", "while_idle")]

    _virtual(test)


# --- WatchedDatabase ------------------------------------------------------------------------


def test_only_committed_business_writes_are_reported_and_the_crash_points_come_in_order() -> None:
    async def test() -> None:
        world = SimWorld(seed=0)
        recorded = Recorder()
        world.bus.subscribe(recorded)
        reached: list[tuple[str, str]] = []

        async def note(point: str, detail: str) -> None:
            reached.append((point, detail))
            if point == "after_business_write" and detail == "dep-2":
                raise Crashed(point, detail)

        database = MemoryDatabase()
        db = WatchedDatabase(
            database, _context(world), note, record_at=lambda t, p, o: f"dep-{o + 1}"
        )
        async with db.transaction() as tx:
            await tx.advance_offset("g", "t", 0, start=0, end=1)
            await tx.credit("acct", 10, message_id="dep-1")

        async def second_deposit() -> None:
            async with db.transaction() as tx:
                await tx.advance_offset("g", "t", 0, start=1, end=2)
                await tx.credit("acct", 20, message_id="dep-2")

        with pytest.raises(Crashed):
            await second_deposit()
        effects = [o for o in recorded.observations if isinstance(o, EffectApplied)]
        assert [(e.message_id, e.before, e.after) for e in effects] == [("dep-1", 0, 10)]
        assert reached == [
            ("after_business_write", "dep-1"),
            ("after_effect_commit", "dep-1"),
            ("after_offset_commit", "dep-1"),
            ("after_business_write", "dep-2"),
        ]
        assert await database.balance("acct") == 10  # the crashed transaction left nothing
        assert await database.stored_offsets("g", [("t", 0)]) == {("t", 0): 1}

    _virtual(test)


# --- produce_in_turn ------------------------------------------------------------------------


class _StrayRecordKafka(SimKafkaBroker):
    """A cluster where something else writes to partition 0 of a topic as soon as it exists."""

    async def create_topic(
        self,
        name: str,
        *,
        partitions: int = 1,
        replication_factor: int = 1,
        config: dict[str, str] | None = None,
    ) -> TopicInfo:
        info = await super().create_topic(
            name, partitions=partitions, replication_factor=replication_factor, config=config
        )
        producer = await self.producer(acks="all")
        await producer.send(name, b"stray", partition=0, message_id="stray")
        await producer.close()
        return info


def test_records_produced_in_turn_are_where_their_number_says() -> None:
    async def test() -> None:
        world = SimWorld(seed=0)
        async with SimKafkaBroker(world=world, namespace="mq-t") as kafka:
            topic = kafka.qualify("t")
            records = [(f"m{n}", f"value {n}".encode()) for n in range(5)]
            await produce_in_turn(kafka, topic, records, partitions=2, producer_name="p")
            consumer = await kafka.consumer([topic], group_id=kafka.qualify("g"))
            placed: dict[str, tuple[int, int]] = {}
            async with asyncio.timeout(30.0):
                while len(placed) < len(records):
                    for record in await consumer.poll(timeout=1.0):
                        placed[record.message_id] = (record.partition, record.offset)
            await consumer.close()
            assert placed == {f"m{n}": (n % 2, n // 2) for n in range(5)}

    _virtual(test)


def test_a_record_that_lands_out_of_turn_stops_the_check() -> None:
    async def test() -> None:
        world = SimWorld(seed=0)
        async with _StrayRecordKafka(world=world, namespace="mq-t") as kafka:
            records = [("m0", b"first"), ("m1", b"second")]
            with pytest.raises(RuntimeError, match=r"m0 landed at .* not in turn"):
                await produce_in_turn(
                    kafka, kafka.qualify("t"), records, partitions=2, producer_name="p"
                )

    _virtual(test)
