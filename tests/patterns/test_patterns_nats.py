"""The NATS JetStream event store against the lab's nats-server: the server refuses a stale
append (expected-last-subject-sequence), batches are atomic, replay and snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mqlab.brokers.base import BrokerUnavailable
from mqlab.lab.endpoints import Endpoints
from mqlab.patterns.event_sourcing import (
    DomainEvent,
    Order,
    OrdersByStatus,
    Repository,
    VersionConflictError,
    rebuild,
)
from mqlab.patterns.event_store_nats import NatsEventStore

pytestmark = pytest.mark.nats


@pytest.fixture
async def store(endpoints: Endpoints, namespace: str) -> AsyncIterator[NatsEventStore]:
    events = NatsEventStore(endpoints.nats_url, namespace)
    await events.setup()
    yield events
    await events.drop()
    await events.close()


def an_order(aggregate_id: str) -> Order:
    order = Order(aggregate_id)
    order.create("alice")
    order.add_item("sku1", 2, 10)
    return order


async def test_append_load_and_replay(store: NatsEventStore) -> None:
    repo = Repository(store, Order, snapshot_every=3)
    await repo.save(an_order("o1"))  # two events: one atomic batch
    await repo.save(an_order("o2"))
    await repo.update("o1", lambda order: order.pay(20))
    loaded = await repo.load("o1")
    assert (loaded.status, loaded.version, loaded.paid) == ("paid", 3, 20)
    events = await store.load("o1")
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.version for e in await store.load("o1", after_version=2)] == [3]
    projection = OrdersByStatus()
    assert await rebuild(projection, store) == 5
    assert projection.counts() == {"paid": 1, "pending": 1}
    snapshot = await store.load_snapshot("o1")
    assert snapshot is not None
    assert snapshot.version == 3
    everything = await store.read_all()
    assert [s.position for s in await store.read_all(everything[2].position)] == [
        s.position for s in everything[3:]
    ]


async def test_the_server_refuses_a_stale_append(store: NatsEventStore) -> None:
    repo = Repository(store, Order)
    await repo.save(an_order("o1"))
    first, second = await repo.load("o1"), await repo.load("o1")
    first.pay(20)
    second.cancel("no")
    results = await asyncio.gather(repo.save(first), repo.save(second), return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, VersionConflictError)]
    assert len(conflicts) == 1
    assert conflicts[0].actual == 3
    assert len(await store.load("o1")) == 3


async def test_the_expected_sequence_is_checked_by_jetstream_itself(store: NatsEventStore) -> None:
    """Bypass the store's own version check: the publish header alone makes JetStream refuse
    (this is what catches the writer that lost the race between read and publish)."""
    from nats.js.errors import APIError

    created = DomainEvent("e1", "o1", "OrderCreated", 1, 0.0, {"customer": "a"})
    await store.append("o1", [created], 0)
    stale = DomainEvent("e2", "o1", "OrderCancelled", 2, 0.0, {"reason": "x"})
    with pytest.raises(APIError) as refused:
        await store._publish_batch(store._subject("o1"), [stale], 0)
    assert refused.value.err_code == 10071
    assert [e.event_id for e in await store.load("o1")] == ["e1"]


async def test_a_refused_batch_stores_none_of_its_events(store: NatsEventStore) -> None:
    await store.append(
        "o1", [DomainEvent("e1", "o1", "OrderCreated", 1, 0.0, {"customer": "a"})], 0
    )
    batch = [
        DomainEvent("e2", "o1", "ItemAdded", 2, 0.0, {"sku": "s", "quantity": 1, "price": 1}),
        DomainEvent("e3", "o1", "OrderPaid", 3, 0.0, {"amount": 1}),
    ]
    # Sequence 0 is stale (the subject has e1): the whole batch is refused, not just a part.
    from nats.js.errors import APIError

    with pytest.raises(APIError, match="wrong last sequence"):
        await store._publish_batch(store._subject("o1"), batch, 0)
    assert [e.event_id for e in await store.load("o1")] == ["e1"]


async def test_aggregate_ids_must_be_subject_tokens(store: NatsEventStore) -> None:
    with pytest.raises(ValueError, match="cannot be a NATS subject token"):
        await store.load("orders.1")


async def test_an_unreachable_server_is_one_line(namespace: str) -> None:
    store = NatsEventStore("nats://127.0.0.1:1", namespace)
    with pytest.raises(BrokerUnavailable, match=r"nats is not reachable at 127\.0\.0\.1:1"):
        await store.setup()
