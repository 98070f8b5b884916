"""The lesson player: a lesson as a state machine that any interface can drive.

:class:`LessonPlayer` holds the lesson, the current step and the learner's broker; each step is
a small state machine of its own kind (:class:`ReadPlay`, :class:`QuizPlay`,
:class:`PredictPlay`, :class:`ExperimentPlay`, :class:`ExercisePlay`, :class:`DecisionPlay`)
whose methods are the learner's actions and whose return values are what to show next. Nothing
here prints or prompts: ``mqlab lessons show`` renders these values with rich, the TUI with its
widgets, the tests assert on them.

Runs block (a real broker can take seconds); an interface that must stay responsive calls
them from a worker thread. Progress, when a :class:`~mqlab.course.progress.ProgressStore` is
given, is recorded as the learner acts: one transaction per action, so the learner resumes
where they stopped even after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mqlab.course.lesson import (
    Decision,
    DecisionLeaf,
    Exercise,
    Experiment,
    Lesson,
    LessonStep,
    Predict,
    Quiz,
    Read,
    StepKind,
)
from mqlab.course.library import (
    DEFAULT_COMPARE,
    EXERCISE_FILE,
    EXERCISES_FOLDER,
    apply_overrides,
    find_scenario,
)
from mqlab.course.scenario import Scenario
from mqlab.player.diagrams import DiagramView, draw_diagram
from mqlab.player.patterns import PATTERNS, PatternExperiment, PatternRegistry, pattern_values
from mqlab.player.runs import LearnerBroker, RunFunction, run_scenario

if TYPE_CHECKING:
    from mqlab.course.progress import ExerciseProgress, ProgressStore
    from mqlab.observe.bus import Subscriber
    from mqlab.scenarios.verdict import RunResult


class PlayerError(Exception):
    """An action that does not fit the step's state (run before predicting, a choice out of
    range); ``str()`` is one line for the learner."""


def _choice(index: int, count: int, what: str = "choice") -> int:
    if not 0 <= index < count:
        raise PlayerError(f"pick a {what} from 1 to {count}")
    return index


# --- what the steps answer ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuizFeedback:
    """What a quiz answer gets back."""

    chosen: int
    answer: int
    right: bool
    chosen_text: str
    right_text: str
    why: str | None
    """Why the chosen answer is wrong (None when it is right)."""
    explain: str
    """Why the right answer is right."""


@dataclass(frozen=True, slots=True)
class PredictOutcome:
    """The reveal of a predict-then-run step."""

    choice: int
    answer: int
    right: bool
    """The committed choice is the answer key's."""
    result: RunResult
    held: bool | None
    """Whether the prediction held in this run: ``right`` when the run showed the expected
    outcome (its verdict passed); None when it did not (an error, or the broker did something
    else this time: read the ledger)."""
    explain: str
    """The scenario's own explanation."""
    after: str | None
    """The lesson's point (the step's ``after``)."""


@dataclass(frozen=True, slots=True)
class VariantOutcome:
    """One experiment variant's run."""

    index: int
    label: str
    metrics: dict[str, float]
    """The compared numbers, by name."""
    result: RunResult | None = None
    """The run (scenario experiments)."""
    parameters: dict[str, int | float | str] = field(default_factory=dict)
    """The resolved parameters (pattern experiments)."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """One compared number across the variants run so far."""

    name: str
    label: str
    values: tuple[float | None, ...]
    """One per column (None: that variant has not been run)."""

    def cells(self, *, missing: str) -> tuple[str, ...]:
        """The values as a table shows them, ``missing`` for a variant not run yet."""
        return tuple(missing if value is None else f"{value:g}" for value in self.values)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The variants side by side."""

    columns: tuple[str, ...]
    rows: tuple[ComparisonRow, ...]


@dataclass(frozen=True, slots=True)
class DecisionView:
    """Where a decision walk is: at a question (``node``) or at a leaf."""

    path: tuple[str, ...]
    """Labels of the options chosen so far."""
    node: str | None
    question: str | None
    options: tuple[str, ...]
    leaf_name: str | None
    leaf: DecisionLeaf | None

    @property
    def at_leaf(self) -> bool:
        """The walk ended in a recommendation."""
        return self.leaf is not None


