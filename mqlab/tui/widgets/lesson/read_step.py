"""A read step: markdown, and a diagram drawn from the learner's broker."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Markdown, Static

from mqlab.player.player import ReadPlay
from mqlab.tui.messages import DiagramDrawn
from mqlab.tui.widgets.lesson.step_view import StepView


class ReadStep(StepView):
    """Text to read; the diagram (if any) is drawn in a worker (the lab takes seconds)."""

    play: ReadPlay

    def compose(self) -> ComposeResult:
        yield Markdown(f"# {self.play.read.title}\n\n{self.play.read.text}")
        if self.play.read.diagram is not None:
            yield Static(Text("drawing the diagram…", style="dim"), classes="diagram")

    def on_mount(self) -> None:
        if self.play.read.diagram is None:
            return
        play = self.play

        def draw() -> None:
            view = play.diagram()
            if view is not None:
                self.post_message(DiagramDrawn(view.lines, view.note))

        self.run_worker(draw, thread=True, group="diagram", exit_on_error=False)

    def on_diagram_drawn(self, message: DiagramDrawn) -> None:
        message.stop()
        # Where the picture comes from goes above it: a lab's diagram can run past the
        # bottom of the screen, and the learner should know first whether it is live.
        text = Text(message.note, style="dim italic")
        text.append("\n" + "\n".join(message.lines), style="")
        self.query_one(".diagram", Static).update(text)
