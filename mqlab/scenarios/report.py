"""Turning observations and run results into text: the live timeline, the ledger, the verdict.

Plain functions returning strings and rich renderables, shared by ``mqlab run``, ``mqlab
replay`` and ``mqlab compare`` (and usable by the TUI, which draws its own widgets from the
same results).
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from mqlab.observe.events import (
    Acked,
    BrokerDown,
    BrokerUp,
    Committed,
    ConsumerCrashed,
    DeadLettered,
    Delivered,
    EventAppended,
    Expired,
    FaultHealed,
    FaultInjected,
    LeaderChanged,
    Nacked,
    Note,
    Observation,
    Processed,
    Produced,
    ProduceFailed,
    Rebalanced,
    RetryScheduled,
    SagaStep,
)
from mqlab.scenarios.runner import RunResult

LEDGER_ROWS = (
    ("produced", "produced (acknowledged by the broker)"),
    ("produce_failed", "produce failed"),
    ("processed_once", "processed exactly once"),
    ("duplicated", "processed more than once"),
    ("lost", "lost"),
    ("dead_lettered", "dead-lettered"),
    ("out_of_order", "out of order (per key)"),
    ("redelivered", "redeliveries"),
    ("rebalances", "rebalances"),
    ("broker_duplicates", "dropped by broker dedup"),
    ("skipped_duplicates", "skipped by idempotent consumer"),
)

_STYLES = {
    "produced": "green",
    "produce_failed": "bold red",
    "delivered": "cyan",
    "processed": "bold green",
    "acked": "green",
    "nacked": "yellow",
    "committed": "green",
    "dead_lettered": "magenta",
    "consumer_crashed": "bold red",
    "fault_injected": "bold red",
    "fault_healed": "bold green",
    "broker_down": "bold red",
    "broker_up": "bold green",
    "leader_changed": "yellow",
    "rebalanced": "yellow",
    "note": "italic",
}


def describe(observation: Observation) -> str:
    """One human line for an observation (without the timestamp)."""
    match observation:
        case Produced(duplicate=True):
            return f"produce {observation.message_id}: dropped by the broker as a duplicate"
        case Produced():
            where = _where(observation.partition, observation.position)
            key = f" key={observation.key}" if observation.key else ""
            return f"produced {observation.message_id}{key}{where}"
        case ProduceFailed():
            return f"produce {observation.message_id} FAILED: {observation.error}"
        case Delivered():
            again = f" (delivery {observation.delivery_count})" if observation.redelivered else ""
            where = _where(observation.partition, observation.position)
            return f"{observation.consumer} received {observation.message_id}{where}{again}"
        case Processed(skipped_duplicate=True):
            return f"{observation.consumer} skipped {observation.message_id} (already processed)"
        case Processed():
            return f"{observation.consumer} processed {observation.message_id}"
        case Acked():
            return f"{observation.consumer} acked {observation.message_id}"
        case Nacked():
            what = "requeued" if observation.requeue else "rejected"
            return f"{observation.consumer} {what} {observation.message_id}"
        case Committed():
            return (
                f"{observation.consumer or observation.group} committed "
                f"{observation.topic}:{observation.partition} @ {observation.offset}"
            )
        case DeadLettered():
            target, reason = observation.target, observation.reason
            return f"{observation.message_id} dead-lettered to {target}: {reason}"
        case Expired():
            return f"{observation.message_id} expired in {observation.destination}"
        case Rebalanced():
            members = "; ".join(f"{m}: {', '.join(p) or '-'}" for m, p in observation.assignment)
            generation = observation.generation
            return f"group {observation.group} rebalanced (generation {generation}): {members}"
        case ConsumerCrashed():
            return f"{observation.consumer} CRASHED ({observation.point})"
        case LeaderChanged():
            isr = ",".join(str(b) for b in observation.isr)
            return (
                f"{observation.topic}:{observation.partition} leader {observation.leader} "
                f"ISR [{isr}]"
            )
        case BrokerDown():
            return f"broker {observation.node} DOWN {observation.detail}".rstrip()
        case BrokerUp():
            return f"broker {observation.node} up {observation.detail}".rstrip()
        case FaultInjected():
            params = " ".join(f"{k}={v}" for k, v in observation.params)
            return f"fault: {observation.fault} {observation.target} {params}".rstrip()
        case FaultHealed():
            return f"healed: {observation.target}"
        case RetryScheduled():
            return (
                f"retry {observation.attempt} of {observation.message_id} in "
                f"{observation.delay:.2f}s ({observation.strategy})"
            )
        case SagaStep():
            kind = "compensation" if observation.compensation else "step"
            return f"saga {observation.saga_id} {kind} {observation.step}: {observation.state}"
        case EventAppended():
            return f"{observation.aggregate_id} v{observation.version}: {observation.event_type}"
        case Note():
            return observation.text
        case _:
            return observation.kind


def _where(partition: int | None, position: int | None) -> str:
    if partition is not None and position is not None:
        return f" @ p{partition}:{position}"
    if position is not None:
        return f" @ {position}"
    return ""


def timeline_line(observation: Observation, start: float) -> Text:
    """``  +1.234s  kafka  produced m00001 ...`` styled by kind."""
    text = Text(f"{observation.at - start:+9.3f}s  ", style="dim")
    text.append(f"{observation.broker:<13} ", style="dim")
    text.append(describe(observation), style=_STYLES.get(observation.kind, ""))
    return text


def ledger_table(result: RunResult) -> Table:
    """The ledger with each expectation next to its number."""
    expected = {e.name: e for e in result.expectations}
    table = Table(title=f"ledger: {result.scenario_id} on {result.broker}", show_edge=False)
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("expected", justify="right")
    for name, label in LEDGER_ROWS:
        value = result.summary.get(name, 0)
        expectation = expected.get(name)
        if value == 0 and expectation is None and name not in ("produced", "lost"):
            continue
        mark = ""
        if expectation is not None:
            mark = ("[green]✓ " if expectation.holds else "[bold red]✗ ") + expectation.expected
        table.add_row(label, str(value), mark)
    for expectation in result.expectations:
        if "." in expectation.name:
            mark = ("[green]✓ " if expectation.holds else "[bold red]✗ ") + expectation.expected
            table.add_row(expectation.name, str(expectation.actual), mark)
    return table


def checks_table(result: RunResult) -> Table | None:
    """Checks made on the broker's own state during and after the run."""
    rows = [(f"step {n}", c) for n, c in result.checks] + [("end", a) for a in result.agreement]
    if not rows:
        return None
    table = Table(title="the broker's own view", show_edge=False)
    table.add_column("when")
    table.add_column("check")
    table.add_column("observed")
    table.add_column("")
    for when, check in rows:
        table.add_row(
            when,
            check.description,
            check.observed,
            "[green]✓" if check.holds else "[bold red]✗",
        )
    return table