# --- the steps ------------------------------------------------------------------------------

Recorder = Callable[..., None]


class StepPlay:
    """What every step has: where it is, what it is, and a way to record progress."""

    kind: StepKind

    def __init__(self, player: LessonPlayer, index: int, key: str, step: LessonStep) -> None:
        self.player = player
        self.index = index
        self.key = key
        self.step = step

    def _record(
        self,
        *,
        correct: bool | None = None,
        choice: int | None = None,
        prediction_held: bool | None = None,
    ) -> None:
        store = self.player.progress
        if store is not None:
            store.record_step(
                self.player.lesson.id,
                self.index,
                self.key,
                self.kind,
                correct=correct,
                choice=choice,
                prediction_held=prediction_held,
            )

    @property
    def title(self) -> str:
        """A heading for the step."""
        return self.kind


class ReadPlay(StepPlay):
    """Text to read, maybe with a diagram (drawn on first request, then kept)."""

    kind: StepKind = "read"

    def __init__(self, player: LessonPlayer, index: int, key: str, step: LessonStep) -> None:
        super().__init__(player, index, key, step)
        assert step.read is not None
        self.read: Read = step.read
        self._diagram: DiagramView | None = None

    @property
    def title(self) -> str:
        return self.read.title

    def diagram(self) -> DiagramView | None:
        """The step's diagram from the learner's broker (None when the step has none)."""
        if self.read.diagram is None:
            return None
        if self._diagram is None:
            self._diagram = self.player.draw(
                self.read.diagram, self.player.broker, self.player.seed
            )
        return self._diagram

    def done(self) -> None:
        """The learner read it."""
        self._record()


class QuizPlay(StepPlay):
    """A question; every answer gets feedback, the learner may answer again."""

    kind: StepKind = "quiz"

    def __init__(self, player: LessonPlayer, index: int, key: str, step: LessonStep) -> None:
        super().__init__(player, index, key, step)
        assert step.quiz is not None
        self.quiz: Quiz = step.quiz
        self.feedback: QuizFeedback | None = None

    @property
    def title(self) -> str:
        return "quiz"

    @property
    def choices(self) -> tuple[str, ...]:
        """The choices' texts, in order."""
        return tuple(choice.text for choice in self.quiz.choices)

    def answer(self, index: int) -> QuizFeedback:
        """Answer with choice ``index`` (0-based)."""
        chosen = _choice(index, len(self.quiz.choices))
        right = chosen == self.quiz.answer
        self.feedback = QuizFeedback(
            chosen=chosen,
            answer=self.quiz.answer,
            right=right,
            chosen_text=self.quiz.choices[chosen].text,
            right_text=self.quiz.choices[self.quiz.answer].text,
            why=None if right else self.quiz.choices[chosen].why,
            explain=self.quiz.explain,
        )
        self._record(correct=right, choice=chosen)
        return self.feedback


class PredictPlay(StepPlay):
    """Commit to a prediction, then run the scenario and see whether it held."""

    kind: StepKind = "predict"

    def __init__(self, player: LessonPlayer, index: int, key: str, step: LessonStep) -> None:
        super().__init__(player, index, key, step)
        assert step.predict is not None
        self.predict: Predict = step.predict
        self.scenario: Scenario = player.scenario(self.predict.scenario)
        if self.predict.question is not None:
            assert self.predict.choices is not None
            assert self.predict.answer is not None
            self.question = self.predict.question
            self.choices: tuple[str, ...] = tuple(self.predict.choices)
            self.answer_index = self.predict.answer
        elif self.scenario.predict is not None:
            self.question = self.scenario.predict.question
            self.choices = tuple(self.scenario.predict.choices)
            self.answer_index = self.scenario.predict.answer
        else:  # validation refuses this; a lesson loaded without validation still fails clearly
            raise PlayerError(f"scenario {self.scenario.id!r} asks no question of its own")
        self.committed: int | None = None
        self.outcome: PredictOutcome | None = None

    @property
    def title(self) -> str:
        return f"predict, then run: {self.scenario.title}"

    @property
    def target(self) -> str:
        """The broker the scenario runs on (``sim:kafka``, ``kafka``)."""
        return self.player.broker.target(self.scenario, self.predict.broker)

    def commit(self, index: int) -> None:
        """The learner's prediction (before the run; a new one clears an earlier reveal)."""
        self.committed = _choice(index, len(self.choices))
        self.outcome = None

    def run(self, on_observation: Subscriber | None = None) -> PredictOutcome:
        """Run the scenario on the learner's broker and reveal.

        Raises:
            PlayerError: no prediction committed yet.
        """
        if self.committed is None:
            raise PlayerError("commit to a prediction before the run")
        result = self.player.run(self.scenario, self.target, self.player.seed, on_observation)
        right = self.committed == self.answer_index
        held = right if result.passed else None
        self.outcome = PredictOutcome(
            choice=self.committed,
            answer=self.answer_index,
            right=right,
            result=result,
            held=held,
            explain=self.scenario.explain,
            after=self.predict.after,
        )
        self._record(correct=right, choice=self.committed, prediction_held=held)
        return self.outcome


