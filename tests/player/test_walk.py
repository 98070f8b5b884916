"""Walk every step of every lesson of the course headlessly on the simulator.

Parametrised over the course itself (``course_lessons()``), so a lesson added to course.yaml is
walked without touching this file. Per step kind:

- read: the diagram, if any, is drawn from the simulator's cluster;
- quiz: every wrong choice gets its why, the right one is accepted;
- predict: a wrong prediction does not hold, the right one is run and holds;
- experiment: every variant runs, and the comparison has a number for each;
- decision: every leaf is reached along a path found from the tree, and back() undoes a choice;
- exercise: its state comes from the progress store.

Progress is recorded into a fresh database and checked at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mqlab.course.library import LessonEntry, course_lessons
from mqlab.course.progress import ProgressStore
from mqlab.player.player import (
    DecisionPlay,
    ExercisePlay,
    ExperimentPlay,
    LessonPlayer,
    PredictPlay,
    QuizPlay,
    ReadPlay,
    StepPlay,
)

pytestmark = pytest.mark.sim

ENTRIES = course_lessons()


def _walk_read(step: ReadPlay) -> None:
    view = step.diagram()
    if step.read.diagram is None:
        assert view is None
        return
    assert view is not None
    assert view.source == "simulator"
    assert view.lines
    assert step.diagram() is view  # drawn once per step


def _walk_quiz(step: QuizPlay) -> None:
    for index, choice in enumerate(step.quiz.choices):
        if index == step.quiz.answer:
            continue
        wrong = step.answer(index)
        assert not wrong.right
        assert wrong.why == choice.why
        assert wrong.why
        assert wrong.right_text == step.choices[step.quiz.answer]
    right = step.answer(step.quiz.answer)
    assert right.right
    assert right.why is None
    assert right.explain == step.quiz.explain


def _walk_predict(step: PredictPlay) -> None:
    assert step.target.startswith("sim:")
    wrong = (step.answer_index + 1) % len(step.choices)
    step.commit(wrong)
    step.commit(step.answer_index)  # a learner may change their mind before the run
    outcome = step.run()
    result = outcome.result
    assert result.error is None, result.error
    assert result.passed, f"{step.scenario.id} on {result.broker}: {result.failures()}"
    assert outcome.right
    assert outcome.held is True
    assert outcome.explain == step.scenario.explain


def _walk_experiment(step: ExperimentPlay) -> None:
    for index, label in enumerate(step.labels):
        outcome = step.run(index)
        assert outcome.label == label
        assert outcome.error is None, f"{label}: {outcome.error}"
        assert set(outcome.metrics) == {name for name, _ in step.compared}
        if step.scenario is not None:
            assert outcome.result is not None
            target = step.variant_target(index)
            assert target is not None
            assert outcome.result.broker == target
            assert target.startswith("sim:")
    comparison = step.comparison()
    assert comparison.columns == step.labels
    for row in comparison.rows:
        assert None not in row.values, row


def _walk_decision(step: DecisionPlay) -> None:
    paths = step.decision.paths_to_leaves()
    assert set(paths) == set(step.decision.leaves), "every leaf must be reachable"
    for leaf, path in paths.items():
        view = step.restart()
        assert view.node == step.decision.start
        for option in path:
            assert not view.at_leaf
            view = step.choose(option)
        assert view.at_leaf
        assert view.leaf_name == leaf
        assert view.leaf == step.decision.leaves[leaf]
        assert len(view.path) == len(path)
        back = step.back()
        assert not back.at_leaf
        assert len(back.path) == len(path) - 1
    assert step.reached == set(step.decision.leaves)


def _walk_exercise(step: ExercisePlay, store: ProgressStore) -> None:
    assert step.command == f"mqlab check {step.exercise_id}"
    assert step.state == "new"
    store.record_check(step.exercise_id, passed=True)
    assert step.state == "passed"


def _walk_step(step: StepPlay, store: ProgressStore) -> None:
    if isinstance(step, ReadPlay):
        _walk_read(step)
    elif isinstance(step, QuizPlay):
        _walk_quiz(step)
    elif isinstance(step, PredictPlay):
        _walk_predict(step)
    elif isinstance(step, ExperimentPlay):
        _walk_experiment(step)
    elif isinstance(step, DecisionPlay):
        _walk_decision(step)
    elif isinstance(step, ExercisePlay):
        _walk_exercise(step, store)
    else:  # pragma: no cover - a new step kind must be walked here
        pytest.fail(f"no walker for {step.kind}")


def test_the_course_has_every_lesson() -> None:
    assert len(ENTRIES) >= 8


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.folder)
def test_walk_every_step_on_sim(entry: LessonEntry, tmp_path: Path) -> None:
    with ProgressStore(tmp_path / "progress.sqlite3") as store:
        player = LessonPlayer(
            entry.lesson, folder=entry.path.parent, broker="sim", seed=0, progress=store
        )
        assert player.resume().index == 0
        walked: list[str] = []
        while True:
            step = player.current
            _walk_step(step, store)
            walked.append(step.key)
            if player.next() is None:
                break
        assert walked == entry.lesson.step_keys()
        assert player.finished
        assert store.lesson(entry.lesson.id).state == "done"
        recorded = store.steps(entry.lesson.id)
        assert set(recorded) == set(walked), "every step leaves a trace in the progress"
        for key, step_progress in recorded.items():
            assert step_progress.answered, key
        quizzes = [step for step in player.steps if isinstance(step, QuizPlay)]
        for quiz in quizzes:
            record = recorded[quiz.key]
            assert record.correct is True
            assert record.first_correct is False  # the walk answered wrong first
            assert record.attempts == len(quiz.choices)
        assert store.check_consistency() == []
