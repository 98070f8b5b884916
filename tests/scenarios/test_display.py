"""What a learner sees on screen says what happened, once, in the learner's terms."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.observe.events import (
    DeadLettered,
    ProcessingFailed,
    Produced,
    ProduceFailed,
    ProduceRequested,
    Rebalanced,
)
from mqlab.scenarios.library import find
from mqlab.scenarios.report import describe
from mqlab.scenarios.session import run_scenario

pytestmark = pytest.mark.sim
runner = CliRunner()


def test_each_failed_send_is_reported_once() -> None:
    result = run_scenario(find("kafka-min-isr-two-brokers-down"), "sim:kafka")
    failures = Counter(o.message_id for o in result.observations if isinstance(o, ProduceFailed))
    assert failures, "the scenario must show failed sends"
    assert set(failures.values()) == {1}


def test_priorities_appear_in_the_timeline() -> None:
    result = run_scenario(find("rabbitmq-priority-queue"), "sim:rabbitmq")
    requested = [o for o in result.observations if isinstance(o, ProduceRequested)]
    assert requested
    assert all(o.priority is not None for o in requested)
    line = describe(requested[0])
    assert line is not None
    assert f"priority {requested[0].priority}" in line
    unprioritised = ProduceRequested(at=0, broker="runner", message_id="m1", step=1)
    assert describe(unprioritised) is None, "plain sends are not doubled in the timeline"


def test_a_kafka_poison_message_shows_failures_spaced_by_the_retry_delay() -> None:
    scenario = find("poison-message-dead-letter")
    result = run_scenario(scenario, "sim:kafka")
    assert result.passed
    failed = [o for o in result.observations if isinstance(o, ProcessingFailed)]
    assert [o.then for o in failed] == ["retry", "retry", "dead_letter"]
    delay = scenario.channel.dead_letter.retry_delay_ms / 1000  # type: ignore[union-attr]
    gaps = [b.at - a.at for a, b in itertools.pairwise(failed)]
    assert all(gap >= delay for gap in gaps[:1]), gaps
    copies = [
        o for o in result.observations if isinstance(o, Produced) and o.destination.endswith("-dlq")
    ]
    assert len(copies) == 1
    assert "copied to the dead-letter topic" in (describe(copies[0]) or "")


def test_a_group_left_empty_says_so() -> None:
    empty = Rebalanced(at=0, broker="t", group="g", generation=3, assignment=())
    assert describe(empty) == "group g: no members left (generation 3)"


def test_nats_max_deliver_is_not_called_a_dead_letter_queue() -> None:
    advisory = DeadLettered(
        at=0, broker="nats", source="s", message_id="m1", reason="max_deliver after 3",
        target="$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.s.c",
    )  # fmt: skip
    line = describe(advisory) or ""
    assert "gave up redelivering" in line
    assert "no DLQ" in line
    assert "dead-lettered to" not in line


def test_scenarios_show_prints_settings_timeouts_and_choices_without_reprs() -> None:
    shown = runner.invoke(app, ["scenarios", "show", "kafka-acks1-unclean-loss"])
    assert shown.exit_code == 0, shown.output
    assert "{" not in shown.output, "no Python dict reprs"
    assert "model_" not in shown.output
    assert "producer.acks=1" in shown.output, "nested settings are spelled as dotted keys"
    assert "at most" in shown.output, "a wait's timeout must be shown"
    scenario = find("kafka-acks1-unclean-loss")
    assert scenario.predict is not None
    for choice in scenario.predict.choices:
        assert choice in shown.output


def test_scenarios_list_keeps_whole_ids_on_a_narrow_terminal() -> None:
    listed = runner.invoke(app, ["scenarios", "list"], env={"COLUMNS": "80"}, terminal_width=80)
    assert listed.exit_code == 0
    for scenario_id in ("kafka-min-isr-two-brokers-down", "exactly-once-idempotent-consumer"):
        assert scenario_id in listed.output