class ExperimentPlay(StepPlay):
    """Run the variants the learner picks and compare them."""

    kind: StepKind = "experiment"

    def __init__(self, player: LessonPlayer, index: int, key: str, step: LessonStep) -> None:
        super().__init__(player, index, key, step)
        assert step.experiment is not None
        self.experiment: Experiment = step.experiment
        self.scenario: Scenario | None = None
        self.pattern: PatternExperiment | None = None
        self._variants: list[Scenario] = []
        if self.experiment.scenario is not None:
            self.scenario = player.scenario(self.experiment.scenario)
            self._variants = [
                apply_overrides(self.scenario, variant.overrides)
                for variant in self.experiment.vary.choices
            ]
        else:
            try:
                self.pattern = player.patterns.get(str(self.experiment.pattern))
            except KeyError:
                raise PlayerError(
                    f"no pattern experiment {self.experiment.pattern!r} in this mqlab"
                ) from None
        self.outcomes: dict[int, VariantOutcome] = {}

    @property
    def title(self) -> str:
        return self.experiment.title

    @property
    def labels(self) -> tuple[str, ...]:
        """The variants' labels, in order."""
        return tuple(variant.label for variant in self.experiment.vary.choices)

    @property
    def compared(self) -> tuple[tuple[str, str], ...]:
        """(name, label) of each compared number."""
        if self.pattern is not None:
            labels = {metric.name: metric.label for metric in self.pattern.metrics}
            names = self.experiment.compare or list(labels)
            return tuple((name, labels[name]) for name in names)
        from mqlab.scenarios.ledger import LEDGER_ROWS

        labels = {row.name: row.label for row in LEDGER_ROWS}
        names = self.experiment.compare or list(DEFAULT_COMPARE)
        return tuple((name, labels.get(name, name)) for name in names)

    @property
    def target(self) -> str | None:
        """The broker scenario variants run on, when they all run on the same one (None for a
        pattern experiment, or when variants name their own brokers)."""
        if self.scenario is None:
            return None
        targets = {self.variant_target(index) for index in range(len(self.labels))}
        return targets.pop() if len(targets) == 1 else None

    def variant_target(self, index: int) -> str | None:
        """The broker variant ``index`` runs on (None for a pattern experiment)."""
        if self.scenario is None:
            return None
        pinned = self.experiment.vary.choices[index].broker or self.experiment.broker
        return self.player.broker.target(self._variants[index], pinned)

    def run(self, index: int, on_observation: Subscriber | None = None) -> VariantOutcome:
        """Run variant ``index`` (0-based); the same seed for every variant."""
        chosen = _choice(index, len(self.experiment.vary.choices), "variant")
        label = self.labels[chosen]
        names = [name for name, _ in self.compared]
        if self.pattern is not None:
            values = pattern_values(self.pattern, self.experiment, chosen)
            metrics = self.pattern.run(values, self.player.seed)
            outcome = VariantOutcome(
                chosen, label, {name: metrics[name] for name in names}, parameters=values
            )
        else:
            target = self.variant_target(chosen)
            assert target is not None
            result = self.player.run(
                self._variants[chosen], target, self.player.seed, on_observation
            )
            outcome = VariantOutcome(
                chosen,
                label,
                {name: float(result.summary[name]) for name in names},
                result=result,
                error=result.error,
            )
        self.outcomes[chosen] = outcome
        self._record(choice=chosen)
        return outcome

    def comparison(self) -> Comparison:
        """Every compared number, one column per variant (None where not run yet)."""
        rows = tuple(
            ComparisonRow(
                name,
                label,
                tuple(
                    self.outcomes[i].metrics[name] if i in self.outcomes else None
                    for i in range(len(self.labels))
                ),
            )
            for name, label in self.compared
        )
        return Comparison(self.labels, rows)


