"""The broker picker: the simulator, or a real system of the lab when it is up.

The lab is asked in a worker (the doctor probes every service, about a second); a system that
is not ready is listed greyed out with the reason and the command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from mqlab.brokers.registry import SYSTEM_NAMES
from mqlab.lab.doctor import Finding
from mqlab.tui.messages import LabStatusRead

SIM = "sim"


@dataclass(frozen=True, slots=True)
class BrokerChoice:
    """One line of the picker."""

    name: str
    """``sim`` or a system (``kafka``)."""
    available: bool
    reason: str = ""
    """Why it cannot be picked (empty when it can)."""
    fix: str = ""
    """The command that makes it available."""


def broker_choices(findings: list[Finding] | None) -> list[BrokerChoice]:
    """The simulator, then each real system as the doctor's findings describe it (None: the
    lab has not been asked yet)."""
    choices = [BrokerChoice(SIM, True)]
    for system in SYSTEM_NAMES:
        if findings is None:
            choices.append(BrokerChoice(system, False, "asking the lab…"))
            continue
        mine = [f for f in findings if f.check.split(" ", 1)[0] == system]
        problem = next((f for f in mine if f.state in ("missing", "down")), None)
        if problem is not None:
            choices.append(BrokerChoice(system, False, problem.detail, problem.fix))
        elif not any(f.state == "ok" and "running" in f.check for f in mine):
            choices.append(BrokerChoice(system, False, "not running", f"mqlab lab up {system}"))
        else:
            choices.append(BrokerChoice(system, True))
    return choices


def _prompt(choice: BrokerChoice, current: str) -> Text:
    mark = "● " if choice.name == current or current.startswith(f"{choice.name}:") else "  "
    if choice.name == SIM:
        text = Text(f"{mark}sim", style="bold")
        text.append("  the built-in simulator: deterministic, nothing to install", style="dim")
        return text
    if choice.available:
        text = Text(f"{mark}{choice.name}", style="bold")
        text.append("  the lab's real broker (up)", style="green")
        return text
    text = Text(f"{mark}{choice.name}  unavailable: {choice.reason}", style="dim")
    if choice.fix:
        text.append(f"\n     fix: {choice.fix}", style="dim italic")
    return text


class BrokerPicker(ModalScreen[str | None]):
    """Pick where scenarios run; returns ``sim`` or a system name (None: unchanged)."""

    BINDINGS = [Binding("escape", "close", "close")]

    def __init__(self, current: str = SIM, findings: list[Finding] | None = None) -> None:
        super().__init__()
        self.current = current
        self.findings = findings
        self.choices = broker_choices(findings)

    def compose(self) -> ComposeResult:
        with Vertical(id="broker-picker", classes="dialog"):
            yield Label("Where should scenarios run?", classes="title")
            yield OptionList(*self._options(), id="broker-options")
            yield Label("enter picks · escape closes · mqlab lab up starts the lab", classes="hint")

    def _options(self) -> list[Option]:
        return [
            Option(_prompt(choice, self.current), id=choice.name, disabled=not choice.available)
            for choice in self.choices
        ]

    def on_mount(self) -> None:
        if self.findings is None:
            self.run_worker(self._ask_lab, thread=True, exit_on_error=False)

    def _ask_lab(self) -> None:
        from mqlab.lab.doctor import diagnose

        try:
            findings = diagnose()
        except Exception as error:  # a broken lab must not break the picker
            self.post_message(LabStatusRead([], str(error)))
            return
        self.post_message(LabStatusRead(findings))

    def on_lab_status_read(self, message: LabStatusRead) -> None:
        self.findings = message.findings
        self.choices = broker_choices(message.findings)
        if message.error:
            self.choices = [self.choices[0]] + [
                BrokerChoice(system, False, message.error, "mqlab doctor")
                for system in SYSTEM_NAMES
            ]
        options = self.query_one(OptionList)
        highlighted = options.highlighted
        options.clear_options()
        options.add_options(self._options())
        options.highlighted = highlighted if highlighted is not None else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_close(self) -> None:
        self.dismiss(None)
