"""The cheat sheet's broker comparison table, each cell held against what ran here.

The course's cheat sheet has a table of claims (Kafka: millions/sec, per-partition order,
replay; RabbitMQ: ~50K/sec, priority 0-255, exchanges; SQS FIFO: exactly-once within 5
minutes ...). Every testable cell has an :class:`Experiment`: a scenario run (from the
library, or built in code by :mod:`mqlab.bench.experiments`) and a judge that reads the run's
numbers. Throughput cells are judged on ``mqlab bench`` (the harness and the broker's own
tool); "ops burden" on what the lab had to run for each system (processes, memory, start).

Each cell ends as one of three verdicts, always with the evidence and the reason:

- ``verified``: the run shows what the claim says;
- ``contradicted``: the run shows otherwise (throughput: "contradicted here", with why: one
  2-core machine, loopback, a Python client; not a statement about the broker elsewhere);
- ``not testable here``: nothing that can run on this machine can show it (SQS standard's
  "~unlimited", a managed service's zero ops) or the run could not complete.

This module is pure: it computes nothing but verdicts from the data it is given, so the
tests feed it wrong results and watch cells turn contradicted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mqlab.bench.native import NativeResult
from mqlab.bench.workload import TARGET_TITLES, TARGETS, BenchResult, BenchTarget

Verdict = Literal["verified", "contradicted", "not testable here"]
Row = Literal["throughput", "ordering", "delivery", "replay", "priority", "routing", "ops burden"]
ROWS: tuple[Row, ...] = get_args(Row)

ROW_TITLES: dict[Row, str] = {
    "throughput": "Throughput",
    "ordering": "Ordering",
    "delivery": "Delivery",
    "replay": "Replay",
    "priority": "Priority",
    "routing": "Routing",
    "ops burden": "Ops burden",
}

CLAIMS: dict[Row, dict[BenchTarget, str]] = {
    "throughput": {
        "kafka": "Millions/sec",
        "rabbitmq": "~50K/sec",
        "sqs": "~unlimited*",
        "sqs-fifo": "~3K/sec",
        "nats": "~300K/sec",
    },
    "ordering": {
        "kafka": "Per partition",
        "rabbitmq": "Per queue",
        "sqs": "Best-effort",
        "sqs-fifo": "Per message group",
        "nats": "Per stream",
    },
    "delivery": {
        "kafka": "At-least-once",
        "rabbitmq": "At-least-once",
        "sqs": "At-least-once",
        "sqs-fifo": "Exactly-once (5min)",
        "nats": "At-least-once",
    },
    "replay": {"kafka": "Yes", "rabbitmq": "No", "sqs": "No", "sqs-fifo": "No", "nats": "Yes"},
    "priority": {
        "kafka": "No",
        "rabbitmq": "Yes (0-255)",
        "sqs": "No",
        "sqs-fifo": "No",
        "nats": "No",
    },
    "routing": {
        "kafka": "Partition key",
        "rabbitmq": "Exchanges",
        "sqs": "None",
        "sqs-fifo": "Message group",
        "nats": "Subject wildcards",
    },
    "ops burden": {
        "kafka": "High",
        "rabbitmq": "Medium",
        "sqs": "Zero",
        "sqs-fifo": "Zero",
        "nats": "Low",
    },
}
"""The cheat sheet's table (``shared/docs/cheat-sheet.md``), word for word."""

