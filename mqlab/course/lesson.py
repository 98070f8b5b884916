"""The lesson format: what a course author writes in ``lessons/course.yaml`` and
``lessons/NN-topic/lesson.yaml``.

A lesson is a list of steps, each of one kind: *read* (markdown, optionally with a diagram drawn
from a broker's live state), *quiz* (a question whose every wrong choice says why it is wrong),
*predict* (commit to an answer, then run a scenario and see whether it held), *experiment* (run
variants of a scenario or a pattern and compare the outcomes), *exercise* (code graded by
``mqlab check``) and *decision* (walk a decision tree to a recommendation with its reasons and
trade-offs).

The field docstrings below are the format's reference documentation (``lessons/README.md``
explains it with an example). Every model forbids unknown keys, so a misspelled key is an error
with its line, not a silently ignored setting.

Checks that need more than one field at a time (an answer inside its choices, a sound decision
tree, unique step ids) are not pydantic validators: :func:`lesson_problems` returns them with the
exact location of the offending value, which :mod:`mqlab.course.library` turns into
``path:line: message``. Checks that need other files (scenarios, exercises, pattern experiments)
are in :mod:`mqlab.course.library` too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from mqlab.course.scenario import System

LESSON_FORMAT_VERSION = 1

StepKind = Literal["read", "quiz", "predict", "experiment", "exercise", "decision"]
STEP_KINDS: tuple[StepKind, ...] = ("read", "quiz", "predict", "experiment", "exercise", "decision")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")

Location = tuple[str | int, ...]
"""Where a value sits in a lesson document: keys and list indexes, as in a pydantic error."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError("use lower-case letters, digits and '-' only")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
"""A string that says something (empty or blank text is refused)."""
Slug = Annotated[str, AfterValidator(_slug)]
"""An identifier: lower-case letters, digits and '-'."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- read ---------------------------------------------------------------------------------


class Read(_Strict):
    """Text to read, optionally with a diagram."""

    title: Text
    """The step's heading."""
    text: Text
    """Markdown (rendered with rich: headings, lists, tables, code fences)."""
    diagram: str | None = None
    """A diagram drawn under the text: ``kafka-cluster`` (the cluster, a topic's partitions with
    leaders and ISR, a consumer group's assignment and the produce/consume flow). It is drawn from
    a live ``inspect()`` of the learner's broker (the simulator's, or the lab's Kafka when the
    learner runs on the lab) and from a built-in example snapshot when that is not possible."""


# --- quiz ---------------------------------------------------------------------------------


class Choice(_Strict):
    """One answer of a quiz."""

    text: Text
    """The answer as the learner sees it."""
    why: str | None = None
    """Required for every wrong choice: why it is wrong (shown when the learner picks it).
    Refused on the right choice, whose reasoning belongs in the quiz's ``explain``."""


class Quiz(_Strict):
    """A question with one right answer."""

    question: Text
    """The question (markdown)."""
    choices: list[Choice] = Field(min_length=2)
    """At least two choices, shown in this order."""
    answer: int = Field(ge=0)
    """Index of the right choice in ``choices`` (0-based)."""
    explain: Text
    """Shown after any answer: why the right one is right."""


# --- predict ------------------------------------------------------------------------------


class Predict(_Strict):
    """Predict-then-run: the learner commits to an answer, then the scenario runs and the ledger,
    the scenario's explanation and whether the prediction held are revealed."""

    scenario: Slug
    """Id of a scenario in ``scenarios/`` (the file name without ``.yaml``)."""
    broker: System | None = None
    """The system to run it on (kafka, rabbitmq, sqs, nats); default: the learner's preferred
    system if the scenario runs on it, else the scenario's first. It must be one of the
    scenario's systems. Whether it runs on the simulator or on the lab is the learner's choice."""
    question: Text | None = None
    """The question; default: the scenario's own ``predict`` block. ``question``, ``choices`` and
    ``answer`` are given together or not at all."""
    choices: list[Text] | None = Field(None, min_length=2)
    """The choices of ``question``."""
    answer: int | None = Field(None, ge=0)
    """Index of the right choice (0-based)."""
    after: str | None = None
    """Markdown shown after the reveal: the point the lesson makes with this run."""

    @model_validator(mode="after")
    def _question_complete(self) -> Predict:
        given = [self.question is not None, self.choices is not None, self.answer is not None]
        if any(given) and not all(given):
            raise ValueError("question, choices and answer are given together or not at all")
        return self


