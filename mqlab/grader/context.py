"""What a hidden check gets to drive the learner's code: :class:`GradingContext`.

A check (``check.py`` in an exercise folder) is ``async def drive(learner, ctx)``. It runs in
the grader's child process, on the simulator's virtual clock for ``sim`` (a saga's 30 s timeout
costs nothing) or in real time against the lab. Everything it needs comes from the context:

- ``ctx.bus`` and :meth:`GradingContext.emit`: the recorded history the invariants judge. The
  broker adapters and the patterns report on the same bus, so most of the history writes
  itself; the check adds what only it knows (an effect it read back, a fault it applied).
- ``ctx.broker``: a connected adapter of the exercise's system (the real client's vocabulary,
  real or simulated), in a namespace of its own; ``ctx.faults`` for broker faults.
- ``ctx.rng`` and ``ctx.seed``: every random choice of the fault schedule comes from here, so
  ``mqlab check --seed N`` reproduces a failure exactly.
- :meth:`GradingContext.crash_hook`: a crash at a named boundary. On the simulator it raises
  :class:`~mqlab.patterns.harness.Crashed` inside the process (the check catches it and goes
  on with recovery, ``ctx.phase`` stays 1); on a real broker the child SIGKILLs itself and the
  grader starts it again with ``ctx.phase`` 2, so recovery really starts from a cold process
  with only what the lab's PostgreSQL, Redis or broker kept.
- :meth:`GradingContext.off_the_clock`: the check's own waits on the lab (a broker it killed
  restarting) are not charged to the learner's time limit.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import CheckEvaluated, FaultInjected, Observation
from mqlab.patterns.harness import CrashHook, crash_at

if TYPE_CHECKING:
    from mqlab.brokers.base import Broker
    from mqlab.lab.endpoints import Endpoints
    from mqlab.scenarios.faults import FaultInjector

GRADER_SOURCE = "grader"
"""The ``broker`` field of observations the check itself reports."""


class LearnerMistake(Exception):
    """The learner's code does not do what the task asks in a way the check can name (a
    missing function, a wrong return type): reported as one line, like an error in their
    file, not as a failure of the grader."""


def learner_function(learner: object, name: str) -> Callable[..., Any]:
    """``learner.<name>``, which the task asks the learner to define.

    Raises:
        LearnerMistake: it is missing or not callable.
    """
    function = getattr(learner, name, None)
    if function is None:
        raise LearnerMistake(f"the task asks for a function named {name!r}; your file has none")
    if not callable(function):
        raise LearnerMistake(f"{name!r} must be a function, not {type(function).__name__}")
    return function  # type: ignore[no-any-return]


@dataclass
class GradingContext:
    """Everything a check's ``drive(learner, ctx)`` may use (see the module docstring)."""

    bus: ObservationBus
    seed: int
    simulated: bool
    phase: int
    namespace: str
    endpoints: Endpoints
    system: str | None = None
    broker: Broker | None = None
    faults: FaultInjector | None = None
    rng: random.Random = field(init=False)
    announce_crash: Callable[[str], None] = field(default=lambda point: None, repr=False)
    """Set by the child: tells the grader a planned crash is coming (before the SIGKILL)."""
    pause_clock: Callable[[], None] = field(default=lambda: None, repr=False)
    """Set by the child: stops the learner's time limit (see :meth:`off_the_clock`)."""
    resume_clock: Callable[[], None] = field(default=lambda: None, repr=False)
    """Set by the child: lets the learner's time limit run on."""
    _cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)
    _asserted: int = field(default=0, repr=False)
    _off_the_clock: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def postgres_dsn(self) -> str:
        """The lab's PostgreSQL (real runs only; on ``sim`` use the in-memory stores)."""
        return self.endpoints.postgres_dsn

    @property
    def redis_url(self) -> str:
        """The lab's Redis (real runs only)."""
        return self.endpoints.redis_url

    def emit(self, kind: Callable[..., Observation], **fields: Any) -> None:
        """Report ``kind(**fields)`` on the bus, stamped now, from the grader."""
        self.bus.emit(kind(at=self.bus.now(), broker=GRADER_SOURCE, **fields))

    def assert_that(self, description: str, holds: bool, observed: str) -> None:
        """Record an assertion of the check (judged by the ``checks-hold`` invariant)."""
        self._asserted += 1
        self.emit(
            CheckEvaluated,
            step=self._asserted,
            description=description,
            observed=observed,
            holds=holds,
        )

    def fault(self, fault: str, target: str, **params: object) -> None:
        """Record a fault the check applies itself (a duplicate delivery, a redelivery ...),
        so a counter-example can say which fault exposed the problem."""
        self.emit(
            FaultInjected,
            fault=fault,
            target=target,
            params=tuple((k, str(v)) for k, v in params.items()),
        )

    def crash_hook(
        self, point: str, *, detail: str | None = None, occurrence: int = 1
    ) -> CrashHook:
        """A hook that crashes the ``occurrence``-th time ``point`` is reached (see the
        module docstring for what a crash is on ``sim`` and on a real broker)."""

        def record(reached: str, reached_detail: str) -> None:
            self.fault("crash", "learner", point=point, detail=reached_detail)
            if not self.simulated:
                self.announce_crash(point)

        return crash_at(
            point,
            detail=detail,
            occurrence=occurrence,
            kill=not self.simulated,
            before_crash=record,
        )

    @contextmanager
    def off_the_clock(self) -> Iterator[None]:
        """The check waits on the lab here, not on the learner's code: a killed broker
        restarting, replicas catching up, a fresh reader joining its group. On a loaded
        machine a JVM takes far longer to start, and that is nobody's mistake, so this time
        is not charged to the learner's time limit. The check's own wait must be bounded
        (a condition with a deadline that raises), and the grader bounds the whole pause
        too (:data:`mqlab.grader.run.LAB_WAIT_SECONDS`). Nesting is allowed."""
        self._off_the_clock += 1
        if self._off_the_clock == 1:
            self.pause_clock()
        try:
            yield
        finally:
            self._off_the_clock -= 1
            if self._off_the_clock == 0:
                self.resume_clock()

    def on_cleanup(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run ``cleanup`` when the check ends (and in the grader's cleanup run after a kill
        or a time-out, where the check's ``cleanup(ctx)`` function is called instead)."""
        self._cleanups.append(cleanup)

    async def run_cleanups(self) -> None:
        """Run the registered cleanups, newest first; failures are ignored (best effort)."""
        for cleanup in reversed(self._cleanups):
            try:
                await cleanup()
            except Exception:  # cleanup is best effort: the namespace is swept anyway
                continue
        self._cleanups.clear()
