"""The lesson models and the library: loading, lookup by id, step keys, decision paths, and
the scenario overrides an experiment's variants apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqlab.course.lesson import Decision, Lesson, decision_problems
from mqlab.course.library import (
    OverrideError,
    UnknownLesson,
    apply_overrides,
    course_lessons,
    describe_location,
    find_lesson,
    find_scenario,
    load_course,
    load_lesson,
    parse_override_path,
)
from mqlab.course.loader import ContentError

pytestmark = pytest.mark.sim

LESSON = """\
format_version: 1
id: {id}
title: "A lesson"
summary: "Short."
minutes: 3
sources: ["A book"]
steps:
  - read: {{title: "One", text: "Text."}}
  - quiz:
      question: "Q?"
      choices:
        - text: "a"
        - text: "b"
          why: "not b"
      answer: 0
      explain: "a."
  - id: walk
    decision:
      title: "Tree"
      start: first
      nodes:
        first:
          question: "One?"
          options:
            - {{label: "yes", leaf: done}}
            - {{label: "no", next: second}}
        second:
          question: "Two?"
          options:
            - {{label: "left", leaf: done}}
            - {{label: "right", leaf: other}}
      leaves:
        done: {{recommend: "Done", reasons: ["r"], tradeoffs: ["t"]}}
        other: {{recommend: "Other", reasons: ["r"], tradeoffs: ["t"]}}
  - read: {{title: "Two", text: "More."}}
