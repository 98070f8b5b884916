"""The player on the lab's real Kafka: the live diagram and a prediction run (the rest of
the player's tests, in test_player.py, need no broker and are marked ``sim``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqlab.course.library import find_lesson
from mqlab.course.progress import ProgressStore
from mqlab.player.diagrams import draw_diagram
from mqlab.player.player import LessonPlayer, PredictPlay
from mqlab.player.runs import LearnerBroker


@pytest.mark.kafka
def test_the_lab_draws_the_scene_live() -> None:
    view = draw_diagram("kafka-cluster", LearnerBroker.parse("kafka"))
    assert view.source == "lab", view.note
    assert any(
        line.startswith("TOPIC     orders  partitions=4  replication-factor=3")
        for line in view.lines
    )
    members = [line for line in view.lines if line.startswith("  consumer-")]
    assert len(members) == 2, view.lines


@pytest.mark.kafka
def test_a_prediction_runs_on_the_labs_kafka(tmp_path: Path) -> None:
    entry = find_lesson("kafka-concepts")
    with ProgressStore(tmp_path / "p.sqlite3") as store:
        player = LessonPlayer(entry.lesson, folder=entry.path.parent, broker="lab", progress=store)
        step = next(step for step in player.steps if step.key == "producer-retry")
        assert isinstance(step, PredictPlay)
        assert step.target == "kafka"
        step.commit(step.answer_index)
        outcome = step.run()
        assert outcome.result.broker == "kafka"
        assert outcome.result.error is None, outcome.result.error
        assert outcome.result.summary["duplicated"] == 5
        assert outcome.held is True
        assert store.steps("kafka-concepts")["producer-retry"].prediction_held is True
