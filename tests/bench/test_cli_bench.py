"""``mqlab bench`` and ``mqlab compare --table`` as a learner calls them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mqlab.bench.table import ROWS
from mqlab.bench.workload import TARGETS
from mqlab.cli.app import app


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.sim
def test_bench_json_on_the_simulator() -> None:
    code, out, _ = invoke("bench", "kafka", "nats", "--sim", "-n", "200", "--json")
    assert code == 0
    data = json.loads(out)
    assert [r["target"] for r in data["results"]] == ["kafka", "nats"]
    first = data["results"][0]
    assert first["broker"] == "sim:kafka"
    assert first["simulated"] is True
    assert first["sent"] == first["received"] == 200
    assert {"p50_ms", "p99_ms"} <= set(first["end_to_end_latency"])
    assert "acks" in first["settings"]
    assert data["native"] == {}  # no native tool runs on the simulator


@pytest.mark.sim
def test_bench_text_shows_numbers_bars_and_settings() -> None:
    code, out, _ = invoke("bench", "kafka", "sqs-fifo", "--sim", "-n", "100")
    assert code == 0
    assert "SQS FIFO" in out
    assert "SendMessageBatch of 10" in out
    kafka_bar = next(line for line in out.splitlines() if line.startswith("kafka (mqlab)"))
    assert "█" in kafka_bar
    assert "msg/s" in kafka_bar
    # Simulated SQS sends take no virtual time: no rate to plot, and the plot says so.
    fifo_bar = next(line for line in out.splitlines() if line.startswith("sqs-fifo (mqlab)"))
    assert "n/a" in fifo_bar


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "kafak", "--sim"], "did you mean 'kafka'"),
        (["bench", "kafka", "--sim", "--messages", "0"], "--messages"),
        (["bench", "kafka", "--sim", "--size", "3"], "--size"),
        (["compare"], "name a scenario"),
        (["compare", "at-least-once-crash", "--table"], "name no scenario"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, _out, err = invoke(*args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_broker_that_is_down_exits_3_with_one_line() -> None:
    """Ports moved far away (MQLAB_PORT_OFFSET): nothing listens there."""
    code, _, err = invoke(
        "bench", "nats", "-n", "10", "--no-native", env={"MQLAB_PORT_OFFSET": "31000"}
    )
    assert code == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "nats is not reachable" in lines[0]


@pytest.mark.sim
def test_compare_table_json_on_the_simulator() -> None:
    code, out, _ = invoke("compare", "--table", "--sim", "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["cells"]) == len(ROWS) * len(TARGETS)
    by_cell = {(c["row"], c["system"]): c for c in data["cells"]}
    assert by_cell[("replay", "kafka")]["verdict"] == "verified"
    assert by_cell[("replay", "kafka")]["evidence"][0]["run"]["scenario"] == "replay-new-group"
    assert by_cell[("delivery", "sqs-fifo")]["verdict"] == "contradicted"
    assert by_cell[("throughput", "kafka")]["verdict"] == "not testable here"
    assert data["errors"] == []


@pytest.mark.sim
def test_compare_table_text_on_the_simulator() -> None:
    code, out, _ = invoke("compare", "--table", "--sim")
    assert code == 0
    assert "✓ verified" in out
    assert "✗ contradicted" in out
    assert "· not testable here" in out
    assert "Exactly-once (5min)" in out


@pytest.mark.sim
def test_compare_of_one_scenario_still_works() -> None:
    code, out, _ = invoke("compare", "at-least-once-crash", "--sim", "--json")
    assert code == 0
    assert len(json.loads(out)) == 4