def verdict_text(result: RunResult) -> Text:
    """PASS / FAIL with the reason."""
    if result.error is not None:
        return Text(f"ERROR on {result.broker}: {result.error}", style="bold red")
    if result.passed:
        return Text(f"PASS on {result.broker}", style="bold green")
    failing = [e.name for e in result.expectations if not e.holds]
    failing += [c.description for _, c in result.checks if not c.holds]
    failing += [a.description for a in result.agreement if not a.holds]
    return Text(f"FAIL on {result.broker}: {'; '.join(failing)}", style="bold red")


def comparison_table(results: list[RunResult]) -> Table:
    """One column per broker: the same fault script, side by side."""
    title = f"{results[0].scenario_id}: side by side" if results else "comparison"
    table = Table(title=title, show_edge=False)
    table.add_column("")
    for result in results:
        table.add_column(result.broker, justify="right")
    for name, label in LEDGER_ROWS:
        values = [result.summary.get(name, 0) for result in results]
        if not any(values) and name not in ("produced", "lost", "duplicated"):
            continue
        table.add_row(label, *(str(v) for v in values))
    table.add_row(
        "verdict",
        *(
            "[green]PASS" if r.passed else ("[red]ERROR" if r.error else "[red]FAIL")
            for r in results
        ),
    )
    return table
