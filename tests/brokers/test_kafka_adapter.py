"""The real Kafka adapter against the lab's cluster: the contract, plus what only a real cluster
shows (Kafka's own group tool agreeing with inspect(), an unreachable port, a killed broker, a
network fault on one broker's proxy).

Needs ``mqlab lab up kafka`` (a KRaft controller and three brokers behind Toxiproxy). The fault
tests break the lab on purpose and always repair it in ``finally``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorError,
)

from mqlab.brokers.base import BrokerError, BrokerUnavailable
from mqlab.brokers.kafka import client as kafka_client
from mqlab.brokers.kafka import wire
from mqlab.brokers.kafka.api import KafkaAPI, ProduceTimedOut, TopicPartition
from mqlab.brokers.kafka.client import KafkaBroker
from mqlab.brokers.registry import get_broker_class
from mqlab.lab import faults
from mqlab.lab.endpoints import HOST, KAFKA_BROKER_IDS, Endpoints
from mqlab.lab.kafka import KafkaService, find_java
from mqlab.lab.paths import lab_paths
from mqlab.observe.bus import Recorder
from mqlab.observe.events import BrokerDown, BrokerUp, LeaderChanged, Observation, ProduceFailed
from tests.contract.kafka_contract import POLL, KafkaContract, poll_until, record
from tests.waiting import eventually, until_paused

# Short on purpose: the lab's brokers answer in milliseconds, so these only matter when
# something is broken, and then the tests fail fast instead of hanging.
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 5.0
T = TypeVar("T")

# Upper bound for the cluster to notice a fault or a repair: fencing takes ~3 s with the lab's
# settings, a restarted broker catches up in a few more. A bound, not a speed goal.
SETTLE = 90.0


def make_broker(endpoints: Endpoints, **overrides: float) -> KafkaBroker:
    return KafkaBroker(
        endpoints=endpoints,
        connect_timeout=overrides.get("connect_timeout", CONNECT_TIMEOUT),
        request_timeout=overrides.get("request_timeout", REQUEST_TIMEOUT),
    )


@pytest.mark.kafka
class TestRealKafka(KafkaContract):
    """The shared contract against the lab's three-broker cluster."""

    @pytest.fixture
    async def broker(self, endpoints: Endpoints) -> AsyncIterator[KafkaAPI]:
        async with make_broker(endpoints) as adapter:
            yield adapter


async def wait_until(condition: Callable[[], bool], what: str, within: float = SETTLE) -> None:
    """Let the event loop run (the watcher, aiokafka) until ``condition()`` holds."""
    await eventually(condition, within, what, interval=0.1)


async def answer_until(
    call: Callable[[], Awaitable[T]], holds: Callable[[T], bool], what: str, within: float = SETTLE
) -> T:
    """Call ``call()`` until its answer satisfies ``holds``; a BrokerError counts as "not yet"."""
    return await eventually(call, within, what, accept=holds, interval=0.2, retry_on=(BrokerError,))


def seen(recorder: Recorder, kind: type[Observation], **fields: object) -> list[Observation]:
    return [
        o
        for o in recorder.observations
        if isinstance(o, kind) and all(getattr(o, k) == v for k, v in fields.items())
    ]


# --- registry and unreachable cluster -------------------------------------------------------


def test_registry_resolves_the_real_adapter() -> None:
    assert get_broker_class("kafka") is KafkaBroker


def adapter_whose_coordinator_lookups_answer(
    monkeypatch: pytest.MonkeyPatch, answers: list[Exception | int]
) -> tuple[KafkaBroker, list[int]]:
    """An unconnected adapter whose FindCoordinator requests go to node 1 and get ``answers``
    in turn (the last one again once they run out); also the nodes asked, in order."""
    adapter = KafkaBroker(endpoints=Endpoints.local())
    asked: list[int] = []

    async def find_coordinator(_client: object, node_id: int, _group_id: str) -> int:
        asked.append(node_id)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def ask_node_1(_what: str, ask: Callable[[int], Awaitable[T]]) -> T:
        return await ask(1)

    monkeypatch.setattr(wire, "find_coordinator", find_coordinator)
    monkeypatch.setattr(adapter, "_ask_any", ask_node_1)
    monkeypatch.setattr(KafkaBroker, "_client", property(lambda _self: None))
    return adapter, asked


