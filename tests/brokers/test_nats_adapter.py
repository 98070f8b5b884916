"""The real NATS JetStream adapter against the lab's nats-server: the contract, plus what only a
real server shows (its monitoring endpoint agreeing with inspect(), an unreachable port,
start-time replay on the server's clock, a killed and restarted server).

Needs ``mqlab lab up nats`` (which also starts Toxiproxy in front of the client port).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from mqlab.brokers.base import BrokerError, BrokerUnavailable
from mqlab.brokers.nats.api import JetStreamError, NoStreamForSubject
from mqlab.brokers.nats.client import NatsBroker
from mqlab.brokers.registry import get_broker_class
from mqlab.lab import faults
from mqlab.lab.endpoints import HOST, Endpoints, port
from mqlab.observe.bus import Recorder
from mqlab.observe.events import BrokerDown, BrokerUp, Observation, ProduceFailed
from tests.contract.nats_contract import EXPECT, NatsContract, fetch_all, fetch_one
from tests.waiting import first_observation

# Short on purpose: the local server answers in milliseconds, so 3 s only matters when
# something is broken, and the fault test then fails fast instead of hanging.
CONNECT_TIMEOUT = 3.0
# nats-server restarts in well under a second; the client retries every 0.5 s meanwhile.
RECOVERY = 30.0


def make_broker(**overrides: object) -> NatsBroker:
    options: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT, **overrides}
    return NatsBroker(**options)  # type: ignore[arg-type]


@pytest.mark.nats
class TestRealNats(NatsContract):
    """The shared contract against the lab's nats-server."""

    @pytest.fixture
    async def broker(self) -> AsyncIterator[NatsBroker]:
        async with make_broker() as adapter:
            yield adapter


# --- helpers ----------------------------------------------------------------------------------


async def server_view(namespace: str) -> dict[str, Any]:
    """The server's own account of the namespace's streams and consumers, from the monitoring
    endpoint (``/jsz``), which does not go through the client connection at all."""
    url = f"http://{HOST}:{port('nats_monitor')}/jsz"
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url, params={"streams": "true", "consumers": "true"})
    response.raise_for_status()
    streams: dict[str, Any] = {}
    for account in response.json().get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"].startswith(f"{namespace}-"):
                streams[stream["name"]] = stream
    return streams


def dead_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def wait_for(
    recorder: Recorder, predicate: Callable[[Observation], bool], timeout: float
) -> Observation:
    """The first recorded observation matching ``predicate``, waiting for it."""
    return await first_observation(recorder, Observation, timeout, predicate)


# --- real-only behaviour ----------------------------------------------------------------------


def test_registry_resolves_the_real_adapter() -> None:
    assert get_broker_class("nats") is NatsBroker


async def test_unreachable_port_raises_broker_unavailable() -> None:
    port_number = dead_port()
    endpoints = dataclasses.replace(Endpoints.local(), nats_url=f"nats://{HOST}:{port_number}")
    adapter = NatsBroker(endpoints=endpoints, connect_timeout=1.0)
    # The guard only keeps a broken adapter from hanging the suite.
    with pytest.raises(BrokerUnavailable) as raised:
        await asyncio.wait_for(adapter.connect(), timeout=30)
    message = str(raised.value)
    assert f"{HOST}:{port_number}" in message
    assert "mqlab lab up nats" in message
    assert "\n" not in message
    await adapter.close()  # never connected: nothing to do, must not raise


