"""Every scenario runs on every real broker it lists, its verdict holds, and where the outcome
is deterministic the simulator gives the same ledger (the simulator's fidelity test).

The verdict includes the broker's own view at the end of the run (queue depths, committed
offsets, DLQ depth), so the ledger numbers are checked against the brokers, not only against
the runner's bookkeeping.
"""

from __future__ import annotations

import pytest

from mqlab.course.scenario import Scenario
from mqlab.scenarios.session import run_scenario
from tests.scenarios._cases import (
    cases,
    compared_numbers,
    deterministic_on,
    explain_disagreement,
    explain_failure,
)


@pytest.mark.parametrize(("scenario", "system"), cases(real=True))
def test_scenario_verdict_holds_on_real_broker(scenario: Scenario, system: str) -> None:
    result = run_scenario(scenario, system, seed=7)
    assert result.restore_problem is None, result.restore_problem
    assert result.passed, explain_failure(result)
    if deterministic_on(scenario, system):
        simulated = run_scenario(scenario, f"sim:{system}", seed=7)
        numbers = compared_numbers(scenario)
        real_numbers = {k: result.summary[k] for k in numbers}
        sim_numbers = {k: simulated.summary[k] for k in numbers}
        assert sim_numbers == real_numbers, explain_disagreement(result, simulated, numbers)
