"""The comparison table's verdict logic, fed right and wrong evidence (no broker needed)."""

from __future__ import annotations

import pytest

from mqlab.bench.native import NativeResult
from mqlab.bench.table import (
    CLAIMS,
    EXPERIMENTS,
    ROWS,
    Experiment,
    Footprint,
    Judgement,
    RunOutcome,
    build_table,
    claimed_rate,
    combine,
    experiment_key,
    judge_ops_burden,
    judge_throughput,
    table_json,
)
from mqlab.bench.workload import TARGETS, BenchResult, Latency, Workload


def outcome(scenario: str = "s", **numbers: int) -> RunOutcome:
    return RunOutcome(scenario=scenario, broker="kafka", numbers=numbers)


def experiment(row: str, target: str) -> Experiment:
    return next(e for e in EXPERIMENTS if e.row == row and e.target == target)


def bench_result(target: str, rate: float, *, broker: str | None = None) -> BenchResult:
    return BenchResult(
        target=target,  # type: ignore[arg-type]
        broker=broker or ("sqs" if target.startswith("sqs") else target),
        workload=Workload(messages=1000),
        settings=(),
        sent=1000,
        received=1000,
        produce_seconds=1000 / rate,
        total_seconds=1000 / rate,
        ack_latency=Latency.of([0.001]),
        end_to_end=Latency.of([0.002]),
    )


# (row, target, numbers that verify the claim, numbers that contradict it)
CASES = [
    ("ordering", "kafka", {"out_of_order": 0, "out_of_order_overall": 20}, {"out_of_order": 3}),
    (
        "ordering",
        "rabbitmq",
        {"out_of_order_overall": 0, "processed_once": 50},
        {"out_of_order_overall": 2},
    ),
    ("ordering", "nats", {"out_of_order_overall": 0}, {"out_of_order_overall": 1}),
    ("ordering", "sqs-fifo", {"out_of_order": 0}, {"out_of_order": 1}),
    ("delivery", "kafka", {"lost": 0, "duplicated": 1}, {"lost": 1, "duplicated": 0}),
    ("delivery", "nats", {"lost": 0, "duplicated": 1}, {"lost": 0, "duplicated": 0}),
    (
        "replay",
        "kafka",
        {"produced": 10, "groups.analytics.processed": 10},
        {"produced": 10, "groups.analytics.processed": 0},
    ),
    (
        "replay",
        "rabbitmq",
        {"produced": 10, "duplicated": 0},
        {"produced": 10, "second_reader_processed": 10},
    ),
    ("priority", "rabbitmq", {"priority_inversions": 0}, {"priority_inversions": 4}),
    ("priority", "kafka", {"priority_inversions": 8}, {"priority_inversions": 0}),
    ("routing", "kafka", {"keys": 4}, {"keys": 4, "keys_off_murmur2": 1}),
]


@pytest.mark.parametrize(("row", "target", "right", "wrong"), CASES)
def test_a_cell_is_verified_by_right_numbers_and_contradicted_by_wrong_ones(
    row: str, target: str, right: dict[str, int], wrong: dict[str, int]
) -> None:
    chosen = experiment(row, target)
    assert chosen.judge(outcome(**right)).verdict == "verified"
    assert chosen.judge(outcome(**wrong)).verdict == "contradicted"


def test_best_effort_order_is_shown_only_by_a_reordering_run() -> None:
    chosen = experiment("ordering", "sqs")
    assert chosen.judge(outcome(out_of_order_overall=4)).verdict == "verified"
    assert chosen.judge(outcome(out_of_order_overall=0)).verdict == "not testable here"


def test_fifo_exactly_once_is_contradicted_by_a_duplicate_after_a_crash() -> None:
    dedup, crash = (e for e in EXPERIMENTS if e.row == "delivery" and e.target == "sqs-fifo")
    runs = {
        experiment_key(dedup): RunOutcome(dedup.scenario, "sqs", {"broker_duplicates": 5}),
        experiment_key(crash): RunOutcome(crash.scenario, "sqs", {"duplicated": 1}),
    }
    cell = next(c for c in build_table(runs) if c.row == "delivery" and c.target == "sqs-fifo")
    assert cell.verdict == "contradicted"
    assert "5 dropped" in cell.why
    assert "processed twice" in cell.why
    # Without the duplicate, both halves hold.
    runs[experiment_key(crash)] = RunOutcome(crash.scenario, "sqs", {"duplicated": 0})
    cell = next(c for c in build_table(runs) if c.row == "delivery" and c.target == "sqs-fifo")
    assert cell.verdict == "verified"
    # A dedup that dropped nothing contradicts it too.
    assert dedup.judge(outcome(broker_duplicates=0)).verdict == "contradicted"


