"""A recorded trace replays to the very same ledger, checks and verdict as the live run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.course.scenario import Scenario
from mqlab.observe.trace import TraceHeader, write_trace
from mqlab.scenarios.library import find
from mqlab.scenarios.session import replay_trace, run_scenario
from tests.scenarios._cases import cases

runner = CliRunner()


@pytest.mark.parametrize(("scenario", "system"), cases(real=False))
def test_replay_of_every_library_run_gives_the_same_result(
    scenario: Scenario, system: str, tmp_path: Path
) -> None:
    trace = tmp_path / "run.jsonl"
    live = runner.invoke(
        app, ["run", scenario.id, "--broker", f"sim:{system}", "--seed", "3", "--json",
              "--record", str(trace)],
    )  # fmt: skip
    assert live.exit_code in (0, 1), live.output
    replayed = runner.invoke(app, ["replay", str(trace), "--json"])
    assert replayed.exit_code == live.exit_code, replayed.output
    assert json.loads(replayed.stdout) == json.loads(live.stdout)


@pytest.mark.sim
def test_replay_judges_with_the_recorded_scenario_not_the_file(tmp_path: Path) -> None:
    """A learner's copy may change after the run; its trace still carries what was run."""
    trace = tmp_path / "run.jsonl"
    live = run_scenario(find("rabbitmq-fanout"), "sim:rabbitmq", record=trace)
    _, replayed = replay_trace(trace)
    assert replayed == live
    assert replayed.passed


@pytest.mark.sim
def test_replay_shows_expectations_checks_and_verdict(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    run_scenario(find("sqs-redrive-dlq"), "sim:sqs", record=trace)
    shown = runner.invoke(app, ["replay", str(trace), "-q"])
    assert shown.exit_code == 0, shown.output
    assert "PASS on sim:sqs" in shown.output
    assert "expected" in shown.output


@pytest.mark.sim
def test_a_trace_cut_short_is_judged_as_an_unfinished_run(tmp_path: Path) -> None:
    full = tmp_path / "run.jsonl"
    live = run_scenario(find("at-least-once-crash"), "sim:kafka", record=full)
    cut = tmp_path / "cut.jsonl"
    header = TraceHeader(broker="sim:kafka", seed=0, scenario="at-least-once-crash")
    write_trace(cut, header, live.observations[: len(live.observations) // 2])
    outcome = runner.invoke(app, ["replay", str(cut), "--json"])
    assert outcome.exit_code == 3, outcome.output
    assert json.loads(outcome.stdout)["error"] == "the run did not finish (trace cut short)"


@pytest.mark.sim
def test_a_trace_without_a_run_is_refused_with_one_line(tmp_path: Path) -> None:
    trace = tmp_path / "old.jsonl"
    write_trace(trace, TraceHeader(broker="sim:kafka"), [])
    outcome = runner.invoke(app, ["replay", str(trace)])
    assert outcome.exit_code == 2
    assert outcome.output.strip().count("\n") == 0
    assert "no run_started" in outcome.output


@pytest.mark.sim
def test_a_trace_whose_scenario_was_edited_is_refused_in_words(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    run_scenario(find("rabbitmq-fanout"), "sim:rabbitmq", record=trace)
    lines = trace.read_text().splitlines()
    started = json.loads(lines[1])
    assert started["kind"] == "run_started"
    document = json.loads(started["scenario"])
    document["steps"][0]["produce"]["count"] = -4
    started["scenario"] = json.dumps(document)
    lines[1] = json.dumps(started, sort_keys=True, separators=(",", ":"))
    trace.write_text("\n".join(lines) + "\n")
    outcome = runner.invoke(app, ["replay", str(trace)])
    assert outcome.exit_code == 2
    message = outcome.output.strip()
    assert "\n" not in message
    assert "recorded scenario is not valid: steps[0].produce.count" in message
    assert "validation error" not in message