WHY_THROUGHPUT_HERE = (
    "one 2-core machine shared by every broker and client, loopback through Toxiproxy, "
    "a single producer; the claim is for tuned clusters of many machines"
)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one scenario run showed, as the judges read it.

    Attributes:
        scenario: the scenario's id.
        broker: ``kafka`` or ``sim:kafka`` (SQS FIFO runs are ``sqs`` on a FIFO channel).
        numbers: the ledger's numbers by their ``expect`` names, each group's as
            ``groups.<name>.<field>``, and facts the experiment derived from the run's
            observations (``keys_on_several_partitions`` ...).
        passed: every expectation of the scenario held.
        failures: what did not hold (one line each).
        error: why the run could not complete, or None.
    """

    scenario: str
    broker: str
    numbers: Mapping[str, int]
    passed: bool = True
    failures: tuple[str, ...] = ()
    error: str | None = None

    def number(self, name: str) -> int:
        """A number of the run (0 when the run has none of that name)."""
        return int(self.numbers.get(name, 0))

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "broker": self.broker,
            "numbers": dict(sorted(self.numbers.items())),
            "passed": self.passed,
            "failures": list(self.failures),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Footprint:
    """What the lab runs for one system, read from its supervisor and the processes.

    Attributes:
        processes: the lab processes the system needs (Kafka: a controller and three brokers).
        rss_mib: their resident memory, children included.
        start_seconds: how long they take to be up again after a restart (the lab's numbers).
        stand_in: the lab runs a stand-in for a managed service (moto for SQS), so its
            footprint says nothing about the real one's operations.
    """

    system: str
    processes: tuple[str, ...]
    rss_mib: float
    start_seconds: float
    stand_in: bool = False
    running: tuple[str, ...] | None = None
    """The processes that were up when it was read (None: all of them)."""

    @property
    def complete(self) -> bool:
        """Every process was running, so the memory is the whole system's."""
        return self.running is None or set(self.processes) <= set(self.running)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "processes": list(self.processes),
            "running": list(self.processes if self.running is None else self.running),
            "rss_mib": round(self.rss_mib, 1),
            "start_seconds": self.start_seconds,
            "stand_in": self.stand_in,
        }


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    why: str


Judge = Callable[[RunOutcome], Judgement]


@dataclass(frozen=True, slots=True)
class Experiment:
    """The scenario run that tests one cell, and how its numbers are read."""

    row: Row
    target: BenchTarget
    scenario: str
    """A library scenario's id, or one :mod:`mqlab.bench.experiments` builds in code."""
    judge: Judge
    fifo: bool = False
    """Run the scenario on a FIFO queue (the SQS FIFO column)."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell of the table: the claim, its verdict, why, and the evidence."""

    row: Row
    target: BenchTarget
    claim: str
    verdict: Verdict
    why: str
    evidence: tuple[dict[str, Any], ...] = field(default=())

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "system": self.target,
            "claim": self.claim,
            "verdict": self.verdict,
            "why": self.why,
            "evidence": list(self.evidence),
        }


# --- judges -------------------------------------------------------------------------------


def _verified(why: str) -> Judgement:
    return Judgement("verified", why)


def _contradicted(why: str) -> Judgement:
    return Judgement("contradicted", why)


def order_per_key(what: str) -> Judge:
    """Order holds per key (partition, message group): nothing out of order per key."""

    def judge(run: RunOutcome) -> Judgement:
        per_key, overall = run.number("out_of_order"), run.number("out_of_order_overall")
        if per_key:
            return _contradicted(f"{per_key} messages arrived after a later one of their {what}")
        across = f"; across {what}s {overall} were out of produce order" if overall else ""
        return _verified(f"no message arrived after a later one of its {what}{across}")

    return judge


def order_overall(what: str) -> Judge:
    """Total order on the channel: nothing out of produce order at all."""

    def judge(run: RunOutcome) -> Judgement:
        overall = run.number("out_of_order_overall")
        if overall:
            return _contradicted(f"{overall} messages arrived out of produce order in one {what}")
        received = run.number("processed_once") + run.number("duplicated")
        return _verified(f"all {received} messages arrived in produce order from one {what}")

    return judge


def order_best_effort(run: RunOutcome) -> Judgement:
    """Best-effort order: shown only by a run that reorders; an ordered run shows nothing."""
    overall = run.number("out_of_order_overall")
    if overall:
        return _verified(f"{overall} messages arrived out of produce order: no order promised")
    return Judgement(
        "not testable here",
        "every message arrived in order: best-effort promises nothing, so an ordered run "
        "cannot show it (one moto process has no reason to reorder; AWS's distributed "
        "queues do, and the simulator's reorder_rate shows it)",
    )


