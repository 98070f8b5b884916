"""``send_windowed``: the window bound, the order of results, and where a failure stops."""

from __future__ import annotations

import asyncio

import pytest

from mqlab.brokers.base import BrokerError, check_window, send_windowed


async def test_results_keep_the_items_order_and_the_window_is_never_exceeded() -> None:
    outstanding = 0
    most = 0

    async def send(item: int) -> int:
        nonlocal outstanding, most
        outstanding += 1
        most = max(most, outstanding)
        await asyncio.sleep(0.001 * (item % 3))  # acknowledgements come back out of order
        outstanding -= 1
        return item * 10

    results = await send_windowed(list(range(50)), 7, send)
    assert results == [n * 10 for n in range(50)]
    assert most == 7


async def test_no_item_is_sent_after_the_first_failure_and_it_is_raised() -> None:
    sent: list[int] = []

    async def send(item: int) -> int:
        sent.append(item)
        await asyncio.sleep(0)
        if item == 3:
            raise BrokerError("refused 3")
        return item

    with pytest.raises(BrokerError, match="refused 3"):
        await send_windowed(list(range(100)), 4, send)
    # items 0..3 were taken at once, the in-flight ones finished; then nothing new
    assert max(sent) < 3 + 4
    assert len(sent) < 100


@pytest.mark.parametrize("window", [0, -1, 10_001])
def test_a_window_outside_its_range_is_refused(window: int) -> None:
    with pytest.raises(BrokerError, match="window must be"):
        check_window(window, "rabbitmq")


async def test_items_reach_the_write_in_their_order_while_the_first_send_opens_the_channel() -> (
    None
):
    """The shape of the RabbitMQ adapter's publisher channel: opened once under a lock, with a
    fast path once it is open. Sends that wait for the opening must not be overtaken."""
    channel_lock = asyncio.Lock()
    channel: list[str] = []
    written: list[int] = []

    async def send(item: int) -> int:
        if not channel:
            async with channel_lock:
                if not channel:
                    await asyncio.sleep(0.01)  # the broker's answer to channel.open
                    channel.append("open")
        written.append(item)  # the frame goes out: this order is the queue's order
        await asyncio.sleep(0)  # the confirm
        return item

    results = await send_windowed(list(range(40)), 8, send)
    assert results == list(range(40))
    assert written == list(range(40))
