"""The help screen: every screen's keys, and how to get around."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown

HELP = """\
## Getting around
- **↑ ↓ enter**: pick; **escape**: back; **q** or **Ctrl+C**: quit (a running scenario is
  stopped and cleaned up first); **?**: this help; **Ctrl+P**: commands; **Ctrl+T**: light or
  dark.

## Course map
- **enter**: open the lesson where you stopped; **s**: the scenario library;
  **b**: where scenarios run (the simulator, or a real broker of the lab).

## Lesson
- **→** or **n**: next step; **←**: previous step.
- **1-9**: answer a quiz, commit a prediction (the scenario then runs), run an experiment's
  variant, or choose in the decision tree; **backspace**: one choice back; **0**: start the
  tree again.
- **o**: open the step's scenario in the full scenario screen.

## Scenario
- **1-9**: predict, then run; **r**: run (again).
- **space**: pause or go on; **+ / -**: faster, slower (the simulator).
- **k**: kill the broker (Kafka: the partition leader); **x**: crash a consumer; **f**: every
  fault (pause, resume, restart, latency, cut and heal the network).
- **l / v / p**: the ledger, the broker's live view, the patterns (retries, sagas, events).

## Replay
- **space**: pause; **n** or **.**: one observation; **+ / -**: pace; **r**: from the start.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and screens; escape or ? closes it."""

    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("question_mark", "close", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help", classes="dialog"):
            yield Label("mqlab: keys", classes="title")
            yield Markdown(HELP, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