# --- experiment ---------------------------------------------------------------------------


class Variant(_Strict):
    """One value of the experiment's parameter: what it changes (``set``), where it runs
    (``broker``), or both."""

    label: Text
    """How the learner sees this variant (a column heading of the comparison)."""
    overrides: dict[str, JsonValue] = Field(default_factory=dict, alias="set")
    """``set``: what this variant changes. For a scenario: dotted paths into the scenario
    document (``steps.0.produce.producer.acks: 1``; list items by index, a key containing dots in
    brackets: ``channel.kafka.config[min.insync.replicas]: "1"``); missing mappings on the way
    are created, and the changed scenario is validated again. For a pattern experiment: the
    pattern's parameter names (``strategy: full-jitter``)."""
    broker: System | None = None
    """Scenario experiments: run this variant on this system (one of the scenario's), so the
    same fault script can be compared across brokers. Default: the experiment's ``broker``."""

    @model_validator(mode="after")
    def _changes_something(self) -> Variant:
        if not self.overrides and self.broker is None:
            raise ValueError("a variant needs set (what it changes) or broker (where it runs)")
        return self


class Vary(_Strict):
    """The one parameter the learner picks."""

    name: Text
    """What is varied (``acks``, ``strategy``, ``clients``)."""
    choices: list[Variant] = Field(min_length=2)
    """At least two variants, with different labels."""


class Experiment(_Strict):
    """Run variants of a scenario (or of a pattern experiment) and compare them side by side.

    Either ``scenario`` (with an optional ``broker``) or ``pattern`` (with optional ``params``).
    """

    title: Text
    """The step's heading."""
    text: str = ""
    """Markdown shown before the learner picks a variant."""
    scenario: Slug | None = None
    """Id of a scenario in ``scenarios/``."""
    broker: System | None = None
    """With ``scenario``: the system to run it on (as in predict)."""
    pattern: Slug | None = None
    """Id of a pattern experiment (``mqlab lessons validate`` lists the known ones)."""
    params: dict[str, JsonValue] = Field(default_factory=dict)
    """With ``pattern``: parameters shared by every variant (``clients: 20``)."""
    vary: Vary
    """The parameter the learner picks, and its variants."""
    compare: list[Text] = Field(default_factory=list)
    """The rows shown side by side. For a scenario: ledger rows (the scenario format's
    ``expect`` keys: produced, lost, duplicated ...; default produced, lost, duplicated). For a
    pattern: the pattern's metrics (default: all of them)."""

    @model_validator(mode="after")
    def _one_subject(self) -> Experiment:
        if (self.scenario is None) == (self.pattern is None):
            raise ValueError("an experiment runs either a scenario or a pattern (exactly one)")
        if self.pattern is not None and self.broker is not None:
            raise ValueError("broker applies to a scenario, not to a pattern experiment")
        if self.scenario is not None and self.params:
            raise ValueError("params apply to a pattern experiment; a scenario variant uses set")
        return self


# --- exercise -----------------------------------------------------------------------------


class Exercise(_Strict):
    """An exercise graded by ``mqlab check``."""

    id: Slug
    """The exercise's id: ``lessons/NN-topic/exercises/<id>/exercise.yaml`` must exist."""


# --- decision -----------------------------------------------------------------------------


