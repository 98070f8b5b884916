"""The learner's progress: lessons, steps and exercises, in SQLite under the data dir.

One database file (``progress.sqlite3`` in the platform's user data dir, or in
``MQLAB_DATA_DIR``) is shared by everything that records progress: ``mqlab lessons show``, the
TUI and the grader (``mqlab check`` writes the exercise table). Several processes may use it at
once, and any of them may be killed at any moment, so:

* every write is one ``BEGIN IMMEDIATE ... COMMIT`` transaction that leaves the tables
  consistent on its own (a step's answer and the lesson's current step change together);
* the journal is in WAL mode with ``synchronous=FULL``: a committed write survives a crash of
  the process (and of the machine), an uncommitted one leaves no trace;
* readers never block the writer and wait up to :data:`BUSY_TIMEOUT_MS` for another writer.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` holds one list of
statements per version, applied in order inside one transaction each, so an older database is
brought up to date on open and a newer one (from a later mqlab) is refused rather than damaged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

LessonState = Literal["new", "in_progress", "done"]

DATABASE_NAME = "progress.sqlite3"
BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another process's write to finish before giving up."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # version 1: lessons, steps, exercises
    (
        """
        CREATE TABLE lesson_progress (
            lesson_id     TEXT PRIMARY KEY,
            state         TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
            current_index INTEGER NOT NULL DEFAULT 0 CHECK (current_index >= 0),
            current_step  TEXT,
            started_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            completed_at  REAL,
            CHECK (state <> 'done' OR completed_at IS NOT NULL)
        )
        """,
        """
        CREATE TABLE step_progress (
            lesson_id       TEXT NOT NULL
                            REFERENCES lesson_progress (lesson_id) ON DELETE CASCADE,
            step_key        TEXT NOT NULL,
            step_index      INTEGER NOT NULL CHECK (step_index >= 0),
            kind            TEXT NOT NULL,
            attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            answered        INTEGER NOT NULL DEFAULT 0 CHECK (answered IN (0, 1)),
            correct         INTEGER CHECK (correct IN (0, 1)),
            first_correct   INTEGER CHECK (first_correct IN (0, 1)),
            last_choice     INTEGER,
            prediction_held INTEGER CHECK (prediction_held IN (0, 1)),
            updated_at      REAL NOT NULL,
            PRIMARY KEY (lesson_id, step_key),
            CHECK (answered = 1 OR correct IS NULL)
        )
        """,
        """
        CREATE TABLE exercise_progress (
            exercise_id     TEXT PRIMARY KEY,
            lesson_id       TEXT,
            attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            passed          INTEGER NOT NULL DEFAULT 0 CHECK (passed IN (0, 1)),
            hints_shown     INTEGER NOT NULL DEFAULT 0 CHECK (hints_shown >= 0),
            last_passed     INTEGER CHECK (last_passed IN (0, 1)),
            last_result     TEXT,
            last_broker     TEXT,
            last_seed       INTEGER,
            last_checked_at REAL,
            passed_at       REAL,
            updated_at      REAL NOT NULL,
            CHECK (passed = 0 OR passed_at IS NOT NULL),
            CHECK (attempts > 0 OR last_passed IS NULL)
        )
        """,
    ),
)
"""``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``. Append, never edit."""

SCHEMA_VERSION = len(MIGRATIONS)


class ProgressError(Exception):
    """The progress database cannot be opened or written; ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class LessonProgress:
    """Where the learner is in one lesson."""

    lesson_id: str
    state: LessonState
    current_index: int = 0
    """Index of the step to resume at."""
    current_step: str | None = None
    """Key of that step (see :meth:`mqlab.course.lesson.Lesson.step_keys`)."""
    started_at: float | None = None
    updated_at: float | None = None
    completed_at: float | None = None


@dataclass(frozen=True, slots=True)
class StepProgress:
    """What the learner did at one step."""

    lesson_id: str
    step_key: str
    step_index: int
    kind: str
    attempts: int
    """Answers given (quiz, predict) or times run / walked (experiment, decision)."""
    answered: bool
    """The step was answered (quiz, predict) or done (read, experiment, decision)."""
    correct: bool | None
    """The last answer was right (None for steps without a right answer)."""
    first_correct: bool | None
    """The first answer was right."""
    last_choice: int | None
    prediction_held: bool | None
    """Predict: the run showed what the learner predicted (None: not run, or the run did not
    show the expected outcome)."""
    updated_at: float