"""


def write_lesson(tmp_path: Path, folder: str, lesson_id: str, text: str = LESSON) -> Path:
    path = tmp_path / folder / "lesson.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text.format(id=lesson_id))
    return path


def test_a_lesson_loads_with_step_keys(tmp_path: Path) -> None:
    lesson = load_lesson(write_lesson(tmp_path, "04-sample", "sample"))
    assert [step.kind for step in lesson.steps] == ["read", "quiz", "decision", "read"]
    assert lesson.step_keys() == ["read-1", "quiz-1", "walk", "read-2"]


def test_the_id_must_match_the_folder(tmp_path: Path) -> None:
    path = write_lesson(tmp_path, "04-sample", "other")
    with pytest.raises(ContentError) as caught:
        load_lesson(path)
    assert str(caught.value) == (
        f"{path}:2: id: id 'other' must match the folder '04-sample' (the folder name without "
        "its number: 'sample')"
    )


def test_load_lesson_refuses_what_validation_refuses(tmp_path: Path) -> None:
    text = LESSON.replace("      answer: 0\n", "      answer: 5\n")
    path = write_lesson(tmp_path, "04-sample", "sample", text)
    with pytest.raises(ContentError, match="answer 5 is not an index of choices"):
        load_lesson(path)


def test_the_right_choice_takes_no_why(tmp_path: Path) -> None:
    text = LESSON.replace('        - text: "a"\n', '        - text: "a"\n          why: "x"\n')
    path = write_lesson(tmp_path, "04-sample", "sample", text)
    with pytest.raises(ContentError) as caught:
        load_lesson(path)
    assert str(caught.value) == (
        f"{path}:13: steps[1].quiz.choices[0].why: the right choice has no why "
        "(say why it is right in explain)"
    )


def test_a_step_has_exactly_one_kind(tmp_path: Path) -> None:
    text = LESSON.replace(
        '  - read: {{title: "Two", text: "More."}}\n',
        '  - read: {{title: "Two", text: "More."}}\n    exercise: {{id: x}}\n',
    )
    path = write_lesson(tmp_path, "04-sample", "sample", text)
    with pytest.raises(ContentError, match="exactly one of read, quiz, predict"):
        load_lesson(path)


def test_blank_text_is_refused(tmp_path: Path) -> None:
    text = LESSON.replace('summary: "Short."', 'summary: "   "')
    path = write_lesson(tmp_path, "04-sample", "sample", text)
    with pytest.raises(ContentError, match="summary: must not be empty"):
        load_lesson(path)


def test_decision_paths_reach_every_leaf(tmp_path: Path) -> None:
    lesson = load_lesson(write_lesson(tmp_path, "04-sample", "sample"))
    decision = lesson.steps[2].decision
    assert decision is not None
    assert decision.paths_to_leaves() == {"done": (0,), "other": (1, 1)}
    assert decision.reachable_nodes() == {"first", "second"}
    assert decision_problems(decision) == []


def test_a_name_that_is_both_node_and_leaf_is_refused() -> None:
    decision = Decision.model_validate(
        {
            "title": "t",
            "start": "a",
            "nodes": {
                "a": {
                    "question": "q",
                    "options": [{"label": "x", "leaf": "a"}, {"label": "y", "leaf": "b"}],
                }
            },
            "leaves": {
                "a": {"recommend": "A", "reasons": ["r"], "tradeoffs": ["t"]},
                "b": {"recommend": "B", "reasons": ["r"], "tradeoffs": ["t"]},
            },
        }
    )
    messages = [problem.message for problem in decision_problems(decision)]
    assert "'a' is both a node and a leaf; rename one" in messages


def test_the_shipped_course_loads_in_order() -> None:
    course = load_course()
    entries = course_lessons()
    assert [entry.folder for entry in entries] == course.lessons
    assert [entry.number for entry in entries] == list(range(1, len(entries) + 1))
    assert len(entries) == 8
    for entry in entries:
        assert isinstance(entry.lesson, Lesson)
        assert entry.lesson.sources, f"{entry.folder} names no sources"


def test_find_lesson_by_id_folder_number_and_path() -> None:
    by_id = find_lesson("kafka-concepts")
    assert by_id.folder == "02-kafka-concepts"
    assert find_lesson("02-kafka-concepts").lesson.id == "kafka-concepts"
    assert find_lesson("2").lesson.id == "kafka-concepts"
    assert find_lesson(str(by_id.path)).lesson.id == "kafka-concepts"
    assert find_lesson(str(by_id.path.parent)).lesson.id == "kafka-concepts"


def test_an_unknown_lesson_suggests_the_closest() -> None:
    with pytest.raises(UnknownLesson) as caught:
        find_lesson("kafka-concept")
    assert str(caught.value) == "kafka-concept: no such lesson; did you mean 'kafka-concepts'?"


# --- overrides ------------------------------------------------------------------------------


def test_override_paths_parse() -> None:
    assert parse_override_path("steps.0.produce.producer.acks") == [
        "steps",
        0,
        "produce",
        "producer",
        "acks",
    ]
    assert parse_override_path("channel.kafka.config[min.insync.replicas]") == [
        "channel",
        "kafka",
        "config",
        "min.insync.replicas",
    ]
    assert parse_override_path("a[b.c].d") == ["a", "b.c", "d"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "an empty path"),
        ("steps.", "the path ends with a dot"),
        ("steps..acks", "an empty segment in the path"),
        ("config[min.isr", "an unclosed or empty [...] in the path"),
        ("config[]", "an unclosed or empty [...] in the path"),
        ("config[a]b", "unexpected 'b' in the path"),
    ],
)
def test_malformed_override_paths(path: str, message: str) -> None:
    with pytest.raises(OverrideError, match=message.replace("[", r"\[").replace(".", r"\.")):
        parse_override_path(path)


def test_overrides_change_the_scenario_and_validate_it_again() -> None:
    scenario = find_scenario("kafka-acks1-unclean-loss")
    changed = apply_overrides(
        scenario,
        {
            "steps.7.produce.producer.acks": "all",
            "channel.kafka.config[min.insync.replicas]": "2",
            "steps.7.produce.expect_failures": True,
        },
    )
    assert changed.steps[7].produce is not None
    assert changed.steps[7].produce.producer.acks == "all"
    assert changed.steps[7].produce.expect_failures is True
    assert changed.channel.kafka.config["min.insync.replicas"] == "2"
    assert changed.channel.kafka.config["unclean.leader.election.enable"] == "true"
    # the original is untouched (models are frozen, the document is copied)
    assert scenario.channel.kafka.config["min.insync.replicas"] == "1"


def test_an_override_creates_missing_mappings() -> None:
    scenario = find_scenario("at-least-once-crash")
    changed = apply_overrides(scenario, {"channel.kafka.partitions": 4})
    assert changed.channel.kafka.partitions == 4


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"steps.99.produce.count": 1}, "steps.99.produce.count", "steps has 3 items: no index 99"),
        ({"steps.produce": 1}, "steps.produce", "steps is a list: use an index, not 'produce'"),
        (
            {"steps.0.produce.count.more": 1},
            "steps.0.produce.count.more",
            "steps[0].produce.count is a value (10), not a mapping or a list",
        ),
        (
            {"steps.0.produce.cuont": 3},
            "steps.0.produce.cuont",
            "the changed scenario is invalid: steps[0].produce.cuont:",
        ),
    ],
)
def test_an_override_that_does_not_fit(
    overrides: dict[str, object], key: str, message: str
) -> None:
    scenario = find_scenario("at-least-once-crash")
    with pytest.raises(OverrideError) as caught:
        apply_overrides(scenario, overrides)  # type: ignore[arg-type]
    assert caught.value.key == key
    assert str(caught.value).startswith(message)


def test_describe_location_quotes_dotted_keys() -> None:
    assert describe_location(("steps", 3, "quiz", "answer")) == "steps[3].quiz.answer"
    assert describe_location(("set", "a.b")) == "set['a.b']"
