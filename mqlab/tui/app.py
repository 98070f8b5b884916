"""The app: its screens, its keys, its commands, and a clean exit.

:func:`make_app` builds it the way ``mqlab`` does, so tests drive exactly what a learner gets.
Quitting (``q``, Ctrl+C, the palette) first stops any run still going and waits for its
cleanup (the run session restarts what it killed and deletes its topics and queues), so the app
never leaves broker state behind.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from mqlab.tui.theme import THEMES, default_theme

if TYPE_CHECKING:
    from mqlab.course.library import LessonEntry
    from mqlab.course.progress import ProgressStore
    from mqlab.course.scenario import Scenario


class MqlabApp(App[None]):
    """mqlab's course in the terminal.

    Args:
        lessons: the lessons folder (None: the shipped course).
        broker: where scenarios run: ``sim`` (default), ``sim:<system>`` or a real system.
        seed: the simulator's seed for every run.
        progress: the progress database (None: the learner's, under the data dir).
        speed: the simulator's pace for watched runs (virtual seconds per real second).
        scenario / replay: open straight on a scenario, or on the replay of a trace.
    """

    CSS_PATH = "mqlab.tcss"
    TITLE = "mqlab"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("question_mark", "help", "help"),
        Binding("ctrl+t", "toggle_theme", "theme", show=False),
    ]

    def __init__(
        self,
        *,
        lessons: Path | None = None,
        broker: str = "sim",
        seed: int = 0,
        progress: Path | None = None,
        speed: float | None = 1.0,
        scenario: Scenario | None = None,
        replay: Path | None = None,
    ) -> None:
        super().__init__()
        self.lessons_root = lessons
        self.broker = broker
        self.seed = seed
        self.progress_path = progress
        self.speed = speed
        self._start_scenario = scenario
        self._start_replay = replay
        self._quitting = False
        self._entries: list[LessonEntry] | None = None
        self._course_title = ""
        self._progress: ProgressStore | None = None
        self._progress_failed = False
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = default_theme()

    def on_mount(self) -> None:
        from mqlab.tui.screens.course_map import CourseMap

        self.push_screen(CourseMap())
        if self._start_scenario is not None:
            self.open_scenario(self._start_scenario, autostart=True)
        elif self._start_replay is not None:
            self.open_replay(self._start_replay)

    # --- the course -------------------------------------------------------------------------

    def lesson_entries(self) -> list[LessonEntry]:
        """The course's lessons in order (loaded once).

        Raises:
            ContentError: the course or a lesson is invalid.
        """
        if self._entries is None:
            from mqlab.course.library import course_lessons, load_course

            self._course_title = load_course(self.lessons_root).title
            self._entries = course_lessons(self.lessons_root)
        return self._entries

    def course_title(self) -> str:
        """The course's title ("" until the lessons loaded)."""
        return self._course_title

    def progress_store(self) -> ProgressStore | None:
        """The learner's progress database, opened on first use (None when it cannot be:
        the course still works, it just does not remember)."""
        if self._progress is None and not self._progress_failed:
            from mqlab.course.progress import ProgressError, ProgressStore

            try:
                self._progress = ProgressStore(self.progress_path)
            except ProgressError as error:
                self._progress_failed = True
                self.notify(f"progress is not saved: {error}", severity="warning")
        return self._progress

    def open_lesson(self, entry: LessonEntry) -> None:
        """Open a lesson where the learner stopped."""
        from mqlab.tui.screens.lesson import LessonScreen

        try:
            screen = LessonScreen(entry)
        except Exception as error:  # a lesson naming something this mqlab lacks
            self.notify(str(error).splitlines()[0], severity="error")
            return
        self.push_screen(screen)

    def on_unmount(self) -> None:
        if self._progress is not None:
            self._progress.close()

    # --- navigation -------------------------------------------------------------------------

    def broker_for(self, scenario: Scenario) -> str:
        """The broker a scenario runs on with the learner's choice (the simulator when the
        chosen real system is not one the scenario runs on)."""
        broker = self.broker
        if broker == "sim" or broker.startswith("sim:"):
            system = broker.removeprefix("sim:").removeprefix("sim")
            if system and system in scenario.systems:
                return f"sim:{system}"
            return "sim"
        if broker in scenario.systems:
            return broker
        if scenario.runs_on_sim:
            self.notify(
                f"{scenario.id} does not run on {broker}: it runs on the simulator here",
                severity="warning",
            )
            return "sim"
        return scenario.targets[0]

    def open_scenario(self, scenario: Scenario, *, autostart: bool = False) -> None:
        """Open the scenario screen on the learner's broker."""
        from mqlab.tui.screens.scenario import ScenarioScreen

        try:
            screen = ScenarioScreen(
                scenario,
                self.broker_for(scenario),
                seed=self.seed,
                speed=self.speed,
                autostart=autostart,
            )
        except Exception as error:  # the scenario refuses that broker
            self.notify(str(error).splitlines()[0], severity="error")
            return
        self.push_screen(screen)

    def open_replay(self, path: Path) -> None:
        """Open the replay of a recorded trace."""
        from mqlab.observe.trace import TraceError
        from mqlab.tui.screens.replay import ReplayScreen

        try:
            screen = ReplayScreen(path, speed=self.speed)
        except (TraceError, OSError) as error:
            self.notify(f"cannot replay {path}: {str(error).splitlines()[0]}", severity="error")
            return
        self.push_screen(screen)

    def pick_broker(self) -> None:
        """Open the broker picker; the choice applies to every run from now on."""
        from mqlab.tui.screens.broker_picker import BrokerPicker

        def chosen(name: str | None) -> None:
            if name is not None:
                self.broker = name
                self.notify(f"scenarios run on {name}" + (" (the lab)" if name != "sim" else ""))
                for screen in self.screen_stack:
                    refresh = getattr(screen, "broker_changed", None)
                    if refresh is not None:
                        refresh()

        self.push_screen(BrokerPicker(self.broker), chosen)

    # --- commands and keys ------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Broker", "Pick the simulator or a real broker", self.pick_broker)
        yield SystemCommand("Scenarios", "The scenario library", self.action_scenarios)
        yield SystemCommand("Help", "Keys and screens", self.action_help)
        yield SystemCommand("Light or dark", "Switch the theme", self.action_toggle_theme)

    def action_help(self) -> None:
        from mqlab.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_scenarios(self) -> None:
        from mqlab.tui.screens.library import ScenarioLibrary

        self.push_screen(ScenarioLibrary())

    def action_toggle_theme(self) -> None:
        self.theme = "mqlab-light" if self.theme == "mqlab-dark" else "mqlab-dark"

    async def action_quit(self) -> None:
        """Stop every run (waiting for its cleanup), then exit."""
        if self._quitting:
            return
        self._quitting = True
        # Only a run screen has a run to stop, and if its module was never imported none was
        # opened: quitting from the course map does not pay for importing it.
        run_screens = sys.modules.get("mqlab.tui.screens.run_screen")
        if run_screens is not None:
            for screen in reversed(self.screen_stack):
                if isinstance(screen, run_screens.RunScreen):
                    await screen.stop()
        self.exit()


def make_app(
    course: Path | None = None,
    broker: str = "sim",
    seed: int = 0,
    *,
    progress: Path | None = None,
    speed: float | None = 1.0,
    scenario: Scenario | None = None,
    replay: Path | None = None,
) -> MqlabApp:
    """The app as ``mqlab`` builds it (``course``: the lessons folder, default the shipped
    course). The CLI and the tests both call this."""
    return MqlabApp(
        lessons=course,
        broker=broker,
        seed=seed,
        progress=progress,
        speed=speed,
        scenario=scenario,
        replay=replay,
    )
