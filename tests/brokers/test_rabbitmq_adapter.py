"""The real RabbitMQ adapter against the lab's node: the contract, plus what only a real broker
shows (its own tooling agreeing with inspect(), an unreachable port, a killed or cut-off node).

Needs ``mqlab lab up rabbitmq`` (which also starts Toxiproxy in front of the AMQP port).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from mqlab.brokers.base import BrokerError, BrokerUnavailable
from mqlab.brokers.rabbitmq.api import QueueInfo
from mqlab.brokers.rabbitmq.client import RabbitMQBroker
from mqlab.brokers.registry import get_broker_class
from mqlab.lab import faults
from mqlab.lab.endpoints import HOST, Endpoints
from mqlab.lab.native.rabbitmq import RabbitMQService
from mqlab.lab.supervisor import Lab
from mqlab.observe.bus import Recorder
from mqlab.observe.events import BrokerDown, BrokerUp, Observation
from tests.contract.rabbitmq_contract import EXPECT, RabbitMQContract, next_delivery
from tests.waiting import eventually, first_observation

# Short on purpose: a healthy local node answers in milliseconds, so 3 s only matters when
# something is broken, and the fault tests then fail fast instead of hanging.
CONNECT_TIMEOUT = 3.0
OPERATION_TIMEOUT = 3.0
# Reconnect quickly after a fault so the fault tests do not wait on the 1 s default.
RECONNECT_INTERVAL = 0.3
# A restarted node needs ~5-10 s to come back; the robust connection keeps retrying meanwhile.
RECOVERY = 60.0

# The management API's counters refresh every collect_statistics_interval (0.5 s in the lab):
# wait up to this long for a sample taken after the deliveries (a bound, not a speed goal).
STATISTICS = 30.0
# Bound for RabbitMQ's basic.cancel to reach a consumer whose queue another client deleted.
CANCEL_NOTICE = 30.0


def make_broker(**overrides: object) -> RabbitMQBroker:
    options: dict[str, object] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "operation_timeout": OPERATION_TIMEOUT,
        "reconnect_interval": RECONNECT_INTERVAL,
        **overrides,
    }
    return RabbitMQBroker(**options)  # type: ignore[arg-type]


@pytest.mark.rabbitmq
class TestRealRabbitMQ(RabbitMQContract):
    """The shared contract against the lab's RabbitMQ node."""

    @pytest.fixture
    async def broker(self) -> AsyncIterator[RabbitMQBroker]:
        async with make_broker() as adapter:
            yield adapter


# --- helpers ----------------------------------------------------------------------------------


async def wait_for(
    recorder: Recorder, predicate: Callable[[Observation], bool], timeout: float
) -> Observation:
    """The first recorded observation matching ``predicate``, waiting for it."""
    return await first_observation(recorder, Observation, timeout, predicate)


def rabbitmqctl_queues(prefix: str) -> dict[str, tuple[int, int]]:
    """``rabbitmqctl list_queues name messages_ready messages_unacknowledged`` on the lab's node,
    run the way ``mqlab lab rabbitmqctl`` runs it (node name, Erlang cookie in HOME, epmd port)."""
    result = rabbitmqctl("-q", "list_queues", "name", "messages_ready", "messages_unacknowledged")
    queues = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith(prefix):
            queues[fields[0]] = (int(fields[1]), int(fields[2]))
    return queues


