"""The fault menu: break the running scenario's broker, its network or a consumer, now."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from mqlab.scenarios.session import LiveFault

KAFKA_TARGETS = ("leader", "follower-1", "follower-2")
"""Kafka roles a fault can target (resolved once per run, as the scenario's own steps are:
"pause leader" then "resume leader" mean the same broker even after the leader moved)."""


def fault_choices(system: str, consumers: list[str]) -> list[tuple[str, LiveFault]]:
    """What can be broken in a run on ``system`` with these consumers running."""
    targets = KAFKA_TARGETS if system == "kafka" else ("broker",)
    choices: list[tuple[str, LiveFault]] = []
    for target in targets:
        choices += [
            (f"kill {target} (SIGKILL)", LiveFault("kill", target)),
            (f"pause {target} (SIGSTOP)", LiveFault("pause", target)),
            (f"resume {target}", LiveFault("resume", target)),
            (f"restart {target}", LiveFault("restart", target)),
        ]
    network = targets[0]
    choices += [
        (f"add 500 ms latency to {network}", LiveFault("latency", network, 500)),
        (f"cut the network to {network}", LiveFault("cut", network)),
        (f"heal the network to {network}", LiveFault("heal", network)),
    ]
    choices += [(f"crash consumer {name}", LiveFault("crash", name)) for name in consumers]
    return choices


def describe_fault(fault: LiveFault) -> str:
    """``kill leader``, ``latency 500 ms on broker``, ``crash consumer reader``."""
    if fault.action == "crash":
        return f"crash consumer {fault.target}"
    if fault.action == "latency":
        return f"latency {fault.latency_ms} ms on {fault.target}"
    return f"{fault.action} {fault.target}"


class FaultMenu(ModalScreen[LiveFault | None]):
    """Pick a fault; Escape closes without one."""

    BINDINGS = [Binding("escape", "dismiss_menu", "close")]

    def __init__(self, system: str, consumers: list[str]) -> None:
        super().__init__()
        self.choices = fault_choices(system, consumers)

    def compose(self) -> ComposeResult:
        with Vertical(id="fault-menu", classes="dialog"):
            yield Label("Break something (enter applies it now, escape closes)", classes="title")
            yield OptionList(
                *(Option(label, id=str(index)) for index, (label, _) in enumerate(self.choices)),
                id="fault-options",
            )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index][1])

    def action_dismiss_menu(self) -> None:
        self.dismiss(None)
