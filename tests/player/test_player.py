"""The player's state machines on their own: misuse, resuming, pattern experiments, brokers,
diagrams, and ``mqlab lessons show`` driving them from the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.brokers.registry import UnknownBroker
from mqlab.cli.app import app
from mqlab.course.lesson import Experiment, Lesson
from mqlab.course.library import apply_overrides, find_lesson, find_scenario
from mqlab.course.progress import ProgressStore
from mqlab.course.scenario import Scenario
from mqlab.player.diagrams import draw_diagram, example_diagram, group_settled
from mqlab.player.patterns import (
    PATTERNS,
    RETRY_CONTENTION,
    PatternExperiment,
    PatternParameterError,
    PatternRegistry,
)
from mqlab.player.player import (
    DecisionPlay,
    ExperimentPlay,
    LessonPlayer,
    PlayerError,
    PredictPlay,
    QuizPlay,
)
from mqlab.player.runs import LearnerBroker

pytestmark = pytest.mark.sim

WALK = """\
format_version: 1
id: walk
title: "A small lesson to walk"
summary: "One of each interactive kind."
minutes: 5
sources: ["None"]
steps:
  - id: intro
    read: {title: "Intro", text: "Hello [B1,B2] is not markup."}
  - id: pick
    quiz:
      question: "Which?"
      choices:
        - {text: "a", why: "not a"}
        - {text: "b [b]"}
      answer: 1
      explain: "b."
  - id: crash
    predict:
      scenario: at-least-once-crash
      broker: rabbitmq
  - id: retries
    experiment:
      title: "Backoff"
      pattern: retry-contention
      params: {clients: 5, runs: 3}
      vary:
        name: strategy
        choices:
          - {label: "none", set: {strategy: none}}
          - {label: "full jitter", set: {strategy: full-jitter}}
      compare: [mean_calls, mean_conflicts]
  - id: tree
    decision:
      title: "Tree"
      start: first
      nodes:
        first:
          question: "First?"
          options:
            - {label: "yes", leaf: done}
            - {label: "no", next: second}
        second:
          question: "Second?"
          options:
            - {label: "left", leaf: done}
            - {label: "right", leaf: other}
      leaves:
        done: {recommend: "Done", reasons: ["because"], tradeoffs: ["costs"]}
        other: {recommend: "Other", reasons: ["because"], tradeoffs: ["costs"]}
      too_simple: "Too simple."
