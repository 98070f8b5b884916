"""Every experiment of the comparison table, on the simulator and on the lab's brokers.

On the lab each experiment is a real scenario run (small: tens of messages); its verdict is
what the brokers do, so it is asserted: the claims that hold here are verified, SQS FIFO's
"exactly-once" is contradicted by a consumer crash (the dedup window covers sends only), and
moto's standard queue, which keeps order, cannot show "best-effort".
"""

from __future__ import annotations

import pytest

from mqlab.bench.experiments import build_scenario, needed_runs, run_experiment
from mqlab.bench.table import EXPERIMENTS, Experiment, build_table, experiment_key

MARKERS = {
    "kafka": "kafka",
    "rabbitmq": "rabbitmq",
    "sqs": "sqs",
    "sqs-fifo": "sqs",
    "nats": "nats",
}


def _id(experiment: Experiment) -> str:
    return f"{experiment.scenario}-{experiment.target}"


EXPECTED_REAL: dict[tuple[str, str], str] = {
    ("ordering", "sqs"): "not testable here",
    ("delivery", "sqs-fifo"): "contradicted",
}
"""Cells whose verdict on the lab is not "verified" (every other scenario cell is)."""


def _verdicts(experiment: Experiment, outcome_verdict: str) -> None:
    print(f"{experiment.row}/{experiment.target} {experiment.scenario}: {outcome_verdict}")


@pytest.mark.sim
def test_every_experiment_on_the_simulator() -> None:
    runs = {experiment_key(e): run_experiment(e, simulated=True) for e in needed_runs()}
    assert all(run.error is None for run in runs.values())
    cells = {(c.row, c.target): c for c in build_table(runs)}
    for experiment in EXPERIMENTS:
        cell = cells[(experiment.row, experiment.target)]
        expected = (
            "contradicted" if (cell.row, cell.target) == ("delivery", "sqs-fifo") else "verified"
        )
        assert cell.verdict == expected, f"{cell.row}/{cell.target}: {cell.why}"
    # The simulator reorders a standard queue (reorder_rate), which shows best-effort.
    assert "out of produce order" in cells[("ordering", "sqs")].why


@pytest.mark.sim
def test_fifo_variants_run_on_a_fifo_queue() -> None:
    assert build_scenario("at-least-once-crash", fifo=True).channel.sqs.fifo
    assert not build_scenario("at-least-once-crash").channel.sqs.fifo


@pytest.mark.parametrize(
    "experiment",
    [
        pytest.param(e, id=_id(e), marks=getattr(pytest.mark, MARKERS[e.target]))
        for e in needed_runs()
    ],
)
def test_experiment_on_the_lab(experiment: Experiment) -> None:
    outcome = run_experiment(experiment, simulated=False)
    assert outcome.error is None, outcome.error
    for judged in (e for e in EXPERIMENTS if experiment_key(e) == experiment_key(experiment)):
        verdict = judged.judge(outcome)
        print(f"{judged.row}/{judged.target} {judged.scenario}: {verdict.verdict}: {verdict.why}")
        if (judged.row, judged.target) == ("delivery", "sqs-fifo"):
            expected = "verified" if judged.scenario == "sqs-fifo-dedup" else "contradicted"
        else:
            expected = EXPECTED_REAL.get((judged.row, judged.target), "verified")
        assert verdict.verdict == expected, verdict.why
