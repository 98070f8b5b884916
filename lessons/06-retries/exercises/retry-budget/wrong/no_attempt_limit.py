"""Wrong on purpose: the deadline is the only limit; a dependency that is down is
called again and again."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
BASE = 0.2
CAP = 2.0


def classify(error: Exception) -> str:
    """Transient: a timeout, a dropped or refused connection, throttling (429) or an
    unavailable upstream (502, 503, 504). Everything else, including errors nobody
    anticipated, is permanent: retrying the unknown is how retry storms start."""
    if isinstance(error, TimeoutError | ConnectionError):
        return "transient"
    if getattr(error, "status", None) in TRANSIENT_STATUSES:
        return "transient"
    return "permanent"


async def call_with_retries(
    operation: Callable[[], Awaitable[Any]],
    *,
    max_calls: int,
    deadline: float,
    call_timeout: float,
    rng: random.Random,
) -> Any:
    """At most ``max_calls`` calls, each cut off at ``call_timeout`` or at the deadline,
    with full-jitter waits in between; no wait that would end past the deadline."""
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + deadline
    call = 0
    while True:
        call += 1
        try:
            async with asyncio.timeout(min(call_timeout, ends_at - loop.time())):
                return await operation()
        except Exception as error:
            if classify(error) == "permanent":
                raise
            delay = rng.uniform(0.0, min(CAP, BASE * 2 ** (call - 1)))
            if loop.time() + delay >= ends_at:
                raise  # the next call could not start before the deadline
            await asyncio.sleep(delay)
