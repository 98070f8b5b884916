"""An exercise that needs lab services but no broker (PostgreSQL, Redis) is graded for real
under the name of its service, and ``--broker`` accepts that name (or ``lab``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mqlab.course.exercise import Exercise
from mqlab.grader.catalog import ExerciseEntry
from mqlab.grader.run import GraderError, real_targets, resolve_grading_broker

pytestmark = pytest.mark.sim


def _entry(**fields: Any) -> ExerciseEntry:
    exercise = Exercise.model_validate(
        {
            "format_version": 1,
            "id": "example",
            "title": "Example",
            "lesson": "idempotency",
            "difficulty": 1,
            "summary": "Do it.",
            "file": "example.py",
            "hints": ["Try."],
            "invariants": [{"id": "checks-hold"}],
            "faults": "none",
            **fields,
        }
    )
    return ExerciseEntry(exercise, Path("nowhere"), "07-idempotency", 1)


def test_an_exercise_with_one_service_and_no_broker_runs_on_the_lab_under_its_name() -> None:
    entry = _entry(brokers=["sim"], services=["postgres"])
    assert real_targets(entry.exercise) == ["postgres"]
    assert resolve_grading_broker(entry, "postgres") == (None, False, "postgres")
    assert resolve_grading_broker(entry, "lab") == (None, False, "postgres")
    assert resolve_grading_broker(entry, "sim") == (None, True, "sim")


def test_several_services_share_one_lab_run() -> None:
    entry = _entry(brokers=["sim"], services=["postgres", "redis"])
    assert real_targets(entry.exercise) == ["lab"]
    assert resolve_grading_broker(entry, "Redis") == (None, False, "lab")


def test_a_broker_the_exercise_does_not_use_is_refused_with_what_it_runs_on() -> None:
    entry = _entry(brokers=["sim"], services=["redis"])
    with pytest.raises(GraderError, match="runs on sim, redis, not kafka"):
        resolve_grading_broker(entry, "kafka")


def test_an_exercise_with_a_broker_is_graded_on_the_broker_not_on_its_services() -> None:
    entry = _entry(brokers=["sim", "kafka"], services=["postgres"])
    assert real_targets(entry.exercise) == ["kafka"]
    assert resolve_grading_broker(entry, "kafka") == ("kafka", False, "kafka")
    with pytest.raises(GraderError):
        resolve_grading_broker(entry, "postgres")


def test_a_simulator_only_exercise_has_no_real_target() -> None:
    entry = _entry(brokers=["sim"])
    assert real_targets(entry.exercise) == []
    with pytest.raises(GraderError, match="runs on sim, not postgres"):
        resolve_grading_broker(entry, "postgres")


def test_the_task_names_the_lab_service_an_exercise_is_graded_on() -> None:
    from mqlab.grader.workspace import task_text

    text = task_text(_entry(brokers=["sim"], services=["postgres"]))
    assert "- Graded on: sim, postgres (`--broker`" in text
