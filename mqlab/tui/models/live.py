"""Every live view of one run, folded together on the thread that produces the observations.

:class:`LiveModels` is what an :class:`~mqlab.tui.feed.ObservationFeed` folds each observation
into, once, on the run's own thread: it routes the observation to the views that draw its kind
(a kind nobody draws costs one dictionary look-up) and keeps the little the screen itself needs
(the run's clock, the consumers still running, the nodes down). The UI reads the views under
the feed's lock when it repaints; it never folds anything itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from mqlab.observe.events import (
    BrokerDown,
    BrokerUp,
    ConsumerCrashed,
    ConsumerStarted,
    Observation,
)
from mqlab.tui.models.kafka import KafkaView
from mqlab.tui.models.patterns import EventLogView, RetryView, SagaView
from mqlab.tui.models.queues import QueueSystemView

KAFKA_KINDS = frozenset(
    {"produced", "leader_changed", "broker_down", "broker_up", "committed", "rebalanced"}
)
QUEUE_KINDS = frozenset(
    {"produce_requested", "produced", "delivered", "acked", "nacked", "processed", "dead_lettered"}
)
RETRY_KINDS = frozenset({"retry_attempted", "retry_scheduled", "retry_gave_up"})
SAGA_KINDS = frozenset(
    {
        "saga_started",
        "saga_step_started",
        "saga_step_succeeded",
        "saga_step_failed",
        "compensation_started",
        "compensation_succeeded",
        "compensation_failed",
        "saga_parked",
        "saga_ended",
        "saga_recovered",
    }
)
EVENT_KINDS = frozenset(
    {"event_appended", "aggregate_loaded", "snapshot_taken", "version_conflict"}
)
CONSUMER_KINDS = frozenset({"consumer_started", "consumer_crashed"})
NODE_KINDS = frozenset({"broker_down", "broker_up"})


class LiveModels:
    """The views of one run on ``system`` (``kafka``, ``rabbitmq``, ``sqs``, ``nats``, or a
    service a pattern scenario runs on)."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.kafka = KafkaView()
        self.queues = QueueSystemView(system)
        self.retries = RetryView()
        self.sagas = SagaView()
        self.events = EventLogView()
        self.first_at: float | None = None
        self.last_at = 0.0
        self._running: list[str] = []
        self._down: list[str] = []
        routes: dict[str, list[Callable[[Observation], None]]] = defaultdict(list)
        for kinds, fold in (
            (KAFKA_KINDS, self.kafka),
            (QUEUE_KINDS, self.queues),
            (RETRY_KINDS, self.retries),
            (SAGA_KINDS, self.sagas),
            (EVENT_KINDS, self.events),
            (CONSUMER_KINDS, self._consumer),
            (NODE_KINDS, self._node),
        ):
            for kind in kinds:
                routes[kind].append(fold)
        self._routes = dict(routes)

    def __call__(self, observation: Observation) -> None:
        """Fold one observation into the views that draw its kind."""
        if self.first_at is None:
            self.first_at = observation.at
        self.last_at = observation.at
        for fold in self._routes.get(observation.kind, ()):
            fold(observation)

    @property
    def clock(self) -> float:
        """Seconds of run time from the first observation to the latest."""
        return self.last_at - self.first_at if self.first_at is not None else 0.0

    def running_consumers(self) -> list[str]:
        """Consumers started in this run and not crashed (as far as the observations tell),
        in the order they started."""
        return list(self._running)

    def nodes_down(self) -> list[str]:
        """Broker nodes reported down and not up again (as far as the observations tell), in
        the order they went down: while a single-node broker is in it, a consumer waits for it
        rather than counting idle time, so the run goes on until the broker is back or the
        scenario's max_time, and the status line says why."""
        return list(self._down)

    def end(self) -> None:
        """The run is over: the broker views say their snapshot is the last look."""
        self.kafka.end()
        self.queues.end()

    def _consumer(self, observation: Observation) -> None:
        if isinstance(observation, ConsumerStarted):
            _mark(self._running, observation.consumer, present=True)
        elif isinstance(observation, ConsumerCrashed):
            _mark(self._running, observation.consumer, present=False)

    def _node(self, observation: Observation) -> None:
        # Every adapter of the run reports the nodes it lost, so one node can go down twice.
        if isinstance(observation, BrokerDown):
            _mark(self._down, observation.node, present=True)
        elif isinstance(observation, BrokerUp):
            _mark(self._down, observation.node, present=False)


def _mark(names: list[str], name: str, *, present: bool) -> None:
    """Add ``name`` at the end of ``names`` (once) or take it out (if there)."""
    if present and name not in names:
        names.append(name)
    elif not present and name in names:
        names.remove(name)
