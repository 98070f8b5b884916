"""The scenario commands as a learner uses them (CliRunner, simulator only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app

pytestmark = pytest.mark.sim

runner = CliRunner()


def test_list_shows_the_library() -> None:
    result = runner.invoke(app, ["scenarios", "list", "--broker", "rabbitmq"])
    assert result.exit_code == 0, result.output
    assert "rabbitmq-priority-queue" in result.output
    assert "sqs-fifo-dedup" not in result.output


def test_run_on_sim_prints_ledger_and_verdict(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    result = runner.invoke(
        app,
        [
            "run",
            "at-most-once-crash",
            "--broker",
            "sim:nats",
            "--no-predict",
            "--record",
            str(trace),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "PASS on sim:nats" in result.output
    assert "lost" in result.output
    header = json.loads(trace.read_text().splitlines()[0])["mqlab_trace"]
    assert header["broker"] == "sim:nats"
    assert header["scenario"] == "at-most-once-crash"

    replayed = runner.invoke(app, ["replay", str(trace)])
    assert replayed.exit_code == 0, replayed.output
    assert "recovery processed" in replayed.output


def test_failed_verdict_exits_1(tmp_path: Path) -> None:
    scenario = tmp_path / "wrong-guess.yaml"
    scenario.write_text(
        "format_version: 1\nid: wrong-guess\ntitle: t\ntopic: t\nsummary: s\n"
        "brokers: [rabbitmq, sim]\nsteps:\n  - produce: {count: 3}\n  - consume: {name: c}\n"
        "expect: {produced: 3, lost: 1}\n"
    )
    result = runner.invoke(app, ["run", str(scenario), "--no-predict", "-q"])
    assert result.exit_code == 1, result.output
    assert "FAIL on sim:rabbitmq: lost" in result.output


def test_unknown_scenario_and_broker_are_one_line_errors() -> None:
    result = runner.invoke(app, ["run", "at-most-once-crsh"])
    assert result.exit_code == 2
    assert "did you mean 'at-most-once-crash'" in result.output
    assert "Traceback" not in result.output

    result = runner.invoke(app, ["run", "at-most-once-crash", "--broker", "kafak"])
    assert result.exit_code == 2
    assert "did you mean 'kafka'" in result.output

    result = runner.invoke(app, ["run", "rabbitmq-fanout", "--broker", "kafka"])
    assert result.exit_code == 2
    assert "runs on rabbitmq" in result.output


def test_malformed_scenario_file_names_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("format_version: 1\nid: broken\nsteps: [\n")
    result = runner.invoke(app, ["run", str(broken)])
    assert result.exit_code == 2
    assert f"{broken}:" in result.output
    assert "Traceback" not in result.output


def test_broken_trace_is_a_one_line_error(tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text("not json\n")
    result = runner.invoke(app, ["replay", str(trace)])
    assert result.exit_code == 2
    assert "bad.jsonl:1: not a mqlab trace" in result.output


def test_compare_on_sim_prints_side_by_side() -> None:
    result = runner.invoke(app, ["compare", "producer-retry-duplicates", "--sim"])
    assert result.exit_code == 0, result.output
    for broker in ("sim:kafka", "sim:rabbitmq", "sim:sqs", "sim:nats"):
        assert broker in result.output


def test_course_without_a_terminal_lists_and_exits() -> None:
    result = runner.invoke(app, ["course"])
    assert result.exit_code == 0, result.output
    assert "delivery-guarantees" in result.output
    assert "mqlab run <id> --broker sim" in result.output
