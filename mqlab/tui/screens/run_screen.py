"""What the scenario screen and the replay screen share: the layout, the frame loop that
takes what the feed folded and repaints it, and the pace keys.

The observations are folded where they are produced: the run's thread folds each one into the
live views (through the :class:`~mqlab.tui.feed.ObservationFeed`) and the run's own judge
folds it into the ledger. A frame (15 a second) only takes the newest few for the timeline,
repaints the panels whose view moved (reading them under the feed's lock) and, at most 5 times
a second, draws the ledger from a :class:`~mqlab.tui.models.ledger.LedgerPicture` counted off
this thread. Its cost does not grow with the broker's rate.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from mqlab.scenarios.verdict import RunJudge, RunResult
from mqlab.tui.feed import FRAME_SECONDS, ObservationFeed
from mqlab.tui.messages import RunFinished, SnapshotTaken
from mqlab.tui.models.kafka import KafkaView
from mqlab.tui.models.ledger import LedgerPicture
from mqlab.tui.models.live import LiveModels
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

if TYPE_CHECKING:
    from mqlab.course.scenario import Scenario

BROKER_SYSTEMS = ("kafka", "rabbitmq", "sqs", "nats")
"""Systems with a live broker view."""
LEDGER_REDRAW_SECONDS = 0.2
"""The ledger is redrawn at most this often (and less often when counting it takes long)."""
NARROW_WIDTH = 100
"""Below this many columns the timeline and the side panels stack instead of sitting side by
side."""


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
        self.models = LiveModels(system)
        self.result: RunResult | None = None
        self.error: str | None = None
        self.running = False
        self.picture = LedgerPicture()
        """The ledger as last drawn."""
        self.feed = ObservationFeed(self.models, judge=RunJudge())
        """Where observations arrive. Until a run or a replay brings its own, a feed with a
        judge of its own: whatever is pushed into it is judged and drawn like a run."""
        self._picture_request: concurrent.futures.Future[LedgerPicture | None] | None = None
        self._ledger_dirty = False
        self._ledger_drawn_at = 0.0
        self._ledger_interval = LEDGER_REDRAW_SECONDS
        self._resume_speed: float | None = 1.0

    # The views, by name (what the panels and the tests look at).

    @property
    def kafka(self) -> KafkaView:
        return self.models.kafka

    @property
    def queues(self) -> QueueSystemView:
        return self.models.queues

    @property
    def retries(self) -> RetryView:
        return self.models.retries

    @property
    def sagas(self) -> SagaView:
        return self.models.sagas

    @property
    def events(self) -> EventLogView:
        return self.models.events

    @property
    def ledger_settled(self) -> bool:
        """Whether the ledger on screen counts everything that arrived: nothing left in the
        feed for a frame to take, no count due and none on its way (what a screenshot of a
        paused or finished run waits for)."""
        return len(self.feed) == 0 and not self._ledger_dirty and self._picture_request is None

    def request_picture(self) -> concurrent.futures.Future[LedgerPicture | None]:
        """The ledger so far, counted off the UI thread (subclasses ask their run)."""
        return self.feed.request_picture()

    def reset_models(self) -> None:
        """Fresh views for a new run, handed to the panels that draw them."""
        self.models = LiveModels(self.system)
        self.feed = ObservationFeed(self.models, judge=RunJudge(self.intro_scenario()))
        self.picture = LedgerPicture()
        self._picture_request = None
        self._ledger_dirty = False
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
        """Take what the feed folded since the last frame, repaint what moved (called by the
        frame timer)."""
        batch = self.feed.take()
        if batch.count:
            self.query_one(Timeline).add_observations(batch)
            self._ledger_dirty = True
        self._ledger_frame()
        self.redraw_panels()
        if batch.count:
            self._update_status()

    def redraw_panels(self) -> None:
        """Repaint the live panels whose view moved, reading the views under the feed's lock
        (the run's thread folds into them meanwhile)."""
        with self.feed.lock:
            for panel in self.query(ModelPanel):
                panel.redraw()

    def _ledger_frame(self) -> None:
        """Ask for a ledger count when one is due, draw it when it has come."""
        request = self._picture_request
        if request is not None:
            if not request.done():
                return
            self._picture_request = None
            picture = request.result() if request.exception() is None else None
            if picture is not None:
                self.picture = picture
                self._draw_ledger()
            # The count takes long with a long run: ask less often, so that counting never
            # takes more than a tenth of the time.
            took = time.monotonic() - self._ledger_drawn_at
            self._ledger_interval = max(LEDGER_REDRAW_SECONDS, took * 10)
            return
        now = time.monotonic()
        if self._ledger_dirty and now - self._ledger_drawn_at >= self._ledger_interval:
            self._ledger_dirty = False
            self._ledger_drawn_at = now
            self._picture_request = self.request_picture()

    def _draw_ledger(self) -> None:
        panel = self.query_one(LedgerPanel)
        picture = self.picture
        if picture.scenario is not None and panel.scenario is None:
            panel.scenario = picture.scenario
            panel.system = picture.system or self.system
        panel.show_ledger(picture, final=self.result, epilogue=self.ledger_epilogue())

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
            text, style = ("paused", "yellow") if self.speed == 0 else ("running", "cyan")
            with self.feed.lock:
                down = self.models.nodes_down()
            if down:
                # Why a run can go on with nothing moving: its consumers wait for the broker.
                return f"{text}, {', '.join(down)} down", "yellow"
            return text, style
        return "ready", "dim"

    def _update_status(self) -> None:
        text, style = self.state()
        with self.feed.lock:
            clock = self.models.clock
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
        with self.feed.lock:
            self.models.end()
        self._picture_request = None  # the end's count replaces any still on its way
        if message.result is not None:
            if self.query_one(Timeline).skipped_any:
                self.query_one(Timeline).show_all(message.result.observations)
            if message.picture is not None:
                self.picture = message.picture
            self._draw_ledger()
            self.query_one(TabbedContent).active = "ledger"
        self.redraw_panels()
        self._update_status()

    def on_run_finished(self, message: RunFinished) -> None:
        self.finish(message)

    def on_snapshot_taken(self, message: SnapshotTaken) -> None:
        # A snapshot still on its way when the run ended shows the broker as it was before
        # the end (before the cleanup restarted what was killed): only a running run's
        # snapshots are drawn, so the end's picture stays.
        if self.running:
            self.apply_snapshot(message.snapshot, requested_after=message.requested_after)

    def apply_snapshot(self, snapshot: object, *, requested_after: int | None = None) -> None:
        """Hand a broker snapshot to the live view it belongs to (``requested_after``: see
        :meth:`~mqlab.tui.models.kafka.KafkaView.apply_snapshot`)."""
        from mqlab.tui.models.snapshots import KafkaSnapshot

        with self.feed.lock:
            if isinstance(snapshot, KafkaSnapshot):
                self.kafka.apply_snapshot(snapshot, requested_after=requested_after)
            else:
                self.queues.apply_snapshot(snapshot)
        self.redraw_panels()

    def intro_scenario(self) -> Scenario | None:
        """The scenario before anything ran (the scenario screen knows it)."""
        return None

    def show_intro(self, text: RenderableType) -> None:
        """What the ledger tab shows before anything ran."""
        panel = self.query_one(LedgerPanel)
        scenario = self.intro_scenario()
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
