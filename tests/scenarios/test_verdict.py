"""The verdict module: every expectation is judged, in one place, against typed numbers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.course.scenario import Expectations, GroupExpectation, LedgerExpectation, Scenario
from mqlab.scenarios.ledger import LEDGER_ROWS, GroupSummary, LedgerSummary
from mqlab.scenarios.library import find
from mqlab.scenarios.report import ledger_table
from mqlab.scenarios.session import run_scenario
from mqlab.scenarios.verdict import judge_expectations

pytestmark = pytest.mark.sim


def _with_expectations(scenario: Scenario, **expect: object) -> Scenario:
    """The scenario with its ``expect`` block replaced (validated like a file would be)."""
    document = scenario.model_dump(mode="json")
    document["expect"] = expect
    return Scenario.model_validate(document)


def test_every_ledger_number_can_be_expected_and_every_expectation_is_a_number() -> None:
    expectable = set(LedgerExpectation.model_fields)
    summary_fields = {f.name for f in dataclasses.fields(LedgerSummary)}
    assert expectable == summary_fields
    assert {row.name for row in LEDGER_ROWS} == summary_fields
    group_fields = {f.name for f in dataclasses.fields(GroupSummary)}
    assert set(GroupExpectation.model_fields) == group_fields


def test_group_expectations_are_judged() -> None:
    fanout = find("rabbitmq-fanout")
    result = run_scenario(fanout, "sim:rabbitmq")
    assert result.passed
    judged = {e.label: e for e in result.expectations}
    assert judged["groups.billing.processed"].holds
    assert judged["groups.shipping.processed"].actual == 5


def test_a_violated_group_expectation_fails_the_run() -> None:
    wrong = _with_expectations(
        find("rabbitmq-fanout"),
        produced=5,
        groups={"billing": {"processed": 5}, "shipping": {"processed": 4}},
    )
    result = run_scenario(wrong, "sim:rabbitmq")
    assert not result.passed
    assert result.verdict == "fail"
    assert result.failures() == ["groups.shipping.processed: expected 4, got 5"]


def test_an_expectation_about_a_group_that_never_ran_is_judged_against_zero() -> None:
    wrong = _with_expectations(find("rabbitmq-fanout"), groups={"audit": {"processed": ">0"}})
    result = run_scenario(wrong, "sim:rabbitmq")
    assert result.failures() == ["groups.audit.processed: expected >0, got 0"]


def test_system_overrides_win_over_the_common_expectation() -> None:
    expect = Expectations.model_validate({"lost": 0, "kafka": {"lost": ">0"}})
    summary = LedgerSummary(produced=3, lost=2)
    on_kafka = judge_expectations(expect, "kafka", summary, {})
    on_nats = judge_expectations(expect, "nats", summary, {})
    assert [(e.name, e.holds) for e in on_kafka] == [("lost", True)]
    assert [(e.name, e.holds) for e in on_nats] == [("lost", False)]


def test_a_services_override_holds_on_the_real_service_only() -> None:
    """retry-contention: exactly 55 calls on sim (equal delays, the virtual clock); at least
    30 on the lab's PostgreSQL, whose real round trips scatter the clients."""
    expect = Expectations.model_validate({"calls": 55, "postgres": {"calls": ">=30"}})
    summary = LedgerSummary(calls=37)
    real = judge_expectations(expect, "postgres", summary, {})
    simulated = judge_expectations(expect, "postgres", summary, {}, simulated=True)
    assert [(e.expected, e.holds) for e in real] == [(">=30", True)]
    assert [(e.expected, e.holds) for e in simulated] == [("55", False)]


def test_the_report_shows_every_expected_or_nonzero_row() -> None:
    result = run_scenario(find("kafka-partition-ordering"), "sim:kafka")
    console = Console(width=200, record=True)
    console.print(ledger_table(result))
    text = console.export_text()
    assert "out of order (across keys)" in text, "the point of this scenario must be on screen"
    for row in LEDGER_ROWS:
        expected = any(e.name == row.name and e.group is None for e in result.expectations)
        shown = row.label in text
        assert shown == (expected or result.summary[row.name] != 0 or row.always_shown), row.name


def test_group_expectations_appear_in_the_report() -> None:
    result = run_scenario(find("rabbitmq-fanout"), "sim:rabbitmq")
    console = Console(width=200, record=True)
    console.print(ledger_table(result))
    assert "group billing: processed" in console.export_text()


def test_run_json_has_every_expectation_check_and_the_verdict(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(app, ["run", "rabbitmq-fanout", "--json"])
    assert outcome.exit_code == 0, outcome.output
    data = json.loads(outcome.stdout)
    assert data["verdict"] == "pass"
    assert data["broker"] == "sim:rabbitmq"
    assert {e["name"] for e in data["expectations"]} >= {"groups.billing.processed"}
    assert set(data["ledger"]) == {f.name for f in dataclasses.fields(LedgerSummary)}


def test_run_json_of_a_failing_run_exits_1(tmp_path: Path) -> None:
    wrong = _with_expectations(find("rabbitmq-fanout"), groups={"billing": {"processed": 6}})
    path = tmp_path / "rabbitmq-fanout.yaml"
    path.write_text(json.dumps(wrong.model_dump(mode="json", exclude_defaults=True)))
    outcome = CliRunner().invoke(app, ["run", str(path), "--json"])
    assert outcome.exit_code == 1, outcome.output
    assert json.loads(outcome.stdout)["verdict"] == "fail"


def test_a_run_that_stopped_on_an_error_shows_its_ledger_unjudged() -> None:
    result = run_scenario(find("rabbitmq-fanout"), "sim:rabbitmq")
    stopped = dataclasses.replace(result, error="rabbitmq is not reachable")
    console = Console(width=200, record=True)
    console.print(ledger_table(stopped))
    text = console.export_text()
    assert "(until the run stopped)" in text
    assert "expected (not judged)" in text
    assert "✓" not in text
    assert "✗" not in text
    console = Console(width=200, record=True)
    console.print(ledger_table(result))
    judged = console.export_text()
    assert "✓" in judged
    assert "not judged" not in judged
