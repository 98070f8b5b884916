"""``mqlab lessons validate``: every shipped lesson passes; each broken fixture fails with exactly
the expected ``path:line: message`` lines and exit code 2.

The fixtures live in ``tests/fixtures/lessons/``: each ``NN-case/`` is a lesson that is wrong in
one way (or a few related ways), ``course-missing-folder/`` is a lessons folder whose course.yaml
is wrong. Paths are given relative to the repository, as a course author types them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli.app import app
from mqlab.course.library import course_lessons, lessons_dir
from mqlab.player.validation import validate_lessons

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = "tests/fixtures/lessons"

EXPECTED: dict[str, list[str]] = {
    "01-bad-yaml": [
        "01-bad-yaml/lesson.yaml:7: YAML syntax error: did not find expected ',' or ']'",
    ],
    "02-unknown-key": [
        "02-unknown-key/lesson.yaml:14: steps[1].read.diagramm: unexpected key "
        "(check the spelling; see the format docs)",
    ],
    "03-quiz-answer": [
        "03-quiz-answer/lesson.yaml:15: steps[0].quiz.answer: answer 2 is not an index of "
        "choices (0 to 1)",
    ],
    "04-missing-why": [
        "04-missing-why/lesson.yaml:14: steps[0].quiz.choices[2]: a wrong choice needs a why: "
        "why it is wrong",
    ],
    "05-missing-scenario": [
        "05-missing-scenario/lesson.yaml:12: steps[1].predict.scenario: no scenario "
        "'at-least-once-crsh'; did you mean 'at-least-once-crash'?",
    ],
    "06-bad-vary-path": [
        "06-bad-vary-path/lesson.yaml:19: steps[0].experiment.vary.choices[1]"
        ".set['steps.40.produce.producer.acks']: steps has 17 items: no index 40",
    ],
    "07-unreachable-leaf": [
        "07-unreachable-leaf/lesson.yaml:19: steps[0].decision.nodes.orphan: node 'orphan' is "
        "not reachable from start",
        "07-unreachable-leaf/lesson.yaml:29: steps[0].decision.leaves.rabbitmq: leaf 'rabbitmq' "
        "is not reachable from start (only unreachable nodes lead to it)",
        "07-unreachable-leaf/lesson.yaml:30: steps[0].decision.leaves.nats: leaf 'nats' is not "
        "used by any option",
    ],
    "08-decision-cycle": [
        "08-decision-cycle/lesson.yaml:25: steps[0].decision.nodes.aws.options[1].next: cycle: "
        "task -> aws -> task (a walk must end in a leaf)",
    ],
    "09-next-to-nothing": [
        "09-next-to-nothing/lesson.yaml:16: steps[0].decision.nodes.task.options[0].next: next "
        "'aws' names no node",
        "09-next-to-nothing/lesson.yaml:18: steps[0].decision.nodes.task.options[1].leaf: leaf "
        "'sqs-fifo' names no leaf",
        "09-next-to-nothing/lesson.yaml:21: steps[0].decision.nodes.on-aws: node 'on-aws' is not "
        "reachable from start",
        "09-next-to-nothing/lesson.yaml:29: steps[0].decision.leaves.sqs: leaf 'sqs' is not "
        "reachable from start (only unreachable nodes lead to it)",
    ],
    "10-vary-invalid": [
        "10-vary-invalid/lesson.yaml:15: steps[0].experiment.vary.choices[0]"
        ".set['steps.0.produce.producer.acks']: the changed scenario is invalid: "
        "steps[0].produce.producer.acks: Input should be 0, 1 or 'all'",
        "10-vary-invalid/lesson.yaml:18: steps[0].experiment.vary.choices[2]: this variant is "
        "the same run as choices[1]",
        "10-vary-invalid/lesson.yaml:20: steps[0].experiment.compare[1]: no ledger row 'lots' "
        "(did you mean 'lost'?)",
    ],
    "11-unknown-pattern": [
        "11-unknown-pattern/lesson.yaml:10: steps[0].experiment.pattern: no pattern experiment "
        "'retry-storm' (known: retry-contention)",
        "11-unknown-pattern/lesson.yaml:19: steps[1].experiment.params.clientz: no parameter "
        "'clientz' (known: strategy, clients, runs, base, cap, delay_mean, delay_sd)",
        "11-unknown-pattern/lesson.yaml:23: steps[1].experiment.vary.choices[0].set.strategy: "
        "strategy='full' is not known (did you mean 'full-jitter'?)",
        "11-unknown-pattern/lesson.yaml:25: steps[1].experiment.compare[1]: retry-contention "
        "reports no 'retries' (it reports: mean_calls, mean_conflicts, mean_completion_ms, "
        "p95_completion_ms, mean_client_completion_ms)",
    ],
    "12-missing-exercise": [
        "12-missing-exercise/lesson.yaml:9: steps[0].exercise.id: no exercise 'full-jitter': "
        f"{FIXTURES}/12-missing-exercise/exercises/full-jitter/exercise.yaml does not exist",
    ],
    "13-references": [
        "13-references/lesson.yaml:2: id: id 'wrong-folder' must match the folder "
        "'13-references' (the folder name without its number: 'references')",
        "13-references/lesson.yaml:12: steps[0].read.diagram: no diagram 'rabbitmq-exchanges' "
        "(known: kafka-cluster)",
        "13-references/lesson.yaml:13: steps[1].id: step id 'intro' is already used by steps[0]",
        "13-references/lesson.yaml:16: steps[1].predict.broker: scenario "
        "'rabbitmq-priority-queue' runs on rabbitmq, not kafka",
        "13-references/lesson.yaml:21: steps[2].predict.answer: answer 3 is not an index of "
        "choices (0 to 1)",
    ],
    "course-missing-folder": [
        "course-missing-folder/course.yaml:5: lessons: folder '03-stray' is not listed in lessons",
        "course-missing-folder/course.yaml:7: lessons[1]: no folder '02-missing' next to "
        "course.yaml",
        "course-missing-folder/course.yaml:8: lessons[2]: '01-ok' is already listed as lessons[0]",
        "course-missing-folder/course.yaml:9: lessons[3]: 'lesson-three' is not a lesson folder "
        "name (NN-topic, e.g. 02-kafka)",
    ],
}


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root, so paths print as a course author types them."""
    monkeypatch.chdir(ROOT)


