"""The real SQS adapter against the lab's SQS/SNS server (moto): the contract, plus what only a
real server shows (its own answers agreeing with inspect(), an unreachable endpoint, how moto
treats receipt handles, a cut connection through Toxiproxy).

Needs ``mqlab lab up sqs`` (which also starts Toxiproxy in front of the server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

from mqlab.brokers.base import BrokerError, BrokerUnavailable
from mqlab.brokers.registry import get_broker_class
from mqlab.brokers.sqs.api import ReceiptHandleInvalid, SqsRequestRefused
from mqlab.brokers.sqs.client import SqsBroker
from mqlab.lab import faults
from mqlab.lab.endpoints import HOST, Endpoints
from mqlab.observe.bus import Recorder
from mqlab.observe.events import BrokerDown, BrokerUp, Observation, ProduceFailed
from tests.contract.sqs_contract import EXPECT, SqsContract, receive_one
from tests.waiting import first_observation

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

# Short on purpose: the local server answers in milliseconds, so 3 s only matters when
# something is broken, and the fault test then fails fast instead of hanging.
CONNECT_TIMEOUT = 3.0
# How long the fault test waits for the adapter's probe to see the server again.
RECOVERY = 30.0


def make_broker(**overrides: object) -> SqsBroker:
    options: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT, **overrides}
    return SqsBroker(**options)  # type: ignore[arg-type]


@pytest.mark.sqs
class TestRealSqs(SqsContract):
    """The shared contract against the lab's moto server."""

    @pytest.fixture
    async def broker(self) -> AsyncIterator[SqsBroker]:
        async with make_broker() as adapter:
            yield adapter


# --- helpers ----------------------------------------------------------------------------------


def raw_sqs() -> SQSClient:
    """A plain boto3 client, independent of the adapter's code path (for cross-checks)."""
    return boto3.session.Session(
        aws_access_key_id="check", aws_secret_access_key="check", region_name="us-east-1"
    ).client(
        "sqs",
        endpoint_url=Endpoints.local().sqs_endpoint,
        config=Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 1}),
    )


def server_depths(url: str) -> tuple[int, int, int]:
    attributes = raw_sqs().get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )


def server_queue_names(prefix: str) -> list[str]:
    urls = raw_sqs().list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    return sorted(url.rsplit("/", 1)[-1] for url in urls)


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
    assert get_broker_class("sqs") is SqsBroker


async def test_unreachable_endpoint_raises_broker_unavailable() -> None:
    port = dead_port()
    endpoints = dataclasses.replace(Endpoints.local(), sqs_endpoint=f"http://{HOST}:{port}")
    adapter = SqsBroker(endpoints=endpoints, connect_timeout=1.0)
    # The guard only keeps a broken adapter from hanging the suite; the adapter's own
    # timeouts (1 s connect, two attempts) end it long before.
    with pytest.raises(BrokerUnavailable) as raised:
        await asyncio.wait_for(adapter.connect(), timeout=30)
    message = str(raised.value)
    assert f"{HOST}:{port}" in message
    assert "mqlab lab up sqs" in message
    assert "\n" not in message
    await adapter.close()  # never connected: nothing to do, must not raise


@pytest.mark.sqs
async def test_inspect_matches_the_servers_own_attributes() -> None:
    async with make_broker() as broker:
        await broker.create_queue("audit-dlq")
        await broker.create_queue(
            "audit", visibility_timeout=40, dead_letter_queue="audit-dlq", max_receive_count=4
        )
        # 30 s: no step waits for it, and the delayed count must not change while the test
        # compares its views (3 s could run out between them on a busy machine).
        await broker.create_queue("audit.fifo", content_based_dedup=True, delay_seconds=30)
        for number in range(5):
            await broker.send("audit", f"a{number}")
        await broker.receive("audit", max_messages=2, wait_time=EXPECT)
        await broker.send("audit.fifo", "f", group_id="g")  # delayed by the queue's 30 s
        await broker.send("audit-dlq", "parked")

        snapshot = await broker.inspect()
        by_name = {queue.name: queue for queue in snapshot.queues}
        assert sorted(by_name) == server_queue_names(f"{broker.namespace}-")
        for queue in snapshot.queues:
            assert (queue.visible, queue.in_flight, queue.delayed) == await asyncio.to_thread(
                server_depths, queue.url
            )
        audit = by_name[broker.qualify("audit")]
        assert (audit.visible, audit.in_flight) == (3, 2)
        raw = await asyncio.to_thread(
            lambda: raw_sqs().get_queue_attributes(QueueUrl=audit.url, AttributeNames=["All"])
        )
        attributes = raw["Attributes"]
        assert audit.visibility_timeout == int(attributes["VisibilityTimeout"]) == 40
        assert audit.dead_letter_queue == broker.qualify("audit-dlq")
        assert audit.dead_letter_queue is not None
        assert audit.dead_letter_queue in attributes["RedrivePolicy"]
        assert audit.max_receive_count == 4
        assert audit.dead_letter_depth == 1
        fifo = by_name[broker.qualify("audit.fifo")]
        assert (fifo.fifo, fifo.content_based_dedup, fifo.delay_seconds) == (True, True, 30)
        assert fifo.delayed == 1