def at_least_once(run: RunOutcome) -> Judgement:
    """A crash before the ack loses nothing and redelivers (a duplicate)."""
    lost, duplicated = run.number("lost"), run.number("duplicated")
    if lost:
        return _contradicted(f"{lost} acknowledged messages were lost after a consumer crash")
    if not duplicated and not run.number("redelivered"):
        return _contradicted(
            "a consumer crashed before acknowledging, and nothing was delivered again"
        )
    return _verified(
        f"a consumer crashed before acknowledging: 0 lost, {duplicated} processed twice"
    )


def fifo_dedup(run: RunOutcome) -> Judgement:
    """A retried send within the 5-minute window is dropped by the queue."""
    dropped, duplicated = run.number("broker_duplicates"), run.number("duplicated")
    if not dropped or duplicated:
        return _contradicted(
            f"sends repeated within 5 minutes: {dropped} dropped by the queue, "
            f"{duplicated} processed twice"
        )
    return _verified(f"sends repeated within 5 minutes: {dropped} dropped, none processed twice")


def exactly_once_processing(run: RunOutcome) -> Judgement:
    """End to end exactly-once: a consumer crash must not make a message processed twice."""
    duplicated = run.number("duplicated")
    if duplicated:
        return _contradicted(
            f"a consumer that died before DeleteMessage: {duplicated} message processed twice "
            "(exactly-once is the sends' dedup window, processing stays at-least-once)"
        )
    return _verified("a consumer crashed before DeleteMessage and nothing was processed twice")


def replay_yes(group: str, produced_name: str = "produced") -> Judge:
    """A new group reads acknowledged messages again from the start."""

    def judge(run: RunOutcome) -> Judgement:
        produced = run.number(produced_name)
        again = run.number(f"groups.{group}.processed")
        if produced and again >= produced:
            return _verified(
                f"after the first group acknowledged all {produced}, group {group!r} "
                f"read all {again} again"
            )
        return _contradicted(f"a new group {group!r} read {again} of {produced} again")

    return judge


def replay_no(run: RunOutcome) -> Judgement:
    """An acknowledged message is gone: a second reader gets nothing again."""
    produced, runs = run.number("produced"), run.number("duplicated")
    second = run.number("second_reader_processed")
    if runs or second:
        return _contradicted(
            f"a second reader started from the beginning got {second or runs} of {produced} again"
        )
    return _verified(
        f"all {produced} acknowledged, then a second reader asked from the beginning: it got 0"
    )


def priority_yes(run: RunOutcome) -> Judgement:
    """Higher priorities overtake lower ones (over the whole 0-255 range)."""
    inversions, overtaken = run.number("priority_inversions"), run.number("out_of_order_overall")
    if inversions:
        return _contradicted(f"{inversions} messages were served after a lower priority")
    return _verified(
        f"priorities 0 to 255 on one queue: 0 served after a lower priority, {overtaken} "
        "overtook earlier messages"
    )


def priority_no(run: RunOutcome) -> Judgement:
    """Without priority, messages come in produce order whatever priority they carry."""
    inversions = run.number("priority_inversions")
    if not inversions:
        return _contradicted("messages marked urgent were served first: priority was honoured")
    return _verified(
        f"messages carried priorities: {inversions} were served after a lower priority "
        "(produce order, priorities ignored)"
    )


def key_routing(run: RunOutcome) -> Judgement:
    """The key picks the partition: murmur2(key) and the sign bit masked, modulo partitions."""
    spread = run.number("keys_on_several_partitions")
    off = run.number("keys_off_murmur2")
    keys = run.number("keys")
    if spread or off or not keys:
        return _contradicted(
            f"of {keys} keys, {spread} landed on several partitions and {off} not on "
            "murmur2's partition"
        )
    return _verified(f"each of {keys} keys landed on one partition, the one murmur2 picks")