class DecisionOption(_Strict):
    """An answer to a node's question; leads to another node (``next``) or a leaf (``leaf``)."""

    label: Text
    """The answer as the learner sees it."""
    next: str | None = None
    """Name of the node asked next."""
    leaf: str | None = None
    """Name of the leaf (recommendation) this answer ends in."""

    @model_validator(mode="after")
    def _one_target(self) -> DecisionOption:
        if (self.next is None) == (self.leaf is None):
            raise ValueError("an option has exactly one of next (a node) or leaf")
        return self

    @property
    def target(self) -> str:
        """The node or leaf name this option leads to."""
        return self.next if self.next is not None else str(self.leaf)


class DecisionNode(_Strict):
    """A question of the tree."""

    question: Text
    """The question asked at this node."""
    options: list[DecisionOption] = Field(min_length=2)
    """At least two answers."""


class DecisionLeaf(_Strict):
    """Where a walk ends: a recommendation with its reasons and its trade-offs."""

    recommend: Text
    """The recommendation (``Kafka``, ``SNS + SQS``)."""
    reasons: list[Text] = Field(min_length=1)
    """Why it fits."""
    tradeoffs: list[Text] = Field(min_length=1)
    """What it costs, and when it stops fitting."""


class Decision(_Strict):
    """An interactive walk of a decision tree.

    The tree must be sound: ``start`` names a node, every ``next`` a node and every ``leaf`` a
    leaf, there is no cycle, every node and every leaf is reachable from ``start``, and no name is
    both a node and a leaf.
    """

    title: Text
    """The step's heading."""
    text: str = ""
    """Markdown shown before the first question."""
    start: str
    """Name of the first node."""
    nodes: dict[str, DecisionNode] = Field(min_length=1)
    """The questions, by name."""
    leaves: dict[str, DecisionLeaf] = Field(min_length=1)
    """The recommendations, by name."""
    too_simple: str | None = None
    """Markdown: where the tree is too simple (shown once the learner has reached a leaf)."""

    def paths_to_leaves(self) -> dict[str, tuple[int, ...]]:
        """For every reachable leaf, the option indexes of one shortest walk from ``start``.

        Only follows names that exist, and never revisits a node, so it terminates on unsound
        trees too (validation uses it to find unreachable leaves).
        """
        paths: dict[str, tuple[int, ...]] = {}
        if self.start not in self.nodes:
            return paths
        frontier: list[tuple[str, tuple[int, ...]]] = [(self.start, ())]
        seen = {self.start}
        while frontier:
            following: list[tuple[str, tuple[int, ...]]] = []
            for name, path in frontier:
                for index, option in enumerate(self.nodes[name].options):
                    walked = (*path, index)
                    if option.leaf is not None:
                        if option.leaf in self.leaves and option.leaf not in paths:
                            paths[option.leaf] = walked
                    elif option.next in self.nodes and option.next not in seen:
                        seen.add(option.next)
                        following.append((option.next, walked))
            frontier = following
        return paths

    def reachable_nodes(self) -> set[str]:
        """Names of the nodes a walk from ``start`` can visit."""
        if self.start not in self.nodes:
            return set()
        seen = {self.start}
        stack = [self.start]
        while stack:
            for option in self.nodes[stack.pop()].options:
                if option.next in self.nodes and option.next not in seen:
                    seen.add(option.next)
                    stack.append(option.next)
        return seen


# --- steps, lesson, course ----------------------------------------------------------------


class LessonStep(_Strict):
    """One step: exactly one kind key, and an optional ``id``."""

    id: Slug | None = None
    """Names the step, so the learner's progress stays attached to it when steps are added or
    moved. Without one the step is known as ``<kind>-<n>`` (``quiz-2``: the lesson's second
    quiz). Unique within the lesson."""
    read: Read | None = None
    quiz: Quiz | None = None
    predict: Predict | None = None
    experiment: Experiment | None = None
    exercise: Exercise | None = None
    decision: Decision | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> LessonStep:
        kinds = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise ValueError(f"a step has exactly one of {', '.join(STEP_KINDS)} (found: {found})")
        return self

    @property
    def kind(self) -> StepKind:
        """Which kind of step this is."""
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)

    @property
    def body(self) -> Read | Quiz | Predict | Experiment | Exercise | Decision:
        """The step's content (the model under its kind key)."""
        value: Read | Quiz | Predict | Experiment | Exercise | Decision = getattr(self, self.kind)
        return value


