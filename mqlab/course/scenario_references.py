"""The scenario format's cross-references: names and targets that must exist.

The field models of :mod:`mqlab.course.scenario` check each value alone; what needs the whole
script is checked here, on load, so a scenario that would fail half-way (a fault on a node the
system does not have, a ``join`` of a consumer that never started, a ``repeat`` of a label no
earlier step produced) is refused before anything runs, with the step's ``path:line``. Kept
apart from the models so that the format's reference reads as fields and their docs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mqlab.brokers.registry import SYSTEM_NAMES, SystemName
from mqlab.brokers.registry import SYSTEMS as SYSTEM_TABLE
from mqlab.course.loader import Location

if TYPE_CHECKING:
    from mqlab.course.scenario import Scenario, Step

PROCESS_TARGETS: dict[SystemName, tuple[str, ...]] = {
    name: SYSTEM_TABLE[name].node_names for name in SYSTEM_NAMES
}
"""The lab's processes (and the simulator's nodes) that ``fault`` may target, per system."""

PROXY_TARGETS: dict[SystemName, tuple[str, ...]] = {
    name: SYSTEM_TABLE[name].proxy_names for name in SYSTEM_NAMES
}
"""The Toxiproxy proxies ``toxic`` and ``heal`` may target (the Kafka controller has none:
clients never talk to it)."""


def _roles(scenario: Scenario, system: SystemName) -> tuple[str, ...]:
    if system != "kafka":
        return ("broker",)
    followers = scenario.channel.kafka.replication_factor - 1
    return ("broker", "leader", *(f"follower-{n}" for n in range(1, followers + 1)))


def _run_name(system: str, sim: bool) -> str:
    return f"sim:{system}" if sim else system


def _target_problem(
    scenario: Scenario,
    target: str,
    systems: list[SystemName],
    names: dict[SystemName, tuple[str, ...]],
) -> str | None:
    """Why ``target`` does not exist on one of ``systems``, or None when it exists on all."""
    for system in systems:
        valid = (*_roles(scenario, system), *names[system])
        if target in valid:
            continue
        if target.startswith("follower-") and system == "kafka":
            replicas = scenario.channel.kafka.replication_factor
            return (
                f"{target!r}: with replication_factor {replicas} partition 0 has "
                f"{replicas - 1} follower{'' if replicas == 2 else 's'}"
            )
        if target in PROCESS_TARGETS[system]:
            return (
                f"{target!r} has no proxy: clients never talk to it, so there is no network "
                f"to break (proxies: {', '.join(names[system])})"
            )
        if system != "kafka" and (target == "leader" or target.startswith("follower-")):
            return (
                f"{target!r} is a Kafka role, but this step also runs on {system} (target "
                f"'broker', or add only: [kafka] to the step)"
            )
        elsewhere = [other for other in SYSTEM_NAMES if other != system and target in names[other]]
        if elsewhere:
            return (
                f"{target!r} is a {elsewhere[0]} target, but this step also runs on {system} "
                f"(add only: [{elsewhere[0]}] to the step, or target 'broker')"
            )
        close = difflib.get_close_matches(target, valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown target {target!r} on {system} ({hint}targets: {', '.join(valid)})"
    return None


def _subject_within(subject: str, pattern: str) -> bool:
    """Whether every subject matching ``subject`` (itself possibly a wildcard filter) also
    matches the stream subject ``pattern`` (NATS: ``*`` one token, ``>`` the rest)."""
    tokens, wanted = subject.split("."), pattern.split(".")
    if "" in tokens:
        return False
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or tokens[index] == ">":
            return False
        if token != "*" and (tokens[index] == "*" or tokens[index] != token):
            return False
    return len(tokens) == len(wanted)


def _source_problem(scenario: Scenario, source: str, system: SystemName) -> str | None:
    channel = scenario.channel
    dead_letter_queue = f"{channel.name}-dlq"
    if system == "nats":
        subjects = channel.nats.subjects or [f"{channel.name}.>"]
        if any(_subject_within(source, pattern) for pattern in subjects):
            return None
        return (
            f"{source!r} is not inside the stream's subjects ({', '.join(subjects)}): on NATS "
            "a source is a filter subject"
        )
    queues = [channel.name]
    if channel.dead_letter is not None:
        queues.append(dead_letter_queue)
    if system == "rabbitmq":
        queues += list(channel.rabbitmq.queues)
    if source in queues:
        return None
    if system == "sqs":
        if any(step.produce is not None and step.produce.to for step in scenario.steps):
            return None  # a queue SNS fans out to: the run creates and subscribes it
        return (
            f"{source!r} is no queue of this scenario on sqs: only an SNS fan-out "
            f"(a produce step with to: <topic>) creates more queues (queues: {', '.join(queues)})"
        )
    if source == dead_letter_queue:
        return f"{source!r} exists only with channel.dead_letter"
    what = "topic" if system == "kafka" else "queue"
    where = " (more queues go under channel.rabbitmq.queues)" if system == "rabbitmq" else ""
    return f"{source!r} is no {what} of this scenario on {system}{where}: {', '.join(queues)}"


@dataclass
class _RunState:
    """What one run has started so far while its steps are walked in order."""

    labels: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    """Background consumers still running -> the index of the step that started them."""
    producers: dict[str, int] = field(default_factory=dict)
    """Background producers not joined yet -> the index of their step."""


def reference_problems(scenario: Scenario) -> Iterator[tuple[Location, str]]:
    steps = scenario.steps
    found: dict[Location, str] = {}

    def report(location: Location, message: str) -> None:
        found.setdefault(location, message)

    labels: dict[str, int] = {}
    for index, step in enumerate(steps):
        for position, broker in enumerate(step.only):
            if broker not in scenario.brokers:
                report(
                    ("steps", index, "only", position),
                    f"{broker!r} is not one of this scenario's brokers "
                    f"({', '.join(scenario.brokers)})",
                )
        label = step.produce.label if step.produce is not None else None
        if label is not None:
            if label in labels:
                report(
                    ("steps", index, "produce", "label"),
                    f"label {label!r} is already used by steps[{labels[label]}]",
                )
            labels.setdefault(label, index)
        systems = [
            system
            for system in scenario.systems
            if any(step.runs_on(run, sim=sim) for run, sim in scenario.runs() if run == system)
        ]
        problem: str | None = None
        if step.fault is not None:
            problem = _target_problem(scenario, step.fault.target, systems, PROCESS_TARGETS)
            if problem:
                report(("steps", index, "fault", "target"), problem)
        for action in ("toxic", "heal"):
            network = getattr(step, action)
            if network is not None:
                problem = _target_problem(scenario, network.target, systems, PROXY_TARGETS)
                if problem:
                    report(("steps", index, action, "target"), problem)
        if step.consume is not None and step.consume.source is not None:
            for system in systems:
                problem = _source_problem(scenario, step.consume.source, system)
                if problem:
                    report(("steps", index, "consume", "source"), problem)
                    break
    # Name the run only when runs differ (some step has ``only``): then it says where.
    step_lists = {
        tuple(s.runs_on(system, sim=sim) for s in steps) for system, sim in scenario.runs()
    }
    several_runs = len(step_lists) > 1
    for system, sim in scenario.runs():
        suffix = f" on {_run_name(system, sim)}" if several_runs else ""
        state = _RunState()
        for index, step in enumerate(steps):
            if step.runs_on(system, sim=sim):
                for location, message in _step_references(index, step, state, labels):
                    report(location, message + suffix)
    yield from found.items()


def _step_references(
    index: int, step: Step, state: _RunState, labels: dict[str, int]
) -> Iterator[tuple[Location, str]]:
    """Check one step against what the run started before it, then record what it starts."""
    if step.produce is not None:
        produce = step.produce
        if produce.repeat is not None and produce.repeat not in state.labels:
            if produce.repeat in labels:
                message = (
                    f"label {produce.repeat!r} belongs to steps[{labels[produce.repeat]}], "
                    "which does not run before this step"
                )
            else:
                message = f"no produce step has label {produce.repeat!r}"
            yield ("steps", index, "produce", "repeat"), message
        if produce.label is not None:
            state.labels.setdefault(produce.label, index)
        if produce.background:
            state.producers[produce.label or f"producer-{index + 1}"] = index
    elif step.consume is not None:
        name = step.consume.name
        if name in state.consumers:
            started = state.consumers[name]
            yield (
                ("steps", index, "consume", "name"),
                (
                    f"consumer {name!r} is still running (started by steps[{started}]): "
                    "stop or join it first, or give this one another name"
                ),
            )
        if step.consume.background:
            state.consumers[name] = index
    elif step.stop is not None or step.crash is not None:
        action = "stop" if step.stop is not None else "crash"
        name = step.stop or step.crash or ""
        if name in state.consumers:
            del state.consumers[name]
        elif name in state.producers:
            yield (
                ("steps", index, action),
                (
                    f"{name!r} is a background producer: {action} acts on consumers "
                    "(join it instead)"
                ),
            )
        else:
            yield ("steps", index, action), _not_running(name, "consumer", state)
    elif step.join is not None:
        name = step.join
        if name in state.consumers:
            del state.consumers[name]
        elif name in state.producers:
            del state.producers[name]
        else:
            yield ("steps", index, "join"), _not_running(name, "consume or produce", state)


def _not_running(name: str, kind: str, state: _RunState) -> str:
    running = sorted({*state.consumers, *state.producers})
    known = f" (running then: {', '.join(running)})" if running else ""
    return f"no background {kind} step named {name!r} is running at this step{known}"