def scenario_holds(what: str) -> Judge:
    """The scenario's own expectations encode the claim (``what`` says what they check)."""

    def judge(run: RunOutcome) -> Judgement:
        if run.passed:
            return _verified(what)
        return _contradicted("; ".join(run.failures) or "the scenario's expectations failed")

    return judge


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("ordering", "kafka", "kafka-partition-ordering", order_per_key("key")),
    Experiment("ordering", "rabbitmq", "table-one-queue-order", order_overall("queue")),
    Experiment("ordering", "sqs", "table-standard-queue-order", order_best_effort),
    Experiment(
        "ordering", "sqs-fifo", "sqs-fifo-group-order", order_per_key("message group"), True
    ),
    Experiment("ordering", "nats", "table-stream-order", order_overall("stream")),
    Experiment("delivery", "kafka", "at-least-once-crash", at_least_once),
    Experiment("delivery", "rabbitmq", "at-least-once-crash", at_least_once),
    Experiment("delivery", "sqs", "at-least-once-crash", at_least_once),
    Experiment("delivery", "sqs-fifo", "sqs-fifo-dedup", fifo_dedup, True),
    Experiment("delivery", "sqs-fifo", "at-least-once-crash", exactly_once_processing, True),
    Experiment("delivery", "nats", "at-least-once-crash", at_least_once),
    Experiment("replay", "kafka", "replay-new-group", replay_yes("analytics")),
    Experiment("replay", "rabbitmq", "table-replay-after-ack", replay_no),
    Experiment("replay", "sqs", "table-replay-after-ack", replay_no),
    Experiment("replay", "sqs-fifo", "table-replay-after-ack", replay_no, True),
    Experiment("replay", "nats", "replay-new-group", replay_yes("analytics")),
    Experiment("priority", "kafka", "table-priority-ignored", priority_no),
    Experiment("priority", "rabbitmq", "table-priority-range", priority_yes),
    Experiment("priority", "sqs", "table-priority-ignored", priority_no),
    Experiment("priority", "sqs-fifo", "table-priority-ignored", priority_no, True),
    Experiment("priority", "nats", "table-priority-ignored", priority_no),
    Experiment("routing", "kafka", "kafka-partition-ordering", key_routing),
    Experiment(
        "routing",
        "rabbitmq",
        "rabbitmq-topic-routing",
        scenario_holds("a topic exchange delivered each key to the queues whose patterns match"),
    ),
    Experiment(
        "routing",
        "sqs-fifo",
        "sqs-fifo-group-order",
        scenario_holds("messages of one group came in order, one group at a time per consumer"),
        True,
    ),
    Experiment(
        "routing",
        "nats",
        "nats-subject-wildcards",
        scenario_holds("consumers with * and > filters read exactly the subjects they match"),
    ),
)
"""Every scenario-tested cell (throughput and ops burden are judged on other evidence)."""

UNTESTABLE: dict[tuple[Row, BenchTarget], str] = {
    ("routing", "sqs"): (
        "an absence: a standard queue delivers to whoever receives, there is no routing "
        "key to test (SNS in front routes: the sns-sqs-fanout scenario)"
    ),
}


# --- throughput and ops burden ------------------------------------------------------------

_MAGNITUDE = re.compile(r"(?P<number>[\d.]+)\s*(?P<unit>K|M)?", re.IGNORECASE)


def claimed_rate(claim: str) -> float | None:
    """The messages per second a throughput claim names (None for "unlimited").

    ``Millions/sec`` -> 1,000,000; ``~50K/sec`` -> 50,000; ``~3K/sec`` -> 3,000.
    """
    text = claim.strip().lower()
    if "unlimited" in text:
        return None
    if text.startswith("million"):
        return 1_000_000.0
    match = _MAGNITUDE.search(text)
    if match is None:
        raise ValueError(f"not a throughput claim: {claim!r}")
    scale = {"k": 1_000.0, "m": 1_000_000.0}.get((match["unit"] or "").lower(), 1.0)
    return float(match["number"]) * scale


