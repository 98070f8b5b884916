"""The exercise format: what a course author writes in ``lessons/NN-topic/exercises/<id>/``.

An exercise is a folder:

```
exercise.yaml        this model: id, title, task, hints, brokers, invariants, limits
starter/<file>       what ``mqlab init`` copies into the learner's workspace (it must fail)
solution/<file>      the reference solution (never copied; it must pass on every broker)
wrong/<name>.py      plausible wrong solutions, each failing the invariant ``wrong`` names
check.py             the hidden check: drives the learner's module under faults
```

``check.py`` defines ``async def drive(learner, ctx)``: it calls the learner's code through
the per-system interfaces (the same real clients' vocabulary on ``sim`` and on the lab), applies
the seeded faults of :class:`~mqlab.grader.context.GradingContext` and reports what happened as
observations. The verdict never compares printed output: it comes from the exercise's
*invariants* (:mod:`mqlab.grader.invariants`), judged on that recorded history.

The field docstrings are the format's reference (``lessons/README.md`` shows an example).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from mqlab.course.lesson import Slug, Text
from mqlab.course.loader import load_model
from mqlab.course.scenario import BrokerChoice

EXERCISE_FORMAT_VERSION = 1
EXERCISE_FILE = "exercise.yaml"
CHECK_FILE = "check.py"
STARTER_FOLDER = "starter"
SOLUTION_FOLDER = "solution"
WRONG_FOLDER = "wrong"

_FILE_NAME = re.compile(r"^[a-z_][a-z0-9_]*\.py$")


def _module_file(value: str) -> str:
    if not _FILE_NAME.match(value):
        raise ValueError("a Python module name like jitter.py (lower case, digits, _)")
    return value


ModuleFile = Annotated[str, AfterValidator(_module_file)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """What the learner's code may use while it is graded (it runs in a child process)."""

    seconds: float = Field(30.0, gt=0, le=600, allow_inf_nan=False)
    """Wall-clock time for one check run; past it the code is stopped (an endless loop, a
    wait that never ends). It counts from the moment the grader's child has armed its limits
    (not the interpreter's start), and stands still while the check waits on the lab
    (``ctx.off_the_clock()``: a broker it killed restarting)."""
    memory_mb: int = Field(512, ge=64, le=4096)
    """Address space of the child process; allocating past it stops the code."""


class InvariantUse(_Strict):
    """One invariant the verdict is judged on, with its parameters."""

    id: Slug
    """An invariant of the grader (``nothing-lost``, ``no-double-effect`` ...)."""
    params: dict[str, JsonValue] = Field(default_factory=dict)
    """Its parameters (for example ``{base: 0.1, cap: 2.0}`` for jitter bounds). Every
    invariant also takes ``prefix``: judge only the observations whose ``message_id`` starts
    with it (the check names its operations so, e.g. ``full-`` and ``decorrelated-``)."""


class WrongSolution(_Strict):
    """A plausible wrong solution the grader must catch, and with which invariant."""

    file: ModuleFile
    """The file under ``wrong/``."""
    breaks: Slug
    """The invariant that must fail for it (one of the exercise's invariants)."""
    why: Text
    """What is wrong with it (the mistake a learner makes)."""


class Exercise(_Strict):
    """One ``exercise.yaml``."""

    format_version: Literal[1]
    """Always 1 for this version of mqlab."""
    id: Slug
    """Unique slug, also the folder name."""
    title: Text
    lesson: Slug
    """The id of the lesson it belongs to (the lesson whose folder holds it)."""
    difficulty: Literal[1, 2, 3]
    """1 warm-up, 2 the lesson's core, 3 a stretch."""
    summary: Text
    """The task in markdown: what to write, against which interface, and what the grader
    will do to it (the learner's README shows it)."""
    file: ModuleFile
    """The file the learner edits (in ``starter/`` and ``solution/`` under this name)."""
    brokers: list[BrokerChoice] = Field(min_length=1)
    """Where it can be graded: ``sim`` (always listed: every exercise runs on the simulator)
    and the real systems it also runs on."""
    services: list[Literal["postgres", "redis"]] = Field(default_factory=list)
    """Lab services the check uses on a real run (on ``sim`` in-memory stand-ins are used)."""
    hints: list[Text] = Field(min_length=1, max_length=10)
    """In order: ``mqlab hint`` shows the next one each time."""
    invariants: list[InvariantUse] = Field(min_length=1)
    """What must hold of the recorded history for a pass."""
    faults: Text
    """One sentence: the faults the check applies (shown with a pass: what was proven under
    which faults)."""
    limits: Limits = Limits()
    wrong: list[WrongSolution] = Field(default_factory=list)
    """Wrong solutions the course's own tests feed to the grader."""

    @model_validator(mode="after")
    def _consistent(self) -> Exercise:
        if "sim" not in self.brokers:
            raise ValueError("brokers must include sim: every exercise runs on the simulator")
        ids = [use.id for use in self.invariants]
        for wrong in self.wrong:
            if wrong.breaks not in ids:
                raise ValueError(
                    f"wrong solution {wrong.file} breaks {wrong.breaks!r}, which is not one of "
                    f"the exercise's invariants ({', '.join(ids)})"
                )
        return self

    @property
    def systems(self) -> list[str]:
        """The real systems listed (``sim`` excluded)."""
        return [b for b in self.brokers if b != "sim"]


def load_exercise(path: Path) -> Exercise:
    """Load and validate one ``exercise.yaml``.

    Raises:
        ContentError: ``path:line: what is wrong``.
    """
    from mqlab.course.loader import ContentError

    exercise = load_model(Exercise, path)
    if exercise.id != path.parent.name:
        raise ContentError(
            path, None, f"id {exercise.id!r} must match the folder name {path.parent.name!r}"
        )
    return exercise