def test_a_scenario_judged_by_its_own_expectations_fails_with_its_failures() -> None:
    chosen = experiment("routing", "rabbitmq")
    failing = RunOutcome(
        "rabbitmq-topic-routing",
        "rabbitmq",
        {},
        passed=False,
        failures=("groups.eu.processed: expected 3, got 0",),
    )
    judged = chosen.judge(failing)
    assert judged.verdict == "contradicted"
    assert "expected 3, got 0" in judged.why
    assert chosen.judge(RunOutcome("rabbitmq-topic-routing", "rabbitmq", {})).verdict == "verified"


def test_a_run_that_could_not_complete_proves_nothing() -> None:
    chosen = experiment("delivery", "kafka")
    runs = {
        experiment_key(chosen): RunOutcome(
            chosen.scenario, "kafka", {"lost": 10}, error="kafka is not reachable"
        )
    }
    cell = next(c for c in build_table(runs) if c.row == "delivery" and c.target == "kafka")
    assert cell.verdict == "not testable here"
    assert "could not complete" in cell.why


@pytest.mark.parametrize(
    ("claim", "rate"),
    [
        ("Millions/sec", 1e6),
        ("~50K/sec", 5e4),
        ("~3K/sec", 3e3),
        ("~300K/sec", 3e5),
        ("~unlimited*", None),
    ],
)
def test_claimed_rates(claim: str, rate: float | None) -> None:
    assert claimed_rate(claim) == rate


def test_throughput_below_half_the_claim_is_contradicted_here_with_why() -> None:
    judged = judge_throughput("rabbitmq", "~50K/sec", bench_result("rabbitmq", 4_000), None)
    assert judged.verdict == "contradicted"
    assert "contradicted here" in judged.why
    assert "2-core" in judged.why
    tool = NativeResult(target="rabbitmq", tool="PerfTest", produce_rate=30_000)
    judged = judge_throughput("rabbitmq", "~50K/sec", bench_result("rabbitmq", 4_000), tool)
    assert judged.verdict == "verified"  # the broker did it here, through its own tool
    assert "PerfTest 30,000 msg/s" in judged.why


def test_throughput_not_testable_on_the_simulator_unmeasured_or_unlimited() -> None:
    simulated = bench_result("kafka", 5e6, broker="sim:kafka")
    assert judge_throughput("kafka", "Millions/sec", simulated, None).verdict == "not testable here"
    assert judge_throughput("kafka", "Millions/sec", None, None).verdict == "not testable here"
    assert (
        judge_throughput("sqs", "~unlimited*", bench_result("sqs", 900), None).verdict
        == "not testable here"
    )


FOOTPRINTS = {
    "kafka": Footprint(
        "kafka",
        ("kafka-controller", "kafka-broker-1", "kafka-broker-2", "kafka-broker-3"),
        520.0,
        11.0,
    ),
    "rabbitmq": Footprint("rabbitmq", ("rabbitmq-epmd", "rabbitmq"), 145.0, 4.5),
    "nats": Footprint("nats", ("nats",), 14.0, 0.05),
    "sqs": Footprint("sqs", ("sqs",), 53.0, 0.5, stand_in=True),
}


def test_ops_burden_follows_what_the_lab_runs() -> None:
    for target in ("kafka", "rabbitmq", "nats"):
        assert (
            judge_ops_burden(target, CLAIMS["ops burden"][target], FOOTPRINTS).verdict == "verified"
        )
    assert judge_ops_burden("sqs", "Zero", FOOTPRINTS).verdict == "not testable here"
    # NATS needing more memory than RabbitMQ contradicts "Low" against "Medium", both ways.
    wrong = {**FOOTPRINTS, "nats": Footprint("nats", ("nats",), 400.0, 0.05)}
    assert judge_ops_burden("nats", "Low", wrong).verdict == "contradicted"
    assert judge_ops_burden("rabbitmq", "Medium", wrong).verdict == "contradicted"
    down = {
        **FOOTPRINTS,
        "kafka": Footprint(
            "kafka", FOOTPRINTS["kafka"].processes, 200.0, 11.0, running=("kafka-controller",)
        ),
    }
    assert judge_ops_burden("kafka", "High", down).verdict == "not testable here"


def test_combine() -> None:
    verified, contradicted = Judgement("verified", "a"), Judgement("contradicted", "b")
    assert combine([verified, verified]).verdict == "verified"
    assert combine([verified, contradicted]).verdict == "contradicted"
    assert combine([]).verdict == "not testable here"


def test_the_table_has_every_cell_of_the_cheat_sheet() -> None:
    cells = build_table({})
    assert {(c.row, c.target) for c in cells} == {(r, t) for r in ROWS for t in TARGETS}
    data = table_json(cells)
    assert len(data["cells"]) == len(ROWS) * len(TARGETS)
    assert [c["system"] for c in data["columns"]] == list(TARGETS)
    # Every cell with a scenario experiment names it; nothing ran, so none is verified.
    assert all(cell.verdict != "verified" for cell in cells)
