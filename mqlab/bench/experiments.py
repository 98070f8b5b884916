"""The runs that feed the comparison table: scenarios, the benchmark, the lab's processes.

Most cells already have a library scenario (``kafka-partition-ordering``, ``replay-new-group``,
``sqs-fifo-dedup`` ...). The cells without one get a small scenario built here from the
scenario model, in the same format a course author writes (``table-*`` ids), so they run
through the same session, ledger and cleanup as every other run. The SQS FIFO column runs
its scenarios on a FIFO channel (``channel.sqs.fifo``).

:func:`collect` runs what a table needs and returns the evidence; :mod:`mqlab.bench.table`
judges it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mqlab.bench.native import NativeResult
from mqlab.bench.table import EXPERIMENTS, Experiment, Footprint, RunOutcome, experiment_key
from mqlab.bench.workload import BenchResult, BenchTarget, target_system
from mqlab.course.scenario import Scenario
from mqlab.scenarios.verdict import RunResult

_BUILT: dict[str, dict[str, Any]] = {
    "table-one-queue-order": {
        "title": "One queue, one consumer: produce order",
        "summary": "Fifty messages through one queue to one consumer.",
        "brokers": ["rabbitmq", "sim"],
        "channel": {"name": "ledger"},
        "steps": [{"produce": {"count": 50}}, {"consume": {"name": "reader", "idle": 2}}],
        "expect": {"produced": 50, "processed_once": 50},
    },
    "table-standard-queue-order": {
        "title": "A standard queue's order",
        "summary": "Fifty messages through a standard queue (the simulator reorders some, as "
        "AWS may).",
        "brokers": ["sqs", "sim"],
        "channel": {"name": "ledger", "sqs": {"reorder_rate": 0.2}},
        "steps": [{"produce": {"count": 50}}, {"consume": {"name": "reader", "idle": 2}}],
        "expect": {"produced": 50, "processed_once": 50},
    },
    "table-stream-order": {
        "title": "One stream over five subjects: produce order",
        "summary": "Fifty messages on five subjects of one stream, read by one consumer.",
        "brokers": ["nats", "sim"],
        "channel": {"name": "ledger"},
        "steps": [
            {"produce": {"count": 50, "keys": 5}},
            {"consume": {"name": "reader", "idle": 2}},
        ],
        "expect": {"produced": 50, "processed_once": 50},
    },
    "table-replay-after-ack": {
        "title": "Read again after acknowledging",
        "summary": "A first reader acknowledges everything; a second asks from the beginning.",
        "brokers": ["kafka", "rabbitmq", "sqs", "nats", "sim"],
        "channel": {"name": "ledger", "sqs": {"visibility_timeout": 2}},
        "steps": [
            {"produce": {"count": 10}},
            {"consume": {"name": "first", "group": "first", "idle": 2}},
            {"consume": {"name": "second", "group": "second", "from_beginning": True, "idle": 2}},
        ],
        "expect": {"produced": 10},
    },
    "table-priority-range": {
        "title": "Priorities 0 to 255 on one queue",
        "summary": "Messages of priority 0, 128 and 255 wait in a queue of x-max-priority 255.",
        "brokers": ["rabbitmq", "sim"],
        "channel": {"name": "alerts", "rabbitmq": {"max_priority": 255, "prefetch": 1}},
        "steps": [
            {"produce": {"count": 12, "priorities": [0, 128, 255]}},
            {"consume": {"name": "oncall", "idle": 2}},
        ],
        "expect": {"produced": 12, "processed_once": 12},
    },
    "table-priority-ignored": {
        "title": "Priorities where there is no priority",
        "summary": "Messages marked with priorities 1, 5 and 9 on a system without priority.",
        "brokers": ["kafka", "sqs", "nats", "sim"],
        "channel": {"name": "alerts", "kafka": {"partitions": 1}},
        "steps": [
            {"produce": {"count": 12, "priorities": [1, 5, 9]}},
            {"consume": {"name": "oncall", "idle": 2}},
        ],
        "expect": {"produced": 12, "processed_once": 12},
    },
}
"""The scenarios the table needs that the library has no equivalent of (``table-*``)."""


class UnknownExperiment(ValueError):
    """A scenario id that is neither a library scenario nor one built here."""


def build_scenario(scenario_id: str, *, fifo: bool = False) -> Scenario:
    """The scenario of an experiment: the library's, or one of :data:`_BUILT`; on a FIFO
    channel when ``fifo``.

    Raises:
        UnknownExperiment, ContentError: no such scenario, or a library file that is broken.
    """
    if scenario_id in _BUILT:
        document = {
            "format_version": 1,
            "id": scenario_id,
            "topic": "comparison",
            **_BUILT[scenario_id],
        }
        scenario = Scenario.model_validate(document)
    else:
        from mqlab.scenarios.library import find

        scenario = find(scenario_id)
    if fifo:
        channel = scenario.channel
        sqs = channel.sqs.model_copy(update={"fifo": True})
        scenario = scenario.model_copy(update={"channel": channel.model_copy(update={"sqs": sqs})})
    return scenario


def outcome_of(result: RunResult, scenario: Scenario) -> RunOutcome:
    """What the judges read from a run: the ledger's numbers, the groups', derived facts."""
    from mqlab.observe.events import Processed, Produced

    numbers: dict[str, int] = dict(result.summary.as_dict())
    for group, summary in result.groups.items():
        for name, value in summary.as_dict().items():
            numbers[f"groups.{group}.{name}"] = int(value)
    numbers["second_reader_processed"] = sum(
        1
        for observation in result.observations
        if isinstance(observation, Processed) and observation.consumer == "second"
    )
    if result.broker in {"kafka", "sim:kafka"}:
        from mqlab.brokers.kafka.api import default_partition

        partitions = scenario.channel.kafka.partitions
        seen: dict[str, set[int]] = {}
        for observation in result.observations:
            if (
                isinstance(observation, Produced)
                and observation.key is not None
                and observation.partition is not None
                and not observation.destination.endswith("-dlq")
            ):
                seen.setdefault(observation.key, set()).add(observation.partition)
        numbers["keys"] = len(seen)
        numbers["keys_on_several_partitions"] = sum(1 for parts in seen.values() if len(parts) > 1)
        numbers["keys_off_murmur2"] = sum(
            1
            for key, parts in seen.items()
            if parts != {default_partition(key.encode(), partitions)}
        )
    return RunOutcome(
        scenario=result.scenario_id,
        broker=result.broker + (" (FIFO queue)" if scenario.channel.sqs.fifo else ""),
        numbers=numbers,
        passed=result.passed,
        failures=tuple(result.failures()),
        error=result.error,
    )


def run_experiment(experiment: Experiment, *, simulated: bool) -> RunOutcome:
    """Run one experiment's scenario on its column's broker (the lab's, or the simulator's)."""
    from mqlab.scenarios.session import RunSession

    scenario = build_scenario(experiment.scenario, fifo=experiment.fifo)
    system = target_system(experiment.target)
    result = RunSession(scenario, f"sim:{system}" if simulated else system).run_sync()
    return outcome_of(result, scenario)


def needed_runs(
    experiments: Sequence[Experiment] = EXPERIMENTS,
    targets: Sequence[BenchTarget] | None = None,
) -> list[Experiment]:
    """One experiment per (scenario, column): a run that feeds two cells runs once."""
    chosen: dict[tuple[str, BenchTarget], Experiment] = {}
    for experiment in experiments:
        if targets is not None and experiment.target not in targets:
            continue
        chosen.setdefault(experiment_key(experiment), experiment)
    return list(chosen.values())


def lab_footprints() -> dict[str, Footprint]:
    """What the lab runs for each system right now: its processes (from the supervisor's
    status), their resident memory (children included) and how long they take to start
    (the restart times the lab measured, kept in the systems table)."""
    import psutil

    from mqlab.brokers.registry import SYSTEMS
    from mqlab.lab.supervisor import Lab

    rows = Lab().status()
    footprints: dict[str, Footprint] = {}
    for name, system in SYSTEMS.items():
        mine = [row for row in rows if row.service == system.lab_service]
        rss = 0
        running: list[str] = []
        for row in mine:
            if row.pid is None or not row.running:
                continue
            running.append(row.process)
            try:
                process = psutil.Process(row.pid)
                rss += process.memory_info().rss
                rss += sum(child.memory_info().rss for child in process.children(recursive=True))
            except psutil.Error:
                continue
        footprints[name] = Footprint(
            system=name,
            processes=tuple(row.process for row in mine),
            rss_mib=rss / 2**20,
            start_seconds=round(sum(node.startup_seconds for node in system.nodes), 2),
            stand_in=name == "sqs",
            running=tuple(running),
        )
    return footprints


@dataclass
class Evidence:
    """Everything one table was judged on."""

    runs: dict[tuple[str, BenchTarget], RunOutcome] = field(default_factory=dict)
    bench: dict[BenchTarget, BenchResult] = field(default_factory=dict)
    native: dict[BenchTarget, NativeResult] = field(default_factory=dict)
    footprints: dict[str, Footprint] = field(default_factory=dict)


def collect(
    *,
    simulated: bool,
    targets: Sequence[BenchTarget],
    bench: Callable[[BenchTarget], BenchResult | None] | None = None,
    native: Callable[[BenchTarget], NativeResult | None] | None = None,
    on_run: Callable[[Experiment], None] | None = None,
) -> Evidence:
    """Run every experiment of ``targets`` and gather the other evidence.

    Args:
        bench, native: how to get a column's benchmark and native-tool numbers (None: not
            measured in this run).
        on_run: told before each scenario run (a progress display).
    """
    evidence = Evidence()
    for experiment in needed_runs(targets=targets):
        if on_run is not None:
            on_run(experiment)
        evidence.runs[experiment_key(experiment)] = run_experiment(experiment, simulated=simulated)
    for target in targets:
        if bench is not None and (measured := bench(target)) is not None:
            evidence.bench[target] = measured
        if native is not None and (tool := native(target)) is not None:
            evidence.native[target] = tool
    if not simulated:
        evidence.footprints = lab_footprints()
    return evidence