@pytest.mark.sqs
async def test_close_deletes_queues_and_topics_also_on_error() -> None:
    broker = make_broker()

    async def learner_code() -> None:
        async with broker:
            await broker.create_queue("left-behind")
            await broker.create_queue("left-behind.fifo")
            topic = await broker.create_topic("news")
            await broker.subscribe_queue(topic, "left-behind")
            await broker.send("left-behind", "pending")
            raise RuntimeError("learner code failed")

    with pytest.raises(RuntimeError, match="learner code failed"):
        await learner_code()
    assert await asyncio.to_thread(server_queue_names, f"{broker.namespace}-") == []
    async with make_broker(namespace=broker.namespace) as observer:
        snapshot = await observer.inspect()
    assert snapshot.queues == ()
    assert snapshot.topics == ()


@pytest.mark.sqs
async def test_receipt_handles_as_moto_treats_them() -> None:
    """A handle the server never issued is rejected. A *stale* handle (from before the message
    was received again) is accepted by moto, which deletes the message anyway (documented
    in mqlab.brokers.sqs.client; AWS may keep the message instead)."""
    async with make_broker() as broker:
        await broker.create_queue("handles", visibility_timeout=1)
        with pytest.raises(ReceiptHandleInvalid):
            await broker.delete_message("handles", "not-a-receipt-handle")
        with pytest.raises(ReceiptHandleInvalid):
            await broker.change_visibility("handles", "not-a-receipt-handle", 0)

        await broker.send("handles", "slow job")
        stale = await receive_one(broker, "handles")
        fresh = await receive_one(broker, "handles")  # after the 1 s visibility timeout
        assert fresh.receive_count == 2
        await broker.delete_message("handles", stale.receipt_handle)
        info = await broker.queue_info("handles")
        assert (info.visible, info.in_flight) == (0, 0)
        # The message is gone, so its newest handle now points at nothing.
        with pytest.raises(ReceiptHandleInvalid):
            await broker.change_visibility("handles", fresh.receipt_handle, 0)


@pytest.mark.sqs
async def test_bad_requests_are_one_line_errors() -> None:
    async with make_broker() as broker:
        with pytest.raises(SqsRequestRefused, match="FIFO"):
            await broker.create_queue("plain", content_based_dedup=True)
        await broker.create_queue("strict.fifo")
        with pytest.raises(SqsRequestRefused) as no_dedup:
            await broker.send("strict.fifo", "x", group_id="g")
        assert "Deduplication" in str(no_dedup.value)
        with pytest.raises(BrokerError) as missing:
            await broker.send("never-created", "x")
        assert "does not exist" in str(missing.value)
        for error in (no_dedup.value, missing.value):
            assert "\n" not in str(error)
        with pytest.raises(SqsRequestRefused):
            await broker.receive("strict.fifo", max_messages=11)


# --- faults (start and stop lab processes / proxies) ----------------------------------------


@pytest.mark.sqs
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_cut_connection_fails_in_bounded_time_reports_down_and_up_and_works_again() -> None:
    toxics = faults.Toxics()
    recorder = Recorder()
    # A call waits up to request_timeout for the endpoint to come back; 1 s keeps this short.
    async with make_broker(request_timeout=1.0) as broker:
        broker.bus.subscribe(recorder)
        await broker.create_queue("steady")
        before = await broker.send("steady", "before")
        try:
            await asyncio.to_thread(toxics.disable, "sqs")
            with pytest.raises(BrokerUnavailable) as raised:
                await broker.send("steady", "during")
            assert "mqlab lab up sqs" in str(raised.value)
            down = await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
            assert isinstance(down, BrokerDown)
            assert down.node == "sqs"
            failed = [o for o in recorder.observations if isinstance(o, ProduceFailed)]
            assert len(failed) == 1
            with pytest.raises(BrokerUnavailable):
                await broker.receive("steady")
        finally:
            await asyncio.to_thread(toxics.enable, "sqs")
        # The adapter's probe notices the server again without any call from the test.
        up = await wait_for(recorder, lambda o: isinstance(o, BrokerUp), RECOVERY)
        assert isinstance(up, BrokerUp)

        # The same adapter works again; the message sent before the cut is still there.
        message = await receive_one(broker, "steady")
        assert message.message_id == before.message_id
        await broker.delete_message("steady", message.receipt_handle)
        await broker.send("steady", "after")
        assert (await receive_one(broker, "steady")).body == "after"
    downs = [o for o in recorder.observations if isinstance(o, BrokerDown)]
    ups = [o for o in recorder.observations if isinstance(o, BrokerUp)]
    assert (len(downs), len(ups)) == (1, 1)


@pytest.mark.sqs
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_a_short_cut_delays_a_call_instead_of_failing_it() -> None:
    toxics = faults.Toxics()
    recorder = Recorder()
    # request_timeout far longer than the cut: the delete has to wait, not fail.
    async with make_broker(request_timeout=15.0) as broker:
        broker.bus.subscribe(recorder)
        await broker.create_queue("blip")
        await broker.send("blip", "job")
        message = await receive_one(broker, "blip")
        try:
            await asyncio.to_thread(toxics.disable, "sqs")
            deleting = asyncio.create_task(broker.delete_message("blip", message.receipt_handle))
            await wait_for(recorder, lambda o: isinstance(o, BrokerDown), EXPECT)
            assert not deleting.done()
        finally:
            await asyncio.to_thread(toxics.enable, "sqs")
        await deleting  # completes once the endpoint answers again
        info = await broker.queue_info("blip")
        assert (info.visible, info.in_flight) == (0, 0)
    kinds = [o.kind for o in recorder.observations if o.kind in {"broker_down", "broker_up"}]
    assert kinds == ["broker_down", "broker_up"]
