"""The observation bus: adapters emit, subscribers (runner, TUI, trace writer) listen.

Subscribers are plain callables run synchronously in ``emit`` order; they must be quick and
must not raise (a subscriber that raises is removed and the error is kept in ``errors``, so one
broken listener cannot break a broker adapter mid-run).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mqlab.observe.events import Observation

Subscriber = Callable[[Observation], None]


class ObservationBus:
    """Fan-out of observations to subscribers, with a clock for timestamps.

    Args:
        clock: returns monotonic seconds; the simulator passes its virtual clock so that
            observations carry virtual time.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._subscribers: list[Subscriber] = []
        self.errors: list[BaseException] = []

    def now(self) -> float:
        """The bus clock's current time, for stamping a new observation's ``at``."""
        return self.clock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns a function that removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def emit(self, observation: Observation) -> None:
        """Hand ``observation`` to every subscriber."""
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(observation)
            except Exception as error:  # a broken listener must not break the adapter
                self.errors.append(error)
                self._subscribers.remove(subscriber)


class Recorder:
    """A subscriber that keeps every observation in memory (tests, ledger, replay)."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []

    def __call__(self, observation: Observation) -> None:
        self.observations.append(observation)

    def of_kind(self, cls: type[Observation]) -> list[Observation]:
        """The recorded observations that are instances of ``cls``."""
        return [o for o in self.observations if isinstance(o, cls)]