class Lesson(_Strict):
    """One ``lessons/NN-topic/lesson.yaml``."""

    format_version: Literal[1]
    """Always 1 for this version of mqlab."""
    id: Slug
    """The folder name without its ``NN-`` prefix (``kafka-concepts`` in
    ``02-kafka-concepts/``)."""
    title: Text
    """Shown on the course map and as the lesson's heading."""
    summary: Text
    """One or two sentences: what the lesson teaches."""
    minutes: int = Field(ge=1, le=600)
    """Rough time to take it, in minutes."""
    sources: list[Text] = Field(min_length=1)
    """The documentation pages and papers the lesson stands on, by title (and section)."""
    steps: list[LessonStep] = Field(min_length=1)
    """The steps, in order."""

    def step_keys(self) -> list[str]:
        """Each step's key in the learner's progress: its ``id``, or ``<kind>-<n>``."""
        keys: list[str] = []
        counts: dict[str, int] = {}
        for step in self.steps:
            counts[step.kind] = counts.get(step.kind, 0) + 1
            keys.append(step.id or f"{step.kind}-{counts[step.kind]}")
        return keys

    def exercise_ids(self) -> list[str]:
        """Ids of the exercises the lesson points to, in order."""
        return [step.exercise.id for step in self.steps if step.exercise is not None]


class Course(_Strict):
    """``lessons/course.yaml``: the course's title, texts and lesson order."""

    format_version: Literal[1]
    """Always 1 for this version of mqlab."""
    title: Text
    """The course's title."""
    welcome: Text
    """Markdown shown on the course map before the first lesson."""
    closing: Text
    """Markdown shown when every lesson is done."""
    lessons: list[Text] = Field(min_length=1)
    """The order: folder names under ``lessons/`` (``02-kafka-concepts``). Every lesson folder
    is listed, once."""


# --- checks within one file ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong in a content file, at ``location`` (keys and indexes into the document)."""

    location: Location
    message: str


