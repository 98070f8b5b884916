"""A virtual-time asyncio event loop: the simulator's discrete-event core.

The loop's ``time()`` is a number mqlab controls. When every task is waiting and the next
thing to happen is a timer, the loop jumps virtual time straight to that timer instead of
sleeping. So 60 simulated seconds of retries, visibility timeouts and session timeouts take
milliseconds, and because one thread runs callbacks in a fixed order, the same program and
seed give the same run every time.

Real I/O still works on this loop (the selector is polled without blocking), but the
simulator itself never does any.

A loop can also be *paced* (``speed``): it then waits for real before each jump, ``speed``
virtual seconds per real second, so a person can watch a simulated run unfold (the TUI) and
act on it while it runs. A wake-up from another thread (``call_soon_threadsafe``: a key press
injecting a fault) cuts the wait short and advances the clock only by the time that really
passed, so the injected event lands between the timers it fell between. ``speed = 0`` pauses
the run until such a wake-up. Without wake-ups a paced run gives the same trace as an unpaced
one.
"""

from __future__ import annotations

import asyncio
import gc
import math
import selectors
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

TIMER_SLACK = 1e-6
"""Seconds a timer may fire early from float rounding: a deadline ``<= now + TIMER_SLACK``
is due (an expiry timer must not find its message a hair short of expired)."""


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
        if loop.speed is not None and timeout > 0:
            ready, reached = self._paced_wait(loop)
            if ready or not reached:
                return ready
        loop.advance_to_next_timer(jump=timeout > 0)
        return ready

    def _paced_wait(
        self, loop: VirtualTimeLoop
    ) -> tuple[list[tuple[selectors.SelectorKey, int]], bool]:
        """Wait for real until the next timer is due at ``loop.speed``.

        Returns the ready events and whether the wait reached the timer. A wake-up from
        another thread ends it early, with the clock advanced by the real time that passed.
        """
        deadline = loop.next_timer_deadline()
        if deadline is None:
            return [], True
        virtual_wait = max(0.0, deadline - loop.time())
        speed = loop.speed or 0.0
        started = time.monotonic()
        # speed 0 is a pause: only a wake-up (a new speed, an injected fault) continues.
        ready = super().select(virtual_wait / speed if speed > 0 else None)
        if not ready:
            return ready, True
        loop.advance(min(virtual_wait, (time.monotonic() - started) * speed))
        return ready, False


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when everything is waiting on a timer.

    Args:
        start: the virtual time to start at.
        speed: None runs as fast as possible; a number paces the run at that many virtual
            seconds per real second (0 pauses it). It may be changed while the loop runs, from
            the loop's thread or with ``call_soon_threadsafe``.
    """

    def __init__(self, start: float = 0.0, *, speed: float | None = None) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = start
        self.speed = speed

    def next_timer_deadline(self) -> float | None:
        """The virtual time of the earliest scheduled timer, None when there is none."""
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        return scheduled[0].when() if scheduled else None

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


def run_virtual(
    coro: Coroutine[Any, Any, _T],
    *,
    start: float = 0.0,
    speed: float | None = None,
) -> _T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop` and close it
    (``speed``: see :class:`VirtualTimeLoop`).

    The garbage collector's gen-0 threshold is raised for the run and restored afterwards
    (see :data:`SIM_GC_GEN0_THRESHOLD`).
    """
    loop = VirtualTimeLoop(start=start, speed=speed)
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
