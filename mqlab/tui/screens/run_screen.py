"""What the scenario screen and the replay screen share: the layout, the frame loop that
drains the observation feed into the models, and the pace keys.

A frame (30 per second) drains everything the run reported since the previous frame, folds it
into the ledger judge and the live models (each model only sees the kinds it draws), writes the
newest lines of the timeline, and repaints the panels whose model moved. The ledger, which
re-counts every message, is redrawn at most 5 times a second.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from mqlab.observe.events import Observation
from mqlab.scenarios.verdict import RunJudge, RunResult
from mqlab.tui.feed import FRAME_SECONDS, ObservationFeed
from mqlab.tui.messages import RunFinished, SnapshotTaken
from mqlab.tui.models.kafka import KafkaView
from mqlab.tui.models.patterns import EventLogView, RetryView, SagaView
from mqlab.tui.models.queues import QueueSystemView
from mqlab.tui.runs import faster, slower, speed_label
from mqlab.tui.widgets.common.model_panel import ModelPanel
from mqlab.tui.widgets.scenario.event_log_view import EventLogPanel
from mqlab.tui.widgets.scenario.kafka_view import KafkaPanel
from mqlab.tui.widgets.scenario.ledger import LedgerPanel
from mqlab.tui.widgets.scenario.queue_view import QueuePanel
from mqlab.tui.widgets.scenario.retries_view import RetryPanel
from mqlab.tui.widgets.scenario.run_status import RunStatus
from mqlab.tui.widgets.scenario.saga_view import SagaPanel
from mqlab.tui.widgets.scenario.timeline import Timeline

BROKER_SYSTEMS = ("kafka", "rabbitmq", "sqs", "nats")
"""Systems with a live broker view."""
LEDGER_REDRAW_SECONDS = 0.2
"""The ledger is redrawn at most this often (and less often when it takes long)."""
NARROW_WIDTH = 100
"""Below this many columns the timeline and the side panels stack instead of sitting side by
side."""

_KAFKA_KINDS = frozenset(
    {"produced", "leader_changed", "broker_down", "broker_up", "committed", "rebalanced"}
)
_QUEUE_KINDS = frozenset(
    {"produce_requested", "produced", "delivered", "acked", "nacked", "processed", "dead_lettered"}
)
_RETRY_KINDS = frozenset({"retry_attempted", "retry_scheduled", "retry_gave_up"})
_SAGA_KINDS = frozenset(
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
_EVENT_KINDS = frozenset(
    {"event_appended", "aggregate_loaded", "snapshot_taken", "version_conflict"}
)


class RunScreen(Screen[None]):
    """A run's timeline, ledger and live views (subclasses say where observations come from).

    Args:
        system: the broker system the run is on (which live view to show).
        title: the status line's first word (the scenario id).
        where: the broker as the status line shows it (``sim:kafka``).
    """

    BINDINGS = [
        Binding("space", "toggle_pause", "pause"),
        Binding("plus,equals_sign", "faster", "faster"),
        Binding("minus", "slower", "slower"),
        Binding("l", "show_tab('ledger')", "ledger"),
        Binding("v", "show_tab('broker')", "broker view"),
        Binding("p", "show_tab('patterns')", "patterns"),
        Binding("escape", "back", "back"),
    ]

    def __init__(self, system: str, *, title: str, where: str) -> None:
        super().__init__()
        self.system = system
        self.title_text = title
        self.where = where
        self.judge = RunJudge()
        self.kafka = KafkaView()
        self.queues = QueueSystemView(system)
        self.retries = RetryView()
        self.sagas = SagaView()
        self.events = EventLogView()
        self.result: RunResult | None = None
        self.error: str | None = None
        self.running = False
        self.feed = ObservationFeed()
        self._routes: dict[str, list[Callable[[Observation], None]]] = self._make_routes()
        self._first_at: float | None = None
        self._last_at = 0.0
        self._ledger_dirty = False
        self._ledger_drawn_at = 0.0
        self._ledger_interval = LEDGER_REDRAW_SECONDS
        self._resume_speed: float | None = 1.0

    def reset_models(self) -> None:
        """Fresh models for a new run, handed to the panels that draw them."""
        self.judge = RunJudge(self.judge.scenario)
        self.kafka = KafkaView()
        self.queues = QueueSystemView(self.system)
        self.retries = RetryView()
        self.sagas = SagaView()
        self.events = EventLogView()
        self._routes = self._make_routes()
        self._first_at = None
        self._last_at = 0.0
        panels: list[tuple[str, object]] = [
            ("#retry-panel", self.retries),
            ("#saga-panel", self.sagas),
            ("#event-panel", self.events),
        ]
        if self.has_broker:
            panels.append(("#broker-panel", self.kafka if self.system == "kafka" else self.queues))
        for panel_id, model in panels:
            self.query_one(panel_id, ModelPanel).view = model
        self.query_one(Timeline).restart()

    @property
    def has_broker(self) -> bool:
        """Whether the run is on a broker (a pattern scenario may run on PostgreSQL alone)."""
        return self.system in BROKER_SYSTEMS

    def _make_routes(self) -> dict[str, list[Callable[[Observation], None]]]:
        routes: dict[str, list[Callable[[Observation], None]]] = defaultdict(list)
        for kinds, fold in (
            (_KAFKA_KINDS, self.kafka),
            (_QUEUE_KINDS, self.queues),
            (_RETRY_KINDS, self.retries),
            (_SAGA_KINDS, self.sagas),
            (_EVENT_KINDS, self.events),
        ):
            for kind in kinds:
                routes[kind].append(fold)
        return routes

    # --- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield RunStatus(id="status")
        with Horizontal(id="run-body"):
            yield Timeline(id="timeline")
            with TabbedContent(id="side", initial="ledger" if self.has_broker else "patterns"):
                with TabPane("Ledger", id="ledger"), VerticalScroll():
                    yield LedgerPanel(id="ledger-panel")
                with TabPane("Broker", id="broker"), VerticalScroll():
                    if self.system == "kafka":
                        yield KafkaPanel(self.kafka, id="broker-panel")
                    elif self.has_broker:
                        yield QueuePanel(self.queues, id="broker-panel")
                    else:
                        yield Static(
                            Text(
                                f"This scenario runs a pattern against {self.system}, with no "
                                "broker to draw: see the patterns tab.",
                                style="dim",
                            )
                        )
                with TabPane("Patterns", id="patterns"), VerticalScroll():
                    yield RetryPanel(self.retries, id="retry-panel")
                    yield SagaPanel(self.sagas, id="saga-panel")
                    yield EventLogPanel(self.events, id="event-panel")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self._start_frames)

    def _start_frames(self) -> None:
        self.set_interval(FRAME_SECONDS, self.frame)
        self._update_status()

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "narrow")

    # --- the frame loop --------------------------------------------------------------------

    def frame(self) -> None:
        """Drain the feed, fold, repaint what moved (called by the frame timer)."""
        batch = self.feed.drain()
        if batch:
            self.fold(batch)
            self.query_one(Timeline).add_observations(batch)
            self._ledger_dirty = True
        now = time.monotonic()
        if self._ledger_dirty and now - self._ledger_drawn_at >= self._ledger_interval:
            self._draw_ledger()
        for panel in self.query(ModelPanel):
            panel.redraw()
        if batch:
            self._update_status()

    def fold(self, batch: list[Observation]) -> None:
        """Fold a batch into the judge and the models that draw its kinds."""
        judge, routes = self.judge, self._routes
        for observation in batch:
            judge(observation)
            for fold in routes.get(observation.kind, ()):
                fold(observation)
        if self._first_at is None:
            self._first_at = batch[0].at
        self._last_at = batch[-1].at

    def _draw_ledger(self) -> None:
        self._ledger_dirty = False
        started = time.monotonic()
        self._ledger_drawn_at = started
        self._draw_ledger_panel()
        # The ledger recounts every message: with a long run it gets slower, so it is
        # redrawn less often, never taking more than a tenth of the frames' time.
        took = time.monotonic() - started
        self._ledger_interval = max(LEDGER_REDRAW_SECONDS, took * 10)

    def _draw_ledger_panel(self) -> None:
        panel = self.query_one(LedgerPanel)
        if self.judge.scenario is not None and panel.scenario is None:
            panel.scenario = self.judge.scenario
            panel.system = self.judge.system or self.system
        panel.show_ledger(self.judge.ledger, final=self.result, epilogue=self.ledger_epilogue())

    def ledger_epilogue(self) -> list[RenderableType]:
        """What the ledger tab shows below the final ledger (the scenario screen's
        explanation); nothing by default."""
        return []

    # --- state ------------------------------------------------------------------------------

    @property
    def speed(self) -> float | None:
        """The current pace (subclasses hold it)."""
        return None

    def apply_speed(self, speed: float | None) -> None:
        """Set the pace of what is playing (subclasses pass it on)."""

    def state(self) -> tuple[str, str]:
        """(what the status line says, its style)."""
        if self.error is not None:
            return f"could not run: {self.error}", "bold red"
        if self.result is not None:
            verdict = self.result.verdict
            style = {"pass": "bold green", "fail": "bold red"}.get(verdict, "bold red")
            return verdict.upper(), style
        if self.running:
            return ("paused", "yellow") if self.speed == 0 else ("running", "cyan")
        return "ready", "dim"

    def _update_status(self) -> None:
        text, style = self.state()
        clock = self._last_at - self._first_at if self._first_at is not None else 0.0
        self.query_one(RunStatus).show(
            title=self.title_text,
            where=self.where,
            pace=self.pace_label(),
            clock=clock,
            observations=self.feed.received,
            state=text,
            state_style=style,
        )

    def pace_label(self) -> str:
        """The pace as the status line shows it."""
        return speed_label(self.speed)

    def finish(self, message: RunFinished) -> None:
        """Show the end of the run: the final ledger with the verdict."""
        self.running = False
        self.result = message.result
        self.error = message.error
        self.frame()  # whatever arrived before the end
        self.kafka.end()
        self.queues.end()
        if message.result is not None:
            if self.query_one(Timeline).skipped_any:
                self.query_one(Timeline).show_all(message.result.observations)
            self._draw_ledger()
            self.query_one(TabbedContent).active = "ledger"
        self._update_status()

    def on_run_finished(self, message: RunFinished) -> None:
        self.finish(message)

    def on_snapshot_taken(self, message: SnapshotTaken) -> None:
        self.apply_snapshot(message.snapshot)

    def apply_snapshot(self, snapshot: object) -> None:
        """Hand a broker snapshot to the live view it belongs to."""
        from mqlab.tui.models.snapshots import KafkaSnapshot

        if isinstance(snapshot, KafkaSnapshot):
            self.kafka.apply_snapshot(snapshot)
        else:
            self.queues.apply_snapshot(snapshot)
        for panel in self.query(ModelPanel):
            panel.redraw()

    def show_intro(self, text: RenderableType) -> None:
        """What the ledger tab shows before anything ran."""
        panel = self.query_one(LedgerPanel)
        scenario = self.judge.scenario
        if scenario is not None:
            panel.show_intro(scenario, self.system, text)
        else:
            panel.update(text)

    # --- keys -----------------------------------------------------------------------------

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_toggle_pause(self) -> None:
        if self.speed == 0:
            self.apply_speed(self._resume_speed)
        else:
            self._resume_speed = self.speed
            self.apply_speed(0)
        self._update_status()

    def action_faster(self) -> None:
        speed = self.speed
        self.apply_speed(faster(speed) if speed else self._resume_speed or 1.0)
        self._update_status()

    def action_slower(self) -> None:
        speed = self.speed
        self.apply_speed(slower(speed) if speed != 0 else 0)
        self._update_status()

    async def stop(self) -> None:
        """Stop what is playing and wait for its cleanup (subclasses)."""

    async def action_back(self) -> None:
        await self.stop()
        self.app.pop_screen()

    def notice(self, text: str, *, error: bool = False) -> None:
        """A line in the timeline and a toast: what the learner did, and what came of it."""
        self.query_one(Timeline).write(Text(f"  » {text}", "bold red" if error else "bold"))
        self.notify(text, severity="error" if error else "information", timeout=4)
