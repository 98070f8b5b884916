"""The course map: the lessons in order with the learner's progress, each lesson's exercises
with their grade, and the way into the scenario library."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from mqlab.tui.messages import CourseLoaded

if TYPE_CHECKING:
    from mqlab.course.library import LessonEntry
    from mqlab.course.progress import LessonProgress, ProgressStore
    from mqlab.tui.app import MqlabApp

NARROW_WIDTH = 100
LIBRARY = "library"

_STATE_MARK = {"done": ("✓", "green"), "in_progress": ("◐", "yellow"), "new": ("○", "dim")}
_EXERCISE_MARK = {"passed": ("✓ passed", "green"), "failing": ("✗ failing", "red")}


def _progress_of(progress: dict[str, LessonProgress], lesson_id: str) -> LessonProgress:
    from mqlab.course.progress import LessonProgress

    return progress.get(lesson_id) or LessonProgress(lesson_id, "new")


def lesson_prompt(entry: LessonEntry, progress: LessonProgress) -> Text:
    """``2. ◐ Kafka concepts``."""
    mark, style = _STATE_MARK[progress.state]
    text = Text(f"{entry.number}. ")
    text.append(mark, style=style)
    text.append(f" {entry.lesson.title}")
    return text


def lesson_details(
    entry: LessonEntry, progress: LessonProgress, store: ProgressStore | None
) -> RenderableType:
    """The right-hand side: the lesson, where the learner is in it, its exercises."""
    # Imported here: markdown-it costs a tenth of a second, and the first frame (which shows
    # no lesson yet) should not wait for it.
    from rich.markdown import Markdown

    lesson = entry.lesson
    steps = len(lesson.steps)
    state = {
        "done": "done",
        "in_progress": f"in progress: resume at step {progress.current_index + 1} of {steps}",
        "new": f"new: {steps} steps",
    }[progress.state]
    parts: list[RenderableType] = [
        Text(lesson.title, style="bold"),
        Text(f"about {lesson.minutes} min · {state}", style="dim"),
        Markdown(lesson.summary),
    ]
    exercises = lesson.exercise_ids()
    if exercises:
        parts.append(Text("exercises", style="bold"))
        for exercise_id in exercises:
            record = store.exercise(exercise_id) if store is not None else None
            label, style = _EXERCISE_MARK.get(
                record.state if record is not None else "new", ("○ new", "dim")
            )
            line = Text(f"  {exercise_id}  ")
            line.append(label, style=style)
            line.append(f"   mqlab check {exercise_id}", style="dim")
            parts.append(line)
    parts.append(Text("enter: open it where you stopped", style="dim"))
    return Group(*parts)


class CourseMap(Screen[None]):
    """Where the learner starts: the lessons, their progress, the scenario library."""

    BINDINGS = [
        Binding("enter", "open", "open", show=False),
        Binding("s", "scenarios", "scenarios"),
        Binding("b", "broker", "broker"),
    ]

    @property
    def mqlab(self) -> MqlabApp:
        return cast("MqlabApp", self.app)

    def compose(self) -> ComposeResult:
        with Horizontal(id="map-body"):
            yield OptionList(id="lessons")
            with VerticalScroll(id="lesson-details"):
                yield Static("", id="lesson-text")
        yield Footer()

    def on_mount(self) -> None:
        self.entries: list[LessonEntry] = []
        self.load_error: str | None = None
        self.loaded = False
        options = self.query_one(OptionList)
        options.add_option(Option(Text("loading the course…", style="dim"), disabled=True))
        options.add_option(Option(Text("▸ scenario library", style="bold"), id=LIBRARY))
        options.focus()
        # After the first paint: loading validates every lesson (pydantic, YAML), and even in
        # a thread it would hold the interpreter the first frame is waiting for.
        self.call_after_refresh(self._start_loading)

    def _start_loading(self) -> None:
        self.run_worker(self._load, thread=True, group="course", exit_on_error=False)

    def _load(self) -> None:
        app = self.mqlab
        try:
            entries = app.lesson_entries()
        except Exception as error:  # a broken lesson must not keep the library out of reach
            self.post_message(CourseLoaded([], str(error).splitlines()[0]))
            return
        app.progress_store()  # opened here too: the first read of the map is then quick
        self.post_message(CourseLoaded(entries))

    def on_course_loaded(self, message: CourseLoaded) -> None:
        self.entries = message.entries
        self.load_error = message.error
        self.loaded = True
        self.refresh_map()

    def on_screen_resume(self) -> None:
        if getattr(self, "loaded", False):
            self.refresh_map()  # progress moved while a lesson was open

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "narrow")

    def refresh_map(self) -> None:
        """Re-read the progress and redraw the list (keeping the cursor)."""
        options = self.query_one(OptionList)
        store = self.mqlab.progress_store()
        progress = store.lessons() if store is not None else {}
        highlighted = options.highlighted
        options.clear_options()
        course = self.mqlab.course_title()
        options.border_title = course or "lessons"
        for index, entry in enumerate(self.entries):
            state = _progress_of(progress, entry.lesson.id)
            options.add_option(Option(lesson_prompt(entry, state), id=str(index)))
        options.add_option(Option(Text("▸ scenario library", style="bold"), id=LIBRARY))
        if highlighted is None:
            highlighted = self._resume_index(progress)
        options.highlighted = min(highlighted, options.option_count - 1)
        self._show_details()

    def _resume_index(self, progress: dict[str, LessonProgress]) -> int:
        """The lesson to resume: the one in progress, else the first not done."""
        for state in ("in_progress", "new"):
            for index, entry in enumerate(self.entries):
                current = _progress_of(progress, entry.lesson.id)
                if current.state == state:
                    return index
        return 0

    def _show_details(self) -> None:
        options = self.query_one(OptionList)
        text = self.query_one("#lesson-text", Static)
        if options.highlighted is None:
            return
        option = options.get_option_at_index(options.highlighted)
        if option.id == LIBRARY:
            text.update(
                Group(
                    Text("The scenario library", style="bold"),
                    Text(
                        "Every scenario on its own: predict, run it on the simulator or the "
                        "lab, break things while it runs, read the ledger.",
                    ),
                    Text(f"\nscenarios run on: {self.mqlab.broker}", style="dim"),
                    *(
                        [Text(f"\nlessons could not load: {self.load_error}", "red")]
                        if self.load_error
                        else []
                    ),
                )
            )
            return
        entry = self.entries[int(str(option.id))]
        store = self.mqlab.progress_store()
        state = store.lesson(entry.lesson.id) if store is not None else None
        text.update(lesson_details(entry, state or _progress_of({}, entry.lesson.id), store))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_details()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._open(event.option)

    def action_open(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self._open(options.get_option_at_index(options.highlighted))

    def _open(self, option: Option) -> None:
        if option.id == LIBRARY:
            self.mqlab.action_scenarios()
            return
        self.mqlab.open_lesson(self.entries[int(str(option.id))])

    def action_scenarios(self) -> None:
        self.mqlab.action_scenarios()

    def action_broker(self) -> None:
        self.mqlab.pick_broker()

    def broker_changed(self) -> None:
        self._show_details()