async def test_a_coordinator_that_is_moving_is_looked_up_again_until_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: right after a broker was resumed, FindCoordinator answered
    COORDINATOR_NOT_AVAILABLE on every node and the adapter's cleanup gave up at once ("no
    broker answered"), leaving the namespace's groups behind; a moving coordinator is now
    asked again, as a moving answer from the coordinator itself already was."""
    adapter, asked = adapter_whose_coordinator_lookups_answer(
        monkeypatch, [GroupCoordinatorNotAvailableError(), NotCoordinatorError(), 2]
    )
    called_at: list[int] = []

    async def call(coordinator: int) -> str:
        called_at.append(coordinator)
        return "answered"

    assert await adapter._at_coordinator("orders", call, "offsets", pause=0.01) == "answered"
    assert called_at == [2]
    assert asked == [1, 1, 1]


async def test_a_coordinator_that_never_settles_fails_with_the_operation_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter, _ = adapter_whose_coordinator_lookups_answer(
        monkeypatch, [GroupCoordinatorNotAvailableError()]
    )
    monkeypatch.setattr(kafka_client, "COORDINATOR_MOVE_SECONDS", 0.05)

    async def call(coordinator: int) -> str:
        raise AssertionError(f"called at {coordinator} although no coordinator was named")

    with pytest.raises(BrokerError, match="offsets of group orders: group orders still has no"):
        await adapter._at_coordinator("orders", call, "offsets of group orders", pause=0.01)


async def test_a_coordinator_lookup_error_that_is_not_a_move_is_raised_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter, asked = adapter_whose_coordinator_lookups_answer(
        monkeypatch, [GroupAuthorizationFailedError()]
    )
    with pytest.raises(GroupAuthorizationFailedError):
        await adapter._coordinator("orders")
    assert asked == [1]


async def test_connect_to_a_dead_port_raises_broker_unavailable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind((HOST, 0))
        dead = f"{HOST}:{probe.getsockname()[1]}"
    endpoints = dataclasses.replace(Endpoints.local(), kafka_bootstrap=dead)
    adapter = KafkaBroker(endpoints=endpoints, connect_timeout=2.0)
    # The outer bound only turns a hang into a failure; the adapter must answer by itself.
    with pytest.raises(BrokerUnavailable) as raised:
        await asyncio.wait_for(adapter.connect(), timeout=30.0)
    message = str(raised.value)
    assert dead in message
    assert "mqlab lab up kafka" in message
    assert "\n" not in message
    await adapter.close()  # nothing to release, and it must not raise


# --- Kafka's own tooling agrees with inspect() ----------------------------------------------


async def describe_group_with_kafka_tools(bootstrap: str, group: str) -> list[dict[str, str]]:
    """Rows of ``kafka-consumer-groups --describe`` (Kafka's ConsumerGroupCommand)."""
    java = find_java()
    lib = KafkaService().lib_dir(lab_paths())
    if java is None or not lib.is_dir():
        pytest.fail(
            f"Kafka's tools are missing (java: {java}, jars: {lib}); run: mqlab lab up kafka"
        )
    process = await asyncio.create_subprocess_exec(
        java,
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",  # a short-lived tool: start fast rather than optimise
        "-cp",
        f"{lib}/*",
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        bootstrap,
        "--describe",
        "--group",
        group,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Run as a subprocess of the event loop, not blocking it: the adapter's consumer keeps
    # heartbeating meanwhile and stays in the group the tool describes.
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    lines = [line.split() for line in stdout.decode().splitlines() if line.strip()]
    header_index = next(
        (i for i, cells in enumerate(lines) if cells[:2] == ["GROUP", "TOPIC"]), None
    )
    if header_index is None:
        # No table: the tool describes the group as it is at that moment, which may be
        # "rebalancing"; the caller asks again (the output says why, if it does not settle).
        raise GroupNotDescribed(stdout.decode(errors="replace").strip())
    header = lines[header_index]
    return [dict(zip(header, cells, strict=True)) for cells in lines[header_index + 1 :]]


class GroupNotDescribed(Exception):
    """ConsumerGroupCommand answered without a table of the group's partitions."""


@pytest.mark.kafka
async def test_inspect_agrees_with_kafkas_consumer_group_command(endpoints: Endpoints) -> None:
    async with make_broker(endpoints) as broker:
        topic = await broker.create_topic(
            broker.qualify("clicks"), partitions=3, replication_factor=3
        )
        producer = await broker.producer()
        for partition, count in ((0, 7), (1, 4), (2, 2)):
            for n in range(count):
                await producer.send(topic.name, f"p{partition}-{n}".encode(), partition=partition)
        group = broker.qualify("reporting")
        consumer = await broker.consumer([topic.name], group_id=group, name="reporter")
        await poll_until(consumer, 13)
        await consumer.commit(
            {TopicPartition(topic.name, 0): 5, TopicPartition(topic.name, 1): 4}
        )  # partition 2 left uncommitted on purpose

        snapshot = await broker.inspect()
        rows = await eventually(
            lambda: describe_group_with_kafka_tools(broker.bootstrap, group),
            SETTLE,
            f"Kafka's ConsumerGroupCommand describing {group}",
            retry_on=(GroupNotDescribed,),
        )

        (info,) = [g for g in snapshot.groups if g.group_id == group]
        ours = {
            o.partition: (
                "-" if o.committed is None else str(o.committed),
                str(o.high_watermark),
                "-" if o.committed is None else str(o.lag),
            )
            for o in info.offsets
        }
        theirs = {
            int(row["PARTITION"]): (row["CURRENT-OFFSET"], row["LOG-END-OFFSET"], row["LAG"])
            for row in rows
            if row["TOPIC"] == topic.name
        }
        assert theirs == ours
        assert ours == {0: ("5", "7", "2"), 1: ("4", "4", "0"), 2: ("-", "2", "-")}
        (member,) = info.members
        assert {row["CONSUMER-ID"] for row in rows} == {member.member_id}
        assert {row["CLIENT-ID"] for row in rows} == {"reporter"}


# --- faults: a killed broker, a network toxic -----------------------------------------------


@pytest.mark.kafka
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_killed_broker_is_reported_down_and_up_and_the_adapter_keeps_working(
    endpoints: Endpoints,
) -> None:
    victim_id = 2
    victim = f"kafka-broker-{victim_id}"
    async with make_broker(endpoints) as broker:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("orders"), partitions=6, replication_factor=3
        )
        led_by_victim = {p.partition for p in topic.partitions if p.leader == victim_id}
        assert led_by_victim, f"broker {victim_id} leads none of {topic.partitions}"
        producer = await broker.producer(acks="all", request_timeout=REQUEST_TIMEOUT)

        await asyncio.to_thread(faults.kill, victim)
        killed = True
        try:
            await wait_until(
                lambda: bool(seen(recorder, BrokerDown, node=victim)),
                f"BrokerDown for node {victim_id}",
            )

            def moved_away() -> set[int]:
                return {
                    o.partition
                    for o in seen(recorder, LeaderChanged, topic=topic.name)
                    if isinstance(o, LeaderChanged)
                    and o.previous_leader == victim_id
                    and o.leader not in (victim_id, -1)
                }

            await wait_until(
                lambda: moved_away() == led_by_victim,
                f"LeaderChanged away from {victim_id} for partitions {sorted(led_by_victim)}",
            )
            # The watcher saw the leaders move; the ISRs shrink in the same controller decision,
            # but the broker that answers describe_topic may apply it a moment later.
            shrunk = await answer_until(
                lambda: broker.describe_topic(topic.name),
                lambda info: all(victim_id not in p.isr for p in info.partitions),
                f"broker {victim_id} out of every ISR of {topic.name}",
            )
            # ISR 2 >= min.insync.replicas 2: acks=all writes still succeed, on every partition.
            for p in shrunk.partitions:
                await producer.send(topic.name, b"while broker 2 is down", partition=p.partition)

            await asyncio.to_thread(faults.restart, victim)
            killed = False
        finally:
            if killed:
                await asyncio.to_thread(faults.restart, victim)

        await wait_until(
            lambda: bool(seen(recorder, BrokerUp, node=victim)),
            f"BrokerUp for node {victim_id}",
        )
        # The restarted broker catches up and rejoins every ISR ...
        await answer_until(
            lambda: broker.describe_topic(topic.name),
            lambda info: all(sorted(p.isr) == sorted(KAFKA_BROKER_IDS) for p in info.partitions),
            f"ISR of {topic.name} back to {sorted(KAFKA_BROKER_IDS)}",
        )
        # ... and the watcher reports it: on its next metadata round, which may well come after
        # the describe_topic above saw the full ISR (asserting at once raced with the watcher).
        await wait_until(
            lambda: any(
                isinstance(o, LeaderChanged) and victim_id in o.isr and len(o.isr) == 3
                for o in seen(recorder, LeaderChanged, topic=topic.name)
            ),
            f"LeaderChanged with broker {victim_id} back in a full ISR of {topic.name}",
        )
        # The same adapter, never recreated, produces and consumes across the repaired cluster.
        for partition in range(6):
            await producer.send(topic.name, b"after the restart", partition=partition)
        consumer = await broker.consumer([topic.name], group_id=broker.qualify("after"))
        records = await poll_until(consumer, 12)
        assert sorted(r.value for r in records) == sorted(
            [b"while broker 2 is down"] * 6 + [b"after the restart"] * 6
        )


@pytest.mark.kafka
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_adapter_finds_the_live_brokers_after_the_only_broker_it_knew_dies(
    endpoints: Endpoints,
) -> None:
    """Regression: fenced followers, then the leader killed, left the adapter asking only the
    dead leader (a metadata answer lists unfenced brokers only, and aiokafka never went back
    to the bootstrap addresses), so describe_topic failed until that very broker returned."""
    # The producer below starts while two brokers are frozen, within the usual 3 s: it starts
    # from the broker that answers (see the next test).
    async with make_broker(endpoints) as broker:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("clicks"),
            partitions=1,
            replication_factor=3,
            config={"unclean.leader.election.enable": "true", "min.insync.replicas": "1"},
        )
        leader = topic.partitions[0].leader
        followers = [n for n in KAFKA_BROKER_IDS if n != leader]
        paused: list[str] = []
        killed = False
        try:
            for node in followers:
                await asyncio.to_thread(faults.pause, f"kafka-broker-{node}")
                paused.append(f"kafka-broker-{node}")
            # Until the controller fences both: the cluster's metadata then lists the leader
            # alone, and after this inspect() so does the adapter's own client.
            await answer_until(
                broker.inspect,
                lambda snapshot: [b.node_id for b in snapshot.brokers if b.alive] == [leader],
                f"only broker {leader} alive while {followers} are paused",
            )
            # The watcher too must have seen them go: the BrokerUp asserted below is a change.
            await wait_until(
                lambda: all(
                    seen(recorder, BrokerDown, node=f"kafka-broker-{n}") for n in followers
                ),
                f"BrokerDown for the paused brokers {followers}",
            )
            # Started now, the producer's own metadata knows only the leader too. acks=1: the
            # leader alone is in sync.
            producer = await broker.producer(acks=1, request_timeout=3.0, name="clicker")
            await producer.send(topic.name, b"while the followers are frozen")

            await asyncio.to_thread(faults.kill, f"kafka-broker-{leader}")
            killed = True
            for process in list(paused):
                await asyncio.to_thread(faults.resume, process)
                paused.remove(process)

            # The same adapter, never recreated: the live followers answer at once, and one of
            # them leads once the dead leader is fenced (~3 s) and the unclean election runs.
            # 30 s is a bound against hanging, not a speed goal.
            info = await answer_until(
                lambda: broker.describe_topic(topic.name),
                lambda info: info.partitions[0].leader in followers,
                f"a follower leads {topic.name} while broker {leader} is dead",
                within=30.0,
            )
            assert leader not in info.partitions[0].isr
            await wait_until(
                lambda: all(seen(recorder, BrokerUp, node=f"kafka-broker-{n}") for n in followers),
                f"BrokerUp for the resumed brokers {followers}",
                within=30.0,
            )
            await answer_until(
                lambda: producer.send(topic.name, b"to the new leader"),
                lambda metadata: metadata.offset >= 0,
                "a send acknowledged by the new leader",
                within=30.0,
            )

            await asyncio.to_thread(faults.restart, f"kafka-broker-{leader}")
            killed = False
        finally:
            for process in paused:
                await asyncio.to_thread(faults.resume, process)
            if killed:
                await asyncio.to_thread(faults.restart, f"kafka-broker-{leader}")

        healed = await answer_until(
            lambda: broker.describe_topic(topic.name),
            lambda info: sorted(info.partitions[0].isr) == sorted(KAFKA_BROKER_IDS),
            f"broker {leader} back in the ISR of {topic.name}",
        )
        assert healed.partitions[0].leader in KAFKA_BROKER_IDS