def rabbitmqctl(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``rabbitmqctl ARGUMENTS`` on the lab's node, run the way ``mqlab lab rabbitmqctl`` runs
    it (node name, Erlang cookie in HOME, epmd port)."""
    service = RabbitMQService()
    paths = Lab().paths
    return subprocess.run(
        service.ctl_command(paths, list(arguments)),
        env={**os.environ, **service.ctl_environment(paths)},
        capture_output=True,
        text=True,
        # A bound only: the Erlang CLI takes 3 s on an idle machine and half a minute when
        # every lane is busy.
        timeout=180,
        check=True,
    )


def depths(queues: tuple[QueueInfo, ...]) -> dict[str, tuple[int, int]]:
    return {queue.name: (queue.ready, queue.unacked) for queue in queues}


def consumer_counts(queues: tuple[QueueInfo, ...]) -> dict[str, int]:
    return {queue.name: queue.consumers for queue in queues}


def dead_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# --- real-only behaviour ----------------------------------------------------------------------


def test_registry_resolves_the_real_adapter() -> None:
    assert get_broker_class("rabbitmq") is RabbitMQBroker


async def test_unreachable_port_raises_broker_unavailable() -> None:
    port = dead_port()
    endpoints = dataclasses.replace(
        Endpoints.local(), rabbitmq_url=f"amqp://guest:guest@{HOST}:{port}/"
    )
    adapter = RabbitMQBroker(endpoints=endpoints, connect_timeout=CONNECT_TIMEOUT)
    with pytest.raises(BrokerUnavailable) as raised:
        await adapter.connect()
    message = str(raised.value)
    assert f"{HOST}:{port}" in message
    assert "mqlab lab up rabbitmq" in message
    assert "\n" not in message
    await adapter.close()  # nothing to close; must not raise


@pytest.mark.rabbitmq
async def test_inspect_depths_match_rabbitmqctl() -> None:
    async with make_broker() as broker:
        await broker.declare_queue("backlog")
        await broker.declare_queue("in-flight")
        for number in range(7):
            await broker.publish("", "backlog", f"b{number}".encode())
        for number in range(5):
            await broker.publish("", "in-flight", f"f{number}".encode())
        consumer = await broker.consume("in-flight", prefetch=3)
        held = [await next_delivery(consumer) for _ in range(3)]  # 3 unacked, 2 ready
        expected = {
            broker.qualify("backlog"): (7, 0),
            broker.qualify("in-flight"): (2, 3),
        }

        # rabbitmqctl asks the queue processes directly: exact right away.
        assert await asyncio.to_thread(rabbitmqctl_queues, broker.namespace) == expected
        # The management API refreshes every collect_statistics_interval, and a sample can
        # show the depths before the consumer: wait for one that shows both.
        consumers = {broker.qualify("backlog"): 0, broker.qualify("in-flight"): 1}
        await eventually(
            broker.inspect,
            STATISTICS,
            f"the management API showing the depths {expected} and consumers {consumers}",
            accept=lambda snapshot: (
                depths(snapshot.queues) == expected
                and consumer_counts(snapshot.queues) == consumers
            ),
            interval=0.2,
        )
        # queue_info: exact ready count and consumers from AMQP.
        info = await broker.queue_info("in-flight")
        assert (info.ready, info.consumers) == (2, 1)
        for delivery in held:
            await delivery.ack()
        await consumer.close()


@pytest.mark.rabbitmq
async def test_close_deletes_everything_in_the_namespace_also_on_error() -> None:
    broker = make_broker()

    async def learner_code_that_fails() -> None:
        async with broker:
            await broker.declare_exchange("left", "topic")
            await broker.declare_queue("behind")
            await broker.bind_queue("behind", "left", "#")
            await broker.publish("left", "x", b"pending")
            await broker.consume("behind", prefetch=1)
            raise RuntimeError("learner code failed")

    with pytest.raises(RuntimeError, match="learner code failed"):
        await learner_code_that_fails()
    assert await asyncio.to_thread(rabbitmqctl_queues, broker.namespace) == {}
    async with make_broker(namespace=broker.namespace) as observer:
        snapshot = await observer.inspect()
    assert snapshot.queues == ()
    assert snapshot.exchanges == ()


@pytest.mark.rabbitmq
async def test_queue_declared_elsewhere_errors_are_one_line() -> None:
    async with make_broker() as broker:
        await broker.declare_queue("shape", max_priority=5)
        with pytest.raises(BrokerError) as raised:
            await broker.declare_queue("shape")  # different arguments: 406
        assert "PRECONDITION_FAILED" in str(raised.value)
        with pytest.raises(BrokerError) as missing:
            await broker.bind_queue("shape", "no-such-exchange")
        assert "NOT_FOUND" in str(missing.value)
        # Errors closed only their scratch channels: the adapter keeps working.
        await broker.publish("", "shape", b"still fine")
        delivery = await broker.get("shape")
        assert delivery is not None
        await delivery.ack()


# --- faults (start and stop lab processes / proxies) ----------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_cut_connection_reports_down_and_up_and_keeps_consuming() -> None:
    toxics = faults.Toxics()
    recorder = Recorder()
    async with make_broker() as broker:
        broker.bus.subscribe(recorder)
        await broker.declare_queue("steady")
        consumer = await broker.consume("steady", prefetch=5)
        for number in range(3):
            await broker.publish("", "steady", f"before-{number}".encode())
        unacked = await next_delivery(consumer)
        # The other two are pushed into the consumer's local buffer, not yet handed out.
        await eventually(
            lambda: broker.queue_info("steady"),
            STATISTICS,
            "all three messages pushed to the consumer (none ready in the queue)",
            accept=lambda info: info.ready == 0,
        )
        try:
            await asyncio.to_thread(toxics.disable, "rabbitmq")
            await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
            # While cut off, an operation fails within its bound with a BrokerError.
            with pytest.raises(BrokerError):
                await broker.publish("", "steady", b"during")
            # Acking a delivery from the dead channel fails clearly; RabbitMQ requeues it.
            with pytest.raises(BrokerError):
                await unacked.ack()
        finally:
            await asyncio.to_thread(toxics.enable, "rabbitmq")
        up = await wait_for(recorder, lambda o: isinstance(o, BrokerUp), RECOVERY)
        assert isinstance(up, BrokerUp)

        # The same adapter and the same consumer work again: the unacked messages (the one
        # handed out and the two that were buffered when the connection died) come back
        # redelivered, and a new one arrives normally.
        again = [await next_delivery(consumer) for _ in range(3)]
        assert sorted((d.body, d.redelivered) for d in again) == [
            (b"before-0", True),
            (b"before-1", True),
            (b"before-2", True),
        ]
        for delivery in again:
            await delivery.ack()
        await broker.publish("", "steady", b"after")
        fresh = await next_delivery(consumer)
        assert (fresh.body, fresh.redelivered) == (b"after", False)
        await fresh.ack()
        await consumer.close()
    downs = [o for o in recorder.observations if isinstance(o, BrokerDown)]
    ups = [o for o in recorder.observations if isinstance(o, BrokerUp)]
    assert (len(downs), len(ups)) == (1, 1)


# A slow link for the recovery test: every answer from the node comes this late.
SLOW_LINK_MS = 200
RECOVERED_QUEUES = 20


@pytest.mark.rabbitmq
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_a_slow_reconnect_declares_everything_again_each_request_in_its_own_bound() -> None:
    """Behind 200 ms of latency, declaring 20 queues again takes over 4 s, twice the adapter's
    2 s operation timeout, while each declaration takes about 0.2 s: the recovery must bound
    each request, not the whole of it (which gave up halfway and still reported the link up)."""
    toxics = faults.Toxics()
    recorder = Recorder()
    names = [f"recovered-{number}" for number in range(RECOVERED_QUEUES)]
    async with make_broker(operation_timeout=2.0, connect_timeout=15.0) as broker:
        broker.bus.subscribe(recorder)
        for name in names:
            await broker.declare_queue(name)
        # Another client deletes them (closing, it deletes the rest of the namespace too):
        # only the adapter's recovery can bring them back.
        async with make_broker(namespace=broker.namespace) as other:
            for name in names:
                await other.delete_queue(name)
        await broker.declare_queue("resubscribed")
        consumer = await broker.consume("resubscribed", prefetch=1)
        slow = await asyncio.to_thread(toxics.add, "rabbitmq", "latency", latency=SLOW_LINK_MS)
        try:
            await asyncio.to_thread(toxics.disable, "rabbitmq")
            await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
            await asyncio.to_thread(toxics.enable, "rabbitmq")
            up = await wait_for(recorder, lambda o: isinstance(o, BrokerUp), RECOVERY)
        finally:
            await asyncio.to_thread(toxics.clear, "rabbitmq")
        assert isinstance(up, BrokerUp)
        assert "recovery failed" not in up.detail, up.detail
        assert "re-subscribed 1 consumers" in up.detail, up.detail
        assert slow  # the toxic was in place for the whole recovery
        for name in names:
            assert (await broker.queue_info(name)).ready == 0  # raises NotFound if missing
        await broker.publish("", "resubscribed", b"after the slow recovery")
        delivery = await next_delivery(consumer)
        assert delivery.body == b"after the slow recovery"
        await delivery.ack()
        await consumer.close()


@pytest.mark.rabbitmq
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_killed_node_durable_queue_survives_transient_queue_comes_back_empty() -> None:
    recorder = Recorder()
    async with make_broker() as broker:
        broker.bus.subscribe(recorder)
        await broker.declare_queue("durable-orders", durable=True)
        await broker.declare_queue("transient-cache", durable=False)
        kept = await broker.publish("", "durable-orders", b"persisted")
        await broker.publish("", "transient-cache", b"in memory")
        # RabbitMQ 3.10 keeps queue declarations in Mnesia, whose transaction log reaches the
        # disk a moment after the declare returns: a kill -9 within that moment loses the
        # durable queue itself (and the confirmed message with it; seen once in four quick
        # runs, the restarted node recovering one classic queue fewer). The message is on
        # disk once confirmed; the declaration is made so by syncing Mnesia's log.
        await asyncio.to_thread(rabbitmqctl, "eval", "mnesia:sync_log().")
        try:
            await asyncio.to_thread(faults.kill, "rabbitmq")
            await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
        finally:
            await asyncio.to_thread(faults.restart, "rabbitmq")
        await wait_for(recorder, lambda o: isinstance(o, BrokerUp), RECOVERY)

        # Durable queue + persistent message: still there after kill -9 and restart.
        survivor = await broker.get("durable-orders")
        assert survivor is not None
        assert survivor.message_id == kept
        await survivor.ack()
        # The non-durable queue died with the node; the adapter's topology recovery declared
        # it again, empty.
        info = await broker.queue_info("transient-cache")
        assert info.ready == 0
        assert await broker.get("transient-cache") is None

        # The same adapter publishes and consumes again.
        await broker.publish("", "transient-cache", b"new life")
        consumer = await broker.consume("transient-cache", prefetch=1)
        delivery = await next_delivery(consumer)
        assert delivery.body == b"new life"
        await delivery.ack()
        await consumer.close()


@pytest.mark.rabbitmq
async def test_bad_publish_input_is_a_one_line_broker_error() -> None:
    async with make_broker() as broker:
        await broker.declare_queue("inputs")
        for bad in (
            {"priority": 300},
            {"expiration_ms": -1},
            {"headers": {"tags": {"a", "b"}}},  # AMQP tables have no sets
        ):
            with pytest.raises(BrokerError) as raised:
                await broker.publish("", "inputs", b"x", **bad)
            assert "\n" not in str(raised.value)
        with pytest.raises(BrokerError):
            await broker.publish("", "k" * 300, b"x")  # routing keys are at most 255 bytes
        # Nothing was sent, and the publisher channel still works.
        assert (await broker.queue_info("inputs")).ready == 0
        await broker.publish("", "inputs", b"fine")
        assert (await broker.queue_info("inputs")).ready == 1


@pytest.mark.rabbitmq
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_close_while_cut_off_is_bounded_and_says_what_was_left() -> None:
    toxics = faults.Toxics()
    recorder = Recorder()
    broker = make_broker()
    await broker.connect()
    broker.bus.subscribe(recorder)
    await broker.declare_queue("stranded")
    await broker.consume("stranded", prefetch=1)
    try:
        await asyncio.to_thread(toxics.disable, "rabbitmq")
        await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
        with pytest.raises(BrokerError) as raised:
            await broker.close()
        message = str(raised.value)
        assert broker.namespace in message
        assert "\n" not in message
    finally:
        await asyncio.to_thread(toxics.enable, "rabbitmq")
    # The queue outlived the failed cleanup; a new adapter on the namespace removes it.
    async with make_broker(namespace=broker.namespace) as janitor:
        snapshot = await janitor.inspect()
        assert [queue.name for queue in snapshot.queues] == [broker.qualify("stranded")]
    assert await asyncio.to_thread(rabbitmqctl_queues, broker.namespace) == {}


@pytest.mark.rabbitmq
async def test_consumer_whose_queue_is_deleted_elsewhere_says_so() -> None:
    async with make_broker() as broker:
        await broker.declare_queue("doomed")
        consumer = await broker.consume("doomed", prefetch=1)
        # Another client (here: a second adapter on the same namespace) deletes the queue;
        # RabbitMQ cancels the subscription with basic.cancel.
        async with make_broker(namespace=broker.namespace) as other:
            await other.delete_queue("doomed")

        async def next_until_error() -> None:
            # Until a deadline, not 40 tries of 0.25 s: RabbitMQ sends basic.cancel once the
            # queue process is gone, which a loaded machine can delay past 10 s (a bound,
            # never a speed goal: the loop ends at the first error).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CANCEL_NOTICE
            while loop.time() < deadline:
                await consumer.next(timeout=0.25)

        with pytest.raises(BrokerError, match="deleted") as raised:
            await next_until_error()
        assert "\n" not in str(raised.value)
        await consumer.close()
