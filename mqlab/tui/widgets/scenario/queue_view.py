"""RabbitMQ, SQS and NATS, alive: what each broker holds, and the message flow through it."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqlab.tui.models import short_name
from mqlab.tui.models.queues import FlowView, QueueSystemView
from mqlab.tui.models.snapshots import NatsSnapshot, RabbitSnapshot, SqsSnapshot
from mqlab.tui.widgets.common.model_panel import ModelPanel

BAR_LIMIT = 20
"""Cells of the widest bar; longer counts are scaled down."""


def _bar(count: int, widest: int, style: str) -> Text:
    cells = count if widest <= BAR_LIMIT else round(count * BAR_LIMIT / widest)
    return Text("■" * cells, style=style)


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    return table


def _rabbit(snapshot: RabbitSnapshot) -> list[RenderableType]:
    parts: list[RenderableType] = []
    for exchange in snapshot.exchanges:
        line = Text(f"exchange {short_name(exchange.name)} ", style="bold")
        line.append(f"({exchange.type})", style="dim")
        parts.append(line)
        for binding in snapshot.bindings:
            if binding.exchange == exchange.name:
                key = f" [{binding.routing_key}]" if binding.routing_key else ""
                parts.append(Text(f"  └─{key}→ {short_name(binding.queue)}"))
    widest = max((q.ready + q.unacked for q in snapshot.queues), default=0)
    table = _table("queue", "ready", "unacked", "consumers", "")
    for queue in snapshot.queues:
        bar = _bar(queue.ready, widest, "cyan") + _bar(queue.unacked, widest, "yellow")
        table.add_row(
            short_name(queue.name),
            str(queue.ready),
            str(queue.unacked),
            str(queue.consumers),
            bar,
        )
    parts.append(table)
    for queue in snapshot.queues:
        notes = []
        if queue.max_priority is not None:
            notes.append(f"priorities 0..{queue.max_priority}")
        if queue.message_ttl_ms is not None:
            notes.append(f"TTL {queue.message_ttl_ms} ms")
        if queue.dead_letter_exchange is not None:
            dead_letters = short_name(queue.dead_letter_exchange) or "(default exchange)"
            routing = queue.dead_letter_routing_key
            if routing:
                dead_letters += f" [{short_name(routing)}]"
            notes.append(f"dead letters → {dead_letters}")
        if notes:
            parts.append(Text(f"  {short_name(queue.name)}: " + "; ".join(notes), style="dim"))
    return parts


def _sqs(view: QueueSystemView, snapshot: SqsSnapshot) -> list[RenderableType]:
    parts: list[RenderableType] = []
    table = _table("queue", "visible", "in flight", "delayed", "DLQ")
    for queue in snapshot.queues:
        name = short_name(queue.name) + (" (FIFO)" if queue.fifo else "")
        dlq = "" if queue.dead_letter_depth is None else str(queue.dead_letter_depth)
        table.add_row(name, str(queue.visible), str(queue.in_flight), str(queue.delayed), dlq)
    parts.append(table)
    for queue in snapshot.queues:
        notes = [f"visibility {queue.visibility_timeout}s"]
        if queue.dead_letter_queue:
            redrive = short_name(queue.dead_letter_queue)
            notes.append(f"redrive → {redrive} after {queue.max_receive_count} receives")
        if queue.content_based_dedup:
            notes.append("content-based dedup")
        parts.append(Text(f"  {short_name(queue.name)}: " + "; ".join(notes), style="dim"))
    for topic in snapshot.topics:
        queues = ", ".join(short_name(q) for q in topic.subscribed_queues) or "nothing"
        parts.append(Text(f"SNS topic {short_name(topic.name)} → {queues}"))
    return parts


def _nats(snapshot: NatsSnapshot) -> list[RenderableType]:
    parts: list[RenderableType] = []
    table = _table("stream", "messages", "first seq", "last seq")
    for stream in snapshot.streams:
        table.add_row(
            short_name(stream.name),
            str(stream.messages),
            str(stream.first_sequence),
            str(stream.last_sequence),
        )
    parts.append(table)
    consumers = _table("consumer", "ack floor", "delivered", "pending", "ack pending", "redeliv.")
    for consumer in snapshot.consumers:
        consumers.add_row(
            short_name(consumer.name),
            str(consumer.ack_floor),
            str(consumer.delivered),
            str(consumer.num_pending),
            str(consumer.num_ack_pending),
            str(consumer.num_redelivered),
        )
    if snapshot.consumers:
        parts.append(consumers)
    return parts


def _flow(view: QueueSystemView) -> list[RenderableType]:
    flow: FlowView = view.flow
    parts: list[RenderableType] = []
    if flow.destinations:
        table = _table("flow", "sent", "delivered", "redeliv.", "acked", "nacked")
        for name, counts in sorted(flow.destinations.items()):
            table.add_row(
                name,
                str(counts.produced),
                str(counts.delivered),
                str(counts.redelivered),
                str(counts.acked),
                str(counts.nacked),
            )
        parts.append(table)
    for (source, target, reason), count in sorted(flow.dead_letter_paths.items()):
        parts.append(Text(f"dead-lettered {source} → {target} ({reason}): {count}", "magenta"))
    if flow.waiting_by_priority and any(flow.waiting_by_priority.values()):
        widest = max(flow.waiting_by_priority.values())
        parts.append(Text("waiting by priority", style="bold"))
        for priority, count in sorted(flow.waiting_by_priority.items(), reverse=True):
            if count:
                parts.append(Text(f"  {priority:>3} ") + _bar(count, widest, "cyan") + f" {count}")
    blocked = flow.blocked_groups()
    if blocked:
        parts.append(Text("head-of-line blocking (FIFO groups)", style="bold yellow"))
        for key, (head, waiting) in blocked.items():
            line = Text(f"  {key}: {head.message_id} in flight", style="yellow")
            remaining = view.visible_again_in(head)
            if remaining is not None:
                line.append(f", visible again in {max(0.0, remaining):.1f}s")
            line.append(f"; {waiting} waiting behind it")
            parts.append(line)
    in_flight = list(flow.in_flight.values())
    if in_flight:
        parts.append(Text(f"in flight: {len(in_flight)}", style="bold"))
        for delivery in in_flight[:6]:
            line = Text(f"  {delivery.message_id} → {delivery.consumer}")
            if delivery.delivery_count > 1:
                line.append(f" (delivery {delivery.delivery_count})", style="yellow")
            remaining = view.visible_again_in(delivery) if view.system == "sqs" else None
            if remaining is not None:
                line.append(f" visible again in {max(0.0, remaining):.1f}s", style="dim")
            parts.append(line)
        if len(in_flight) > 6:
            parts.append(Text(f"  … {len(in_flight) - 6} more", style="dim"))
    return parts


def render_queues(view: QueueSystemView) -> RenderableType:
    """The broker's state (from its snapshot) above the flow (from observations)."""
    parts: list[RenderableType] = []
    snapshot = view.snapshot
    if isinstance(snapshot, RabbitSnapshot):
        parts.extend(_rabbit(snapshot))
    elif isinstance(snapshot, SqsSnapshot):
        parts.extend(_sqs(view, snapshot))
    elif isinstance(snapshot, NatsSnapshot):
        parts.extend(_nats(snapshot))
    if parts and view.ended:
        parts.append(Text("(the broker as last seen, before the run deleted its queues)", "dim"))
    flow = _flow(view)
    if parts and flow:
        parts.append(Text(""))
    parts.extend(flow)
    if not parts:
        return Text(f"waiting for {view.system}…", style="dim")
    return Group(*parts)


class QueuePanel(ModelPanel[QueueSystemView]):
    """The live view of a queue-like system."""

    def render_view(self) -> RenderableType:
        return render_queues(self.view)