def judge_throughput(
    target: BenchTarget,
    claim: str,
    bench: BenchResult | None,
    native: NativeResult | None,
) -> Judgement:
    """The claim against the best rate measured on this machine (harness or native tool).

    Within half of the claim counts as verified: the claims are orders of magnitude.
    """
    if bench is None:
        return Judgement("not testable here", "not measured in this run (mqlab bench)")
    if bench.simulated:
        return Judgement(
            "not testable here",
            "the simulator models no CPU or network cost: its rates are not a broker's",
        )
    rates = [("mqlab's harness", bench.produce_rate or 0.0)]
    if native is not None:
        rates.append((native.tool, native.produce_rate))
    who, best = max(rates, key=lambda pair: pair[1])
    measured = ", ".join(f"{name} {rate:,.0f} msg/s" for name, rate in rates)
    wanted = claimed_rate(claim)
    if wanted is None:
        return Judgement(
            "not testable here",
            f"{measured} on the lab's moto server, one Python process; no single machine "
            "can show AWS spreading a queue over its fleet",
        )
    if best >= wanted / 2:
        return _verified(f"{measured}: {who} reached the claimed {wanted:,.0f}/sec")
    stand_in = " (moto, one Python process, stands in for AWS)" if target.startswith("sqs") else ""
    return _contradicted(
        f"contradicted here: {measured}{stand_in}, {best / wanted:.1%} of the claimed "
        f"{wanted:,.0f}/sec: {WHY_THROUGHPUT_HERE}"
    )


BURDEN_LEVELS = {"zero": 0, "low": 1, "medium": 2, "high": 3}


def judge_ops_burden(
    target: BenchTarget, claim: str, footprints: Mapping[str, Footprint]
) -> Judgement:
    """The claimed burden against what the lab runs, relative to the other systems.

    A system claimed heavier than another must run more (memory, processes) than it; one
    claimed lighter, less. SQS is a managed service: the lab's moto is a stand-in, so there
    is nothing of AWS's operations to measure here.
    """
    system = "sqs" if target == "sqs-fifo" else target
    mine = footprints.get(system)
    if mine is None:
        return Judgement(
            "not testable here",
            "the lab's processes were not read in this run (on the simulator none run)",
        )
    described = _footprint_text(mine)
    if mine.stand_in:
        return Judgement(
            "not testable here",
            f"a managed service: the lab runs a stand-in ({described}); on AWS there is "
            "nothing to run",
        )
    if not mine.complete:
        down = sorted(set(mine.processes) - set(mine.running or ()))
        return Judgement(
            "not testable here",
            f"not every process was up when the lab was read ({', '.join(down)} down)",
        )
    level = BURDEN_LEVELS[claim.strip().lower()]
    problems: list[str] = []
    for other_target, other_claim in CLAIMS["ops burden"].items():
        other = footprints.get("sqs" if other_target == "sqs-fifo" else other_target)
        if other is None or other.stand_in or not other.complete or other.system == system:
            continue
        other_level = BURDEN_LEVELS[other_claim.strip().lower()]
        heavier = (mine.rss_mib, len(mine.processes)) > (other.rss_mib, len(other.processes))
        if other_level < level and not heavier:
            problems.append(
                f"claimed heavier than {other.system}, which runs {_footprint_text(other)}"
            )
        if other_level > level and heavier:
            problems.append(
                f"claimed lighter than {other.system}, which runs {_footprint_text(other)}"
            )
    if problems:
        return _contradicted(f"the lab runs {described}; " + "; ".join(problems))
    return _verified(f"the lab runs {described}")


