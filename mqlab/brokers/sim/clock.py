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
        if ready or self.loop is None:
            return ready
        if timeout is None:
            # Nothing scheduled at all: only real I/O (e.g. a thread's wake-up) can make
            # progress, so wait for it for real.
            return super().select(None)
        if timeout > 0:
            self.loop.advance(timeout)
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
        """Move the virtual clock forward (never backward)."""
        if seconds > 0:
            self._virtual_now += seconds


def run_virtual(coro: Coroutine[Any, Any, _T], *, start: float = 0.0) -> _T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop` and close it."""
    loop = VirtualTimeLoop(start=start)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class VirtualTimeLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """Event loop policy for test runners (pytest-asyncio) that should run on virtual time."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return VirtualTimeLoop()