"""


@pytest.fixture
def walk_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "01-walk"
    folder.mkdir()
    (folder / "lesson.yaml").write_text(WALK)
    return folder


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("MQLAB_DATA_DIR", str(path))
    return path


def _player(folder: Path, **options: object) -> LessonPlayer:
    lesson = find_lesson(str(folder)).lesson
    return LessonPlayer(lesson, folder=folder, **options)  # type: ignore[arg-type]


# --- brokers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "simulated", "preferred", "label"),
    [
        ("sim", True, None, "sim"),
        ("sim:nats", True, "nats", "sim:nats"),
        ("lab", False, None, "lab"),
        ("real", False, None, "lab"),
        ("Kafka", False, "kafka", "kafka"),
    ],
)
def test_learner_broker_names(
    text: str, simulated: bool, preferred: str | None, label: str
) -> None:
    broker = LearnerBroker.parse(text)
    assert (broker.simulated, broker.preferred, broker.label) == (simulated, preferred, label)


def test_an_unknown_broker_suggests_one() -> None:
    with pytest.raises(UnknownBroker, match="did you mean 'kafka'"):
        LearnerBroker.parse("kafak")


def test_which_system_a_step_runs_on() -> None:
    scenario = find_scenario("at-least-once-crash")  # kafka, rabbitmq, sqs, nats
    assert LearnerBroker.parse("sim").target(scenario) == "sim:kafka"
    assert LearnerBroker.parse("sim:nats").target(scenario) == "sim:nats"
    assert LearnerBroker.parse("sim:nats").target(scenario, "sqs") == "sim:sqs"
    assert LearnerBroker.parse("lab").target(scenario) == "kafka"
    kafka_only = find_scenario("kafka-partition-ordering")
    assert LearnerBroker.parse("rabbitmq").target(kafka_only) == "kafka"


# --- the steps ------------------------------------------------------------------------------


def test_quiz_feedback(walk_folder: Path) -> None:
    quiz = _player(walk_folder).steps[1]
    assert isinstance(quiz, QuizPlay)
    wrong = quiz.answer(0)
    assert (wrong.right, wrong.why, wrong.right_text) == (False, "not a", "b [b]")
    with pytest.raises(PlayerError, match="pick a choice from 1 to 2"):
        quiz.answer(2)


def test_predict_needs_a_commitment_first(walk_folder: Path) -> None:
    predict = _player(walk_folder).steps[2]
    assert isinstance(predict, PredictPlay)
    assert predict.target == "sim:rabbitmq"
    assert predict.question == find_scenario("at-least-once-crash").predict.question  # type: ignore[union-attr]
    with pytest.raises(PlayerError, match="commit to a prediction before the run"):
        predict.run()
    predict.commit(0)
    outcome = predict.run()
    assert outcome.result.passed
    assert (outcome.right, outcome.held) == (False, False)


def test_a_run_that_does_not_show_the_outcome_cannot_settle_a_prediction(walk_folder: Path) -> None:
    """The same scenario with an expectation the run cannot meet: held is None, not True."""
    original = find_scenario("at-least-once-crash")
    impossible = apply_overrides(original, {"expect.lost": 7})

    def lookup(scenario_id: str) -> Scenario:
        return impossible if scenario_id == original.id else find_scenario(scenario_id)

    predict = _player(walk_folder, scenarios=lookup).steps[2]
    assert isinstance(predict, PredictPlay)
    predict.commit(predict.answer_index)
    outcome = predict.run()
    assert not outcome.result.passed
    assert outcome.right
    assert outcome.held is None


def test_a_pattern_experiment_runs_each_variant(walk_folder: Path) -> None:
    experiment = _player(walk_folder, seed=4).steps[3]
    assert isinstance(experiment, ExperimentPlay)
    assert experiment.target is None
    assert [label for _, label in experiment.compared] == [
        "database calls per trial",
        "lost races (version conflicts) per trial",
    ]
    first = experiment.run(0)
    assert first.parameters["strategy"] == "none"
    assert first.parameters["clients"] == 5
    assert set(first.metrics) == {"mean_calls", "mean_conflicts"}
    assert first.metrics["mean_calls"] >= 10  # five clients, a read and a write each at least
    comparison = experiment.comparison()
    assert comparison.rows[0].values[1] is None  # the second variant has not run yet
    again = experiment.run(0)
    assert again.metrics == first.metrics  # same seed, same numbers


def test_a_scenario_experiment_can_vary_the_broker() -> None:
    entry = find_lesson("broker-comparison")
    player = LessonPlayer(entry.lesson, folder=entry.path.parent)
    same_crash = next(step for step in player.steps if step.key == "same-crash-everywhere")
    assert isinstance(same_crash, ExperimentPlay)
    assert same_crash.target is None
    assert [same_crash.variant_target(i) for i in range(4)] == [
        "sim:kafka",
        "sim:rabbitmq",
        "sim:sqs",
        "sim:nats",
    ]


def test_decision_walk(walk_folder: Path) -> None:
    tree = _player(walk_folder).steps[4]
    assert isinstance(tree, DecisionPlay)
    start = tree.view()
    assert (start.node, start.options) == ("first", ("yes", "no"))
    assert tree.back().node == "first"  # at the start, back stays there
    second = tree.choose(1)
    assert (second.node, second.path) == ("second", ("no",))
    leaf = tree.choose(1)
    assert (leaf.at_leaf, leaf.leaf_name, leaf.path) == (True, "other", ("no", "right"))
    with pytest.raises(PlayerError, match="this walk has ended"):
        tree.choose(0)
    assert tree.back().node == "second"
    with pytest.raises(PlayerError, match="pick a option from 1 to 2"):
        tree.choose(5)
    assert tree.restart().path == ()


def test_progress_is_recorded_and_resumed(walk_folder: Path, tmp_path: Path) -> None:
    with ProgressStore(tmp_path / "p.sqlite3") as store:
        player = _player(walk_folder, progress=store)
        player.resume()
        player.next()  # the read counts as done
        quiz = player.current
        assert isinstance(quiz, QuizPlay)
        quiz.answer(1)
        player.next()
        assert store.lesson("walk").current_step == "crash"
        assert store.steps("walk")["pick"].correct is True
        again = _player(walk_folder, progress=store)
        assert again.resume().key == "crash"
        with pytest.raises(PlayerError):
            again.go(9)


def test_a_pattern_without_its_module_is_refused() -> None:
    missing = PatternExperiment(
        id="vanished",
        title="t",
        module="mqlab.patterns.not_there",
        parameters=(),
        metrics=(),
        runner=lambda values, seed: {},
    )
    registry = PatternRegistry([missing, RETRY_CONTENTION])
    assert registry.ids() == ["retry-contention"]
    with pytest.raises(KeyError):
        registry.get("vanished")
    experiment = Experiment.model_validate(
        {
            "title": "t",
            "pattern": "vanished",
            "vary": {
                "name": "x",
                "choices": [{"label": "a", "set": {"x": 1}}, {"label": "b", "set": {"x": 2}}],
            },
        }
    )
    (problem,) = registry.experiment_problems(experiment)
    assert problem.message == "no pattern experiment 'vanished' (known: retry-contention)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"clients": 0}, "clients must be at least 1"),
        ({"clients": 2.5}, "clients must be a whole number"),
        ({"runs": True}, "runs must be a number, not True"),
        ({"base": 2.0, "cap": 1.0}, "cap (1.0) must not be below base (2.0)"),
        ({"strategy": "decorrelated"}, "did you mean 'decorrelated-jitter'?"),
    ],
)
def test_pattern_parameters_are_checked(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(
        PatternParameterError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        RETRY_CONTENTION.resolve(overrides)  # type: ignore[arg-type]


def test_the_registry_knows_retry_contention() -> None:
    assert "retry-contention" in PATTERNS.ids()


# --- diagrams -------------------------------------------------------------------------------


def test_the_simulator_draws_the_scene() -> None:
    view = draw_diagram("kafka-cluster", LearnerBroker.parse("sim"), seed=0)
    assert view.source == "simulator"
    assert view.lines[0] == "CLUSTER   controller 0 (KRaft, its own process);  brokers B1  B2  B3"
    assert any(line.startswith("TOPIC     orders  partitions=4") for line in view.lines)
    assert any(line.startswith("GROUP     billing (Stable") for line in view.lines)
    assert draw_diagram("kafka-cluster", LearnerBroker.parse("sim"), seed=0) == view


def test_the_scene_waits_for_one_generation_of_the_group() -> None:
    assert group_settled([{0, 1}, {2, 3}], partitions=4)
    # Mid-rebalance: the first member still reports the old generation's four.
    assert not group_settled([{0, 1, 2, 3}, {2, 3}], partitions=4)
    assert not group_settled([{0, 1, 2, 3}, set()], partitions=4)
    assert not group_settled([{0, 1}, {2}], partitions=4)


def test_an_unreachable_lab_falls_back_to_the_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the lab's ports somewhere nothing listens: the real adapter cannot connect."""
    monkeypatch.setenv("MQLAB_PORT_OFFSET", "23000")
    view = draw_diagram("kafka-cluster", LearnerBroker.parse("lab"), timeout=20)
    assert view.source == "example"
    assert view.note.startswith(
        "an example: the lab's Kafka did not answer (kafka is not reachable"
    )
    assert view.lines == example_diagram("kafka-cluster").lines


