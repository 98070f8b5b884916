"""The lesson library: find and load lessons by id, and check every reference they make.

Lessons live in ``lessons/`` (see :func:`mqlab.course.content.content_dir`): ``course.yaml``
gives the order, each lesson is ``NN-topic/lesson.yaml`` and its exercises are
``NN-topic/exercises/<id>/exercise.yaml``. A lesson points at scenarios (``scenarios/<id>.yaml``),
exercises, diagrams and pattern experiments; :func:`validate` checks all of them and returns one
:class:`~mqlab.course.loader.ContentError` (``path:line: message``) per problem.

Pattern experiments are run by the player (the activities layer), so this module does not know
them: the caller passes a :class:`PatternCatalog` that checks an experiment's ``pattern``,
``params`` and ``vary``.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import JsonValue, ValidationError

from mqlab.course.content import content_dir
from mqlab.course.diagrams import DIAGRAM_NAMES
from mqlab.course.lesson import (
    Course,
    Experiment,
    Lesson,
    Location,
    Problem,
    lesson_problems,
)
from mqlab.course.loader import ContentError, PathKey, line_for, load_model, parse_yaml
from mqlab.course.scenario import LedgerExpectation, Scenario, load_scenario

COURSE_FILE = "course.yaml"
LESSON_FILE = "lesson.yaml"
EXERCISES_FOLDER = "exercises"
EXERCISE_FILE = "exercise.yaml"

LESSON_FOLDER = re.compile(r"^(\d{2})-([a-z0-9][a-z0-9-]*)$")
"""``NN-topic``: two digits, a dash, the lesson's id."""

LEDGER_ROWS: tuple[str, ...] = tuple(LedgerExpectation.model_fields)
"""Names an experiment on a scenario can ``compare`` (the scenario format's ``expect`` keys)."""
DEFAULT_COMPARE: tuple[str, ...] = ("produced", "lost", "duplicated")
"""What a scenario experiment compares when it does not say."""


class UnknownLesson(ContentError):
    """No lesson with that id, folder name or number (the message suggests the closest one)."""


class UnknownScenarioReference(ContentError):
    """A lesson names a scenario that is not in ``scenarios/``."""


class OverrideError(ValueError):
    """A variant's ``set`` does not apply to its scenario, or the result is not a valid scenario.

    ``key`` is the ``set`` entry at fault (None when the combination of entries is).
    """

    def __init__(self, key: str | None, message: str) -> None:
        self.key = key
        super().__init__(message)


class PatternCatalog(Protocol):
    """The pattern experiments a lesson may name (implemented by the player's registry)."""

    def experiment_problems(self, experiment: Experiment) -> list[Problem]:
        """What is wrong with ``experiment``'s ``pattern``, ``params``, ``vary`` and ``compare``;
        locations are relative to the experiment (``("pattern",)``, ``("params", "clients")``)."""
        ...


@dataclass(frozen=True, slots=True)
class LessonEntry:
    """A lesson of the course, where it is, and its place in the order."""

    number: int
    """1-based position in ``course.yaml``."""
    folder: str
    """``02-kafka-concepts``."""
    path: Path
    """The lesson file."""
    lesson: Lesson


def lessons_dir() -> Path:
    """The ``lessons/`` folder this mqlab uses."""
    return content_dir("lessons")


# --- loading ------------------------------------------------------------------------------


def load_course(root: Path | None = None) -> Course:
    """``course.yaml`` of ``root`` (default: the shipped lessons), validated on its own.

    Raises:
        ContentError: ``path:line: message``.
    """
    return load_model(Course, (root or lessons_dir()) / COURSE_FILE)


def load_lesson(path: Path) -> Lesson:
    """Load one lesson file and check it on its own (not its references to other files).

    Raises:
        ContentError: the first problem, as ``path:line: message``.
    """
    lesson = load_model(Lesson, path)
    problems = _folder_problems(lesson, path) + lesson_problems(lesson)
    if problems:
        raise _errors(path, problems)[0]
    return lesson


