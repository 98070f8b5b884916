"""Faults on the main lab, seen by real clients: a paused broker stops answering and recovers,
a latency toxic slows a round trip by at least the injected delay, reset_peer breaks
connections until it is removed, a killed server comes back with ``restart``.

Needs the main lab (``mqlab lab up``). Every test undoes its fault in ``finally``.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import nats
import pytest
import redis
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError
from nats.errors import TimeoutError as NatsTimeout

from mqlab.lab import faults
from mqlab.lab.endpoints import HOST, Endpoints, port
from mqlab.lab.errors import LabError
from mqlab.lab.faults import Toxics
from mqlab.lab.supervisor import Lab
from tests.waiting import eventually

# Short on purpose: the lab answers in milliseconds, so one second only passes when a fault
# holds the request; a paused server then fails the call fast instead of hanging the test.
REQUEST_TIMEOUT = 1.0
# For the calls that must succeed (before a fault, after its repair, the clean-up): generous,
# because on a loaded machine a healthy server's answer can take seconds. A bound against
# hanging, never a speed goal; the faulted calls keep REQUEST_TIMEOUT or fail without waiting.
HEALTHY_TIMEOUT = 30.0
LATENCY_MS = 300
# Bound for a signal to take effect on a lab process (the kernel acts when it schedules it).
SIGNAL_WAIT = 10.0


class ToxicsOfOneTest(Toxics):
    """The Toxiproxy client, remembering which proxies the test touched."""

    def __init__(self) -> None:
        super().__init__()
        self.touched: set[str] = set()

    def add(self, proxy: str, kind: faults.ToxicKind, **settings: Any) -> str:
        name = super().add(proxy, kind, **settings)
        self.touched.add(proxy)
        return name

    def disable(self, proxy: str) -> None:
        super().disable(proxy)
        self.touched.add(proxy)


@pytest.fixture
def toxics() -> Iterator[ToxicsOfOneTest]:
    """The Toxiproxy client; every toxic a test leaves is removed afterwards.

    Only from the proxies this test touched: resetting all of them would also lift the fault
    a test of another system has in place at the same moment (the suite runs systems side by
    side).
    """
    client = ToxicsOfOneTest()
    yield client
    for proxy in sorted(client.touched):
        client.clear(proxy)


@pytest.mark.nats
@pytest.mark.lab
async def test_paused_nats_times_out_and_answers_after_resume(endpoints: Endpoints) -> None:
    client = await nats.connect(endpoints.nats_url, connect_timeout=HEALTHY_TIMEOUT)
    stream = f"mqlab_test_pause_{secrets.token_hex(3)}"
    # The stream's creation and deletion are JetStream API calls: they get the generous bound.
    jetstream = client.jetstream(timeout=HEALTHY_TIMEOUT)
    paused = False
    try:
        await jetstream.add_stream(name=stream, subjects=[f"{stream}.>"])
        await jetstream.publish(f"{stream}.a", b"before", timeout=HEALTHY_TIMEOUT)

        faults.pause("nats")
        paused = True
        # SIGSTOP takes effect when the kernel next schedules the server, which on a busy
        # machine is not at once: until then it would still answer the publish below.
        await eventually(
            lambda: _health("nats"), SIGNAL_WAIT, "nats paused", accept="paused".__eq__
        )
        with pytest.raises(NatsTimeout):
            await jetstream.publish(f"{stream}.a", b"while paused", timeout=REQUEST_TIMEOUT)

        faults.resume("nats")
        paused = False
        # Resumed, the server first works through what piled up while it was stopped.
        ack = await jetstream.publish(f"{stream}.a", b"after", timeout=HEALTHY_TIMEOUT)
        assert ack.stream == stream
        # It answered the publish: running again. Waited for, not read once: lab status
        # gives an HTTP health check 1 s, which a loaded machine can make it miss.
        await eventually(
            lambda: _health("nats"), HEALTHY_TIMEOUT, "nats healthy", accept="healthy".__eq__
        )
    finally:
        if paused:
            faults.resume("nats")
        await jetstream.delete_stream(stream)
        await client.close()


@pytest.mark.nats
@pytest.mark.toxiproxy
@pytest.mark.lab
async def test_latency_toxic_slows_the_round_trip(
    endpoints: Endpoints, toxics: ToxicsOfOneTest
) -> None:
    client = await nats.connect(endpoints.nats_url, connect_timeout=5)
    try:
        await client.flush(timeout=5)  # connected and answering
        name = toxics.add("nats", "latency", latency=LATENCY_MS)
        assert name == "latency_downstream"
        started = time.monotonic()
        await client.flush(timeout=10)  # PING -> PONG, the PONG comes back through the toxic
        elapsed = time.monotonic() - started
        # A lower bound (the toxic holds every reply at least this long), not a speed goal.
        assert elapsed >= LATENCY_MS / 1000
        toxics.remove("nats", name)
        assert toxics.list("nats") == []
    finally:
        await client.close()


def _sqs_without_retries(endpoints: Endpoints) -> object:
    return boto3.client(
        "sqs",
        endpoint_url=endpoints.sqs_endpoint,
        region_name="us-east-1",
        aws_access_key_id="mqlab",
        aws_secret_access_key="mqlab",
        # One attempt: the test wants to see the failure, not botocore's retries. The timeouts
        # are generous: reset_peer fails a call at once, and moto on a loaded machine can take
        # seconds to answer the calls that must succeed (2 s was tight there).
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=HEALTHY_TIMEOUT,
            read_timeout=HEALTHY_TIMEOUT,
        ),
    )


@pytest.mark.sqs
@pytest.mark.toxiproxy
@pytest.mark.lab
def test_reset_peer_breaks_connections_until_removed(
    endpoints: Endpoints, toxics: ToxicsOfOneTest
) -> None:
    sqs = _sqs_without_retries(endpoints)
    sqs.list_queues()  # type: ignore[attr-defined]
    name = toxics.add("sqs", "reset_peer", timeout=0)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        _sqs_without_retries(endpoints).list_queues()  # type: ignore[attr-defined]
    toxics.remove("sqs", name)
    _sqs_without_retries(endpoints).list_queues()  # type: ignore[attr-defined]


@pytest.mark.nats
@pytest.mark.toxiproxy
@pytest.mark.lab
def test_disabled_proxy_refuses_connections_until_enabled(toxics: ToxicsOfOneTest) -> None:
    toxics.disable("nats")
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port("nats")), timeout=2).close()
    finally:
        toxics.enable("nats")
    # Through the re-enabled proxy to the server and back: generous on a loaded machine.
    with socket.create_connection((HOST, port("nats")), timeout=HEALTHY_TIMEOUT) as connection:
        assert connection.recv(4) == b"INFO"


# nats: the last check reads the nats proxy's toxics, which must not be another test's.
@pytest.mark.nats
@pytest.mark.toxiproxy
def test_toxics_reject_unknown_names(toxics: ToxicsOfOneTest) -> None:
    with pytest.raises(LabError, match="unknown proxy 'natz'; did you mean 'nats'"):
        toxics.add("natz", "latency", latency=10)
    with pytest.raises(LabError, match="unknown toxic kind 'lag'"):
        toxics.add("nats", "lag")  # type: ignore[arg-type]
    with pytest.raises(LabError, match="a bandwidth toxic has no 'latency' setting"):
        toxics.add("nats", "bandwidth", latency=10)
    with pytest.raises(LabError, match="proxy 'nats' has no toxic 'nope' \\(toxics: none\\)"):
        toxics.remove("nats", "nope")


@pytest.mark.redis
@pytest.mark.lab
def test_killed_redis_comes_back_with_restart(endpoints: Endpoints) -> None:
    # A killed server closes its connections: the ping fails at once, not by a timeout, so
    # the bound can be the generous one (the pings that must succeed need it under load).
    client = redis.Redis.from_url(endpoints.redis_url, socket_timeout=HEALTHY_TIMEOUT)
    try:
        assert client.ping()
        faults.kill("redis")
        assert _health("redis") == "killed"
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        faults.restart("redis")
    assert _health("redis") == "healthy"
    assert client.ping()
    client.close()


def test_faults_reject_unknown_processes() -> None:
    with pytest.raises(LabError, match="unknown process 'kafka-broker-7'; did you mean"):
        faults.kill("kafka-broker-7")
    with pytest.raises(LabError, match="unknown process 'rabit'; did you mean 'rabbitmq'"):
        faults.pause("rabit")


def _health(process: str) -> str:
    rows = {row.process: row for row in Lab().status()}
    return rows[process].health