def _footprint_text(footprint: Footprint) -> str:
    count = len(footprint.processes)
    return (
        f"{count} process{'es' if count != 1 else ''} ({', '.join(footprint.processes)}), "
        f"{footprint.rss_mib:,.0f} MiB, ~{footprint.start_seconds:g} s to start"
    )


# --- the table ----------------------------------------------------------------------------


def combine(judgements: Sequence[Judgement]) -> Judgement:
    """Several experiments of one cell: contradicted if any contradicts, verified if all
    verify, otherwise not testable; the reasons joined."""
    if not judgements:
        return Judgement("not testable here", "no experiment ran")
    verdicts = {judgement.verdict for judgement in judgements}
    why = "; ".join(judgement.why for judgement in judgements)
    if "contradicted" in verdicts:
        return Judgement("contradicted", why)
    if verdicts == {"verified"}:
        return Judgement("verified", why)
    return Judgement("not testable here", why)


def judge_run(experiment: Experiment, run: RunOutcome | None) -> Judgement:
    """One experiment's verdict (a run that failed to complete proves nothing)."""
    if run is None:
        return Judgement("not testable here", f"{experiment.scenario} did not run")
    if run.error is not None:
        return Judgement("not testable here", f"{run.scenario} could not complete: {run.error}")
    return experiment.judge(run)


def experiment_key(experiment: Experiment) -> tuple[str, BenchTarget]:
    """How runs are looked up: the scenario and the column it ran for."""
    return (experiment.scenario, experiment.target)


def build_table(
    runs: Mapping[tuple[str, BenchTarget], RunOutcome],
    *,
    bench: Mapping[BenchTarget, BenchResult] | None = None,
    native: Mapping[BenchTarget, NativeResult] | None = None,
    footprints: Mapping[str, Footprint] | None = None,
    experiments: Sequence[Experiment] = EXPERIMENTS,
) -> list[Cell]:
    """Every cell of the table, row by row, judged on the evidence given.

    Args:
        runs: scenario outcomes by (scenario id, column), as :func:`experiment_key` names them.
        bench: ``mqlab bench`` results per column (throughput).
        native: the native tools' results per column (throughput).
        footprints: what the lab runs per system (ops burden).
    """
    bench = bench or {}
    native = native or {}
    footprints = footprints or {}
    cells: list[Cell] = []
    for row in ROWS:
        for target in TARGETS:
            claim = CLAIMS[row][target]
            evidence: list[dict[str, Any]] = []
            if row == "throughput":
                measured = bench.get(target)
                tool = native.get(target)
                judgement = judge_throughput(target, claim, measured, tool)
                if measured is not None:
                    evidence.append({"bench": measured.to_json_dict()})
                if tool is not None:
                    evidence.append({"native": tool.to_json_dict()})
            elif row == "ops burden":
                judgement = judge_ops_burden(target, claim, footprints)
                system = "sqs" if target == "sqs-fifo" else target
                if system in footprints:
                    evidence.append({"lab": footprints[system].to_json_dict()})
            elif (row, target) in UNTESTABLE:
                judgement = Judgement("not testable here", UNTESTABLE[(row, target)])
            else:
                mine = [e for e in experiments if e.row == row and e.target == target]
                judgements = []
                for experiment in mine:
                    run = runs.get(experiment_key(experiment))
                    judgements.append(judge_run(experiment, run))
                    if run is not None:
                        evidence.append({"run": run.to_json_dict()})
                judgement = combine(judgements)
            cells.append(
                Cell(row, target, claim, judgement.verdict, judgement.why, tuple(evidence))
            )
    return cells


def table_json(cells: Sequence[Cell]) -> dict[str, Any]:
    """The table as JSON data: the columns, and every cell with its evidence."""
    return {
        "columns": [{"system": t, "title": TARGET_TITLES[t]} for t in TARGETS],
        "rows": [{"row": r, "title": ROW_TITLES[r]} for r in ROWS],
        "cells": [cell.to_json_dict() for cell in cells],
    }
