"""Turning observations and run results into text: the live timeline, the ledger, the verdict.

Plain functions returning strings and rich renderables, shared by ``mqlab run``, ``mqlab
replay``, ``mqlab compare``, the walkthrough and the lesson player (the TUI draws its own
widgets from the same results and uses :func:`describe` for its timeline).

The ledger table shows every row of :data:`~mqlab.scenarios.ledger.LEDGER_ROWS` that has an
expectation or a non-zero count (and produced and lost always), then each per-group
expectation, so nothing a scenario expects can be judged off screen.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from mqlab.observe.events import (
    DEAD_LETTER_PRODUCER,
    Acked,
    AggregateLoaded,
    BrokerDown,
    BrokerUp,
    BusinessWriteCommitted,
    CheckEvaluated,
    Committed,
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ConsumerCrashed,
    ConsumerStarted,
    DeadLettered,
    DedupHit,
    DedupMiss,
    DedupRecorded,
    Delivered,
    EffectApplied,
    EventAppended,
    Expired,
    FaultHealed,
    FaultInjected,
    LeaderChanged,
    Nacked,
    Note,
    Observation,
    OffsetRestored,
    OffsetStored,
    OutboxRelayed,
    OutboxWritten,
    Processed,
    ProcessingFailed,
    Produced,
    ProduceFailed,
    ProduceRequested,
    ProjectionRebuilt,
    ProjectionUpdated,
    Rebalanced,
    RetryAttempted,
    RetryGaveUp,
    RetryScheduled,
    RunEnded,
    RunStarted,
    SagaEnded,
    SagaParked,
    SagaRecovered,
    SagaStarted,
    SagaStepFailed,
    SagaStepStarted,
    SagaStepSucceeded,
    SnapshotTaken,
    TransactionEnded,
    VersionConflict,
)
from mqlab.scenarios.ledger import LEDGER_ROWS
from mqlab.scenarios.verdict import ExpectationResult, RunResult

NATS_ADVISORY_PREFIX = "$JS.EVENT.ADVISORY."
"""Where JetStream reports a message that reached max_deliver (it has no dead-letter queue)."""

KIND_STYLES = {
    "produced": "green",
    "produce_failed": "bold red",
    "delivered": "cyan",
    "processed": "bold green",
    "acked": "green",
    "nacked": "yellow",
    "committed": "green",
    "dead_lettered": "magenta",
    "processing_failed": "bold yellow",
    "consumer_crashed": "bold red",
    "fault_injected": "bold red",
    "fault_healed": "bold green",
    "broker_down": "bold red",
    "broker_up": "bold green",
    "leader_changed": "yellow",
    "rebalanced": "yellow",
    "note": "italic",
}


def describe(observation: Observation) -> str | None:
    """One human line for an observation (without the timestamp), or None for bookkeeping
    a timeline does not show (a message handed to the producer without a priority)."""
    match observation:
        case ProduceRequested(priority=None):
            return None
        case ProduceRequested():
            return f"send {observation.message_id} with priority {observation.priority}"
        case RunStarted():
            where = "the simulator" if observation.simulated else "the lab"
            return f"run {observation.scenario_id} on {observation.system} ({where})"
        case RunEnded(error=""):
            return "run finished" + (
                f"; cleanup: {observation.restore_problem}" if observation.restore_problem else ""
            )
        case RunEnded():
            return f"run stopped: {observation.error}"
        case ConsumerStarted():
            return f"{observation.consumer} starts (group {observation.group})"
        case CheckEvaluated():
            mark = "holds" if observation.holds else "DOES NOT HOLD"
            return f"check: {observation.description}: {observation.observed} ({mark})"
        case TransactionEnded():
            who, count = observation.producer or "producer", len(observation.message_ids)
            return f"{who} {observation.outcome} a transaction of {count}"
        case Produced(producer=producer) if producer == DEAD_LETTER_PRODUCER:
            return (
                f"{observation.message_id} copied to the dead-letter topic "
                f"{observation.destination} by the consumer"
            )
        case ProcessingFailed():
            then = {
                "retry": "it will be delivered again",
                "dead_letter": "moved aside",
                "drop": "dropped",
                "ignore": "acknowledged anyway",
                "lost": "already acknowledged: lost",
            }.get(observation.then, observation.then)
            return (
                f"{observation.consumer} FAILED to process {observation.message_id} "
                f"(attempt {observation.attempt}, {observation.error}): {then}"
            )
        case DeadLettered(target=target) if target.startswith(NATS_ADVISORY_PREFIX):
            return (
                f"{observation.message_id}: NATS gave up redelivering it ({observation.reason}); "
                "it stays in the stream and an advisory was published (JetStream has no DLQ)"
            )
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
        case Rebalanced(assignment=()):
            return (
                f"group {observation.group}: no members left (generation {observation.generation})"
            )
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
        case Note():
            return observation.text
        case _:
            return _describe_pattern(observation)


def _describe_pattern(observation: Observation) -> str:
    """One line for an observation of :mod:`mqlab.patterns` (its kind when unknown)."""
    o = observation
    match o:
        case RetryAttempted(outcome="succeeded"):
            return f"{o.message_id}: call {o.call} succeeded"
        case RetryAttempted():
            kind = f" ({o.error_class})" if o.error_class else ""
            return f"{o.message_id}: call {o.call} failed{kind}: {o.error}"
        case RetryGaveUp():
            return f"{o.message_id}: gave up after {o.calls} call(s) ({o.reason})"
        case DedupMiss():
            late = " (its key had expired)" if o.expired else ""
            return f"{o.store}: {o.key} is new{late}"
        case DedupHit():
            why = "being processed elsewhere" if o.state == "processing" else "processed"
            return f"{o.store}: {o.key} already {why}: skipped"
        case DedupRecorded():
            ttl = f" for {o.ttl:g}s" if o.ttl is not None else ""
            return f"{o.store}: {o.key} recorded as {o.state}{ttl}"
        case EffectApplied():
            return f"{o.entity}: {o.operation} ({o.message_id}): {o.before} -> {o.after}"
        case SagaStarted():
            return f"saga {o.saga_id} ({o.saga}) started: {' -> '.join(o.steps)}"
        case SagaStepStarted():
            again = f" (attempt {o.attempt})" if o.attempt > 1 else ""
            return f"saga {o.saga_id} step {o.step} started{again}"
        case SagaStepSucceeded():
            return f"saga {o.saga_id} step {o.step} succeeded"
        case SagaStepFailed():
            why = "timed out" if o.timed_out else f"failed: {o.error}"
            return f"saga {o.saga_id} step {o.step} {why}"
        case CompensationStarted():
            again = f" (attempt {o.attempt})" if o.attempt > 1 else ""
            return f"saga {o.saga_id} compensating {o.step}{again}"
        case CompensationSucceeded():
            return f"saga {o.saga_id} compensated {o.step}"
        case CompensationFailed():
            then = f"retry in {o.retry_in:.2f}s" if o.retry_in is not None else "giving up"
            return (
                f"saga {o.saga_id} compensation of {o.step} FAILED (attempt {o.attempt}): "
                f"{o.error}; {then}"
            )
        case SagaParked():
            return f"saga {o.saga_id} PARKED at {o.step} for a human: {o.reason}"
        case SagaEnded(outcome="compensated"):
            return f"saga {o.saga_id} compensated (step {o.failed_step} failed)"
        case SagaEnded():
            return f"saga {o.saga_id} {o.outcome}"
        case SagaRecovered():
            doubt = f", {o.in_doubt} in doubt" if o.in_doubt else ""
            return f"saga {o.saga_id} recovered: {o.decision.replace('_', ' ')}{doubt}"
        case EventAppended():
            return f"{o.aggregate_id} v{o.version}: {o.event_type}"
        case VersionConflict(detected="replay"):
            return (
                f"{o.aggregate_id}: two events claim v{o.actual_version} "
                "(found on replay: the log accepted both)"
            )
        case VersionConflict():
            return (
                f"{o.aggregate_id}: VERSION CONFLICT, expected v{o.expected_version}, "
                f"the store has v{o.actual_version}"
            )
        case SnapshotTaken():
            return f"{o.aggregate_id}: snapshot at v{o.version}"
        case AggregateLoaded():
            base = f"snapshot v{o.snapshot_version} + " if o.snapshot_version is not None else ""
            return f"{o.aggregate_id} loaded: {base}{o.events_replayed} events -> v{o.version}"
        case ProjectionUpdated():
            return f"projection {o.projection}: {o.aggregate_id} v{o.version} {o.event_type}"
        case ProjectionRebuilt():
            return f"projection {o.projection} rebuilt from {o.events} events"
        case OffsetStored():
            return f"{o.group} stored {o.topic}:{o.partition} @ {o.offset} with the result"
        case OffsetRestored(offset=-1):
            return (
                f"{o.consumer or o.group}: no stored offset for {o.topic}:{o.partition} "
                "(the reset policy applies)"
            )
        case OffsetRestored():
            return f"{o.consumer or o.group} seeked {o.topic}:{o.partition} to stored {o.offset}"
        case BusinessWriteCommitted(outbox=True):
            return f"{o.entity} committed with its event {o.message_id} in the outbox"
        case BusinessWriteCommitted():
            return f"{o.entity} committed; event {o.message_id} not published yet"
        case OutboxWritten():
            return f"outbox row {o.outbox_id}: {o.message_id} for {o.destination}"
        case OutboxRelayed():
            return f"outbox row {o.outbox_id} relayed to {o.destination} ({o.message_id})"
        case _:
            return o.kind


def _where(partition: int | None, position: int | None) -> str:
    if partition is not None and position is not None:
        return f" @ p{partition}:{position}"
    if position is not None:
        return f" @ {position}"
    return ""


def timeline_line(observation: Observation, start: float) -> Text | None:
    """``  +1.234s  kafka  produced m00001 ...`` styled by kind (None: not shown)."""
    line = describe(observation)
    if line is None:
        return None
    text = Text(f"{observation.at - start:+9.3f}s  ", style="dim")
    text.append(f"{observation.broker:<13} ", style="dim")
    text.append(line, style=KIND_STYLES.get(observation.kind, ""))
    return text


def _mark(expectation: ExpectationResult, *, judged: bool = True) -> str:
    if not judged:
        return f"[dim]{expectation.expected}"
    return ("[green]✓ " if expectation.holds else "[bold red]✗ ") + expectation.expected


def ledger_table(result: RunResult) -> Table:
    """The ledger with each expectation next to its number, then the per-group expectations.

    A run that stopped on an error is not judged: its numbers are what happened before it
    stopped, so the expectations are shown without a mark (a ✗ would blame the scenario for
    the broker's failure)."""
    judged = result.error is None
    expected = {e.name: e for e in result.expectations if e.group is None}
    title = f"ledger: {result.scenario_id} on {result.broker}"
    if not judged:
        title += " (until the run stopped)"
    table = Table(title=title, show_edge=False)
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("expected" if judged else "expected (not judged)", justify="right")
    for row in LEDGER_ROWS:
        value = result.summary[row.name]
        expectation = expected.get(row.name)
        shown = row.always_shown and result.has_broker
        if value == 0 and expectation is None and not shown:
            continue
        mark = _mark(expectation, judged=judged) if expectation else ""
        table.add_row(row.label, str(value), mark)
    for expectation in result.expectations:
        if expectation.group is not None:
            label = f"group {expectation.group}: {expectation.name.replace('_', ' ')}"
            table.add_row(label, str(expectation.actual), _mark(expectation, judged=judged))
    return table


def checks_table(result: RunResult) -> Table | None:
    """Checks made on the broker's own state during and after the run."""
    rows = [(f"step {c.step}", c) for c in result.checks] + [("end", a) for a in result.agreement]
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
    return Text(f"FAIL on {result.broker}: {'; '.join(result.failures())}", style="bold red")


def comparison_table(results: list[RunResult]) -> Table:
    """One column per broker: the same fault script, side by side."""
    title = f"{results[0].scenario_id}: side by side" if results else "comparison"
    table = Table(title=title, show_edge=False)
    table.add_column("")
    for result in results:
        table.add_column(result.broker, justify="right")
    for row in LEDGER_ROWS:
        values = [result.summary[row.name] for result in results]
        if not any(values) and not row.always_shown and row.name != "duplicated":
            continue
        table.add_row(row.label, *(str(v) for v in values))
    table.add_row(
        "verdict",
        *(
            "[green]PASS" if r.passed else ("[red]ERROR" if r.error else "[red]FAIL")
            for r in results
        ),
    )
    return table
