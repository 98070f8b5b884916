"""The scenario library: every scenario by topic, with its summary and where it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from mqlab.course.scenario import Scenario

if TYPE_CHECKING:
    from mqlab.tui.app import MqlabApp

NARROW_WIDTH = 100


def describe_scenario(scenario: Scenario, broker: str) -> RenderableType:
    """The library's right-hand side: what the scenario shows and where it runs."""
    where = ", ".join(scenario.targets) + (" and the simulator" if scenario.runs_on_sim else "")
    parts: list[RenderableType] = [
        Text(scenario.title, style="bold"),
        Text(f"runs on {where}; you run it on {broker}", style="dim"),
        Markdown(scenario.summary),
    ]
    if scenario.predict is not None:
        parts.append(Text(scenario.predict.question, style="italic"))
    parts.append(Text("enter: open it", style="dim"))
    return Group(*parts)


class ScenarioLibrary(Screen[None]):
    """Pick a scenario; enter opens it on the chosen broker."""

    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("b", "broker", "broker"),
    ]

    @property
    def mqlab(self) -> MqlabApp:
        return cast("MqlabApp", self.app)

    def compose(self) -> ComposeResult:
        from mqlab.scenarios.library import load_all

        self.scenarios = load_all()
        options: list[Option] = []
        topic = None
        for index, scenario in enumerate(self.scenarios):
            if scenario.topic != topic:
                topic = scenario.topic
                options.append(Option(Text(topic, style="bold"), disabled=True))
            options.append(Option(f"  {scenario.id}", id=str(index)))
        with Horizontal(id="library-body"):
            yield OptionList(*options, id="scenarios")
            with VerticalScroll(id="scenario-details"):
                yield Static("", id="scenario-text")
        yield Footer()

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.border_title = "scenarios"
        options.focus()
        first = next(i for i, o in enumerate(options.options) if not o.disabled)
        options.highlighted = first

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "narrow")

    def _scenario(self, option: Option) -> Scenario | None:
        return self.scenarios[int(option.id)] if option.id is not None else None

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._describe(event.option)

    def _describe(self, option: Option) -> None:
        scenario = self._scenario(option)
        if scenario is not None:
            broker = self.mqlab.broker_for(scenario)
            self.query_one("#scenario-text", Static).update(describe_scenario(scenario, broker))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        scenario = self._scenario(event.option)
        if scenario is not None:
            self.mqlab.open_scenario(scenario)

    def broker_changed(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self._describe(options.get_option_at_index(options.highlighted))

    def action_broker(self) -> None:
        self.mqlab.pick_broker()

    def action_back(self) -> None:
        self.app.pop_screen()