@pytest.mark.nats
async def test_inspect_matches_the_servers_monitoring_endpoint() -> None:
    async with make_broker() as broker:
        await broker.add_stream("orders", [broker.subject("orders.>")], max_msgs=100)
        await broker.add_stream("empty", [broker.subject("empty.>")])
        for number in range(6):
            await broker.publish(broker.subject(f"orders.{number % 2}"), b"x" * 10)
        reader = await broker.pull_consumer("orders", "reader", ack_wait=60)
        taken = await fetch_all(reader, 4)
        for message in taken[:2]:
            await message.ack()  # 2 acked, 2 pending ack, 2 not delivered yet
        await broker.pull_consumer("orders", "idle", filter_subject=broker.subject("orders.1"))

        snapshot = await broker.inspect()
        server = await server_view(broker.namespace)
        assert sorted(s.name for s in snapshot.streams) == sorted(server)
        for stream in snapshot.streams:
            state = server[stream.name]["state"]
            assert (stream.messages, stream.bytes) == (state["messages"], state["bytes"])
            assert (stream.first_sequence, stream.last_sequence) == (
                state["first_seq"],
                state["last_seq"],
            )
        by_consumer = {(c.stream, c.name): c for c in snapshot.consumers}
        server_consumers = {
            (stream_name, c["name"]): c
            for stream_name, detail in server.items()
            for c in detail.get("consumer_detail", [])
        }
        assert sorted(by_consumer) == sorted(server_consumers)
        for key, consumer in by_consumer.items():
            seen = server_consumers[key]
            assert consumer.ack_floor == seen["ack_floor"]["stream_seq"]
            assert consumer.delivered == seen["delivered"]["stream_seq"]
            assert consumer.num_pending == seen["num_pending"]
            assert consumer.num_ack_pending == seen["num_ack_pending"]
        reader_info = by_consumer[(broker.qualify("orders"), "reader")]
        assert (reader_info.ack_floor, reader_info.num_ack_pending, reader_info.num_pending) == (
            2,
            2,
            2,
        )
        assert by_consumer[(broker.qualify("orders"), "idle")].num_pending == 3
        for message in taken[2:]:
            await message.ack()


@pytest.mark.nats
async def test_replay_by_start_time_uses_the_servers_timestamps() -> None:
    async with make_broker() as broker:
        await broker.add_stream("history", [broker.subject("history.>")])
        await broker.publish(broker.subject("history.a"), b"old")
        # The clock moving on is the condition here: the server stamps each message on this
        # machine's clock, so a cut taken between the publishes, with a margin on each side for
        # the timestamps' resolution, separates them (a slower machine only widens the margin).
        await asyncio.sleep(0.2)
        cut = time.time()
        await asyncio.sleep(0.2)
        await broker.publish(broker.subject("history.a"), b"new-1")
        await broker.publish(broker.subject("history.b"), b"new-2")
        since = await broker.pull_consumer(
            "history", "since-cut", deliver_policy="by_start_time", start_time=cut
        )
        assert [m.data for m in await fetch_all(since, 2)] == [b"new-1", b"new-2"]
        last = await broker.pull_consumer("history", "last-only", deliver_policy="last")
        assert (await fetch_one(last)).data == b"new-2"


@pytest.mark.nats
async def test_close_deletes_streams_also_on_error() -> None:
    broker = make_broker()

    async def learner_code() -> None:
        async with broker:
            await broker.add_stream("left", [broker.subject("left.>")])
            await broker.publish(broker.subject("left.x"), b"pending")
            await broker.pull_consumer("left", "reader")
            raise RuntimeError("learner code failed")

    with pytest.raises(RuntimeError, match="learner code failed"):
        await learner_code()
    assert await server_view(broker.namespace) == {}


@pytest.mark.nats
async def test_bad_requests_are_one_line_errors() -> None:
    async with make_broker() as broker:
        with pytest.raises(JetStreamError, match="not allowed"):
            await broker.add_stream("has.dot", [broker.subject("x.>")])
        with pytest.raises(NoStreamForSubject) as nowhere:
            await broker.publish(broker.subject("nowhere"), b"lost")
        with pytest.raises(JetStreamError) as missing:
            await broker.stream_info("never-created")
        with pytest.raises(JetStreamError, match="start_sequence"):
            await broker.pull_consumer("x", "c", deliver_policy="by_start_sequence")
        await broker.add_stream("one", [broker.subject("shared.>")])
        with pytest.raises(JetStreamError) as overlap:
            await broker.add_stream("two", [broker.subject("shared.>")])
        for error in (nowhere.value, missing.value, overlap.value):
            assert "\n" not in str(error)
            assert isinstance(error, BrokerError)


