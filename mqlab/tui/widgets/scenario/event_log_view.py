"""Event sourcing: each aggregate's event log beside the state rebuilt from it."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqlab.tui.models.patterns import AggregateState, EventLogView
from mqlab.tui.widgets.common.model_panel import ModelPanel

EVENTS_SHOWN = 10


def _aggregate(aggregate: AggregateState) -> RenderableType:
    log = Text()
    events = aggregate.events[-EVENTS_SHOWN:]
    if len(aggregate.events) > EVENTS_SHOWN:
        log.append(f"… {len(aggregate.events) - EVENTS_SHOWN} earlier\n", style="dim")
    seen: set[int] = set()
    for version, event_type in events:
        clash = version in seen
        seen.add(version)
        log.append(f"v{version:<3} {event_type}\n", style="bold red" if clash else "")
    state = Text()
    state.append(f"stream at v{aggregate.version}\n", style="bold")
    if aggregate.loaded_version is not None:
        base = (
            f"snapshot v{aggregate.snapshot_version} + "
            if aggregate.snapshot_version is not None
            else ""
        )
        state.append(f"rebuilt: {base}{aggregate.events_replayed} events\n")
        behind = aggregate.version - aggregate.loaded_version
        state.append(
            f"→ v{aggregate.loaded_version}" + (f" ({behind} behind)" if behind > 0 else ""),
            style="yellow" if behind > 0 else "green",
        )
        state.append("\n")
    elif aggregate.snapshot_version is not None:
        state.append(f"snapshot at v{aggregate.snapshot_version}\n")
    for expected, actual, detected in aggregate.conflicts:
        state.append(f"CONFLICT: expected v{expected}, was v{actual} ({detected})\n", "bold red")
    table = Table(box=None, expand=True, show_header=True, header_style="bold", pad_edge=False)
    table.add_column(f"{aggregate.aggregate_id}: events", ratio=1)
    table.add_column("aggregate", ratio=1)
    table.add_row(log, state)
    return table


def render_event_log(view: EventLogView) -> RenderableType:
    """One log-and-state pair per aggregate."""
    if view.empty:
        return Text("no domain events yet", style="dim")
    return Group(*(_aggregate(a) for a in view.aggregates.values()))


class EventLogPanel(ModelPanel[EventLogView]):
    """The live event-sourcing view."""

    def render_view(self) -> RenderableType:
        return render_event_log(self.view)
