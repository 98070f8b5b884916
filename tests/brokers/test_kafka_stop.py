"""``wire.stop_consumer``: aiokafka's ``stop()`` leaking a cancellation is finished, not raised.

aiokafka's ``Fetcher.close()`` awaits the fetch tasks it has just cancelled without catching
their CancelledError. A fetch in its retry back-off (a broker cut off a moment ago) so ends
``stop()`` with a CancelledError before the client is closed: seen on the lab as a traceback
after a 4 s network cut. The stand-ins below have exactly the shape of that path; the
real-broker side is the long-cut scenario on Kafka (tests/scenarios/test_consumer_idle.py).
"""

from __future__ import annotations

import asyncio

import pytest

from mqlab.brokers.kafka import wire


class _Client:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class _Fetcher:
    def __init__(self) -> None:
        self._pending_tasks: set[asyncio.Task[None]] = set()


class _LeakingConsumer:
    """stop() as aiokafka runs it when a fetch sits in its back-off: the fetcher cancels the
    first pending task, awaits it, and the CancelledError escapes before client.close()."""

    def __init__(self) -> None:
        self._client = _Client()
        self._fetcher = _Fetcher()
        for _ in range(2):
            self._fetcher._pending_tasks.add(asyncio.create_task(asyncio.sleep(3600)))

    async def stop(self) -> None:
        first = next(iter(self._fetcher._pending_tasks))
        first.cancel()
        await first  # raises CancelledError: aiokafka does not catch it here
        await self._client.close()


async def test_a_leaked_cancellation_is_swallowed_and_the_stop_finished() -> None:
    consumer = _LeakingConsumer()
    await wire.stop_consumer(consumer)
    assert consumer._client.closed
    assert all(task.done() for task in consumer._fetcher._pending_tasks)


async def test_the_callers_own_cancellation_still_passes() -> None:
    consumer = _LeakingConsumer()
    started = asyncio.Event()

    class _SlowStop(_LeakingConsumer):
        async def stop(self) -> None:
            started.set()
            await asyncio.sleep(3600)

    slow = _SlowStop()
    stopping = asyncio.create_task(wire.stop_consumer(slow))
    await started.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    for task in (*consumer._fetcher._pending_tasks, *slow._fetcher._pending_tasks):
        task.cancel()


async def test_the_timeout_around_it_still_fires() -> None:
    class _Hanging(_LeakingConsumer):
        async def stop(self) -> None:
            await asyncio.sleep(3600)

    hanging = _Hanging()
    await wire.stop_within(0.05, wire.stop_consumer(hanging))
    assert not hanging._client.closed  # given up on, as stop_within promises
    for task in hanging._fetcher._pending_tasks:
        task.cancel()
