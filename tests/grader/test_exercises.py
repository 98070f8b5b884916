"""Every exercise is fair: on sim and on each real broker it lists, the reference solution
passes and the starter fails; on sim every wrong solution fails with the invariant it names
(the invariants judge a recorded history, the same whichever broker recorded it; a real run of
each wrong solution would add minutes of suite time and no information; `mqlab dev check
--real` runs them all)."""

from __future__ import annotations

import pytest

from mqlab.grader.authoring import audit_exercise
from mqlab.grader.catalog import ExerciseEntry, all_exercises
from mqlab.grader.run import real_targets

EXERCISES = all_exercises()


def _breaks_the_lab(entry: ExerciseEntry) -> bool:
    """A check that uses ``ctx.faults`` kills, freezes or cuts the lab's brokers, so its real
    runs carry the ``lab`` marker: they hold the broker exclusively (see tests/conftest.py)
    and no other test of it runs meanwhile."""
    return "ctx.faults" in entry.check_file.read_text(encoding="utf-8")


def _cases() -> list[object]:
    cases: list[object] = []
    for entry in EXERCISES:
        cases.append(pytest.param(entry, "sim", id=f"{entry.id}-sim", marks=pytest.mark.sim))
        for target in real_targets(entry.exercise):
            # A system's marker, or for an exercise without a broker only its services'.
            names = [target] if target in entry.exercise.systems else []
            names += entry.exercise.services
            if _breaks_the_lab(entry):
                names.append("lab")
            marks = [getattr(pytest.mark, name) for name in names]
            cases.append(pytest.param(entry, target, id=f"{entry.id}-{target}", marks=marks))
    return cases


def test_the_course_has_exercises_in_every_lesson() -> None:
    from mqlab.course.library import course_lessons

    lessons = {lesson.lesson.id for lesson in course_lessons()}
    covered = {entry.exercise.lesson for entry in EXERCISES}
    assert len(EXERCISES) >= 12
    assert covered == lessons


@pytest.mark.parametrize(("entry", "broker"), _cases())
def test_the_exercise_tells_right_from_wrong(entry: ExerciseEntry, broker: str) -> None:
    assert audit_exercise(entry, broker=broker, wrong=broker == "sim") == []


@pytest.mark.sim
def test_every_exercise_has_wrong_solutions_and_hints() -> None:
    for entry in EXERCISES:
        assert entry.exercise.wrong, f"{entry.id} has no wrong solutions to catch"
        assert all(hint.strip() for hint in entry.exercise.hints)


@pytest.mark.sim
def test_an_audit_failure_carries_the_counterexample() -> None:
    """What the audit reports for a failing file names the evidence, not the problem alone: a
    reference solution that fails once on a loaded machine leaves nothing else in the log to
    find its race by (which message, who received it, when)."""
    from mqlab.grader.authoring import why_it_failed
    from mqlab.grader.run import check_file

    entry = next(e for e in EXERCISES if e.id == "sqs-fifo-consumer")
    report = check_file(entry, entry.wrong_file("no_visibility.py"), broker="sim")
    assert not report.passed
    why = why_it_failed(report)
    assert why.startswith("no-double-effect: 1 messages changed the state more than once (")
    assert "received by consumer-" in why
    assert "(delivery 2)" in why
