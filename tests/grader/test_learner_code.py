"""Learner code that loops, allocates, raises or does not parse is stopped within the limits
and reported in one clear message pointing at the learner's file and line."""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
from pathlib import Path

import pytest

from mqlab.course.exercise import Limits
from mqlab.grader.catalog import ExerciseEntry, find_exercise
from mqlab.grader.report import report_text
from mqlab.grader.run import CheckReport, check_file

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def jitter() -> ExerciseEntry:
    """The full-jitter exercise with a short time limit, so a stopped loop costs seconds."""
    entry = find_exercise("full-jitter")
    limits = Limits(seconds=4, memory_mb=entry.exercise.limits.memory_mb)
    return dataclasses.replace(entry, exercise=entry.exercise.model_copy(update={"limits": limits}))


def _learner(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "jitter.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_an_endless_loop_is_stopped_and_the_line_it_was_on_is_named(
    jitter: ExerciseEntry, tmp_path: Path
) -> None:
    """Stopped by the grader's time limit: a ``Timeout`` is only reported when the grader's
    deadline (the limit, counted from the moment the child armed it) ran out and it killed
    the child; a loop nobody stopped would hang this test or die of the CPU backstop, which
    reads as a check error. The report is one message pointing at the loop."""
    path = _learner(
        tmp_path,
        """
        def full_jitter(attempt, base, cap, rng):
            while True:
                attempt += 1

        def decorrelated_jitter(previous, base, cap, rng):
            return base
        """,
    )
    report = check_file(jitter, path)
    assert not report.passed
    assert report.learner_error is not None
    assert report.learner_error.kind == "Timeout", report
    limit = jitter.exercise.limits.seconds
    assert f"did not finish within {limit:g}s (in full_jitter)" in report.learner_error.message
    # The stack sample lands on the loop's test or on its body, whichever was running.
    assert report.learner_error.line in (3, 4), report.learner_error
    _assert_one_clear_message(report, "your code was stopped: it ran out of time")


def _assert_one_clear_message(report: CheckReport, headline: str) -> None:
    """The report names what happened once, at the learner's line, and shows nothing of
    mqlab's insides (no traceback, no stack dump, no grader frames)."""
    assert report.learner_error is not None
    shown = report_text(report).plain
    assert headline in shown
    assert shown.count(report.learner_error.one_line()) == 1, shown
    for insides in ("Traceback", "Thread 0x", "Timeout (0:", "mqlab/grader", 'File "'):
        assert insides not in shown, shown


def test_unbounded_allocation_is_stopped(jitter: ExerciseEntry, tmp_path: Path) -> None:
    path = _learner(
        tmp_path,
        """
        def full_jitter(attempt, base, cap, rng):
            hoard = []
            while True:
                hoard.append(bytearray(10_000_000))

        def decorrelated_jitter(previous, base, cap, rng):
            return base
        """,
    )
    report = check_file(jitter, path)
    assert report.learner_error is not None, report.check_error
    assert report.learner_error.kind == "MemoryError"
    assert f"{jitter.exercise.limits.memory_mb} MB" in report.learner_error.message
    assert (report.learner_error.file, report.learner_error.line) == (str(path), 5)
    _assert_one_clear_message(report, "your code was stopped: it ran out of memory")


def test_an_exception_points_at_the_learners_line(jitter: ExerciseEntry, tmp_path: Path) -> None:
    path = _learner(
        tmp_path,
        """
        def full_jitter(attempt, base, cap, rng):
            return base / (attempt - attempt)

        def decorrelated_jitter(previous, base, cap, rng):
            return base
        """,
    )
    report = check_file(jitter, path)
    error = report.learner_error
    assert error is not None
    assert error.one_line() == f"{path}:3: ZeroDivisionError: float division by zero"
    assert error.code == "return base / (attempt - attempt)"
    _assert_one_clear_message(report, "your code raised ZeroDivisionError")


def test_a_syntax_error_points_at_the_line(jitter: ExerciseEntry, tmp_path: Path) -> None:
    path = _learner(tmp_path, "def full_jitter(attempt, base, cap, rng)\n    return 0\n")
    report = check_file(jitter, path)
    assert report.learner_error is not None
    assert report.learner_error.kind == "SyntaxError"
    assert report.learner_error.line == 1
    assert "does not parse" in report_text(report).plain


def test_an_import_of_something_missing_is_named(jitter: ExerciseEntry, tmp_path: Path) -> None:
    path = _learner(tmp_path, "import numpyy\n")
    report = check_file(jitter, path)
    error = report.learner_error
    assert error is not None
    assert error.kind == "ModuleNotFoundError"
    assert error.line == 1
    assert "numpyy" in error.message


