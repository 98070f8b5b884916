"""``mqlab course``: the app in a terminal, the text walkthrough otherwise."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mqlab.cli import course as course_command
from mqlab.cli.app import app

pytestmark = pytest.mark.sim


def test_without_a_terminal_the_course_is_the_text_walkthrough() -> None:
    result = CliRunner().invoke(app, ["course"])
    assert result.exit_code == 0, result.output
    assert "Each scenario asks you to predict" in result.output
    assert "mqlab run <id> --broker sim" in result.output


def test_plain_is_the_walkthrough_even_in_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert course_command.wants_app(plain=False)
    assert not course_command.wants_app(plain=True)
    monkeypatch.setenv("TERM", "dumb")
    assert not course_command.wants_app(plain=False)


def test_the_app_opens_in_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict[str, object]] = []
    monkeypatch.setattr(course_command, "wants_app", lambda plain: not plain)
    monkeypatch.setattr(course_command, "open_app", lambda **options: opened.append(options))
    result = CliRunner().invoke(app, ["course", "--broker", "kafka", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert opened == [
        {"broker": "kafka", "seed": 3, "speed": 1.0, "scenario": None, "replay": None}
    ]
    result = CliRunner().invoke(app, [])  # plain `mqlab` opens the course too
    assert result.exit_code == 0, result.output
    assert opened[-1]["broker"] == "sim"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["course", "--seed", "-1"], "the seed must be 0 or more"),
        (["course", "--speed", "0"], "the speed must be more than 0"),
    ],
)
def test_bad_options_are_refused(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert message in result.output


def test_a_misspelt_broker_is_one_line_before_the_app_opens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(course_command, "wants_app", lambda plain: True)
    result = CliRunner().invoke(app, ["course", "--broker", "kafak"])
    assert result.exit_code == 2
    assert "kafka" in result.output  # the "did you mean"
    assert "Traceback" not in result.output
