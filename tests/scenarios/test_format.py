"""The scenario format: every shipped scenario is valid, broken files give file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqlab.course.loader import ContentError
from mqlab.course.scenario import load_scenario
from mqlab.scenarios.library import UnknownScenario, find, load_all, scenario_paths

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


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


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


def test_valid_file_loads(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "ok", VALID.format(id="ok")))
    assert scenario.steps[0].action == "produce"
    assert scenario.expect.for_system("kafka") == {"produced": 3}


def test_misspelled_key_names_its_line(tmp_path: Path) -> None:
    text = VALID.format(id="typo").replace("consume: {name: c}", "consume: {name: c, idel: 2}")
    with pytest.raises(ContentError) as caught:
        load_scenario(write(tmp_path, "typo", text))
    assert str(caught.value).startswith(f"{tmp_path / 'typo.yaml'}:9:")
    assert "steps[1].consume.idel" in str(caught.value)
    assert "unexpected key" in str(caught.value)


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = VALID.format(id="broken").replace("title: t", "title: [unclosed")
    with pytest.raises(ContentError) as caught:
        load_scenario(write(tmp_path, "broken", text))
    assert ":3:" in str(caught.value) or ":4:" in str(caught.value)
    assert "YAML syntax error" in str(caught.value)


def test_unknown_broker_is_rejected_with_line(tmp_path: Path) -> None:
    text = VALID.format(id="bad-broker").replace("[kafka, sim]", "[kafak, sim]")
    with pytest.raises(ContentError) as caught:
        load_scenario(write(tmp_path, "bad-broker", text))
    assert ":6:" in str(caught.value)
    assert "brokers[0]" in str(caught.value)


def test_step_with_two_actions_is_rejected(tmp_path: Path) -> None:
    text = VALID.format(id="two").replace(
        "  - consume: {name: c}", "  - consume: {name: c}\n    wait: 2"
    )
    with pytest.raises(ContentError, match="exactly one action"):
        load_scenario(write(tmp_path, "two", text))


def test_repeat_must_name_a_label(tmp_path: Path) -> None:
    text = VALID.format(id="rep").replace(
        "  - consume: {name: c}", "  - produce: {repeat: nothing}\n  - consume: {name: c}"
    )
    with pytest.raises(ContentError, match="no produce step has label .nothing."):
        load_scenario(write(tmp_path, "rep", text))


def test_id_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="must match the file name"):
        load_scenario(write(tmp_path, "other", VALID.format(id="ok")))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="empty"):
        load_scenario(write(tmp_path, "empty", ""))
    with pytest.raises(ContentError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def test_find_suggests_close_names() -> None:
    with pytest.raises(UnknownScenario, match="did you mean 'at-most-once-crash'"):
        find("at-most-once-crsh")
    assert find("at-most-once-crash").id == "at-most-once-crash"
    assert scenario_paths()