def lesson_problems(lesson: Lesson) -> list[Problem]:
    """Everything wrong inside one lesson that pydantic's per-field checks cannot see."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, (step, key) in enumerate(zip(lesson.steps, lesson.step_keys(), strict=True)):
        where: Location = ("steps", index)
        if key in seen:
            location = (*where, "id") if step.id else (*where, step.kind)
            problems.append(
                Problem(location, f"step id {key!r} is already used by steps[{seen[key]}]")
            )
        seen.setdefault(key, index)
        if step.quiz is not None:
            problems.extend(_quiz_problems(step.quiz, (*where, "quiz")))
        elif step.predict is not None:
            problems.extend(_predict_problems(step.predict, (*where, "predict")))
        elif step.experiment is not None:
            problems.extend(_experiment_problems(step.experiment, (*where, "experiment")))
        elif step.decision is not None:
            problems.extend(decision_problems(step.decision, (*where, "decision")))
    return problems


def _quiz_problems(quiz: Quiz, where: Location) -> Iterator[Problem]:
    if quiz.answer >= len(quiz.choices):
        yield Problem(
            (*where, "answer"),
            f"answer {quiz.answer} is not an index of choices (0 to {len(quiz.choices) - 1})",
        )
        return
    for index, choice in enumerate(quiz.choices):
        if index == quiz.answer and choice.why is not None:
            yield Problem(
                (*where, "choices", index, "why"),
                "the right choice has no why (say why it is right in explain)",
            )
        elif index != quiz.answer and not (choice.why or "").strip():
            yield Problem((*where, "choices", index), "a wrong choice needs a why: why it is wrong")


def _predict_problems(predict: Predict, where: Location) -> Iterator[Problem]:
    choices, answer = predict.choices, predict.answer
    if choices is not None and answer is not None and answer >= len(choices):
        yield Problem(
            (*where, "answer"),
            f"answer {answer} is not an index of choices (0 to {len(choices) - 1})",
        )


def _experiment_problems(experiment: Experiment, where: Location) -> Iterator[Problem]:
    labels: dict[str, int] = {}
    for index, variant in enumerate(experiment.vary.choices):
        if variant.label in labels:
            yield Problem(
                (*where, "vary", "choices", index, "label"),
                f"label {variant.label!r} is already used by choices[{labels[variant.label]}]",
            )
        labels.setdefault(variant.label, index)
    for index, name in enumerate(experiment.compare):
        if name in experiment.compare[:index]:
            yield Problem((*where, "compare", index), f"{name!r} is listed twice")


def decision_problems(decision: Decision, where: Location = ()) -> list[Problem]:
    """Whether a decision tree is sound (see :class:`Decision`), each problem at its line."""
    problems: list[Problem] = []
    for name in decision.nodes.keys() & decision.leaves.keys():
        problems.append(
            Problem((*where, "leaves", name), f"{name!r} is both a node and a leaf; rename one")
        )
    if decision.start not in decision.nodes:
        hint = (
            " (it is a leaf: start must be a question)" if decision.start in decision.leaves else ""
        )
        problems.append(Problem((*where, "start"), f"start {decision.start!r} names no node{hint}"))
    for name, node in decision.nodes.items():
        for index, option in enumerate(node.options):
            at = (*where, "nodes", name, "options", index)
            if option.next is not None and option.next not in decision.nodes:
                also = " (it is a leaf: use leaf:)" if option.next in decision.leaves else ""
                problems.append(Problem((*at, "next"), f"next {option.next!r} names no node{also}"))
            if option.leaf is not None and option.leaf not in decision.leaves:
                also = " (it is a node: use next:)" if option.leaf in decision.nodes else ""
                problems.append(Problem((*at, "leaf"), f"leaf {option.leaf!r} names no leaf{also}"))
    problems.extend(_cycles(decision, where))
    if decision.start in decision.nodes:
        reachable = decision.reachable_nodes()
        for name in decision.nodes:
            if name not in reachable:
                problems.append(
                    Problem((*where, "nodes", name), f"node {name!r} is not reachable from start")
                )
        used = {option.leaf for node in decision.nodes.values() for option in node.options} - {None}
        reached = decision.paths_to_leaves()
        for name in decision.leaves:
            if name not in used:
                problems.append(
                    Problem((*where, "leaves", name), f"leaf {name!r} is not used by any option")
                )
            elif name not in reached:
                problems.append(
                    Problem(
                        (*where, "leaves", name),
                        f"leaf {name!r} is not reachable from start "
                        "(only unreachable nodes lead to it)",
                    )
                )
    return problems


def _cycles(decision: Decision, where: Location) -> Iterator[Problem]:
    """One problem per option that closes a cycle (found by a depth-first walk of every node)."""
    state: dict[str, Literal["open", "done"]] = {}
    trail: list[str] = []

    def visit(name: str) -> Iterator[Problem]:
        state[name] = "open"
        trail.append(name)
        for index, option in enumerate(decision.nodes[name].options):
            target = option.next
            if target is None or target not in decision.nodes:
                continue
            if state.get(target) == "open":
                cycle = [*trail[trail.index(target) :], target]
                yield Problem(
                    (*where, "nodes", name, "options", index, "next"),
                    f"cycle: {' -> '.join(cycle)} (a walk must end in a leaf)",
                )
            elif target not in state:
                yield from visit(target)
        trail.pop()
        state[name] = "done"

    order = [decision.start] if decision.start in decision.nodes else []
    order += [name for name in decision.nodes if name != decision.start]
    for name in order:
        if name not in state:
            yield from visit(name)
