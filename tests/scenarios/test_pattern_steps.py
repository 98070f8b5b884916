"""Pattern steps: programs of the pattern library run as scenario steps, checked on load,
folded into the ledger's pattern numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.observe.events import (
    BusinessWriteCommitted,
    CompensationStarted,
    EffectApplied,
    Observation,
    Produced,
    RetryAttempted,
    RetryScheduled,
    SagaStarted,
)
from mqlab.scenarios.ledger import Ledger

pytestmark = pytest.mark.sim
runner = CliRunner()

HEADER = """format_version: 1
id: draft
title: t
topic: sagas
summary: s
"""


def _run(tmp_path: Path, body: str) -> tuple[int, str]:
    path = tmp_path / "draft.yaml"
    path.write_text(HEADER + body)
    result = runner.invoke(app, ["run", str(path), "--no-predict", "-q"])
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "brokers: [sim]\nservices: [postgres]\nsteps:\n  - pattern: {program: order-sage}\n",
            "draft.yaml:9: steps[0].pattern.program: no pattern program 'order-sage' "
            "(did you mean 'order-saga'?",
        ),
        (
            "brokers: [sim]\nservices: [postgres]\nsteps:\n"
            "  - pattern: {program: order-saga, params: {stock: many}}\n",
            "draft.yaml:9: steps[0].pattern.params: order-saga.stock: must be a whole number, "
            "got 'many'",
        ),
        (
            "brokers: [sim]\nservices: [postgres]\nsteps:\n"
            "  - pattern: {program: order-saga, crash: {point: halfway}}\n",
            "draft.yaml:9: steps[0].pattern.params: order-saga has no crash point 'halfway'",
        ),
        (
            "brokers: [sim]\nservices: [redis]\nsteps:\n  - pattern: {program: order-saga}\n",
            "steps[0].pattern.program: order-saga uses postgres on a real run: add "
            "services: [postgres]",
        ),
        (
            "brokers: [sim]\nservices: [postgres]\nsteps:\n  - produce: {count: 1}\n",
            "a scenario without a broker has only pattern, note and wait steps (found produce)",
        ),
        (
            "brokers: [sim]\nsteps:\n  - pattern: {program: order-saga}\n",
            "or the scenario names the services its pattern steps use",
        ),
    ],
)
def test_bad_pattern_steps_are_refused_on_load(tmp_path: Path, body: str, message: str) -> None:
    code, output = _run(tmp_path, body)
    assert code == 2, output
    assert "\n" not in output
    assert message in output


def test_a_service_scenario_names_its_real_target(tmp_path: Path) -> None:
    code, output = _run(
        tmp_path,
        "brokers: [sim]\nservices: [postgres]\nsteps:\n  - pattern: {program: order-saga}\n",
    )
    assert code == 0, output
    path = tmp_path / "draft.yaml"
    wrong = runner.invoke(app, ["run", str(path), "--broker", "kafka", "--no-predict"])
    assert wrong.exit_code == 2
    assert "runs on sim, postgres, not kafka" in wrong.output


def _fold(*observations: Observation) -> Ledger:
    ledger = Ledger()
    for observation in observations:
        ledger(observation)
    return ledger


def _saga(order: tuple[str, ...]) -> list[Observation]:
    started = SagaStarted(at=0, broker="t", saga_id="s", saga="x", steps=("a", "b", "c"))
    return [started] + [
        CompensationStarted(at=0, broker="t", saga_id="s", step=step, compensation_id=step)
        for step in order
    ]


def test_compensations_out_of_reverse_order_are_counted() -> None:
    assert _fold(*_saga(("b", "a"))).summary().compensations_out_of_order == 0
    assert _fold(*_saga(("a", "b"))).summary().compensations_out_of_order == 1


def test_an_effect_applied_twice_is_counted_once_per_message() -> None:
    def effect(mid: str) -> EffectApplied:
        return EffectApplied(
            at=0, broker="t", entity="balance", operation="+1", before=0, after=1,
            message_id=mid, idempotent=False,
        )  # fmt: skip

    summary = _fold(effect("m1"), effect("m1"), effect("m1"), effect("m2")).summary()
    assert (summary.effects, summary.effects_repeated) == (4, 1)


def test_a_retry_after_a_permanent_error_is_counted() -> None:
    failed = RetryAttempted(
        at=0, broker="t", message_id="op", call=1, outcome="failed", error="ValueError",
        error_class="permanent",
    )  # fmt: skip
    retried = RetryScheduled(at=0, broker="t", message_id="op", attempt=0, delay=1, strategy="x")
    assert _fold(failed).summary().permanent_retried == 0
    assert _fold(failed, retried).summary().permanent_retried == 1


def test_a_committed_write_whose_event_was_never_published_is_counted() -> None:
    write = BusinessWriteCommitted(at=0, broker="t", entity="order", message_id="e1")
    published = Produced(at=0, broker="t", destination="orders", message_id="e1")
    assert _fold(write).summary().events_unpublished == 1
    assert _fold(write, published).summary().events_unpublished == 0
