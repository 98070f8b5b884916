"""Every exercise of the course, in course order, found by id.

Exercises live in their lesson's folder (``lessons/NN-topic/exercises/<id>/``). The order is
the course's: lessons as ``course.yaml`` lists them, and within a lesson the order in which its
``exercise`` steps point at them (an exercise no step points at comes after, by name).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from mqlab.course.exercise import (
    CHECK_FILE,
    EXERCISE_FILE,
    SOLUTION_FOLDER,
    STARTER_FOLDER,
    WRONG_FOLDER,
    Exercise,
    load_exercise,
)
from mqlab.course.library import EXERCISES_FOLDER, course_lessons
from mqlab.course.loader import ContentError


class UnknownExercise(ContentError):
    """No exercise with that id (the message suggests the closest one)."""


@dataclass(frozen=True, slots=True)
class ExerciseEntry:
    """One exercise and where its files are."""

    exercise: Exercise
    folder: Path
    """``lessons/NN-topic/exercises/<id>``."""
    lesson_folder: str
    """``06-retries``: also the folder of the learner's copy in a workspace."""
    number: int
    """1-based position in the course."""

    @property
    def id(self) -> str:
        """The exercise's id."""
        return self.exercise.id

    @property
    def check_file(self) -> Path:
        """The hidden check."""
        return self.folder / CHECK_FILE

    @property
    def starter_file(self) -> Path:
        """What the learner starts from."""
        return self.folder / STARTER_FOLDER / self.exercise.file

    @property
    def solution_file(self) -> Path:
        """The reference solution."""
        return self.folder / SOLUTION_FOLDER / self.exercise.file

    def wrong_file(self, name: str) -> Path:
        """A wrong solution kept for the course's own tests."""
        return self.folder / WRONG_FOLDER / name


def all_exercises(root: Path | None = None) -> list[ExerciseEntry]:
    """Every exercise, in course order.

    Raises:
        ContentError: a lesson or an exercise file is invalid.
    """
    entries: list[ExerciseEntry] = []
    for lesson in course_lessons(root):
        folder = lesson.path.parent / EXERCISES_FOLDER
        if not folder.is_dir():
            continue
        pointed = lesson.lesson.exercise_ids()
        names = sorted(p.name for p in folder.iterdir() if (p / EXERCISE_FILE).is_file())
        ordered = [n for n in pointed if n in names] + [n for n in names if n not in pointed]
        for name in ordered:
            exercise = load_exercise(folder / name / EXERCISE_FILE)
            if exercise.lesson != lesson.lesson.id:
                raise ContentError(
                    folder / name / EXERCISE_FILE,
                    None,
                    f"lesson: {exercise.lesson!r} does not match the folder's lesson "
                    f"{lesson.lesson.id!r}",
                )
            entries.append(ExerciseEntry(exercise, folder / name, lesson.folder, 0))
    seen: set[str] = set()
    numbered = []
    for number, entry in enumerate(entries, start=1):
        if entry.id in seen:
            raise ContentError(entry.folder / EXERCISE_FILE, None, "duplicate exercise id")
        seen.add(entry.id)
        numbered.append(ExerciseEntry(entry.exercise, entry.folder, entry.lesson_folder, number))
    return numbered


def find_exercise(name: str, root: Path | None = None) -> ExerciseEntry:
    """An exercise by id (or by its number in the course).

    Raises:
        UnknownExercise: no such exercise, with a "did you mean" when one is close.
    """
    entries = all_exercises(root)
    by_id = {entry.id: entry for entry in entries}
    if name in by_id:
        return by_id[name]
    if name.isdigit() and 1 <= int(name) <= len(entries):
        return entries[int(name) - 1]
    close = difflib.get_close_matches(name, by_id, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else " (see: mqlab progress)"
    raise UnknownExercise(name, None, f"no such exercise{hint}")