class ExercisePlay(StepPlay):
    """A pointer to an exercise graded by ``mqlab check``, with its state."""

    kind: StepKind = "exercise"

    def __init__(self, player: LessonPlayer, index: int, key: str, step: LessonStep) -> None:
        super().__init__(player, index, key, step)
        assert step.exercise is not None
        self.exercise: Exercise = step.exercise

    @property
    def title(self) -> str:
        return f"exercise: {self.exercise.id}"

    @property
    def exercise_id(self) -> str:
        """The exercise's id."""
        return self.exercise.id

    @property
    def folder(self) -> Path | None:
        """Where the exercise lives (None when the lesson's folder is not known)."""
        if self.player.folder is None:
            return None
        return self.player.folder / EXERCISES_FOLDER / self.exercise.id

    @property
    def exists(self) -> bool:
        """The exercise's metadata file is there."""
        folder = self.folder
        return folder is not None and (folder / EXERCISE_FILE).is_file()

    @property
    def progress(self) -> ExerciseProgress | None:
        """The grader's record (None: never checked, or no progress store)."""
        store = self.player.progress
        return None if store is None else store.exercise(self.exercise.id)

    @property
    def state(self) -> str:
        """new, failing or passed."""
        record = self.progress
        return "new" if record is None else record.state

    @property
    def command(self) -> str:
        """What the learner runs to have it graded."""
        return f"mqlab check {self.exercise.id}"

    def done(self) -> None:
        """The learner has seen the pointer (the grade is the grader's)."""
        self._record()


class DecisionPlay(StepPlay):
    """A walk through a decision tree: choose, go back, restart."""

    kind: StepKind = "decision"

    def __init__(self, player: LessonPlayer, index: int, key: str, step: LessonStep) -> None:
        super().__init__(player, index, key, step)
        assert step.decision is not None
        self.decision: Decision = step.decision
        self._trail: list[tuple[str, int]] = []
        """(node, option index) of every choice on the way."""
        self._leaf: str | None = None
        self.reached: set[str] = set()
        """Leaves reached in this session."""

    @property
    def title(self) -> str:
        return self.decision.title

    def view(self) -> DecisionView:
        """Where the walk is now."""
        path = tuple(
            self.decision.nodes[node].options[option].label for node, option in self._trail
        )
        if self._leaf is not None:
            return DecisionView(path, None, None, (), self._leaf, self.decision.leaves[self._leaf])
        node = self._trail_node()
        question = self.decision.nodes[node]
        options = tuple(option.label for option in question.options)
        return DecisionView(path, node, question.question, options, None, None)

    def _trail_node(self) -> str:
        if not self._trail:
            return self.decision.start
        node, option = self._trail[-1]
        target = self.decision.nodes[node].options[option].next
        assert target is not None
        return target

    def choose(self, index: int) -> DecisionView:
        """Answer the current question with option ``index`` (0-based).

        Raises:
            PlayerError: the walk is at a leaf (go back or restart first), or no such option.
        """
        if self._leaf is not None:
            raise PlayerError("this walk has ended: go back or start again")
        node = self._trail_node()
        options = self.decision.nodes[node].options
        chosen = _choice(index, len(options), "option")
        self._trail.append((node, chosen))
        leaf = options[chosen].leaf
        if leaf is not None:
            self._leaf = leaf
            self.reached.add(leaf)
            self._record(choice=chosen)
        return self.view()

    def back(self) -> DecisionView:
        """Undo the last choice (at the start: stay there)."""
        if self._trail:
            self._trail.pop()
        self._leaf = None
        return self.view()

    def restart(self) -> DecisionView:
        """Back to the first question."""
        self._trail.clear()
        self._leaf = None
        return self.view()