@pytest.mark.kafka
@pytest.mark.lab
async def test_clients_opened_while_a_broker_is_paused_start_from_one_that_answers(
    endpoints: Endpoints,
) -> None:
    """Regression: aiokafka's start tries the bootstrap addresses one by one in a shuffled
    order and waits each one's request timeout; a paused broker takes the connection and never
    answers, so about one start in three failed ("got no answer within 3s") while two brokers
    answered at once. Twelve starts all missing the paused broker by luck: under 1 %."""
    frozen = "kafka-broker-1"
    # A request timeout longer than the connect timeout: an attempt on the paused broker first
    # would outlast the whole start.
    broker = make_broker(endpoints, request_timeout=10.0)
    await asyncio.to_thread(faults.pause, frozen)
    try:
        await until_paused(frozen, SETTLE)
        await broker.connect()
        for number in range(6):
            producer = await broker.producer(name=f"producer-{number}", request_timeout=10.0)
            await producer.close()
            consumer = await broker.consumer(
                [broker.qualify("while-paused")], group_id=broker.qualify(f"group-{number}")
            )
            await consumer.close()
    finally:
        await asyncio.to_thread(faults.resume, frozen)
        # Closed once the broker answers again: cleaning up asks every broker for its groups.
        await broker.close()


@pytest.mark.kafka
@pytest.mark.toxiproxy
@pytest.mark.lab
@pytest.mark.parametrize("toxic_kind", ["timeout", "reset_peer"])
async def test_network_fault_on_the_leaders_proxy_fails_sends_clearly_then_recovers(
    endpoints: Endpoints, toxic_kind: faults.ToxicKind
) -> None:
    toxics = faults.Toxics()
    async with make_broker(endpoints) as broker:
        recorder = record(broker)
        topic = await broker.create_topic(
            broker.qualify("payments"), partitions=1, replication_factor=3
        )
        leader = topic.partitions[0].leader
        proxy = f"kafka-broker-{leader}"
        # 3 s instead of 10: the fault makes the send wait this long; short keeps the test fast.
        producer = await broker.producer(acks="all", request_timeout=3.0, name="payer")
        await producer.send(topic.name, b"before the fault")

        # timeout 0: hold every byte for ever / reset every connection at once.
        toxic = await asyncio.to_thread(toxics.add, proxy, toxic_kind, timeout=0)
        try:
            with pytest.raises(ProduceTimedOut) as raised:
                await producer.send(topic.name, b"during the fault")
            message = str(raised.value)
            assert "\n" not in message
            assert topic.name in message
            failed = seen(recorder, ProduceFailed, destination=topic.name, producer="payer")
            assert len(failed) == 1
            await wait_until(
                lambda: bool(seen(recorder, BrokerDown, node=proxy)),
                f"BrokerDown for node {leader} (unreachable through its proxy)",
            )
        finally:
            await asyncio.to_thread(toxics.remove, proxy, toxic)

        await wait_until(
            lambda: bool(seen(recorder, BrokerUp, node=proxy)), f"BrokerUp for node {leader}"
        )
        # aiokafka reconnects on its own; the same producer works again.
        await answer_until(
            lambda: producer.send(topic.name, b"after the fault"),
            lambda metadata: metadata.offset >= 0,
            "a send acknowledged after the toxic was removed",
        )
        consumer = await broker.consumer([topic.name], group_id=broker.qualify("auditors"))
        # The failed sends may have reached the log (a timeout toxic holds only the answers),
        # so read until the record sent after the fault, not a fixed number of records.
        values: list[bytes] = []

        async def read_up_to_the_record_after_the_fault() -> bool:
            values.extend(r.value for r in await consumer.poll(timeout=POLL))
            return b"after the fault" in values

        await eventually(
            read_up_to_the_record_after_the_fault,
            SETTLE,
            f"the record sent after the fault, read back from {topic.name}",
            interval=0,
        )
        assert values[0] == b"before the fault"
        assert values[-1] == b"after the fault"


@pytest.mark.kafka
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_connect_gives_up_when_every_broker_hangs(endpoints: Endpoints) -> None:
    toxics = faults.Toxics()
    proxies = [f"kafka-broker-{n}" for n in KAFKA_BROKER_IDS]
    added: list[tuple[str, str]] = []
    try:
        for proxy in proxies:  # connections open, but no byte ever comes back
            added.append((proxy, await asyncio.to_thread(toxics.add, proxy, "timeout", timeout=0)))
        adapter = make_broker(endpoints, connect_timeout=2.0)
        with pytest.raises(BrokerUnavailable) as raised:
            await asyncio.wait_for(adapter.connect(), timeout=30.0)
        assert "mqlab lab up kafka" in str(raised.value)
    finally:
        for proxy, toxic in added:
            await asyncio.to_thread(toxics.remove, proxy, toxic)