def test_a_missing_function_is_a_mistake_in_words(jitter: ExerciseEntry, tmp_path: Path) -> None:
    path = _learner(tmp_path, "def full_jitter(attempt, base, cap, rng):\n    return 0.0\n")
    report = check_file(jitter, path)
    assert report.learner_error is not None
    assert report.learner_error.kind == "LearnerMistake"
    assert "'decorrelated_jitter'" in report.learner_error.message


def test_a_wrong_return_type_is_a_mistake_in_words(jitter: ExerciseEntry, tmp_path: Path) -> None:
    path = _learner(
        tmp_path,
        """
        def full_jitter(attempt, base, cap, rng):
            return "soon"

        def decorrelated_jitter(previous, base, cap, rng):
            return base
        """,
    )
    report = check_file(jitter, path)
    assert report.learner_error is not None
    assert "must return a number of seconds" in report.learner_error.message


def test_prints_are_kept_but_never_taken_for_results(jitter: ExerciseEntry, tmp_path: Path) -> None:
    path = _learner(
        tmp_path,
        """
        print('{"done": true}')
        def full_jitter(attempt, base, cap, rng):
            print("thinking", attempt)
            return rng.uniform(0, min(cap, base * 2 ** attempt))

        def decorrelated_jitter(previous, base, cap, rng):
            raise RuntimeError("not yet")
        """,
    )
    report = check_file(jitter, path)
    assert report.learner_error is not None
    assert report.learner_error.kind == "RuntimeError"
    assert any("thinking" in line for line in report.stderr_tail)


def test_the_same_seed_gives_the_same_report(jitter: ExerciseEntry, tmp_path: Path) -> None:
    first = check_file(jitter, jitter.wrong_file("no_cap.py"), seed=11)
    second = check_file(jitter, jitter.wrong_file("no_cap.py"), seed=11)
    assert first.to_json_dict() | {"seconds": 0} == second.to_json_dict() | {"seconds": 0}
    other = check_file(jitter, jitter.wrong_file("no_cap.py"), seed=12)
    assert other.broken is not None
    assert first.broken is not None
    assert other.broken.finding.counterexample != first.broken.finding.counterexample


def test_the_time_limit_counts_from_the_learners_start_not_the_processs(
    jitter: ExerciseEntry, tmp_path: Path
) -> None:
    """On a loaded machine the child's interpreter and imports can take longer than a short
    limit. That is not the learner's time: a check module that takes longer to import than
    the limit and its kill grace together still grades the reference solution as passing."""
    folder = tmp_path / "slow-start"
    shutil.copytree(jitter.folder, folder)
    check = folder / "check.py"
    # 2 s of learner time: the reference solution's own run takes 0.35 s on a quiet machine
    # and up to 0.75 s with seven processes on the two cores.
    limits = Limits(seconds=2, memory_mb=jitter.exercise.limits.memory_mb)
    # Time passing is the condition here: an import slower than limit + grace (2 s + 2 s).
    check.write_text(check.read_text() + "\nimport time\n\ntime.sleep(5.0)\n")
    slow = dataclasses.replace(
        jitter, folder=folder, exercise=jitter.exercise.model_copy(update={"limits": limits})
    )
    report = check_file(slow, slow.solution_file)
    assert report.learner_error is None, report.learner_error
    assert report.passed, report.check_error


@pytest.mark.parametrize("off_the_clock", [True, False], ids=["waiting-on-the-lab", "learner-time"])
def test_the_checks_own_waits_on_the_lab_are_not_the_learners_time(
    jitter: ExerciseEntry, tmp_path: Path, off_the_clock: bool
) -> None:
    """A check that waits on the lab (a killed broker restarting) longer than the limit and
    its kill grace together does so inside ``ctx.off_the_clock()``: the reference solution
    still passes. The same wait on the learner's clock is stopped by the limit."""
    folder = tmp_path / "slow-lab"
    shutil.copytree(jitter.folder, folder)
    check = folder / "check.py"
    wait = "with ctx.off_the_clock():\n        " if off_the_clock else "if True:\n        "
    # Time passing is the condition: a blocking wait of 4 s (wall time, also on sim) against
    # a limit of 1 s and a grace of 2 s.
    check.write_text(
        check.read_text()
        + "\n\nimport time\n\n_drive = drive\n\n\nasync def drive(learner, ctx):\n    "
        + wait
        + "time.sleep(4.0)\n    await _drive(learner, ctx)\n"
    )
    limits = Limits(seconds=1, memory_mb=jitter.exercise.limits.memory_mb)
    slow = dataclasses.replace(
        jitter, folder=folder, exercise=jitter.exercise.model_copy(update={"limits": limits})
    )
    report = check_file(slow, slow.solution_file)
    if off_the_clock:
        assert report.learner_error is None, report.learner_error
        assert report.passed, report.check_error
    else:
        assert report.learner_error is not None
        assert report.learner_error.kind == "Timeout"