def course_lessons(root: Path | None = None) -> list[LessonEntry]:
    """Every lesson of the course, in the course's order.

    Raises:
        ContentError: course.yaml or a lesson is invalid, or a listed folder is missing.
    """
    folder = root or lessons_dir()
    course = load_course(folder)
    problems = _course_problems(folder, course)
    if problems:
        raise problems[0]
    return [
        LessonEntry(
            number, name, folder / name / LESSON_FILE, load_lesson(folder / name / LESSON_FILE)
        )
        for number, name in enumerate(course.lessons, start=1)
    ]


def find_lesson(name: str, root: Path | None = None) -> LessonEntry:
    """A lesson by id (``kafka-concepts``), folder (``02-kafka-concepts``), number (``2``) or
    path (a ``lesson.yaml`` or its folder).

    Raises:
        UnknownLesson: no such lesson; with a "did you mean" when one is close.
        ContentError: the lesson (or course.yaml) is invalid.
    """
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or (candidate / LESSON_FILE).is_file():
        path = candidate if candidate.suffix in (".yaml", ".yml") else candidate / LESSON_FILE
        return LessonEntry(0, path.parent.name, path, load_lesson(path))
    entries = course_lessons(root)
    for entry in entries:
        if name in (entry.lesson.id, entry.folder) or name == str(entry.number):
            return entry
    names = [entry.lesson.id for entry in entries] + [entry.folder for entry in entries]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else " (see: mqlab lessons list)"
    raise UnknownLesson(name, None, f"no such lesson{hint}")


# --- scenarios, seen from a lesson --------------------------------------------------------


