"""The ledger folds observations into the numbers a verdict is judged on."""

from __future__ import annotations

import pytest

from mqlab.observe.events import (
    Acked,
    ConsumerStarted,
    DeadLettered,
    Delivered,
    Nacked,
    Observation,
    Processed,
    Produced,
    ProduceFailed,
    ProduceRequested,
    Rebalanced,
    TransactionEnded,
)
from mqlab.scenarios.ledger import GroupSummary, Ledger, LedgerSummary
from mqlab.scenarios.verdict import compare


def fold(*observations: Observation) -> Ledger:
    ledger = Ledger()
    for observation in observations:
        ledger(observation)
    return ledger


def produced(mid: str, key: str | None = None, duplicate: bool = False) -> Produced:
    return Produced(at=0, broker="t", destination="q", message_id=mid, key=key, duplicate=duplicate)


def processed(mid: str, group: str = "g", skipped: bool = False) -> Processed:
    return Processed(
        at=0, broker="t", message_id=mid, consumer="c", group=group, skipped_duplicate=skipped
    )


def test_lost_duplicated_and_processed_once() -> None:
    ledger = fold(
        produced("a"), produced("b"), produced("c"),
        processed("a"), processed("b"), processed("b"),
    )  # fmt: skip
    summary = ledger.summary()
    assert summary["produced"] == 3
    assert summary["processed_once"] == 1
    assert summary["duplicated"] == 1
    assert summary["lost"] == 1
    assert ledger.lost_ids() == {"c"}


def test_dead_lettered_is_not_lost_and_broker_duplicates_are_not_produced() -> None:
    summary = fold(
        produced("a"), produced("a", duplicate=True), produced("b"), processed("a"),
        DeadLettered(at=0, broker="t", source="q", target="dlq", message_id="b", reason="x"),
    ).summary()  # fmt: skip
    assert summary["produced"] == 1 + 1
    assert summary["broker_duplicates"] == 1
    assert summary["lost"] == 0
    assert summary["dead_lettered"] == 1


def test_out_of_order_per_key_and_overall() -> None:
    ledger = fold(
        produced("a1", "a"), produced("b1", "b"), produced("a2", "a"), produced("b2", "b"),
        processed("b1"), processed("b2"), processed("a1"), processed("a2"),
    )  # fmt: skip
    summary = ledger.summary()
    assert summary["out_of_order"] == 0
    assert summary["out_of_order_overall"] == 2  # a1 and a2 came after b2


def test_reordered_key_is_counted() -> None:
    summary = fold(
        produced("a1", "a"), produced("a2", "a"), processed("a2"), processed("a1")
    ).summary()
    assert summary["out_of_order"] == 1


def test_skipped_duplicates_do_not_count_as_processing() -> None:
    summary = fold(produced("a"), processed("a"), processed("a", skipped=True)).summary()
    assert summary["duplicated"] == 0
    assert summary["processed_once"] == 1
    assert summary["skipped_duplicates"] == 1


def test_groups_are_independent_and_routing_is_not_loss() -> None:
    ledger = fold(
        produced("eu"), produced("us"),
        processed("eu", group="eu-orders"), processed("eu", group="all"), processed("us", group="all"),
    )  # fmt: skip
    summary = ledger.summary()
    assert summary["lost"] == 0
    assert summary["duplicated"] == 0
    assert ledger.per_group()["eu-orders"]["processed"] == 1
    assert ledger.per_group()["all"]["processed"] == 2


def test_failed_sends_acks_and_settlement() -> None:
    ledger = fold(
        produced("a"), produced("b"), produced("c"),
        ProduceFailed(at=0, broker="t", destination="q", message_id="d", error="NotEnoughReplicas"),
        Delivered(at=0, broker="t", destination="q", message_id="a", consumer="c"),
        Delivered(at=0, broker="t", destination="q", message_id="a", consumer="c", redelivered=True),
        Acked(at=0, broker="t", destination="q", message_id="a", consumer="c"),
        Nacked(at=0, broker="t", destination="q", message_id="b", consumer="c", requeue=False),
    )  # fmt: skip
    summary = ledger.summary()
    assert summary["produce_failed"] == 1
    assert summary["redelivered"] == 1
    assert ledger.unsettled_ids() == {"c"}