@dataclass(frozen=True, slots=True)
class ExerciseProgress:
    """The grader's record of one exercise."""

    exercise_id: str
    lesson_id: str | None
    attempts: int
    """Checks run."""
    passed: bool
    """Some check passed (stays true)."""
    hints_shown: int
    last_passed: bool | None
    last_result: str | None
    """What the grader stored about the last check (its JSON summary)."""
    last_broker: str | None
    last_seed: int | None
    last_checked_at: float | None
    passed_at: float | None

    @property
    def state(self) -> Literal["new", "failing", "passed"]:
        """new (never checked), failing (checked, never passed) or passed."""
        if self.passed:
            return "passed"
        return "failing" if self.attempts else "new"


def data_dir() -> Path:
    """Where mqlab keeps the learner's data: ``MQLAB_DATA_DIR`` or the platform's data dir."""
    override = os.environ.get("MQLAB_DATA_DIR")
    if override:
        return Path(override).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("mqlab")).absolute()


def default_path() -> Path:
    """The progress database of this user."""
    return data_dir() / DATABASE_NAME


def _flag(value: object) -> bool | None:
    return None if value is None else bool(value)


def _int(value: bool | None) -> int | None:
    return None if value is None else int(value)


class ProgressStore:
    """The progress database. Open it, read and record, close it (or use ``with``).

    Safe to share between threads of one process (one connection behind a lock) and between
    processes (SQLite's locking; writers wait up to :data:`BUSY_TIMEOUT_MS`).

    Args:
        path: the database file (default :func:`default_path`); its folder is created.
        clock: seconds since the epoch, for the timestamps (tests pass their own).

    Raises:
        ProgressError: the file is not a progress database, or one from a newer mqlab.
    """

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path or default_path()
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as error:
            raise ProgressError(f"cannot open the progress database {self.path}: {error}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise ProgressError(
                f"{self.path} is not a usable progress database ({error}); "
                "move it away to start with fresh progress"
            ) from None
        except ProgressError:
            self._db.close()
            raise

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (committed writes are already on disk)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ProgressStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The database's ``user_version``."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ProgressError(
                f"{self.path} was written by a newer mqlab (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade mqlab"
            )
        while version < SCHEMA_VERSION:
            with self._transaction() as db:
                # Another process may have migrated while this one waited for the lock.
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                if version >= SCHEMA_VERSION:
                    break
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
            version += 1

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._transaction() as db:
                    yield db
            except sqlite3.OperationalError as error:
                raise ProgressError(f"cannot record progress in {self.path}: {error}") from None

    # --- lessons and steps --------------------------------------------------------------

    def lesson(self, lesson_id: str) -> LessonProgress:
        """Progress of one lesson (state ``new`` when the learner never opened it)."""
        with self._lock:
            row = self._db.execute(
                "SELECT state, current_index, current_step, started_at, updated_at, completed_at"
                " FROM lesson_progress WHERE lesson_id = ?",
                (lesson_id,),
            ).fetchone()
        if row is None:
            return LessonProgress(lesson_id, "new")
        return LessonProgress(lesson_id, row[0], row[1], row[2], row[3], row[4], row[5])

    def lessons(self) -> dict[str, LessonProgress]:
        """Every lesson the learner has opened, by id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT lesson_id, state, current_index, current_step, started_at, updated_at,"
                " completed_at FROM lesson_progress"
            ).fetchall()
        return {row[0]: LessonProgress(*row) for row in rows}

    def steps(self, lesson_id: str) -> dict[str, StepProgress]:
        """What the learner did in a lesson, by step key."""
        with self._lock:
            rows = self._db.execute(
                "SELECT lesson_id, step_key, step_index, kind, attempts, answered, correct,"
                " first_correct, last_choice, prediction_held, updated_at"
                " FROM step_progress WHERE lesson_id = ? ORDER BY step_index",
                (lesson_id,),
            ).fetchall()
        return {
            row[1]: StepProgress(
                lesson_id=row[0],
                step_key=row[1],
                step_index=row[2],
                kind=row[3],
                attempts=row[4],
                answered=bool(row[5]),
                correct=_flag(row[6]),
                first_correct=_flag(row[7]),
                last_choice=row[8],
                prediction_held=_flag(row[9]),
                updated_at=row[10],
            )
            for row in rows
        }

    @staticmethod
    def _touch_lesson(
        db: sqlite3.Connection, lesson_id: str, index: int, key: str, now: float
    ) -> None:
        """Make ``key`` the lesson's current step (starting the lesson if it is new)."""
        db.execute(
            "INSERT INTO lesson_progress"
            " (lesson_id, state, current_index, current_step, started_at, updated_at)"
            " VALUES (?, 'in_progress', ?, ?, ?, ?)"
            " ON CONFLICT (lesson_id) DO UPDATE SET current_index = excluded.current_index,"
            " current_step = excluded.current_step, updated_at = excluded.updated_at",
            (lesson_id, index, key, now, now),
        )

    def move_to(self, lesson_id: str, index: int, step_key: str) -> None:
        """The learner is now at step ``index`` (``step_key``): where a later session resumes.
        A lesson that is done stays done."""
        now = self._clock()
        with self._write() as db:
            self._touch_lesson(db, lesson_id, index, step_key, now)

    def record_step(
        self,
        lesson_id: str,
        index: int,
        step_key: str,
        kind: str,
        *,
        correct: bool | None = None,
        choice: int | None = None,
        prediction_held: bool | None = None,
    ) -> StepProgress:
        """Record that the learner answered (quiz, predict) or did (read, experiment, decision)
        a step, and make it the lesson's current step: both in one transaction."""
        now = self._clock()
        with self._write() as db:
            self._touch_lesson(db, lesson_id, index, step_key, now)
            db.execute(
                "INSERT INTO step_progress (lesson_id, step_key, step_index, kind, attempts,"
                " answered, correct, first_correct, last_choice, prediction_held, updated_at)"
                " VALUES (?, ?, ?, ?, 1, 1, ?, ?, ?, ?, ?)"
                " ON CONFLICT (lesson_id, step_key) DO UPDATE SET"
                " step_index = excluded.step_index, kind = excluded.kind,"
                " attempts = attempts + 1, answered = 1, correct = excluded.correct,"
                " first_correct = coalesce(first_correct, excluded.first_correct),"
                " last_choice = excluded.last_choice,"
                " prediction_held = coalesce(excluded.prediction_held, prediction_held),"
                " updated_at = excluded.updated_at",
                (
                    lesson_id,
                    step_key,
                    index,
                    kind,
                    _int(correct),
                    _int(correct),
                    choice,
                    _int(prediction_held),
                    now,
                ),
            )
        return self.steps(lesson_id)[step_key]

    def complete_lesson(self, lesson_id: str, index: int, step_key: str) -> None:
        """Mark a lesson done (the learner went past its last step)."""
        now = self._clock()
        with self._write() as db:
            self._touch_lesson(db, lesson_id, index, step_key, now)
            db.execute(
                "UPDATE lesson_progress SET state = 'done',"
                " completed_at = coalesce(completed_at, ?) WHERE lesson_id = ?",
                (now, lesson_id),
            )

    def reset_lesson(self, lesson_id: str) -> None:
        """Forget a lesson's progress (its steps too); its exercises are kept."""
        with self._write() as db:
            db.execute("DELETE FROM lesson_progress WHERE lesson_id = ?", (lesson_id,))

    # --- exercises (written by the grader) ----------------------------------------------

    def exercise(self, exercise_id: str) -> ExerciseProgress | None:
        """The grader's record of an exercise (None: never checked, no hint shown)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_EXERCISE_COLUMNS} FROM exercise_progress WHERE exercise_id = ?",
                (exercise_id,),
            ).fetchone()
        return None if row is None else _exercise(row)

    def exercises(self) -> dict[str, ExerciseProgress]:
        """Every exercise the grader has a record of, by id."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_EXERCISE_COLUMNS} FROM exercise_progress").fetchall()
        return {row[0]: _exercise(row) for row in rows}

    def record_check(
        self,
        exercise_id: str,
        *,
        passed: bool,
        result: object = None,
        lesson_id: str | None = None,
        broker: str | None = None,
        seed: int | None = None,
    ) -> ExerciseProgress:
        """Record one check of an exercise: one more attempt, its verdict and its result
        (stored as JSON). ``passed`` stays true once a check has passed."""
        now = self._clock()
        stored = None if result is None else json.dumps(result, sort_keys=True, default=str)
        with self._write() as db:
            db.execute(
                "INSERT INTO exercise_progress (exercise_id, lesson_id, attempts, passed,"
                " last_passed, last_result, last_broker, last_seed, last_checked_at, passed_at,"
                " updated_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (exercise_id) DO UPDATE SET"
                " lesson_id = coalesce(excluded.lesson_id, lesson_id),"
                " attempts = attempts + 1, passed = max(passed, excluded.passed),"
                " last_passed = excluded.last_passed, last_result = excluded.last_result,"
                " last_broker = excluded.last_broker, last_seed = excluded.last_seed,"
                " last_checked_at = excluded.last_checked_at,"
                " passed_at = coalesce(passed_at, excluded.passed_at),"
                " updated_at = excluded.updated_at",
                (
                    exercise_id,
                    lesson_id,
                    int(passed),
                    int(passed),
                    stored,
                    broker,
                    seed,
                    now,
                    now if passed else None,
                    now,
                ),
            )
        found = self.exercise(exercise_id)
        assert found is not None
        return found

    def record_hint(self, exercise_id: str, *, lesson_id: str | None = None) -> int:
        """One more hint shown for an exercise; returns how many have been shown."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "INSERT INTO exercise_progress (exercise_id, lesson_id, hints_shown, updated_at)"
                " VALUES (?, ?, 1, ?) ON CONFLICT (exercise_id) DO UPDATE SET"
                " hints_shown = hints_shown + 1,"
                " lesson_id = coalesce(excluded.lesson_id, lesson_id),"
                " updated_at = excluded.updated_at",
                (exercise_id, lesson_id, now),
            )
            shown = db.execute(
                "SELECT hints_shown FROM exercise_progress WHERE exercise_id = ?", (exercise_id,)
            ).fetchone()[0]
        return int(shown)

    def reset_exercise(self, exercise_id: str) -> None:
        """Forget an exercise's record (attempts, hints, results)."""
        with self._write() as db:
            db.execute("DELETE FROM exercise_progress WHERE exercise_id = ?", (exercise_id,))

    # --- health -------------------------------------------------------------------------

    def check_consistency(self) -> list[str]:
        """Problems found in the database file and its rows (empty: consistent).

        SQLite's own ``integrity_check`` and ``foreign_key_check``, then the rules the schema
        states, re-checked on the rows (a database written by other code could break them).
        """
        problems: list[str] = []
        with self._lock:
            db = self._db
            integrity = [row[0] for row in db.execute("PRAGMA integrity_check").fetchall()]
            if integrity != ["ok"]:
                problems += [f"integrity: {line}" for line in integrity]
            for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"{table} row {rowid} points at a missing {parent} row")
            for (lesson_id,) in db.execute(
                "SELECT lesson_id FROM lesson_progress"
                " WHERE state = 'done' AND completed_at IS NULL"
            ):
                problems.append(f"lesson {lesson_id} is done without a completion time")
            for lesson_id, key in db.execute(
                "SELECT lesson_id, step_key FROM step_progress WHERE answered = 1 AND attempts = 0"
            ):
                problems.append(f"step {lesson_id}/{key} is answered with no attempt")
            for (exercise_id,) in db.execute(
                "SELECT exercise_id FROM exercise_progress WHERE passed = 1 AND"
                " (passed_at IS NULL OR attempts = 0)"
            ):
                problems.append(f"exercise {exercise_id} passed without a passing check")
        return problems


_EXERCISE_COLUMNS = (
    "exercise_id, lesson_id, attempts, passed, hints_shown, last_passed, last_result,"
    " last_broker, last_seed, last_checked_at, passed_at"
)


def _exercise(row: Any) -> ExerciseProgress:
    return ExerciseProgress(
        exercise_id=row[0],
        lesson_id=row[1],
        attempts=row[2],
        passed=bool(row[3]),
        hints_shown=row[4],
        last_passed=_flag(row[5]),
        last_result=row[6],
        last_broker=row[7],
        last_seed=row[8],
        last_checked_at=row[9],
        passed_at=row[10],
    )
