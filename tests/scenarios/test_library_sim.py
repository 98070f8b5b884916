"""Every scenario runs on the simulator for every system it lists, and its verdict holds.

Same seed, same run: a second run of each scenario gives a byte-identical trace.
"""

from __future__ import annotations

import pytest

from mqlab.course.scenario import Scenario
from mqlab.observe.trace import TraceHeader, dumps
from mqlab.scenarios.session import run_scenario
from tests.scenarios._cases import cases, explain_failure


@pytest.mark.parametrize(("scenario", "system"), cases(real=False))
def test_scenario_verdict_holds_on_sim(scenario: Scenario, system: str) -> None:
    result = run_scenario(scenario, f"sim:{system}", seed=7)
    assert result.passed, explain_failure(result)


@pytest.mark.sim
@pytest.mark.parametrize("seed", [1, 2])
def test_same_seed_gives_identical_trace(seed: int) -> None:
    from mqlab.scenarios.library import find

    scenario = find("at-least-once-crash")
    header = TraceHeader(broker="sim:kafka", seed=seed, scenario=scenario.id)
    first = run_scenario(scenario, "sim:kafka", seed=seed)
    second = run_scenario(scenario, "sim:kafka", seed=seed)
    assert first.observations, "a run must produce observations"
    assert dumps(header, first.observations) == dumps(header, second.observations)