def test_priority_inversions() -> None:
    ledger = fold(
        ProduceRequested(at=0, broker="runner", message_id="low", step=1, priority=1),
        ProduceRequested(at=0, broker="runner", message_id="high", step=1, priority=9),
        produced("low"), produced("high"), processed("low"), processed("high"),
    )  # fmt: skip
    assert ledger.summary()["priority_inversions"] == 1


def test_priorities_in_order_are_no_inversion() -> None:
    ledger = fold(
        ProduceRequested(at=0, broker="runner", message_id="low", step=1, priority=1),
        ProduceRequested(at=0, broker="runner", message_id="high", step=1, priority=9),
        produced("low"), produced("high"), processed("high"), processed("low"),
    )  # fmt: skip
    assert ledger.summary()["priority_inversions"] == 0


def test_nothing_processed_after_a_consumer_started_is_lost() -> None:
    silent = fold(produced("a"), produced("b"))
    assert silent.summary().lost == 0, "no consumer ran: nothing can be lost yet"
    consumed = fold(
        produced("a"), produced("b"),
        ConsumerStarted(at=0, broker="runner", consumer="c", group="g", step=2),
    )  # fmt: skip
    assert consumed.summary().lost == 2


def test_aborted_transaction_is_neither_produced_nor_lost() -> None:
    ledger = fold(
        produced("a"), produced("b"), produced("c"),
        TransactionEnded(at=0, broker="t", producer="p", outcome="aborted", message_ids=("b", "c")),
        TransactionEnded(at=0, broker="t", producer="p", outcome="committed", message_ids=("a",)),
        ConsumerStarted(at=0, broker="runner", consumer="c", group="g", step=2),
        processed("a"),
    )  # fmt: skip
    summary = ledger.summary()
    assert (summary.produced, summary.aborted, summary.lost) == (1, 2, 0)


def test_rebalances_count_assignment_changes_only() -> None:
    one = (("m1", ("t:0", "t:1")),)
    two = (("m1", ("t:0",)), ("m2", ("t:1",)))
    summary = fold(
        *(Rebalanced(at=0, broker="t", group="g", generation=n, assignment=a)
          for n, a in ((1, one), (1, one), (2, two)))
    ).summary()  # fmt: skip
    assert summary["rebalances"] == 2


def test_compare_expectations() -> None:
    assert compare(3, 3)
    assert not compare(3, 4)
    assert compare(1, ">0")
    assert not compare(0, ">0")
    assert compare(5, ">=5")
    assert compare(2, "<=3")
    assert compare(2, "<3")
    assert compare(2, "==2")


def test_every_members_report_of_one_generation_is_one_rebalance() -> None:
    first = (("m1", ("t:0",)),)
    second = (("m2", ("t:1",)),)
    summary = fold(
        Rebalanced(at=0, broker="t", group="g", generation=1, assignment=(("m1", ("t:0", "t:1")),)),
        Rebalanced(at=0, broker="t", group="g", generation=2, assignment=first),
        Rebalanced(at=0, broker="t", group="g", generation=2, assignment=second),
        Rebalanced(at=0, broker="t", group="other", generation=2, assignment=second),
    ).summary()
    assert summary.rebalances == 3


@pytest.mark.parametrize("not_a_number", ["as_dict", "lots", "__slots__"])
def test_ledger_numbers_are_read_by_name_and_only_the_numbers_are_names(
    not_a_number: str,
) -> None:
    assert LedgerSummary(lost=2)["lost"] == 2
    assert GroupSummary(runs=3)["runs"] == 3
    for numbers in (LedgerSummary(), GroupSummary()):
        with pytest.raises(KeyError):
            numbers[not_a_number]
