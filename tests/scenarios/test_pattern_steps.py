"""Pattern steps: programs of the pattern library run as scenario steps, checked on load,
folded into the ledger's pattern numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.course.loader import ContentError
from mqlab.observe.events import (
    BusinessWriteCommitted,
    CompensationFailed,
    CompensationStarted,
    EffectApplied,
    Observation,
    Produced,
    RetryAttempted,
    RetryScheduled,
    SagaStarted,
)
from mqlab.scenarios.ledger import Ledger
from mqlab.scenarios.library import find

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


def _effect(mid: str, before: int, after: int, *, entity: str = "balance") -> EffectApplied:
    return EffectApplied(
        at=0, broker="t", entity=entity, operation=f"SET balance = {after}", before=before,
        after=after, message_id=mid, idempotent=True,
    )  # fmt: skip


def test_a_write_that_changed_nothing_is_no_effect() -> None:
    """A SET redelivered leaves the balance as it was: natural idempotency, not a repeat.
    The same SET redelivered after a newer one changes the state again: a repeat."""
    redelivered = _fold(_effect("m1", 0, 50), _effect("m1", 50, 50)).summary()
    assert (redelivered.effects, redelivered.effects_repeated) == (1, 0)
    stale = _fold(_effect("m1", 0, 50), _effect("m2", 50, 100), _effect("m1", 100, 50))
    assert (stale.summary().effects, stale.summary().effects_repeated) == (3, 1)


def test_failed_compensation_attempts_are_counted() -> None:
    def failed(attempt: int) -> CompensationFailed:
        return CompensationFailed(
            at=0, broker="t", saga_id="s", step="a", compensation_id="s/a/compensation",
            attempt=attempt, error="down",
        )  # fmt: skip

    assert _fold().summary().compensations_failed == 0
    assert _fold(failed(1), failed(2)).summary().compensations_failed == 2


def test_only_the_failure_a_retry_follows_decides_whether_a_permanent_error_was_retried() -> None:
    """The same operation name in two steps: a permanent failure in the first, a transient
    one retried in the second, is no permanent error retried."""

    def attempt(error_class: str) -> RetryAttempted:
        return RetryAttempted(
            at=0, broker="t", message_id="op", call=1, outcome="failed", error="E",
            error_class=error_class,
        )  # fmt: skip

    retried = RetryScheduled(at=0, broker="t", message_id="op", attempt=0, delay=1, strategy="x")
    later = _fold(attempt("permanent"), attempt("transient"), retried).summary()
    assert later.permanent_retried == 0
    at_once = _fold(attempt("transient"), attempt("permanent"), retried).summary()
    assert at_once.permanent_retried == 1


def test_a_scenario_without_a_broker_may_call_its_service_nondeterministic(tmp_path: Path) -> None:
    body = (
        "brokers: [sim]\nservices: [postgres]\nsteps:\n  - pattern: {program: order-saga}\n"
        "nondeterministic:\n  {target}: timing\n"
    )
    code, output = _run(tmp_path, body.replace("{target}", "postgres"))
    assert code == 0, output
    code, output = _run(tmp_path, body.replace("{target}", "postgress"))
    assert code == 2
    assert "nondeterministic" in output


@pytest.mark.parametrize(
    ("scenario_id", "expected"),
    [
        ("saga-crash-during-compensation", {"effects": 4, "effects_repeated": 0}),
        ("idempotency-two-transactions", {"effects": 4, "dedup_hits": 1}),
        ("idempotency-redis-ttl", {"effects": 4, "effects_repeated": 1}),
        ("retry-budget-storm", {"calls": 22, "gave_up": 20}),
    ],
)
def test_the_stores_report_what_the_ledger_counts_on_sim(
    scenario_id: str, expected: dict[str, int]
) -> None:
    """The business database's committed writes reach the ledger as effects: a refund run
    twice after a crash is one effect, a key that expired lets a second one through."""
    from mqlab.scenarios.session import run_scenario

    result = run_scenario(
        find(scenario_id), "sim:lab" if "redis" in scenario_id else "sim:postgres"
    )
    assert result.error is None, result.error
    assert {name: result.summary[name] for name in expected} == expected


def test_a_library_scenario_with_a_wrong_program_parameter_is_refused(tmp_path: Path) -> None:
    source = find("retry-budget-storm")
    broken = tmp_path / "retry-budget-storm.yaml"
    text = (Path(__file__).parents[2] / "scenarios" / "retry-budget-storm.yaml").read_text()
    broken.write_text(text.replace("budget_ratio: 0.1", "budget_ration: 0.1"))
    with pytest.raises(ContentError, match="did you mean 'budget_ratio'"):
        find(str(broken))
    assert source.id == "retry-budget-storm"
