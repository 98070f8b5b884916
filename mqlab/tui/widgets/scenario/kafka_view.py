"""Kafka, alive: brokers and the controller, partitions with leader and ISR, an offset track
per partition, and each group's assignment and lag."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from mqlab.tui.models.kafka import KafkaView, PartitionState
from mqlab.tui.widgets.common.model_panel import ModelPanel

TRACK_WIDTH = 24
"""Cells of a partition's offset track."""


def _brokers_line(view: KafkaView) -> Text:
    line = Text("brokers ", style="bold")
    for broker_id, alive in sorted(view.brokers.items()):
        if alive:
            line.append(f" ● {broker_id}", style="green")
        else:
            line.append(f" ✗ {broker_id} down", style="bold red")
    if view.controller_known:
        if view.controller_id is None:
            line.append("   controller DOWN", style="bold red")
        else:
            line.append(f"   controller {view.controller_id}", style="cyan")
    return line


def offset_track(state: PartitionState, committed: list[int], scale: int) -> Text:
    """``█`` committed by a group, ``▓`` readable (below the high watermark), ``░`` written
    but not yet replicated to the ISR, ``·`` beyond; scaled to the longest log."""

    def cell(offset: int) -> int:
        return min(TRACK_WIDTH, round(offset * TRACK_WIDTH / scale)) if scale else 0

    start, high, end = cell(state.log_start), cell(state.high_watermark), cell(state.log_end)
    low = cell(min(committed)) if committed else start
    track = Text("▕")
    track.append(" " * start)
    track.append("█" * max(0, low - start), style="green")
    track.append("▓" * max(0, high - max(low, start)), style="cyan")
    track.append("░" * max(0, end - high), style="yellow")
    track.append("·" * max(0, TRACK_WIDTH - max(end, low)), style="dim")
    track.append("▏")
    return track


def _partition_lines(view: KafkaView, state: PartitionState, scale: int) -> list[Text]:
    alive = {broker_id for broker_id, up in view.brokers.items() if up}
    head = Text(f"{state.topic}:{state.partition} ", style="bold")
    if state.leader < 0:
        head.append("OFFLINE ", style="bold red")
    else:
        head.append(f"leader {state.leader} ", style="green" if state.leader in alive else "red")
    head.append("ISR [")
    for index, replica in enumerate(state.isr):
        if index:
            head.append(",")
        head.append(str(replica), style="green" if replica in alive else "red")
    head.append("]")
    out_of_sync = [r for r in state.replicas if r not in state.isr]
    if out_of_sync:
        head.append(" out of sync " + ",".join(map(str, out_of_sync)), style="yellow")
    committed = {
        name: group.committed[(state.topic, state.partition)]
        for name, group in view.groups.items()
        if (state.topic, state.partition) in group.committed
    }
    track = offset_track(state, list(committed.values()), scale)
    track.append(
        f" start {state.log_start} HW {state.high_watermark} end {state.log_end}", style="dim"
    )
    lines = [head, Text("  ") + track]
    for name, offset in sorted(committed.items()):
        lag = max(0, state.high_watermark - offset)
        lines.append(
            Text(f"    {name}: committed {offset}, lag {lag}", style="yellow" if lag else "green")
        )
    return lines


def _group_lines(view: KafkaView) -> list[Text]:
    lines: list[Text] = []
    for name, group in sorted(view.groups.items()):
        head = Text(f"group {name}", style="bold")
        details = [f"generation {group.generation}"] if group.generation else []
        if group.state:
            details.append(group.state)
        if details:
            head.append(f" ({', '.join(details)})", style="dim")
        lines.append(head)
        if not group.assignment:
            lines.append(Text("    no members", style="dim"))
        for member, partitions in sorted(group.assignment.items()):
            owned = ", ".join(partitions) or "nothing"
            lines.append(Text(f"    {member} → {owned}"))
    return lines


def render_kafka(view: KafkaView) -> RenderableType:
    """The whole Kafka picture (what :class:`KafkaPanel` shows)."""
    if view.empty:
        return Text("waiting for the cluster…", style="dim")
    parts: list[Text] = [_brokers_line(view), Text("")]
    partitions = [view.partitions[key] for key in sorted(view.partitions)]
    scale = max((p.log_end for p in partitions), default=0)
    for state in partitions:
        parts.extend(_partition_lines(view, state, scale))
    if view.groups:
        parts.append(Text(""))
        parts.extend(_group_lines(view))
    parts.append(Text(""))
    parts.append(
        Text("█ committed  ▓ readable (below HW)  ░ not yet in every ISR replica", style="dim")
    )
    if view.ended and view.controller_known:
        parts.append(Text("the run is over: this is the cluster as last seen", style="dim"))
    return Group(*parts)


class KafkaPanel(ModelPanel[KafkaView]):
    """The live Kafka view."""

    def render_view(self) -> RenderableType:
        return render_kafka(self.view)
