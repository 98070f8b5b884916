"""The progress database: what it records, its schema versions, and that a SIGKILL in the
middle of writes leaves it consistent."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqlab.course import progress
from mqlab.course.progress import SCHEMA_VERSION, ProgressError, ProgressStore, default_path
from tests.waiting import wait_until

pytestmark = pytest.mark.sim


class Clock:
    """Timestamps that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProgressStore]:
    with ProgressStore(tmp_path / "progress.sqlite3", clock=Clock()) as opened:
        yield opened


def test_the_data_dir_follows_mqlab_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MQLAB_DATA_DIR", str(tmp_path / "data"))
    assert default_path() == tmp_path / "data" / "progress.sqlite3"
    with ProgressStore() as opened:
        assert opened.path == tmp_path / "data" / "progress.sqlite3"
    assert (tmp_path / "data" / "progress.sqlite3").is_file()


def test_the_connection_is_wal_and_synchronous_full(store: ProgressStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    with store._lock:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version == SCHEMA_VERSION


def test_a_new_lesson_is_new(store: ProgressStore) -> None:
    assert store.lesson("kafka-concepts").state == "new"
    assert store.steps("kafka-concepts") == {}
    assert store.lessons() == {}


def test_answers_move_the_current_step_with_them(store: ProgressStore) -> None:
    first = store.record_step("kafka-concepts", 3, "quiz-1", "quiz", correct=False, choice=0)
    assert (first.attempts, first.correct, first.first_correct) == (1, False, False)
    again = store.record_step("kafka-concepts", 3, "quiz-1", "quiz", correct=True, choice=1)
    assert (again.attempts, again.correct, again.first_correct, again.last_choice) == (
        2,
        True,
        False,
        1,
    )
    lesson = store.lesson("kafka-concepts")
    assert (lesson.state, lesson.current_index, lesson.current_step) == ("in_progress", 3, "quiz-1")
    store.move_to("kafka-concepts", 4, "read-3")
    assert store.lesson("kafka-concepts").current_step == "read-3"
    assert store.check_consistency() == []


def test_a_prediction_records_whether_it_held(store: ProgressStore) -> None:
    store.record_step("l", 0, "predict-1", "predict", correct=True, choice=1, prediction_held=True)
    # a later run that could not settle it keeps what the earlier one showed
    step = store.record_step("l", 0, "predict-1", "predict", correct=True, choice=1)
    assert step.prediction_held is True


def test_completing_and_resetting_a_lesson(store: ProgressStore) -> None:
    store.record_step("l", 0, "read-1", "read")
    store.complete_lesson("l", 1, "read-2")
    done = store.lesson("l")
    assert done.state == "done"
    assert done.completed_at is not None
    store.move_to("l", 0, "read-1")  # revisiting a finished lesson keeps it done
    assert store.lesson("l").state == "done"
    store.reset_lesson("l")
    assert store.lesson("l").state == "new"
    assert store.steps("l") == {}


def test_the_grader_records_checks_and_hints(store: ProgressStore) -> None:
    assert store.exercise("full-jitter") is None
    assert store.record_hint("full-jitter", lesson_id="retries") == 1
    assert store.record_hint("full-jitter") == 2
    failed = store.record_check("full-jitter", passed=False, result={"invariant": "cap"}, seed=3)
    assert (failed.state, failed.attempts, failed.hints_shown) == ("failing", 1, 2)
    assert failed.lesson_id == "retries"
    assert failed.last_result == '{"invariant": "cap"}'
    passed = store.record_check("full-jitter", passed=True, broker="sim")
    failed_later = store.record_check("full-jitter", passed=False)
    assert passed.state == "passed"
    assert (failed_later.passed, failed_later.last_passed, failed_later.attempts) == (
        True,
        False,
        3,
    )
    assert failed_later.passed_at == passed.passed_at
    assert set(store.exercises()) == {"full-jitter"}
    store.reset_exercise("full-jitter")
    assert store.exercise("full-jitter") is None
    assert store.check_consistency() == []


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "progress.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ProgressError, match="written by a newer mqlab"):
        ProgressStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "progress.sqlite3"
    path.write_bytes(b"this is not sqlite at all, just some text " * 100)
    with pytest.raises(ProgressError, match="is not a usable progress database"):
        ProgressStore(path)


def test_an_older_database_is_migrated_and_keeps_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "progress.sqlite3"
    with ProgressStore(path) as old:
        old.record_step("l", 2, "quiz-1", "quiz", correct=True, choice=0)
    version_two = (*progress.MIGRATIONS, ("ALTER TABLE lesson_progress ADD COLUMN note TEXT",))
    monkeypatch.setattr(progress, "MIGRATIONS", version_two)
    monkeypatch.setattr(progress, "SCHEMA_VERSION", len(version_two))
    with ProgressStore(path) as migrated:
        assert migrated.schema_version == SCHEMA_VERSION + 1
        assert migrated.lesson("l").current_step == "quiz-1"
        with migrated._lock:
            columns = [row[1] for row in migrated._db.execute("PRAGMA table_info(lesson_progress)")]
        assert "note" in columns


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "progress.sqlite3"
    ProgressStore(path).close()
    broken = (*progress.MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL"))
    monkeypatch.setattr(progress, "MIGRATIONS", broken)
    monkeypatch.setattr(progress, "SCHEMA_VERSION", len(broken))
    with pytest.raises(ProgressError):
        ProgressStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "extra" not in tables  # the half-done migration was rolled back
    db.close()


def test_the_consistency_check_finds_broken_rows(store: ProgressStore) -> None:
    """Rows another program wrote against the rules (the schema's CHECKs switched off)."""
    store.record_step("l", 0, "quiz-1", "quiz", correct=True, choice=0)
    with store._lock:
        db = store._db
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("UPDATE lesson_progress SET state = 'done'")
        db.execute("UPDATE step_progress SET attempts = 0")
        db.execute(
            "INSERT INTO exercise_progress (exercise_id, passed, updated_at) VALUES ('e', 1, 0)"
        )
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute(
            "INSERT INTO step_progress (lesson_id, step_key, step_index, kind, updated_at)"
            " VALUES ('ghost', 'read-1', 0, 'read', 0)"
        )
    assert sorted(store.check_consistency()) == sorted(
        [
            "lesson l is done without a completion time",
            "step l/quiz-1 is answered with no attempt",
            "exercise e passed without a passing check",
            "step_progress row 2 points at a missing lesson_progress row",
        ]
    )


# --- kill -9 in the middle of writes ----------------------------------------------------------

STEPS = 12

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mqlab.course.progress import ProgressStore

    store = ProgressStore(Path(sys.argv[1]))
    steps = int(sys.argv[2])
    # Resume after the last step recorded, as a learner's next session does.
    record = store.lesson("walk")
    index = record.current_index + 1 if record.state != "new" else 0
    checks = 0
    while True:
        step = index % steps
        store.record_step("walk", step, f"step-{step}", "quiz", correct=True, choice=index)
        if step == steps - 1:
            checks += 1
            store.record_check("ex", passed=checks % 2 == 0, result={"checks": checks})
            store.record_hint("ex")
        index += 1
    """
)


def _total_attempts(path: Path) -> int:
    """Answers recorded so far, read by a separate connection (as another process would)."""
    db = sqlite3.connect(path, timeout=10)
    try:
        row = db.execute("SELECT coalesce(sum(attempts), 0) FROM step_progress").fetchone()
        return int(row[0])
    except sqlite3.OperationalError:  # the writer has not created the tables yet
        return 0
    finally:
        db.close()


def _assert_round_robin_consistent(store: ProgressStore) -> None:
    """Steps are answered in order, round after round, each answer moving the current step in
    the same transaction: so steps up to the current one have one more attempt than the rest."""
    lesson = store.lesson("walk")
    steps = store.steps("walk")
    current = lesson.current_index
    assert lesson.current_step == f"step-{current}"
    attempts = [steps[f"step-{i}"].attempts if f"step-{i}" in steps else 0 for i in range(STEPS)]
    ahead = attempts[0]
    assert ahead >= 1
    assert attempts[: current + 1] == [ahead] * (current + 1), attempts
    assert attempts[current + 1 :] == [ahead - 1] * (STEPS - current - 1), attempts


def test_the_round_robin_check_catches_a_torn_write(store: ProgressStore) -> None:
    """What a write split over two transactions would leave after a kill between them: the
    step answered, the lesson's current step not moved. The check must see it."""
    for index in range(STEPS):
        store.record_step("walk", index, f"step-{index}", "quiz", correct=True)
    _assert_round_robin_consistent(store)
    store.record_step("walk", 0, "step-0", "quiz", correct=True)
    store.move_to("walk", STEPS - 1, f"step-{STEPS - 1}")
    with pytest.raises(AssertionError):
        _assert_round_robin_consistent(store)


def test_sigkill_during_writes_leaves_the_database_consistent(tmp_path: Path) -> None:
    path = tmp_path / "progress.sqlite3"
    chooser = random.Random(0xC0FFEE)
    seen = 0
    for kills in range(1, 7):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(STEPS)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # Let it write for a while (a different amount each time), then kill it wherever it is.
            target = seen + chooser.randint(5, 150)

            def written_or_gone(
                child: subprocess.Popen[bytes] = child, target: int = target
            ) -> bool:
                return child.poll() is not None or _total_attempts(path) >= target

            wait_until(
                written_or_gone, timeout=60, describe=f"the writer to record {target} answers"
            )
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            seen = _total_attempts(path)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        with ProgressStore(path) as reopened:
            assert reopened.check_consistency() == []
            _assert_round_robin_consistent(reopened)
            # nothing that was committed before the kill was lost
            assert _total_attempts(path) >= seen
            exercise = reopened.exercise("ex")
            if exercise is not None:
                # A check and its hint are two transactions: a kill between them leaves the
                # hint unwritten, and the next session does not make it up, so each kill may
                # put the hints one further behind the checks, never ahead of them.
                assert exercise.attempts - kills <= exercise.hints_shown <= exercise.attempts
        seen = _total_attempts(path)
    assert seen > 0
