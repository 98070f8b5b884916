"""A virtual-time asyncio event loop: the simulator's discrete-event core.

The loop's ``time()`` is a number mqlab controls. When every task is waiting and the next
thing to happen is a timer, the loop jumps virtual time straight to that timer instead of
sleeping. So 60 simulated seconds of retries, visibility timeouts and session timeouts take
milliseconds, and because one thread runs callbacks in a fixed order, the same program and
seed give the same run every time.

Real I/O still works on this loop (the selector is polled without blocking), but the
simulator itself never does any.
"""

from __future__ import annotations

import asyncio
import gc
import math
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class _VirtualSelector(selectors.DefaultSelector):
    """A selector that never blocks: a would-be sleep advances the loop's virtual clock."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        loop = self.loop
        if ready or loop is None:
            return ready
        if timeout is None:
            # Nothing scheduled at all: only real I/O (e.g. a thread's wake-up) can make
            # progress, so wait for it for real.
            return super().select(None)
        loop.advance_to_next_timer(jump=timeout > 0)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when everything is waiting on a timer."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = start

    def time(self) -> float:
        """Virtual seconds since the simulation started (plus ``start``)."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (never backward, and always by at least one float
        step, so a timer a rounding error away can never stall the loop)."""
        if seconds > 0:
            target = self._virtual_now + seconds
            if target <= self._virtual_now:
                target = math.nextafter(self._virtual_now, math.inf)
            self._virtual_now = target

    def advance_to_next_timer(self, *, jump: bool) -> None:
        """Set the clock to the earliest timer's exact deadline: always when ``jump`` (the
        loop would sleep until then), otherwise only if the loop is about to run it anyway.

        asyncio runs a timer whose deadline is less than ``clock_resolution`` ahead, so
        without this a timer could run while ``time()`` is still a rounding error short of
        its deadline, and code comparing ``time()`` with the deadline it computed would
        loop forever at the same virtual instant. Setting the clock to the deadline itself
        (not ``now + timeout``) also keeps float rounding out of the jump.
        """
        # asyncio's timer heap (private, stable since 3.4); cancelled heads are gone here.
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if not scheduled:
            return
        deadline = scheduled[0].when()
        resolution: float = self._clock_resolution  # type: ignore[attr-defined]
        if jump or deadline < self._virtual_now + resolution:
            self._virtual_now = max(self._virtual_now, deadline)


SIM_GC_GEN0_THRESHOLD = 100_000
"""Gen-0 threshold of Python's cyclic garbage collector during a simulated run (default 700).

The simulator allocates a handful of small objects per simulated message and keeps most of
them (a log keeps its records), so with the default threshold the collector re-walks a growing
heap thousands of times per simulated second and finds almost nothing to free: it was the
largest single cost of a throughput run. Reference counting still frees everything acyclic at
once; only the search for cycles runs less often."""


def run_virtual(coro: Coroutine[Any, Any, _T], *, start: float = 0.0) -> _T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop` and close it.

    The garbage collector's gen-0 threshold is raised for the run and restored afterwards
    (see :data:`SIM_GC_GEN0_THRESHOLD`).
    """
    loop = VirtualTimeLoop(start=start)
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], SIM_GC_GEN0_THRESHOLD), *thresholds[1:])
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            gc.set_threshold(*thresholds)


class VirtualTimeLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """Event loop policy for test runners (pytest-asyncio) that should run on virtual time."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return VirtualTimeLoop()