# --- mqlab lessons show -----------------------------------------------------------------------


@pytest.mark.usefixtures("data_dir")
def test_show_prints_the_whole_lesson_as_text(walk_folder: Path) -> None:
    result = CliRunner().invoke(app, ["lessons", "show", str(walk_folder)])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "# A small lesson to walk" in output
    assert "Hello [B1,B2] is not markup." in output
    assert " *2. b [b]" in output
    assert "Run it: mqlab run at-least-once-crash --broker sim:rabbitmq" in output
    assert "  - none: strategy=none" in output
    assert "  no:" in output
    assert "    right -> Other" in output
    assert "Sources:" in output


def test_show_an_unknown_lesson() -> None:
    result = CliRunner().invoke(app, ["lessons", "show", "kafka-concept"])
    assert result.exit_code == 2
    assert "no such lesson; did you mean 'kafka-concepts'?" in result.output


def test_show_walks_interactively_and_records_progress(walk_folder: Path, data_dir: Path) -> None:
    keys = "\n".join(
        [
            "",  # read: next
            "1",  # quiz: wrong
            "",  # next
            "2",  # predict: the right answer, then the run
            "",  # next
            "a",  # experiment: run all variants
            "",  # next
            "2",  # decision: no
            "2",  # right -> leaf other
            "",  # next: the lesson is done
        ]
    )
    result = CliRunner().invoke(
        app, ["lessons", "show", str(walk_folder), "--interactive"], input=keys + "\n"
    )
    assert result.exit_code == 0, result.output
    output = result.output
    assert "not quite: not a" in output
    assert "the answer: 2. b [b]" in output
    assert "Your prediction held." in output
    assert "database calls per trial" in output
    assert "Other" in output
    assert "Too simple." in output
    assert "lesson done" in output
    with ProgressStore(data_dir / "progress.sqlite3") as store:
        assert store.lesson("walk").state == "done"
        steps = store.steps("walk")
        assert steps["pick"].correct is False
        assert steps["crash"].prediction_held is True
        assert set(steps) == {"intro", "pick", "crash", "retries", "tree"}


def test_show_stops_on_q_and_resumes_there(walk_folder: Path, data_dir: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(
        app, ["lessons", "show", str(walk_folder), "--interactive"], input="\nq\n"
    )
    assert first.exit_code == 0, first.output
    assert "stopped; `mqlab lessons show` resumes here" in first.output
    second = runner.invoke(app, ["lessons", "show", str(walk_folder), "--interactive"], input="q\n")
    assert "resuming at step 2" in second.output
    assert "step 2/5 · quiz" in second.output


def test_list_shows_progress(data_dir: Path) -> None:
    lesson: Lesson = find_lesson("kafka-concepts").lesson
    with ProgressStore(data_dir / "progress.sqlite3") as store:
        store.move_to(lesson.id, 3, lesson.step_keys()[3])
    result = CliRunner().invoke(app, ["lessons", "list"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "kafka-concepts" in line)
    assert "at step 4" in row
    assert "broker-comparison" in result.output
