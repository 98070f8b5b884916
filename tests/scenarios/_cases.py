"""Parametrisation shared by the library tests: every (scenario, system) pair (a pattern
scenario without a broker runs as its service: ``postgres``, ``redis`` or ``lab``)."""

from __future__ import annotations

import pytest

from mqlab.brokers.registry import SYSTEM_NAMES
from mqlab.course.scenario import Scenario
from mqlab.observe.events import Delivered, Rebalanced
from mqlab.scenarios.ledger import LEDGER_ROWS
from mqlab.scenarios.library import load_all
from mqlab.scenarios.verdict import RunResult

SCENARIOS = load_all()

# Scenarios that inject process faults or toxics need the lab's fault control too.
FAULT_ACTIONS = {"fault", "toxic", "heal"}

CORE_NUMBERS = (
    "produced",
    "produce_failed",
    "processed_once",
    "duplicated",
    "lost",
    "dead_lettered",
    "out_of_order",
    "redelivered",
    "rebalances",
)

PATTERN_NUMBERS = tuple(
    row.name for row in LEDGER_ROWS[[r.name for r in LEDGER_ROWS].index("calls") :]
)
"""The patterns' ledger numbers: compared too where a scenario has pattern steps."""


def compared_numbers(scenario: Scenario) -> tuple[str, ...]:
    """The ledger numbers the simulator must reproduce for ``scenario``."""
    if any(step.pattern is not None for step in scenario.steps):
        return CORE_NUMBERS + PATTERN_NUMBERS
    return CORE_NUMBERS


def cases(*, real: bool) -> list[object]:
    """One pytest param per scenario and system, marked with the system's marker when real."""
    params: list[object] = []
    for scenario in SCENARIOS:
        for system in scenario.targets:
            marks: list[pytest.MarkDecorator] = []
            if real:
                if system in SYSTEM_NAMES:
                    marks.append(getattr(pytest.mark, system))
                marks += [getattr(pytest.mark, service) for service in scenario.services]
                if any(step.action in FAULT_ACTIONS for step in scenario.steps):
                    marks += [pytest.mark.toxiproxy, pytest.mark.lab]
                if any(s.consume is not None and s.consume.idempotent for s in scenario.steps):
                    marks.append(pytest.mark.redis)
            else:
                marks.append(pytest.mark.sim)
            params.append(pytest.param(scenario, system, id=f"{scenario.id}-{system}", marks=marks))
    return params


def explain_failure(result: RunResult) -> str:
    """Everything needed to see why a run failed, in the assertion message."""
    lines = [f"{result.scenario_id} on {result.broker}: error={result.error}"]
    lines += [f"  {failure}" for failure in result.failures()]
    lines.append(f"  ledger: {result.summary.as_dict()}")
    lines.append(f"  groups: { ({n: g.as_dict() for n, g in result.groups.items()}) }")
    return "\n".join(lines)


def explain_disagreement(real: RunResult, simulated: RunResult, numbers: tuple[str, ...]) -> str:
    """Which numbers differ, and the observations behind the group numbers of both runs: a
    disagreement seen once on a loaded machine leaves nothing else to find its cause by."""
    differ = [n for n in numbers if real.summary[n] != simulated.summary[n]]
    group_numbers = "rebalances" in differ or "redelivered" in differ
    lines = [f"sim and {real.broker} disagree on {real.scenario_id}: {', '.join(differ)}"]
    for result in (real, simulated):
        lines.append(f"  {result.broker}: { ({n: result.summary[n] for n in differ}) }")
        if group_numbers:
            lines += [
                f"    {observation}"
                for observation in result.observations
                if isinstance(observation, Rebalanced | Delivered)
            ]
    return "\n".join(lines)


def deterministic_on(scenario: Scenario, system: str) -> bool:
    """Whether the exact ledger must match between the real broker and the simulator."""
    return system not in scenario.nondeterministic
