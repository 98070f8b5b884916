"""What a pattern takes from whoever drives it: a bus to report on, and crash points.

Every pattern in :mod:`mqlab.patterns` is driven the same way, so that a scenario step, a
lesson experiment and a graded exercise can all run it, on the simulator and on the lab:

* **Observations.** A :class:`Reporter` (an :class:`~mqlab.observe.bus.ObservationBus` plus the
  name that goes into each observation's ``broker`` field, such as ``postgres``, ``redis`` or
  ``memory``) stamps every observation with the bus clock. On the simulator that clock is the
  virtual one, so a pattern's observations interleave with the brokers' in one trace.
* **Time.** Patterns wait only with asyncio (``asyncio.sleep``, ``asyncio.timeout``), so the
  simulator's virtual-time loop runs a saga's timeouts and a compensation's backoff in no
  wall time; in-memory stores that expire keys read the running loop's clock for the same
  reason.
* **Crash points.** At every boundary where a crash changes the outcome (after the database
  commit and before the publish, after the action and before the saga log records it ...)
  a pattern awaits its crash hook with the point's name and a detail (the message key, the
  step name). The default hook does nothing. :func:`crash_at` returns a hook that crashes at
  one boundary: in-process it raises :class:`Crashed` (the simulator makes the actor vanish),
  with ``kill=True`` it sends SIGKILL to its own process, which is what the crash tests and
  the scenario worker processes do: nothing gets to clean up, as with the OOM killer.
  :class:`BoundaryRecorder` lists the boundaries one run passes, so a test (or a lesson) can
  crash at each of them in turn.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import Observation

CrashHook = Callable[[str, str], Awaitable[None]]
"""``await hook(point, detail)`` at a crash boundary; returning means "no crash here"."""


async def no_crash(point: str, detail: str) -> None:
    """The default crash hook: every boundary is passed."""
    return None


class Crashed(BaseException):
    """The in-process crash: the actor running the pattern dies at ``point``.

    A ``BaseException`` on purpose: a pattern catches ``Exception`` from the work it runs (a
    failed saga step is compensated, a failed handler is retried), and a crash must never be
    mistaken for such a failure. It goes straight through, like a SIGKILL would.
    """

    def __init__(self, point: str, detail: str) -> None:
        super().__init__(f"crashed at {point} ({detail})" if detail else f"crashed at {point}")
        self.point = point
        self.detail = detail


def kill_self() -> None:
    """SIGKILL this process (no finally blocks, no atexit, no flush: a real crash)."""
    os.kill(os.getpid(), signal.SIGKILL)


def crash_at(
    point: str,
    *,
    detail: str | None = None,
    occurrence: int = 1,
    kill: bool = False,
    before_crash: Callable[[str, str], None] | None = None,
) -> CrashHook:
    """A hook that crashes the ``occurrence``-th time ``point`` is reached.

    Args:
        point: the boundary's name (each pattern documents its points).
        detail: only count passes with this detail (a message key, a step name).
        occurrence: 1 for the first matching pass, 2 for the second ...
        kill: SIGKILL the process instead of raising :class:`Crashed`.
        before_crash: called with the point and the detail reached, just before the crash:
            the last moment to say it is coming (the grader records the crash as a fault and,
            before a SIGKILL, tells its parent that the death is planned).
    """
    if occurrence < 1:
        raise ValueError("occurrence counts from 1")
    passes = 0

    async def hook(reached: str, reached_detail: str) -> None:
        nonlocal passes
        if reached != point or (detail is not None and reached_detail != detail):
            return
        passes += 1
        if passes != occurrence:
            return
        if before_crash is not None:
            before_crash(reached, reached_detail)
        if kill:
            kill_self()
        raise Crashed(reached, reached_detail)

    return hook


@dataclass(frozen=True, slots=True)
class Boundary:
    """One crash boundary a run passed: the point, its detail and which pass of that
    (point, detail) pair it was (1 for the first)."""

    point: str
    detail: str
    occurrence: int = 1

    def hook(self, *, kill: bool = False) -> CrashHook:
        """A hook that crashes exactly here."""
        return crash_at(self.point, detail=self.detail, occurrence=self.occurrence, kill=kill)

    def __str__(self) -> str:
        suffix = f" #{self.occurrence}" if self.occurrence > 1 else ""
        return f"{self.point}:{self.detail}{suffix}"


class BoundaryRecorder:
    """A crash hook that never crashes and remembers every boundary it was asked about."""

    def __init__(self) -> None:
        self.boundaries: list[Boundary] = []
        self._seen: Counter[tuple[str, str]] = Counter()

    async def __call__(self, point: str, detail: str) -> None:
        self._seen[(point, detail)] += 1
        self.boundaries.append(Boundary(point, detail, self._seen[(point, detail)]))


class Reporter:
    """Emits a pattern's observations on a bus, stamped with the bus clock.

    Args:
        bus: where observations go (a private bus when omitted: nothing listens).
        source: the ``broker`` field of every observation (``postgres``, ``redis``,
            ``memory``, the adapter's name ...): who saw it happen.
    """

    def __init__(self, bus: ObservationBus | None = None, source: str = "patterns") -> None:
        self.bus = bus if bus is not None else ObservationBus()
        self.source = source

    def emit(self, kind: Callable[..., Observation], **fields: Any) -> None:
        """Build ``kind(at=now, broker=source, **fields)`` and emit it."""
        self.bus.emit(kind(at=self.bus.now(), broker=self.source, **fields))

    def with_source(self, source: str) -> Reporter:
        """The same bus under another source name."""
        return Reporter(self.bus, source)


def loop_clock() -> float:
    """The running event loop's clock: virtual seconds on the simulator, monotonic otherwise.

    In-memory stores that expire keys use it, so a TTL runs out in virtual time on ``sim``;
    retry budgets and deadlines too. Outside a running loop it is the monotonic clock.
    """
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