_PLAYS: dict[StepKind, type[StepPlay]] = {
    "read": ReadPlay,
    "quiz": QuizPlay,
    "predict": PredictPlay,
    "experiment": ExperimentPlay,
    "exercise": ExercisePlay,
    "decision": DecisionPlay,
}

DiagramFunction = Callable[[str, LearnerBroker, int], DiagramView]
"""``(diagram name, learner's broker, seed) -> DiagramView``."""


def _draw(name: str, broker: LearnerBroker, seed: int) -> DiagramView:
    return draw_diagram(name, broker, seed=seed)


class LessonPlayer:
    """One lesson being taken.

    Args:
        lesson: the validated lesson.
        folder: the lesson's folder (where its exercises are); None when unknown.
        broker: the learner's broker (``sim``, ``sim:kafka``, ``lab``, ``kafka`` ...).
        seed: the simulator's seed for every run and diagram.
        progress: where progress is recorded (None: nothing is recorded).
        run: how scenarios run (default :func:`mqlab.player.runs.run_scenario`).
        patterns: the pattern experiments (default :data:`mqlab.player.patterns.PATTERNS`).
        scenarios: how a scenario id is looked up (default: the shipped ``scenarios/``).
        draw: how a diagram is drawn (default: from the learner's broker).

    Raises:
        ContentError: a scenario the lesson names is missing or invalid.
        UnknownBroker: a broker name that is not one.
        PlayerError: a pattern experiment this mqlab does not have.
    """

    def __init__(
        self,
        lesson: Lesson,
        *,
        folder: Path | None = None,
        broker: str | LearnerBroker = "sim",
        seed: int = 0,
        progress: ProgressStore | None = None,
        run: RunFunction = run_scenario,
        patterns: PatternRegistry = PATTERNS,
        scenarios: Callable[[str], Scenario] = find_scenario,
        draw: DiagramFunction = _draw,
    ) -> None:
        self.lesson = lesson
        self.folder = folder
        self.broker = broker if isinstance(broker, LearnerBroker) else LearnerBroker.parse(broker)
        self.seed = seed
        self.progress = progress
        self.run = run
        self.patterns = patterns
        self.draw = draw
        self._scenario_lookup = scenarios
        self._scenarios: dict[str, Scenario] = {}
        self.steps: list[StepPlay] = [
            _PLAYS[step.kind](self, index, key, step)
            for index, (step, key) in enumerate(zip(lesson.steps, lesson.step_keys(), strict=True))
        ]
        self.index = 0
        self.finished = False

    def scenario(self, scenario_id: str) -> Scenario:
        """A scenario the lesson names (each looked up once)."""
        if scenario_id not in self._scenarios:
            self._scenarios[scenario_id] = self._scenario_lookup(scenario_id)
        return self._scenarios[scenario_id]

    @property
    def current(self) -> StepPlay:
        """The step the learner is at."""
        return self.steps[self.index]

    def resume(self) -> StepPlay:
        """Go to where the learner stopped last time (the start for a new or finished one)."""
        if self.progress is not None:
            record = self.progress.lesson(self.lesson.id)
            if record.state == "in_progress":
                keys = [step.key for step in self.steps]
                if record.current_step in keys:
                    self.index = keys.index(str(record.current_step))
                else:
                    self.index = min(record.current_index, len(self.steps) - 1)
        return self.go(self.index)

    def go(self, index: int) -> StepPlay:
        """Jump to step ``index`` (0-based)."""
        self.index = _choice(index, len(self.steps), "step")
        self.finished = False
        if self.progress is not None:
            self.progress.move_to(self.lesson.id, self.index, self.current.key)
        return self.current

    def next(self) -> StepPlay | None:
        """Leave the current step (a read or an exercise counts as done) and go on; None when
        the lesson is over (it is then recorded as done)."""
        step = self.current
        if isinstance(step, ReadPlay | ExercisePlay):
            step.done()
        if self.index + 1 < len(self.steps):
            return self.go(self.index + 1)
        self.finished = True
        if self.progress is not None:
            self.progress.complete_lesson(self.lesson.id, self.index, step.key)
        return None

    def back(self) -> StepPlay:
        """The previous step (the first stays the first)."""
        return self.go(max(0, self.index - 1))
