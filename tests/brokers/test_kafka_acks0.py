"""acks=0 on the lab's Kafka: a send returns at once with offset -1 (nobody answered), and
says which partition a keyed record went to, as the interface promises."""

from __future__ import annotations

import pytest

from mqlab.brokers.kafka.api import default_partition
from mqlab.brokers.kafka.client import KafkaBroker
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import Recorder
from mqlab.observe.events import Produced
from tests.contract.kafka_contract import poll_until

pytestmark = pytest.mark.kafka


async def test_a_fire_and_forget_send_returns_offset_minus_one_and_the_keys_partition(
    endpoints: Endpoints,
) -> None:
    recorded = Recorder()
    async with KafkaBroker(endpoints=endpoints, connect_timeout=3.0, request_timeout=5.0) as kafka:
        kafka.bus.subscribe(recorded)
        topic = kafka.qualify("acks0")
        await kafka.create_topic(topic, partitions=3, replication_factor=3)
        producer = await kafka.producer(acks=0)
        keyed = await producer.send(topic, b"a", key=b"order-4", message_id="keyed")
        keyless = await producer.send(topic, b"b", message_id="keyless")
        await producer.close()
        assert (keyed.offset, keyed.partition) == (-1, default_partition(b"order-4", 3))
        assert (keyless.offset, keyless.partition) == (-1, -1)
        produced = [o for o in recorded.observations if isinstance(o, Produced)]
        assert [(p.message_id, p.position) for p in produced] == [
            ("keyed", None),
            ("keyless", None),
        ]
        reader = await kafka.consumer([topic], group_id=kafka.qualify("r"))
        got = await poll_until(reader, 2)
        assert sorted(r.message_id for r in got) == ["keyed", "keyless"]
        await reader.close()
