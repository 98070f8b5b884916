"""The scenario format: every shipped scenario is valid, and every kind of broken file gets one
line, ``path:line: what is wrong``, with exit code 2 from the CLI (never a traceback)."""

from __future__ import annotations

import math
import shutil
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.course.content import content_dir
from mqlab.course.loader import ContentError
from mqlab.course.scenario import SYSTEMS, Scenario, load_scenario
from mqlab.course.scenario_references import PROCESS_TARGETS, PROXY_TARGETS
from mqlab.scenarios.library import UnknownScenario, find, load_all, scenario_paths

pytestmark = pytest.mark.sim

runner = CliRunner()

VALID = """\
format_version: 1
id: {id}
title: t
topic: delivery-guarantees
summary: s
brokers: [kafka, sim]
steps:
  - produce: {{count: 3}}
  - consume: {{name: c}}
expect: {{produced: 3}}
"""

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def with_step(step: str, *, before: str = "  - consume: {name: c}") -> str:
    """The valid scenario with one more step (as YAML) in front of ``before``."""
    return VALID.format(id="x").replace(before, f"{step}\n{before}")


# --- the library --------------------------------------------------------------------------


def test_every_shipped_scenario_loads_and_ids_are_unique() -> None:
    scenarios = load_all()
    assert len(scenarios) >= 20
    assert len({s.id for s in scenarios}) == len(scenarios)
    for scenario in scenarios:
        assert scenario.runs_on_sim, f"{scenario.id} must also run on sim"
        assert scenario.explain.strip(), f"{scenario.id} needs an explanation"
        assert scenario.predict is not None, f"{scenario.id} needs a prediction prompt"


def test_library_covers_every_system() -> None:
    systems = {system for s in load_all() for system in s.systems}
    assert systems == {"kafka", "rabbitmq", "sqs", "nats"}


def texts_cut_by_a_comment(text: str) -> list[str]:
    """Plain (unquoted) text values followed by `` #`` on their line: YAML reads the rest of
    the line as a comment, so the text the author wrote is silently cut there."""
    cut: list[str] = []
    lines = text.splitlines()
    for node in _scalar_nodes(yaml.compose(text, Loader=yaml.SafeLoader)):
        if node.style is not None or node.tag != "tag:yaml.org,2002:str":
            continue
        end = node.end_mark
        rest = lines[end.line][end.column :] if end.line < len(lines) else ""
        if rest.lstrip().startswith("#") and rest[:1] in (" ", "\t"):
            cut.append(f"line {end.line + 1}: {node.value!r} then {rest.strip()!r}")
    return cut


def _scalar_nodes(root: yaml.Node | None) -> list[yaml.ScalarNode]:
    found: list[yaml.ScalarNode] = []
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.ScalarNode):
            found.append(node)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending.extend(value for _key, value in node.value)
    return found


def test_no_library_text_is_cut_by_a_yaml_comment() -> None:
    problems = {
        path.name: texts_cut_by_a_comment(path.read_text())
        for path in scenario_paths()
        if texts_cut_by_a_comment(path.read_text())
    }
    assert problems == {}


def test_the_comment_check_finds_an_unquoted_hash() -> None:
    assert texts_cut_by_a_comment("title: Topic routing with * and #\n") == [
        "line 1: 'Topic routing with * and' then '#'"
    ]
    assert texts_cut_by_a_comment('title: "with * and #"\nanswer: 1  # index\n') == []