# --- faults (start and stop lab processes) ---------------------------------------------------


@pytest.mark.nats
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_killed_server_reports_down_and_up_and_keeps_the_stream() -> None:
    recorder = Recorder()
    # A call waits up to request_timeout for the reconnect; 1 s keeps this test short.
    async with make_broker(request_timeout=1.0) as broker:
        broker.bus.subscribe(recorder)
        await broker.add_stream("durable", [broker.subject("durable.>")])
        kept = await broker.publish(broker.subject("durable.x"), b"persisted")
        consumer = await broker.pull_consumer("durable", "survivor")
        try:
            await asyncio.to_thread(faults.kill, "nats")
            down = await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
            assert isinstance(down, BrokerDown)
            assert down.node == "nats"
            # While the server is gone every call fails, clearly, after request_timeout.
            with pytest.raises(BrokerUnavailable) as raised:
                await broker.publish(broker.subject("durable.x"), b"during")
            assert "mqlab lab up nats" in str(raised.value)
            assert len([o for o in recorder.observations if isinstance(o, ProduceFailed)]) == 1
            with pytest.raises(BrokerUnavailable):
                await consumer.fetch(1, timeout=0.5)
        finally:
            await asyncio.to_thread(faults.restart, "nats")
        await wait_for(recorder, lambda o: isinstance(o, BrokerUp), RECOVERY)

        # JetStream's file store kept the message and the durable consumer; the same adapter
        # and the same pull consumer carry on.
        info = await broker.stream_info("durable")
        assert (info.messages, info.last_sequence) == (1, kept.sequence)
        message = await fetch_one(consumer)
        assert (message.data, message.stream_sequence) == (b"persisted", kept.sequence)
        await message.ack()
        after = await broker.publish(broker.subject("durable.x"), b"after")
        assert after.sequence == kept.sequence + 1
        assert (await fetch_one(consumer)).data == b"after"
    downs = [o for o in recorder.observations if isinstance(o, BrokerDown)]
    ups = [o for o in recorder.observations if isinstance(o, BrokerUp)]
    assert (len(downs), len(ups)) == (1, 1)


@pytest.mark.nats
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_an_ack_during_a_short_cut_is_delivered_after_the_reconnect() -> None:
    toxics = faults.Toxics()
    recorder = Recorder()
    # request_timeout far longer than the cut: the ack has to wait for the reconnect, not fail.
    async with make_broker(request_timeout=15.0) as broker:
        broker.bus.subscribe(recorder)
        await broker.add_stream("blip", [broker.subject("blip.>")])
        await broker.publish(broker.subject("blip.x"), b"job")
        consumer = await broker.pull_consumer("blip", "worker", ack_wait=30)
        message = await fetch_one(consumer)
        try:
            await asyncio.to_thread(toxics.disable, "nats")
            await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
            acking = asyncio.create_task(message.ack())
            # While the proxy is cut the ack waits for the reconnect: it neither completes nor
            # fails (request_timeout is 15 s). A window to watch, not a wait for something.
            done, _ = await asyncio.wait({acking}, timeout=0.5)
            assert not done
        finally:
            await asyncio.to_thread(toxics.enable, "nats")
        await acking
        info = await broker.consumer_info("blip", "worker")
        assert (info.ack_floor, info.num_ack_pending, info.num_redelivered) == (1, 0, 0)
        assert await consumer.fetch(1, timeout=0.5) == []
    kinds = [o.kind for o in recorder.observations if o.kind in {"broker_down", "broker_up"}]
    assert kinds == ["broker_down", "broker_up"]
