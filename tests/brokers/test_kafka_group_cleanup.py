"""The Kafka adapter's clean-up deletes a group through a coordinator that moves under it (a
broker killed or restarted just before: the lab's fault tests run right before other runs'
clean-ups), and gives up with a named problem on an error that asking again cannot fix."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqlab.brokers.kafka import wire
from mqlab.brokers.kafka.client import KafkaBroker

pytestmark = pytest.mark.sim


def _answers(monkeypatch: pytest.MonkeyPatch, codes: list[int]) -> list[int]:
    """Make the adapter's DeleteGroups answer ``codes`` in turn; returns the coordinators asked."""
    asked: list[int] = []
    coordinators = iter(range(1, 100))

    async def coordinator(self: KafkaBroker, group_id: str) -> int:
        return next(coordinators)

    async def delete_groups(client: Any, node: int, groups: list[str]) -> dict[str, int]:
        asked.append(node)
        return {groups[0]: codes.pop(0)}

    monkeypatch.setattr(KafkaBroker, "_client", property(lambda self: object()))
    monkeypatch.setattr(KafkaBroker, "_coordinator", coordinator)
    monkeypatch.setattr(wire, "delete_groups", delete_groups)
    return asked


def test_a_moving_coordinator_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _answers(monkeypatch, [wire.NOT_COORDINATOR, wire.COORDINATOR_LOAD_IN_PROGRESS, 0])
    adapter = KafkaBroker(namespace="mq-test01")
    with pytest.MonkeyPatch.context() as fast:
        fast.setattr(asyncio, "sleep", _no_wait)
        assert asyncio.run(adapter._delete_group("mq-test01-billing")) is None
    assert asked == [1, 2, 3]  # the coordinator looked up again each time


def test_an_error_that_asking_again_cannot_fix_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _answers(monkeypatch, [wire.UNKNOWN_TOPIC_OR_PARTITION])
    adapter = KafkaBroker(namespace="mq-test01")
    problem = asyncio.run(adapter._delete_group("mq-test01-billing"))
    assert problem == "group mq-test01-billing not deleted (UnknownTopicOrPartitionError)"
    assert asked == [1]


_real_sleep = asyncio.sleep


async def _no_wait(seconds: float) -> None:
    await _real_sleep(0)


def test_a_groups_offsets_are_read_again_from_a_moved_coordinator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The grader reads a group's committed offsets right after a broker kill: a first answer
    of NOT_COORDINATOR is asked again at the group's new coordinator, not raised."""
    from aiokafka.errors import NotCoordinatorForGroupError

    asked = _answers(monkeypatch, [])
    answers: list[object] = [NotCoordinatorForGroupError("moved"), {("orders", 0): 5}]

    async def committed_offsets(client: Any, node: int, group_id: str) -> object:
        asked.append(node)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(wire, "committed_offsets", committed_offsets)
    adapter = KafkaBroker(namespace="mq-test01")
    offsets = asyncio.run(adapter.group_offsets("mq-test01-billing"))
    assert [(tp.topic, tp.partition, offset) for tp, offset in offsets.items()] == [
        ("orders", 0, 5)
    ]
    assert asked == [1, 2]