def test_fault_targets_are_the_lab_and_simulator_names() -> None:
    from mqlab.brokers.registry import lab_nodes
    from mqlab.lab.kafka import NODES, KafkaService
    from mqlab.lab.services import SERVICES

    nodes = {node.name for node in lab_nodes()}
    assert {target for names in PROCESS_TARGETS.values() for target in names} == nodes
    assert set(PROCESS_TARGETS["kafka"]) == {node.process for node in NODES}
    proxies = {proxy.name for name in SYSTEMS for proxy in SERVICES[name].proxies()}
    assert {target for names in PROXY_TARGETS.values() for target in names} == proxies
    assert {proxy.name for proxy in KafkaService().proxies()} == set(PROXY_TARGETS["kafka"])


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model reachable from ``root`` through field annotations."""
    seen: list[type[BaseModel]] = []
    pending: list[object] = [root]
    while pending:
        hint = pending.pop()
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            if hint not in seen:
                seen.append(hint)
                pending.extend(field.annotation for field in hint.model_fields.values())
        else:
            pending.extend(typing.get_args(hint))
    return seen


def _mentions_float(hint: object) -> bool:
    if hint is float:
        return True
    return any(_mentions_float(arg) for arg in typing.get_args(hint))


def float_fields_accepting(value: float, models: list[type[BaseModel]]) -> list[str]:
    """``Model.field`` for every float field that validates ``value`` without a finite check."""
    accepting = []
    for model in models:
        for name, field in model.model_fields.items():
            if not _mentions_float(field.annotation):
                continue
            try:
                model.model_validate({name: value})
            except ValidationError as error:
                if any(
                    e["type"] == "finite_number" and e["loc"][:1] == (name,) for e in error.errors()
                ):
                    continue
            accepting.append(f"{model.__name__}.{name}")
    return accepting


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_field_of_the_format_refuses_nan_and_infinity(value: float) -> None:
    models = _models(Scenario)
    assert len(models) > 10
    assert float_fields_accepting(value, models) == []


def test_the_finite_check_finds_a_float_without_it() -> None:
    class Careless(BaseModel):
        seconds: float = 1.0

    assert float_fields_accepting(math.nan, [Careless]) == ["Careless.seconds"]


# --- the loader through the API -----------------------------------------------------------


def test_valid_file_loads(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "ok", VALID.format(id="ok")))
    assert scenario.steps[0].action == "produce"
    assert scenario.expect.for_system("kafka") == {"produced": 3}


def test_misspelled_key_names_its_line(tmp_path: Path) -> None:
    text = VALID.format(id="typo").replace("consume: {name: c}", "consume: {name: c, idel: 2}")
    with pytest.raises(ContentError) as caught:
        load_scenario(write(tmp_path, "typo", text))
    assert str(caught.value) == (
        f"{tmp_path / 'typo.yaml'}:9: steps[1].consume.idel: unexpected key "
        "(check the spelling; see the format docs)"
    )


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = VALID.format(id="broken").replace("title: t", "title: [unclosed")
    with pytest.raises(ContentError) as caught:
        load_scenario(write(tmp_path, "broken", text))
    assert str(caught.value).startswith(f"{tmp_path / 'broken.yaml'}:4: YAML syntax error: ")


def test_unknown_broker_is_rejected_with_line(tmp_path: Path) -> None:
    text = VALID.format(id="bad-broker").replace("[kafka, sim]", "[kafak, sim]")
    with pytest.raises(ContentError) as caught:
        load_scenario(write(tmp_path, "bad-broker", text))
    assert str(caught.value) == (
        f"{tmp_path / 'bad-broker.yaml'}:6: brokers[0]: must be 'kafka', 'rabbitmq', 'sqs', "
        "'nats' or 'sim', got 'kafak'"
    )


def test_step_with_two_actions_is_rejected(tmp_path: Path) -> None:
    text = VALID.format(id="two").replace(
        "  - consume: {name: c}", "  - consume: {name: c}\n    wait: 2"
    )
    with pytest.raises(ContentError) as caught:
        load_scenario(write(tmp_path, "two", text))
    assert str(caught.value) == (
        f"{tmp_path / 'two.yaml'}:9: steps[1]: a step has exactly one action (found: consume, wait)"
    )


def test_id_must_match_file_name_in_the_library(tmp_path: Path) -> None:
    path = write(tmp_path, "other", VALID.format(id="ok"))
    with pytest.raises(ContentError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}:2: id: 'ok' must match the file name 'other' (a library scenario is named "
        "after its id; to experiment with a copy, keep it outside scenarios/)"
    )
    assert load_scenario(path, id_must_match_file=False).id == "ok"


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match=r"empty\.yaml: file is empty$"):
        load_scenario(write(tmp_path, "empty", ""))
    with pytest.raises(ContentError, match=r"missing\.yaml: cannot read file: No such file"):
        load_scenario(tmp_path / "missing.yaml")


def test_find_suggests_close_names() -> None:
    with pytest.raises(UnknownScenario, match="did you mean 'at-most-once-crash'"):
        find("at-most-once-crsh")
    assert find("at-most-once-crash").id == "at-most-once-crash"
    assert scenario_paths()


# --- every bad input through the CLI: one line, exit code 2 -------------------------------

MISSING_STEPS = VALID.format(id="x").replace(
    "steps:\n  - produce: {count: 3}\n  - consume: {name: c}\n", ""
)

BAD_FILES: list[tuple[str, str | bytes, int | None, str]] = [
    (
        "alias bomb",
        BILLION_LAUGHS,
        1,
        "YAML anchors and aliases (&name, *name) are not supported: write the value out",
    ),
    (
        "deep nesting",
        "steps: " + "[" * 5000 + "]" * 5000 + "\n",
        1,
        "nested more than 32 levels deep",
    ),
    (
        "invalid UTF-8",
        VALID.format(id="x").encode().replace(b"title: t", b"title: caf\xe9"),
        3,
        "text is not UTF-8 (byte 0xe9 at byte offset 34); save the file as UTF-8",
    ),
    (
        "binary junk",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        3,
        "binary data (a NUL byte at byte offset 8): this is not a text file",
    ),
    (
        "control character",
        VALID.format(id="x").replace("title: t", "title: t\x1b[31m"),
        3,
        "control character U+001B at column 9 is not allowed in a text file",
    ),
    (
        "duplicate key",
        VALID.format(id="x").replace("title: t", "title: t\ntitle: u"),
        4,
        "title: duplicate key (already on line 3)",
    ),
    (
        "duplicate nested key",
        VALID.format(id="x").replace("{name: c}", "{name: c, name: d}"),
        9,
        "steps[1].consume.name: duplicate key (already on line 9)",
    ),
    ("missing steps", MISSING_STEPS, 1, "steps: required field is missing"),
    (
        "negative wait",
        with_step("  - wait: -3"),
        9,
        "steps[1].wait: must be greater than 0, got -3",
    ),
    (
        "negative timeout",
        with_step("  - wait: {until: {lag: 0}, timeout: -1}"),
        9,
        "steps[1].wait.timeout: must be greater than 0, got -1",
    ),
    (
        "wait that is text",
        with_step("  - wait: soon"),
        9,
        "steps[1].wait: must be a number or a mapping (key: value), got 'soon'",
    ),
    (
        "huge idle",
        VALID.format(id="x").replace("{name: c}", "{name: c, idle: 1e308}"),
        9,
        "steps[1].consume.idle: must be at most 600, got 1e308",
    ),
    (
        "nan timeout",
        with_step("  - wait: {until: {lag: 0}, timeout: .nan}"),
        9,
        "steps[1].wait.timeout: must be a finite number, got .nan",
    ),
    (
        "infinite processing time",
        VALID.format(id="x").replace("{name: c}", "{name: c, processing_time: .inf}"),
        9,
        "steps[1].consume.processing_time: must be a finite number, got .inf",
    ),
    (
        "negative count",
        VALID.format(id="x").replace("{count: 3}", "{count: -3}"),
        8,
        "steps[0].produce.count: must be at least 1, got -3",
    ),
    (
        "number too long",
        VALID.format(id="x").replace("{count: 3}", "{count: " + "9" * 5000 + "}"),
        8,
        "steps[0].produce.count: '9999999999999999999999999999999999999999...' cannot be read as a whole number (quote text to keep it as is)",
    ),
    (
        "unknown fault target",
        with_step("  - fault: {action: kill, target: kafka-broker-9}"),
        9,
        "steps[1].fault.target: unknown target 'kafka-broker-9' on kafka (did you mean 'kafka-broker-3'? targets: broker, leader, follower-1, follower-2, kafka-controller, kafka-broker-1, kafka-broker-2, kafka-broker-3)",
    ),
    (
        "another system's target",
        with_step("  - fault: {action: pause, target: rabbitmq}"),
        9,
        "steps[1].fault.target: 'rabbitmq' is a rabbitmq target, but this step also runs on kafka (add only: [rabbitmq] to the step, or target 'broker')",
    ),
    (
        "a Kafka role on another system",
        with_step("  - fault: {action: kill, target: leader}").replace(
            "[kafka, sim]", "[kafka, nats, sim]"
        ),
        9,
        "steps[1].fault.target: 'leader' is a Kafka role, but this step also runs on nats (target 'broker', or add only: [kafka] to the step)",
    ),
    (
        "toxic on the controller",
        with_step("  - toxic: {kind: cut, target: kafka-controller}"),
        9,
        "steps[1].toxic.target: 'kafka-controller' has no proxy: clients never talk to it, so there is no network to break (proxies: kafka-broker-1, kafka-broker-2, kafka-broker-3)",
    ),
    (
        "follower beyond the replicas",
        with_step("  - fault: {action: kill, target: follower-2}").replace(
            "brokers:", "channel: {kafka: {replication_factor: 2}}\nbrokers:"
        ),
        10,
        "steps[1].fault.target: 'follower-2': with replication_factor 2 partition 0 has 1 follower",
    ),
    (
        "unknown join name",
        with_step("  - join: writer"),
        9,
        "steps[1].join: no background consume or produce step named 'writer' is running at this step",
    ),
    (
        "stop of a foreground consumer",
        VALID.format(id="x").replace(
            "  - consume: {name: c}", "  - consume: {name: c}\n  - stop: c"
        ),
        10,
        "steps[2].stop: no background consumer step named 'c' is running at this step",
    ),
    (
        "crash of a producer",
        with_step("  - produce: {count: 3, background: true, label: w}\n  - crash: w"),
        10,
        "steps[2].crash: 'w' is a background producer: crash acts on consumers (join it instead)",
    ),
    (
        "repeat of a later label",
        with_step("  - produce: {repeat: again}\n  - produce: {count: 1, label: again}"),
        9,
        "steps[1].produce.repeat: label 'again' belongs to steps[2], which does not run before this step",
    ),
    (
        "duplicate label",
        with_step("  - produce: {count: 1, label: a}\n  - produce: {count: 1, label: a}"),
        10,
        "steps[2].produce.label: label 'a' is already used by steps[1]",
    ),
    (
        "only a system not listed",
        with_step("  - {note: hi, only: [nats]}"),
        9,
        "steps[1].only[0]: 'nats' is not one of this scenario's brokers (kafka, sim)",
    ),
    (
        "source that is no queue",
        VALID.format(id="x").replace("{name: c}", "{name: c, source: payments}"),
        9,
        "steps[1].consume.source: 'payments' is no topic of this scenario on kafka: orders",
    ),
    (
        "RabbitMQ source that is no queue",
        VALID.format(id="x")
        .replace("[kafka, sim]", "[rabbitmq, sim]")
        .replace("{name: c}", "{name: c, source: billing}"),
        9,
        "steps[1].consume.source: 'billing' is no queue of this scenario on rabbitmq (more queues go under channel.rabbitmq.queues): orders",
    ),
    (
        "SQS source without a fan-out",
        VALID.format(id="x")
        .replace("[kafka, sim]", "[sqs, sim]")
        .replace("{name: c}", "{name: c, source: billing}"),
        9,
        "steps[1].consume.source: 'billing' is no queue of this scenario on sqs: only an SNS fan-out (a produce step with to: <topic>) creates more queues (queues: orders)",
    ),
    (
        "dead-letter source without dead-lettering",
        VALID.format(id="x").replace("{name: c}", "{name: c, source: orders-dlq}"),
        9,
        "steps[1].consume.source: 'orders-dlq' exists only with channel.dead_letter",
    ),
    (
        "NATS filter outside the stream",
        VALID.format(id="x")
        .replace("[kafka, sim]", "[nats, sim]")
        .replace("{name: c}", "{name: c, source: 'payments.*'}"),
        9,
        "steps[1].consume.source: 'payments.*' is not inside the stream's subjects (orders.>): on NATS a source is a filter subject",
    ),
    (
        "unknown template placeholder",
        VALID.format(id="x").replace("{count: 3}", "{count: 3, key: 'k-{i % 3}'}"),
        8,
        "steps[0].produce.key: unknown placeholder {i % 3}: templates know {i} (the message's index) and {n} (the count)",
    ),
    (
        "poison beyond the count",
        VALID.format(id="x").replace("{count: 3}", "{count: 3, poison: [7]}"),
        8,
        "steps[0].produce: poison names message 7, but the step sends messages 0 to 2",
    ),
    (
        "huge summary",
        VALID.format(id="x").replace("summary: s", "summary: " + "s" * 20_000),
        5,
        "summary: is 20000 characters long, at most 10000 allowed",
    ),
    (
        "too many steps",
        VALID.format(id="x").replace("  - consume: {name: c}", "  - note: n\n" * 600),
        7,
        "steps: has 601 items, at most 500 allowed",
    ),
    (
        "500,000 note steps",
        VALID.format(id="x").replace("  - consume: {name: c}", "  - note: n\n" * 500_000),
        None,
        "file is larger than 1.0 MiB, the limit for this kind of file",
    ),
    ("too many values", "a: [" + "1, " * 20_000 + "]\n", 1, "more than 10000 values in one file"),
    (
        "a tag",
        VALID.format(id="x").replace("title: t", "title: !!binary dGl0bGU="),
        3,
        "YAML tag tag:yaml.org,2002:binary is not supported here",
    ),
    (
        "two documents",
        VALID.format(id="x") + "---\nid: y\n",
        11,
        "a content file holds one YAML document, not several",
    ),
    ("not a mapping", "- just\n- a list\n", 1, "must be a mapping (key: value), got a list"),
]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [pytest.param(content, line, message, id=name) for name, content, line, message in BAD_FILES],
)
def test_bad_scenario_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str | bytes, line: int | None, message: str
) -> None:
    path = tmp_path / "x.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = runner.invoke(app, ["run", str(path), "--no-predict", "-q"])
    where = f"{path}:{line}" if line is not None else f"{path}"
    assert (result.exit_code, result.stderr) == (2, f"error: {where}: {message}\n")
    assert result.stdout == ""


def test_a_step_limited_to_one_system_needs_its_partner_limited_too(tmp_path: Path) -> None:
    text = (
        VALID.format(id="x")
        .replace("[kafka, sim]", "[kafka, rabbitmq, sim]")
        .replace(
            "  - consume: {name: c}",
            "  - {consume: {name: c, background: true}, only: [kafka]}\n  - stop: c",
        )
    )
    path = write(tmp_path, "x", text)
    result = runner.invoke(app, ["run", str(path), "--no-predict", "-q"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {path}:10: steps[2].stop: no background consumer step named 'c' is running "
        "at this step on rabbitmq\n",
    )
    fixed = write(tmp_path, "x", text.replace("  - stop: c", "  - {stop: c, only: [kafka]}"))
    assert runner.invoke(app, ["scenarios", "show", str(fixed)]).exit_code == 0


def test_a_learner_can_run_a_copy_without_renaming_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(content_dir("scenarios") / "at-most-once-crash.yaml", tmp_path / "my-copy.yaml")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "./my-copy.yaml", "--broker", "sim", "--no-predict", "-q"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout


def test_the_library_still_refuses_a_copy_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "scenarios"
    library.mkdir()
    shutil.copy(content_dir("scenarios") / "at-most-once-crash.yaml", library / "my-copy.yaml")
    monkeypatch.setenv("MQLAB_CONTENT_DIR", str(tmp_path))
    result = runner.invoke(app, ["scenarios", "list"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {library / 'my-copy.yaml'}:2: id: 'at-most-once-crash' must match the file "
        "name 'my-copy' (a library scenario is named after its id; to experiment with a copy, "
        "keep it outside scenarios/)\n",
    )
    run = runner.invoke(app, ["run", str(library / "my-copy.yaml"), "--no-predict", "-q"])
    assert run.exit_code == 2


def test_the_library_refuses_two_files_with_one_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "scenarios"
    library.mkdir()
    write(library, "ok", VALID.format(id="ok"))
    (library / "ok.yml").write_text(VALID.format(id="ok"))
    monkeypatch.setenv("MQLAB_CONTENT_DIR", str(tmp_path))
    result = runner.invoke(app, ["scenarios", "list"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {library / 'ok.yml'}: id 'ok' is already the id of {library / 'ok.yaml'}\n",
    )


def test_a_negative_seed_is_refused() -> None:
    result = runner.invoke(app, ["run", "at-most-once-crash", "--seed", "-1", "--no-predict"])
    assert result.exit_code == 2
    assert "--seed" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("brokers", "channel", "source"),
    [
        ("[rabbitmq, sim]", "{rabbitmq: {exchange: e, queues: {billing: ['#']}}}", "billing"),
        ("[rabbitmq, sim]", "{dead_letter: {after_attempts: 2}}", "orders-dlq"),
        ("[kafka, sim]", "{dead_letter: {after_attempts: 2}}", "orders-dlq"),
        ("[nats, sim]", "{nats: {subjects: ['orders.*.created', 'audit.>']}}", "audit.eu.x"),
        ("[nats, sim]", "{}", "orders.*.created"),
    ],
)
def test_sources_the_scenario_has_are_accepted(
    tmp_path: Path, brokers: str, channel: str, source: str
) -> None:
    text = (
        VALID.format(id="x")
        .replace("[kafka, sim]", f"{brokers}\nchannel: {channel}")
        .replace("{name: c}", f"{{name: c, source: '{source}'}}")
    )
    assert load_scenario(write(tmp_path, "x", text)).steps[1].consume is not None
