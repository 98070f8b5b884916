"""What every step widget has: a heading, markdown, a numbered list, and a run in a worker."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Static

from mqlab.player.player import PlayerError, StepPlay
from mqlab.tui.messages import StepRunFinished


def numbered(choices: Sequence[str], *, marks: dict[int, tuple[str, str]] | None = None) -> Text:
    """``1. first``, ``2. second``, with an optional mark (text, style) per index."""
    text = Text()
    for index, choice in enumerate(choices):
        if index:
            text.append("\n")
        mark, style = (marks or {}).get(index, ("", ""))
        text.append(f"{index + 1}. ", style="bold")
        text.append(choice, style=style)
        if mark:
            text.append(f"  {mark}", style=style)
    return text


class StepView(Vertical):
    """A step on screen. Subclasses compose their parts and implement the actions they have;
    the lesson screen forwards keys to :meth:`answer`, :meth:`back` and :meth:`restart`."""

    DEFAULT_CSS = "StepView { height: auto; }"

    def __init__(self, play: StepPlay) -> None:
        super().__init__()
        self.play = play
        self.busy = False

    def answer(self, index: int) -> None:
        """Key ``index + 1`` was pressed (steps without choices ignore it)."""

    def back(self) -> None:
        """Backspace (the decision tree's one step back)."""

    def restart(self) -> None:
        """``0`` (the decision tree's start again)."""

    def refuse(self, error: PlayerError | str) -> None:
        """Show why an action does not fit (the player's one-line reason)."""
        self.notify(str(error), severity="warning", timeout=3)

    def run_blocking(self, work: Callable[[], object]) -> None:
        """Run ``work`` (a player call that runs a scenario) in a thread worker; its return
        value comes back as :class:`StepRunFinished` to this widget."""
        if self.busy:
            self.refuse("a run is going on: wait for it to finish")
            return
        self.busy = True

        def in_thread() -> None:
            try:
                outcome = work()
            except Exception as error:
                message = str(error).strip().splitlines()
                self.post_message(StepRunFinished(None, message[0] if message else repr(error)))
                return
            self.post_message(StepRunFinished(outcome))

        self.run_worker(in_thread, thread=True, group="step-run", exit_on_error=False)

    def on_step_run_finished(self, message: StepRunFinished) -> None:
        self.busy = False
        message.stop()
        self.show_outcome(message.outcome, message.error)

    def show_outcome(self, outcome: object | None, error: str | None) -> None:
        """A run ended (subclasses that run something draw it)."""

    @staticmethod
    def text(content: Text | str = "", classes: str = "") -> Static:
        """A plain block of text."""
        return Static(content, classes=classes)