def find_scenario(scenario_id: str, directory: Path | None = None) -> Scenario:
    """The scenario ``scenarios/<id>.yaml``.

    Raises:
        UnknownScenarioReference: no such file (with a "did you mean").
        ContentError: the scenario file is invalid.
    """
    folder = directory or content_dir("scenarios")
    path = folder / f"{scenario_id}.yaml"
    if not path.is_file():
        known = [p.stem for p in folder.glob("*.yaml")] if folder.is_dir() else []
        close = difflib.get_close_matches(scenario_id, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownScenarioReference(path, None, f"no scenario {scenario_id!r}{hint}")
    return load_scenario(path)


_PLAIN_SEGMENT = re.compile(r"[^.\[\]]+")


def parse_override_path(text: str) -> list[str | int]:
    """``steps.0.produce.producer.acks`` -> ``["steps", 0, "produce", "producer", "acks"]``.

    Digits are list indexes; ``[min.insync.replicas]`` is one key that contains dots.

    Raises:
        OverrideError: the path is malformed.
    """
    parts: list[str | int] = []
    position = 0
    while position < len(text):
        if text[position] == "[":
            end = text.find("]", position)
            if end <= position + 1:
                raise OverrideError(text, "an unclosed or empty [...] in the path")
            parts.append(text[position + 1 : end])
            position = end + 1
        else:
            match = _PLAIN_SEGMENT.match(text, position)
            if match is None:
                raise OverrideError(text, "an empty segment in the path")
            token = match.group()
            parts.append(int(token) if token.isdigit() else token)
            position = match.end()
        if position < len(text):
            if text[position] == ".":
                position += 1
                if position == len(text):
                    raise OverrideError(text, "the path ends with a dot")
            elif text[position] != "[":
                raise OverrideError(text, f"unexpected {text[position]!r} in the path")
    if not parts:
        raise OverrideError(text, "an empty path")
    return parts


def apply_overrides(scenario: Scenario, overrides: Mapping[str, JsonValue]) -> Scenario:
    """``scenario`` with a variant's ``set`` applied, validated again as a scenario.

    Raises:
        OverrideError: a path does not fit the document, or the result is invalid.
    """
    document: dict[str, Any] = copy.deepcopy(
        scenario.model_dump(mode="json", exclude_unset=True, by_alias=True)
    )
    parsed: dict[str, list[str | int]] = {}
    for key, value in overrides.items():
        parts = parse_override_path(key)
        parsed[key] = parts
        _set_path(document, parts, copy.deepcopy(value), key)
    try:
        return Scenario.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        location = [part for part in first["loc"] if isinstance(part, int | str)]
        culprit = _override_for(location, parsed)
        where = describe_location(location)
        message = f"the changed scenario is invalid: {where + ': ' if where else ''}{first['msg']}"
        raise OverrideError(culprit, message) from None


def _set_path(document: dict[str, Any], parts: list[str | int], value: Any, key: str) -> None:
    node: Any = document
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        walked = describe_location(parts[:depth]) or "the scenario"
        if isinstance(node, list):
            if not isinstance(part, int):
                raise OverrideError(key, f"{walked} is a list: use an index, not {part!r}")
            if not 0 <= part < len(node):
                raise OverrideError(key, f"{walked} has {len(node)} items: no index {part}")
            if last:
                node[part] = value
            else:
                node = node[part]
        elif isinstance(node, dict):
            name = str(part)
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
        else:
            raise OverrideError(key, f"{walked} is a value ({node!r}), not a mapping or a list")


def _override_for(
    location: Sequence[str | int], parsed: Mapping[str, list[str | int]]
) -> str | None:
    """The ``set`` key whose path leads to (or into) the invalid value, if one does."""
    best: tuple[int, str] | None = None
    for key, parts in parsed.items():
        shared = 0
        for mine, theirs in zip(parts, location, strict=False):
            if str(mine) != str(theirs):
                break
            shared += 1
        if shared and (best is None or shared > best[0]):
            best = (shared, key)
    if best is not None:
        return best[1]
    return next(iter(parsed)) if len(parsed) == 1 else None


def describe_location(location: Sequence[str | int]) -> str:
    """``("steps", 3, "quiz", "answer")`` -> ``steps[3].quiz.answer`` (keys with dots quoted)."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "." in part or "[" in part or " " in part:
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


# --- validation ---------------------------------------------------------------------------


def validate(
    path: Path | None = None,
    *,
    patterns: PatternCatalog,
    scenarios: Path | None = None,
) -> list[ContentError]:
    """Every problem in the course (default), a lessons folder, one lesson or course.yaml.

    ``path`` may be a folder with ``course.yaml`` (the whole course: course.yaml, every lesson,
    every reference), a lesson folder or ``lesson.yaml`` (that lesson and its references) or a
    ``course.yaml`` (the order and the folders only). ``scenarios`` is where scenario references
    are looked up (default: the shipped ``scenarios/``).
    """
    lookup = _ScenarioLookup(scenarios)
    target = path if path is not None else lessons_dir()
    if target.is_dir() and (target / COURSE_FILE).is_file():
        return _validate_course(target, patterns, lookup)
    if target.is_dir() and (target / LESSON_FILE).is_file():
        return _validate_lesson(target / LESSON_FILE, patterns, lookup)
    if target.is_file() and target.name == COURSE_FILE:
        try:
            course = load_model(Course, target)
        except ContentError as error:
            return [error]
        return _course_problems(target.parent, course)
    if target.is_file():
        return _validate_lesson(target, patterns, lookup)
    if target.is_dir():
        return [ContentError(target, None, f"neither {COURSE_FILE} nor {LESSON_FILE} here")]
    return [ContentError(target, None, "no such file or folder")]


def _validate_course(
    root: Path, patterns: PatternCatalog, lookup: _ScenarioLookup
) -> list[ContentError]:
    course: Course | None
    try:
        course = load_model(Course, root / COURSE_FILE)
    except ContentError as error:
        course, errors = None, [error]
    else:
        errors = _course_problems(root, course)
    folders = course.lessons if course is not None else _lesson_folders(root)
    owners: dict[str, str] = {}
    for name in dict.fromkeys(folders):
        path = root / name / LESSON_FILE
        if not path.is_file():
            continue  # reported by _course_problems
        found, lesson = _check_lesson(path, patterns, lookup)
        errors.extend(found)
        if course is None or lesson is None:
            continue
        if lesson.id in owners:
            errors.append(
                _error_at(
                    root / COURSE_FILE,
                    ("lessons", course.lessons.index(name)),
                    f"lesson id {lesson.id!r} is already the id of {owners[lesson.id]}",
                )
            )
        owners.setdefault(lesson.id, name)
    return errors


def _lesson_folders(root: Path) -> list[str]:
    """Sub-folders of ``root`` that are not hidden (what course.yaml must list)."""
    return sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir() and not child.name.startswith((".", "_"))
    )


def _course_problems(root: Path, course: Course) -> list[ContentError]:
    path = root / COURSE_FILE
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, name in enumerate(course.lessons):
        where = ("lessons", index)
        if name in seen:
            problems.append(Problem(where, f"{name!r} is already listed as lessons[{seen[name]}]"))
            continue
        seen[name] = index
        if not LESSON_FOLDER.match(name):
            problems.append(
                Problem(where, f"{name!r} is not a lesson folder name (NN-topic, e.g. 02-kafka)")
            )
        elif not (root / name).is_dir():
            problems.append(Problem(where, f"no folder {name!r} next to {COURSE_FILE}"))
        elif not (root / name / LESSON_FILE).is_file():
            problems.append(Problem(where, f"folder {name!r} has no {LESSON_FILE}"))
    for name in _lesson_folders(root):
        if name not in seen:
            problems.append(Problem(("lessons",), f"folder {name!r} is not listed in lessons"))
    return _errors(path, problems)


def _validate_lesson(
    path: Path, patterns: PatternCatalog, lookup: _ScenarioLookup
) -> list[ContentError]:
    return _check_lesson(path, patterns, lookup)[0]


def _check_lesson(
    path: Path, patterns: PatternCatalog, lookup: _ScenarioLookup
) -> tuple[list[ContentError], Lesson | None]:
    """Every problem of one lesson file, and the lesson when it loaded."""
    try:
        lesson = load_model(Lesson, path)
    except ContentError as error:
        return [error], None
    problems = _folder_problems(lesson, path) + lesson_problems(lesson)
    problems += reference_problems(lesson, path.parent, patterns, lookup.find)
    return _errors(path, problems), lesson


def _folder_problems(lesson: Lesson, path: Path) -> list[Problem]:
    match = LESSON_FOLDER.match(path.parent.name)
    if match is None:
        return [
            Problem(
                ("id",),
                f"the lesson's folder {path.parent.name!r} must be named NN-{lesson.id} "
                "(two digits, a dash, the id)",
            )
        ]
    if match.group(2) != lesson.id:
        return [
            Problem(
                ("id",),
                f"id {lesson.id!r} must match the folder {path.parent.name!r} "
                f"(the folder name without its number: {match.group(2)!r})",
            )
        ]
    return []


ScenarioFinder = Callable[[str], Scenario]


class _ScenarioLookup:
    """Scenario references of one validation run, each file loaded once."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._found: dict[str, Scenario | ContentError] = {}

    def find(self, scenario_id: str) -> Scenario:
        if scenario_id not in self._found:
            try:
                self._found[scenario_id] = find_scenario(scenario_id, self.directory)
            except ContentError as error:
                self._found[scenario_id] = error
        found = self._found[scenario_id]
        if isinstance(found, ContentError):
            raise found
        return found


def reference_problems(
    lesson: Lesson,
    folder: Path,
    patterns: PatternCatalog,
    find: ScenarioFinder = find_scenario,
) -> list[Problem]:
    """Every reference of ``lesson`` (in ``folder``) to something outside the file."""
    problems: list[Problem] = []
    for index, step in enumerate(lesson.steps):
        where: Location = ("steps", index, step.kind)
        if step.read is not None and step.read.diagram is not None:
            if step.read.diagram not in DIAGRAM_NAMES:
                known = ", ".join(DIAGRAM_NAMES)
                problems.append(
                    Problem(
                        (*where, "diagram"),
                        f"no diagram {step.read.diagram!r} (known: {known})",
                    )
                )
        elif step.predict is not None:
            predict = step.predict
            scenario = _scenario(predict.scenario, (*where, "scenario"), find, problems)
            if scenario is None:
                continue
            _broker_problems(scenario, predict.broker, where, problems)
            if predict.question is None and scenario.predict is None:
                problems.append(
                    Problem(
                        (*where, "scenario"),
                        f"scenario {scenario.id!r} asks no question of its own: "
                        "give question, choices and answer",
                    )
                )
        elif step.experiment is not None:
            experiment = step.experiment
            if experiment.pattern is not None:
                for problem in patterns.experiment_problems(experiment):
                    problems.append(Problem((*where, *problem.location), problem.message))
                continue
            scenario = _scenario(str(experiment.scenario), (*where, "scenario"), find, problems)
            if scenario is None:
                continue
            _broker_problems(scenario, experiment.broker, where, problems)
            problems.extend(_variant_problems(scenario, experiment, where))
            for position, name in enumerate(experiment.compare):
                if name not in LEDGER_ROWS:
                    close = difflib.get_close_matches(name, LEDGER_ROWS, n=1, cutoff=0.6)
                    hint = (
                        f"did you mean {close[0]!r}?"
                        if close
                        else f"known: {', '.join(LEDGER_ROWS)}"
                    )
                    problems.append(
                        Problem((*where, "compare", position), f"no ledger row {name!r} ({hint})")
                    )
        elif step.exercise is not None:
            exercise_file = folder / EXERCISES_FOLDER / step.exercise.id / EXERCISE_FILE
            if not exercise_file.is_file():
                problems.append(
                    Problem(
                        (*where, "id"),
                        f"no exercise {step.exercise.id!r}: {exercise_file} does not exist",
                    )
                )
    return problems


def _scenario(
    scenario_id: str, location: Location, find: ScenarioFinder, problems: list[Problem]
) -> Scenario | None:
    try:
        scenario = find(scenario_id)
    except UnknownScenarioReference as error:
        problems.append(Problem(location, error.message))
        return None
    except ContentError as error:
        problems.append(Problem(location, f"scenario {scenario_id!r} is invalid: {error}"))
        return None
    if not scenario.runs_on_sim:
        problems.append(
            Problem(location, f"scenario {scenario_id!r} does not run on the simulator (sim)")
        )
    return scenario


def _broker_problems(
    scenario: Scenario, broker: str | None, where: Location, problems: list[Problem]
) -> None:
    if broker is not None and broker not in scenario.systems:
        problems.append(
            Problem(
                (*where, "broker"),
                f"scenario {scenario.id!r} runs on {', '.join(scenario.targets)}, not {broker}",
            )
        )


def _variant_problems(
    scenario: Scenario, experiment: Experiment, where: Location
) -> Iterable[Problem]:
    results: dict[str, int] = {}
    for index, variant in enumerate(experiment.vary.choices):
        at: Location = (*where, "vary", "choices", index)
        try:
            changed = apply_overrides(scenario, variant.overrides)
        except OverrideError as error:
            key = (*at, "set", error.key) if error.key is not None else (*at, "set")
            yield Problem(key, str(error))
            continue
        broker = variant.broker or experiment.broker or changed.targets[0]
        if broker not in changed.targets:
            runs_on = ", ".join(changed.targets)
            place = (*at, "broker") if variant.broker else (*at, "set") if variant.overrides else at
            yield Problem(place, f"this variant runs on {runs_on}, not {broker}")
        fingerprint = f"{broker}:{changed.model_dump_json()}"
        if fingerprint in results:
            yield Problem(at, f"this variant is the same run as choices[{results[fingerprint]}]")
        results.setdefault(fingerprint, index)


def _error_at(
    path: Path, location: Location, message: str, table: dict[PathKey, int] | None = None
) -> ContentError:
    if table is None:
        table = _line_table(path)
    where = describe_location(location)
    return ContentError(
        path, line_for(table, location), f"{where}: {message}" if where else message
    )


def _line_table(path: Path) -> dict[PathKey, int]:
    try:
        return parse_yaml(path)[1]
    except ContentError:
        return {}


def _errors(path: Path, problems: list[Problem]) -> list[ContentError]:
    """Problems of one file as ``path:line: location: message``, in the file's order."""
    if not problems:
        return []
    table = _line_table(path)
    errors = [_error_at(path, p.location, p.message, table) for p in problems]
    return sorted(errors, key=lambda error: error.line or 0)
