"""The lesson flows, driven with the Pilot: the course map, every step kind, progress."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqlab.course.progress import ProgressStore
from mqlab.tui.app import MqlabApp
from mqlab.tui.screens.course_map import CourseMap
from mqlab.tui.screens.lesson import LessonScreen
from mqlab.tui.widgets.lesson.step_view import StepView
from mqlab.tui.widgets.scenario.timeline import Timeline
from tests.tui.conftest import until, until_shown

pytestmark = pytest.mark.sim


async def _open_lesson(pilot, app: MqlabApp) -> LessonScreen:  # type: ignore[no-untyped-def]
    await until_shown(pilot, "Every kind of step")
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, LessonScreen), "the lesson screen")
    screen = app.screen
    assert isinstance(screen, LessonScreen)
    await until(pilot, lambda: screen.view is not None, "the first step")
    return screen


async def _go_to(pilot, screen: LessonScreen, kind: str) -> None:  # type: ignore[no-untyped-def]
    while screen.player.current.kind != kind:
        await pilot.press("right")
        await pilot.pause()
    await until(
        pilot,
        lambda: screen.view is not None and screen.view.play.kind == kind,
        f"the {kind} step",
    )


async def test_course_map_shows_lessons_with_their_progress(
    make: Callable[..., MqlabApp], progress_path
) -> None:  # type: ignore[no-untyped-def]
    with ProgressStore(progress_path) as store:
        store.move_to("basics", 2, "predict-1")
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        await until_shown(
            pilot,
            "◐ Every kind of step",  # in progress
            "resume at step 3 of 6",
            "full-jitter",  # the lesson's exercise, with its state
            "scenario library",
        )
        assert isinstance(app.screen, CourseMap)


async def test_a_lesson_resumes_where_the_learner_stopped(
    make: Callable[..., MqlabApp], progress_path
) -> None:  # type: ignore[no-untyped-def]
    with ProgressStore(progress_path) as store:
        store.move_to("basics", 1, "quiz-1")
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_lesson(pilot, app)
        assert screen.player.current.kind == "quiz"
        await until_shown(pilot, "How many leaders")


async def test_read_step_renders_markdown_and_the_diagram(
    make: Callable[..., MqlabApp],
) -> None:
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        await _open_lesson(pilot, app)
        await until_shown(pilot, "drawn from the simulator", "A cluster", "partitions", "leader")


async def test_the_diagram_says_where_it_comes_from_before_it_starts(
    make: Callable[..., MqlabApp],
) -> None:
    # At 80x24 the diagram runs past the bottom: its source must still be in view.
    app = make()
    async with app.run_test(size=(80, 24)) as pilot:
        await _open_lesson(pilot, app)
        text = await until_shown(pilot, "drawn from the simulator", "CLUSTER")
        assert text.index("drawn from the simulator") < text.index("CLUSTER")


async def test_quiz_answered_wrong_then_right(make: Callable[..., MqlabApp], progress_path) -> None:  # type: ignore[no-untyped-def]
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_lesson(pilot, app)
        await _go_to(pilot, screen, "quiz")
        await pilot.press("2")
        text = await until_shown(pilot, "Not quite.", "Followers copy the leader")  # and why
        assert "Exactly one replica leads" not in text  # the explanation waits for the answer
        await pilot.press("1")
        await until_shown(pilot, "Right.", "Exactly one replica leads")
    with ProgressStore(progress_path) as store:
        quiz = store.steps("basics")["quiz-1"]
    assert quiz.attempts == 2
    assert quiz.first_correct is False
    assert quiz.correct is True


async def test_predict_then_run_reveals_the_ledger(make: Callable[..., MqlabApp]) -> None:
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_lesson(pilot, app)
        await _go_to(pilot, screen, "predict")
        await until_shown(pilot, "Are any acknowledged messages lost")
        await pilot.press("2")  # "No, a replica from the ISR takes over": the answer
        await until_shown(pilot, "Your prediction held.", "lost", "PASS on sim:kafka", timeout=120)
        timeline = screen.query_one(Timeline)
        # The run's own timeline: every produce, and more.
        await until(pilot, lambda: timeline.lines_shown > 30, "the run's timeline")


async def test_experiment_runs_the_variant_picked(make: Callable[..., MqlabApp]) -> None:
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_lesson(pilot, app)
        await _go_to(pilot, screen, "experiment")
        await pilot.press("1")
        view = screen.view
        assert view is not None
        await until(pilot, lambda: 0 in view.play.outcomes, "variant 1's run", timeout=120)  # type: ignore[attr-defined]
        await until_shown(pilot, "10 done", "produced")


async def test_exercise_step_points_at_mqlab_check(make: Callable[..., MqlabApp]) -> None:
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_lesson(pilot, app)
        await _go_to(pilot, screen, "exercise")
        await until_shown(pilot, "mqlab check full-jitter", "not checked yet")


async def test_decision_tree_walked_to_every_leaf(make: Callable[..., MqlabApp]) -> None:
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_lesson(pilot, app)
        await _go_to(pilot, screen, "decision")
        await until_shown(pilot, "Do consumers need to replay")
        await pilot.press("2")
        await until_shown(pilot, "Do you run on AWS?")
        await pilot.press("1")
        await until_shown(
            pilot,
            "Recommendation: SQS",
            "nothing to run",
            "no replay",
            "Real choices weigh more",  # where the tree is too simple
        )
        await pilot.press("backspace")
        await until_shown(pilot, "Do you run on AWS?")
        await pilot.press("2")
        await until_shown(pilot, "Recommendation: RabbitMQ")
        await pilot.press("0")
        await until_shown(pilot, "Do consumers need to replay")
        await pilot.press("1")
        await until_shown(pilot, "Recommendation: Kafka")
        view = screen.view
        assert isinstance(view, StepView)
        assert view.play.reached == {"sqs", "rabbitmq", "kafka"}  # type: ignore[attr-defined]


async def test_finishing_a_lesson_marks_it_done_on_the_map(
    make: Callable[..., MqlabApp], progress_path
) -> None:  # type: ignore[no-untyped-def]
    with ProgressStore(progress_path) as store:
        store.move_to("basics", 5, "decision-1")
    app = make()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_lesson(pilot, app)
        assert screen.player.current.kind == "decision"
        await pilot.press("right")
        await until(pilot, lambda: isinstance(app.screen, CourseMap), "the course map")
        await until_shown(pilot, "✓ Every kind of step")
    with ProgressStore(progress_path) as store:
        assert store.lesson("basics").state == "done"
