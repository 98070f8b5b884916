"""``mqlab retries`` as a learner uses it (CliRunner): output, --json shape, bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mqlab.cli import app

runner = CliRunner()


def test_contention_json_has_one_object_per_strategy_and_client_count() -> None:
    result = runner.invoke(
        app,
        ["retries", "contention", "--clients", "5", "--clients", "8,12", "--runs", "3", "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["clients"], r["strategy"]) for r in rows] == [
        (clients, strategy)
        for clients in (5, 8, 12)
        for strategy in (
            "none",
            "exponential",
            "full-jitter",
            "equal-jitter",
            "decorrelated-jitter",
        )
    ]
    for row in rows:
        assert {"strategy", "clients", "mean_calls", "mean_completion_ms"} <= set(row)
        assert row["mean_calls"] >= 2 * row["clients"]
        assert row["mean_completion_ms"] > 0
        assert (row["runs"], row["against"]) == (3, "sim")


def test_contention_prints_a_table_a_plot_and_the_ranking() -> None:
    result = runner.invoke(
        app, ["retries", "contention", "-n", "10", "--runs", "5", "-s", "none,full", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "mean calls" in result.output
    assert "mean completion time" in result.output
    assert "█" in result.output
    assert "10 clients: least work" in result.output
    assert "first done" in result.output
    assert "equal-jitter" not in result.output


def test_contention_is_the_same_for_the_same_seed() -> None:
    arguments = ["retries", "contention", "-n", "6", "--runs", "4", "--json", "--seed", "9"]
    assert runner.invoke(app, arguments).stdout == runner.invoke(app, arguments).stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--clients", "0"], "--clients must be at least 1"),
        (["--clients", "10,ten"], "--clients takes whole numbers"),
        (["--base-ms", "-5"], "--base-ms must be a finite number"),
        (["--delay-ms", "nan"], "--delay-ms must be a finite number"),
        (["--delay-sd-ms", "inf"], "--delay-sd-ms must be a finite number"),
        (["--cap-ms", "1", "--base-ms", "10"], "--cap-ms (1) must not be smaller"),
        (["--runs", "0"], "--runs must be at least 1"),
        (["--against", "mysql"], "--against takes sim or postgres"),
        (["--strategy", "ful"], "did you mean 'full'"),
        (["--against", "postgres", "--clients", "51"], "at most 50"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(arguments: list[str], message: str) -> None:
    result = runner.invoke(app, ["retries", "contention", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_postgres_not_running_is_one_line_naming_lab_up_and_exit_3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MQLAB_PORT_POSTGRES", "1")  # nothing listens there
    result = runner.invoke(app, ["retries", "contention", "--against", "postgres", "--runs", "1"])
    assert result.exit_code == 3, result.output
    assert "mqlab lab up postgres" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.postgres
def test_contention_against_postgres() -> None:
    result = runner.invoke(
        app,
        [
            "retries",
            "contention",
            "--against",
            "postgres",
            "-n",
            "4",
            "--runs",
            "1",
            "-s",
            "full-jitter",
            "--base-ms",
            "5",
            "--cap-ms",
            "100",
            "--delay-ms",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["against"], row["clients"], row["strategy"]) == ("postgres", 4, "full-jitter")
    assert row["mean_calls"] >= 8


def test_delays_prints_the_sequence_from_attempt_0() -> None:
    result = runner.invoke(
        app,
        [
            "retries",
            "delays",
            "-s",
            "exponential",
            "--attempts",
            "5",
            "--base-ms",
            "100",
            "--cap-ms",
            "1000",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["attempt"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["delay_ms"] for r in rows] == [100, 200, 400, 800, 1000]
    assert [r["waited_ms"] for r in rows] == [100, 300, 700, 1500, 2500]

    table = runner.invoke(app, ["retries", "delays", "-s", "full", "--seed", "1"])
    assert table.exit_code == 0, table.output
    assert "full-jitter" in table.output
    assert "attempt 0 is the first retry" in table.output


def test_delays_jitter_depends_on_the_seed() -> None:
    def delays(seed: str) -> list[float]:
        result = runner.invoke(
            app, ["retries", "delays", "-s", "decorrelated", "--seed", seed, "--json"]
        )
        return [row["delay_ms"] for row in json.loads(result.stdout)]

    assert delays("1") == delays("1")
    assert delays("1") != delays("2")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--strategy", "random"], "unknown strategy"),
        (["--attempts", "0"], "--attempts must be between 1 and 10000"),
        (["--base-ms", "nan"], "--base-ms must be a finite number"),
        (["--cap-ms", "1", "--base-ms", "5"], "must not be smaller"),
    ],
)
def test_delays_bad_values_exit_2(arguments: list[str], message: str) -> None:
    result = runner.invoke(app, ["retries", "delays", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
