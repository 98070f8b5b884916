"""The lab's servers work with each system's official Python client, through the lab's public
addresses (the Toxiproxy proxies for the brokers), the way the course uses them.

Needs the main lab (``mqlab lab up``). Every test creates uniquely named resources and deletes
them again, also when it fails.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aio_pika
import boto3
import httpx
import nats
import psycopg
import pytest
import redis.asyncio as aioredis
from nats.js.api import ConsumerConfig

from mqlab.lab.endpoints import HOST, Endpoints, port
from tests.waiting import eventually

if TYPE_CHECKING:
    from mypy_boto3_sns.client import SNSClient
    from mypy_boto3_sqs.client import SQSClient

# Bound for things that become visible asynchronously (management stats, SNS delivery): the
# tests poll and stop as soon as the condition holds. 30 s: the management API's answers
# themselves slow down when every lane is busy (the adapter's tests wait as long).
SETTLE_SECONDS = 30.0
# Bound for one client call to a healthy server (connect, publish, fetch, a long poll that
# finds its message). The clients' defaults of a few seconds are tight on a loaded machine;
# every call returns as soon as the server answers, so a generous bound costs nothing.
ANSWER_TIMEOUT = 30


def unique(prefix: str) -> str:
    return f"mqlab-test-{prefix}-{secrets.token_hex(3)}"


def aws_client(service: str, endpoints: Endpoints) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoints.sqs_endpoint,
        region_name="us-east-1",
        aws_access_key_id="mqlab",
        aws_secret_access_key="mqlab",
    )


@pytest.fixture
def sqs(endpoints: Endpoints) -> SQSClient:
    client: SQSClient = aws_client("sqs", endpoints)
    return client


@pytest.fixture
def sns(endpoints: Endpoints) -> SNSClient:
    client: SNSClient = aws_client("sns", endpoints)
    return client


@pytest.fixture
def queue_urls(sqs: SQSClient) -> Iterator[list[str]]:
    """Queues a test created; deleted afterwards."""
    urls: list[str] = []
    yield urls
    for url in urls:
        sqs.delete_queue(QueueUrl=url)


@pytest.mark.rabbitmq
async def test_rabbitmq_publish_consume_ack(endpoints: Endpoints) -> None:
    connection = await aio_pika.connect_robust(endpoints.rabbitmq_url, timeout=ANSWER_TIMEOUT)
    name = unique("orders")
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        try:
            for number in range(3):
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        f"order-{number}".encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=name,
                )
            bodies = []
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():  # acks when the block succeeds
                        bodies.append(message.body.decode())
                    if len(bodies) == 3:
                        break
            assert bodies == ["order-0", "order-1", "order-2"]
            # The broker agrees nothing is left: no message ready, none unacknowledged ...
            declared = await channel.declare_queue(name, passive=True)
            assert declared.declaration_result.message_count == 0
            # ... and the management API (what the TUI reads) shows it within its short
            # statistics interval.
            await _management_shows_empty(endpoints, name)
        finally:
            await queue.delete(if_unused=False, if_empty=False)


async def _management_shows_empty(endpoints: Endpoints, queue: str) -> None:
    url = f"{endpoints.rabbitmq_management_url}/api/queues/%2F/{quote(queue, safe='')}"
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=ANSWER_TIMEOUT) as client:

        async def queue_info() -> dict[str, Any]:
            info: dict[str, Any] = (await client.get(url)).json()
            return info

        await eventually(
            queue_info,
            SETTLE_SECONDS,
            f"the management API showing {queue} empty with 3 acks",
            accept=lambda info: (
                info.get("messages") == 0 and info.get("message_stats", {}).get("ack") == 3
            ),
            interval=0.2,
        )


@pytest.mark.sqs
def test_sqs_fifo_send_receive_delete(sqs: SQSClient, queue_urls: list[str]) -> None:
    url = sqs.create_queue(
        QueueName=unique("payments") + ".fifo",
        Attributes={"FifoQueue": "true", "VisibilityTimeout": "30"},
    )["QueueUrl"]
    queue_urls.append(url)
    # moto builds the URL from the Host header: clients keep going through the proxy.
    assert url.startswith(f"http://{HOST}:{port('sqs')}/")

    for body, dedup in (("debit-1", "d1"), ("debit-2", "d2"), ("debit-1 again", "d1")):
        sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageGroupId="account-7", MessageDeduplicationId=dedup
        )
    received = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
    )["Messages"]
    # The duplicate (same deduplication id within 5 minutes) was dropped; order is kept.
    assert [message["Body"] for message in received] == ["debit-1", "debit-2"]
    assert {message["Attributes"]["MessageGroupId"] for message in received} == {"account-7"}

    for message in received:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert again.get("Messages", []) == []


@pytest.mark.sqs
def test_sns_fans_out_to_sqs_queues(sns: SNSClient, sqs: SQSClient, queue_urls: list[str]) -> None:
    topic = sns.create_topic(Name=unique("order-placed"))["TopicArn"]
    try:
        subscribers = []
        for raw in (True, False):
            url = sqs.create_queue(QueueName=unique("billing" if raw else "shipping"))["QueueUrl"]
            queue_urls.append(url)
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            sns.subscribe(
                TopicArn=topic,
                Protocol="sqs",
                Endpoint=arn,
                Attributes={"RawMessageDelivery": "true" if raw else "false"},
            )
            subscribers.append((url, raw))

        sns.publish(TopicArn=topic, Message=json.dumps({"order": 42}))

        for url, raw in subscribers:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=20
            ).get("Messages", [])
            assert len(messages) == 1, f"{url} got {messages}"
            body = messages[0]["Body"]
            payload = body if raw else json.loads(body)["Message"]  # SNS envelope
            assert json.loads(payload) == {"order": 42}
    finally:
        sns.delete_topic(TopicArn=topic)


@pytest.mark.nats
async def test_nats_jetstream_publish_durable_pull_ack(endpoints: Endpoints) -> None:
    client = await nats.connect(
        endpoints.nats_url, connect_timeout=ANSWER_TIMEOUT, max_reconnect_attempts=0
    )
    stream = unique("events").replace("-", "_")
    try:
        jetstream = client.jetstream(timeout=ANSWER_TIMEOUT)
        await jetstream.add_stream(name=stream, subjects=[f"{stream}.>"])
        for number in range(3):
            ack = await jetstream.publish(f"{stream}.orders", f"event-{number}".encode())
            assert ack.stream == stream
            assert ack.seq == number + 1
        subscription = await jetstream.pull_subscribe(
            f"{stream}.orders", durable="worker", config=ConsumerConfig(ack_wait=30)
        )
        messages = await subscription.fetch(3, timeout=ANSWER_TIMEOUT)
        assert [message.data for message in messages] == [b"event-0", b"event-1", b"event-2"]
        for message in messages:
            await message.ack_sync(timeout=ANSWER_TIMEOUT)
        info = await jetstream.consumer_info(stream, "worker")
        assert info.num_ack_pending == 0
        assert info.num_pending == 0
        assert info.delivered.stream_seq == 3
    finally:
        try:
            await client.jetstream(timeout=ANSWER_TIMEOUT).delete_stream(stream)
        finally:
            await client.close()


@pytest.mark.redis
async def test_redis_set_nx_ex_as_dedup(endpoints: Endpoints) -> None:
    client = aioredis.from_url(endpoints.redis_url, socket_timeout=ANSWER_TIMEOUT)
    key = f"dedup:{unique('event')}"
    try:
        assert await client.set(key, "1", nx=True, ex=60) is True  # first delivery: process
        assert await client.set(key, "1", nx=True, ex=60) is None  # duplicate: skip
        assert 0 < await client.ttl(key) <= 60
    finally:
        await client.delete(key)
        await client.aclose()


@pytest.mark.postgres
def test_postgres_insert_on_conflict_do_nothing(endpoints: Endpoints) -> None:
    with psycopg.connect(endpoints.postgres_dsn, connect_timeout=ANSWER_TIMEOUT) as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("mqlab",)
        connection.execute("CREATE TEMP TABLE processed_events (idempotency_key text PRIMARY KEY)")
        insert = "INSERT INTO processed_events VALUES (%s) ON CONFLICT DO NOTHING"
        with connection.transaction():
            assert connection.execute(insert, ("evt-123",)).rowcount == 1  # new: process
        with connection.transaction():
            assert connection.execute(insert, ("evt-123",)).rowcount == 0  # duplicate: skip
        count = connection.execute("SELECT count(*) FROM processed_events").fetchone()
        assert count == (1,)