def test_every_fixture_has_its_expectations() -> None:
    present = {path.name for path in (ROOT / FIXTURES).iterdir() if path.is_dir()}
    assert present == set(EXPECTED)


@pytest.mark.usefixtures("in_repo")
def test_the_course_validates() -> None:
    result = CliRunner().invoke(app, ["lessons", "validate"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ok: lessons is valid"


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize("entry", course_lessons(), ids=lambda entry: entry.folder)
def test_each_lesson_validates_on_its_own(entry: object) -> None:
    folder = Path(entry.path).parent.relative_to(ROOT)  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["lessons", "validate", str(folder)])
    assert result.exit_code == 0, result.output


def test_every_lesson_folder_is_in_the_course() -> None:
    folders = {p.name for p in lessons_dir().iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert folders == {entry.folder for entry in course_lessons()}
    assert not (lessons_dir() / ".keep").exists()


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_broken_fixture_gives_exact_lines_and_exit_2(case: str) -> None:
    result = CliRunner().invoke(app, ["lessons", "validate", f"{FIXTURES}/{case}"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"{FIXTURES}/{line}" for line in EXPECTED[case]]


@pytest.mark.usefixtures("in_repo")
def test_a_lesson_file_can_be_named_directly() -> None:
    path = f"{FIXTURES}/03-quiz-answer/lesson.yaml"
    result = CliRunner().invoke(app, ["lessons", "validate", path])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"{FIXTURES}/{EXPECTED['03-quiz-answer'][0]}"]


@pytest.mark.usefixtures("in_repo")
def test_course_yaml_alone_checks_the_order_and_the_folders() -> None:
    result = CliRunner().invoke(
        app, ["lessons", "validate", f"{FIXTURES}/course-missing-folder/course.yaml"]
    )
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{FIXTURES}/{line}" for line in EXPECTED["course-missing-folder"]
    ]


@pytest.mark.usefixtures("in_repo")
def test_a_path_that_does_not_exist() -> None:
    result = CliRunner().invoke(app, ["lessons", "validate", "lessons/99-nothing"])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["lessons/99-nothing: no such file or folder"]


def test_a_broken_lesson_inside_a_course_is_reported_with_the_course(tmp_path: Path) -> None:
    """A course folder validates its lessons too: copy a valid course, break one lesson."""
    import shutil

    root = tmp_path / "lessons"
    shutil.copytree(ROOT / FIXTURES / "course-missing-folder" / "01-ok", root / "01-ok")
    (root / "course.yaml").write_text(
        "format_version: 1\ntitle: t\nwelcome: w\nclosing: c\nlessons: [01-ok]\n"
    )
    assert validate_lessons(root) == []
    lesson = root / "01-ok" / "lesson.yaml"
    lesson.write_text(lesson.read_text().replace("minutes: 1", "minutes: 0"))
    problems = [str(problem) for problem in validate_lessons(root)]
    assert problems == [
        f"{lesson}:5: minutes: must be at least 1, got 0",
    ]


def test_two_lessons_with_one_id(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "lessons"
    source = ROOT / FIXTURES / "course-missing-folder" / "01-ok"
    shutil.copytree(source, root / "01-ok")
    shutil.copytree(source, root / "02-ok")
    (root / "course.yaml").write_text(
        "format_version: 1\ntitle: t\nwelcome: w\nclosing: c\nlessons:\n  - 01-ok\n  - 02-ok\n"
    )
    problems = [str(problem) for problem in validate_lessons(root)]
    assert (
        f"{root / 'course.yaml'}:7: lessons[1]: lesson id 'ok' is already the id of 01-ok"
        in problems
    )


def test_the_readme_example_is_a_valid_course(tmp_path: Path) -> None:
    """lessons/README.md's course.yaml and lesson.yaml examples, as written, validate."""
    import re
    import shutil

    readme = (ROOT / "lessons" / "README.md").read_text()
    course_text, lesson_text = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)[:2]
    root = tmp_path / "lessons"
    root.mkdir()
    (root / "course.yaml").write_text(course_text)
    shutil.copytree(lessons_dir() / "01-broker-comparison", root / "01-broker-comparison")
    lesson = root / "02-kafka-concepts" / "lesson.yaml"
    lesson.parent.mkdir()
    lesson.write_text(lesson_text)
    exercise = root / "02-kafka-concepts" / "exercises" / "full-jitter" / "exercise.yaml"
    assert [str(p) for p in validate_lessons(root)] == [
        f"{lesson}:{lesson_text[: lesson_text.index('id: full-jitter')].count(chr(10)) + 1}: "
        f"steps[7].exercise.id: no exercise 'full-jitter': {exercise} does not exist"
    ]
    exercise.parent.mkdir(parents=True)
    exercise.write_text("format_version: 1\n")
    assert validate_lessons(root) == []
