"""The learner's commands: init, check, hint, progress, next, reset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.grader.catalog import find_exercise

pytestmark = pytest.mark.sim
runner = CliRunner()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MQLAB_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "ws"
    result = runner.invoke(app, ["init", str(root)])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(root)
    return root


def test_init_creates_every_starter_and_a_readme(workspace: Path) -> None:
    entry = find_exercise("full-jitter")
    learner = workspace / entry.lesson_folder / entry.id / entry.exercise.file
    assert learner.read_text() == entry.starter_file.read_text()
    assert (learner.parent / "TASK.md").is_file()
    assert "mqlab check" in (workspace / "README.md").read_text()


def test_init_again_keeps_the_learners_files(workspace: Path) -> None:
    entry = find_exercise("full-jitter")
    learner = workspace / entry.lesson_folder / entry.id / entry.exercise.file
    learner.write_text("# mine\n")
    result = runner.invoke(app, ["init", str(workspace)])
    assert result.exit_code == 0
    assert learner.read_text() == "# mine\n"


def test_check_fails_on_the_starter_then_passes_with_a_solution(workspace: Path) -> None:
    entry = find_exercise("full-jitter")
    failing = runner.invoke(app, ["check", "full-jitter", "--seed", "5"])
    assert failing.exit_code == 1, failing.output
    assert "does NOT hold" in failing.output
    assert "reproduce: mqlab check full-jitter --broker sim --seed 5" in failing.output
    assert "hint 1:" in failing.output
    learner = workspace / entry.lesson_folder / entry.id / entry.exercise.file
    shutil.copy(entry.solution_file, learner)
    passing = runner.invoke(app, ["check", "full-jitter", "--json"])
    assert passing.exit_code == 0, passing.output
    report = json.loads(passing.stdout)
    assert report["passed"] is True
    shown = runner.invoke(app, ["progress"])
    assert "passed" in shown.output


def test_check_without_a_workspace_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MQLAB_WORKSPACE", raising=False)
    result = runner.invoke(app, ["check", "full-jitter"])
    assert result.exit_code == 2
    assert "mqlab init" in result.output


def test_check_refuses_a_broker_the_exercise_does_not_list(workspace: Path) -> None:
    result = runner.invoke(app, ["check", "full-jitter", "--broker", "kafka"])
    assert result.exit_code == 2
    assert "runs on sim, not kafka" in result.output


def test_an_unknown_exercise_gets_a_suggestion(workspace: Path) -> None:
    result = runner.invoke(app, ["check", "full-jiter"])
    assert result.exit_code == 2
    assert "did you mean 'full-jitter'" in result.output


def test_hints_come_one_at_a_time(workspace: Path) -> None:
    entry = find_exercise("full-jitter")
    for number in range(1, len(entry.exercise.hints) + 2):
        result = runner.invoke(app, ["hint", "full-jitter"])
        assert result.exit_code == 0
        shown = min(number, len(entry.exercise.hints))
        assert f"hint {shown}/{len(entry.exercise.hints)}" in result.output


def test_next_names_the_first_unfinished_exercise(workspace: Path) -> None:
    result = runner.invoke(app, ["next"])
    assert result.exit_code == 0
    assert "mqlab check" in result.output


def test_reset_restores_the_starter_and_keeps_a_backup(workspace: Path) -> None:
    entry = find_exercise("full-jitter")
    learner = workspace / entry.lesson_folder / entry.id / entry.exercise.file
    learner.write_text("# my attempt\n")
    result = runner.invoke(app, ["reset", "full-jitter"])
    assert result.exit_code == 0, result.output
    assert learner.read_text() == entry.starter_file.read_text()
    backups = list((workspace / ".mqlab" / "backups").iterdir())
    assert [b.read_text() for b in backups] == ["# my attempt\n"]


def test_a_check_that_cannot_reach_its_service_spends_no_attempt_and_no_hint(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Move every lab port: nothing listens there, as on a machine without the lab.
    monkeypatch.setenv("MQLAB_PORT_OFFSET", "7")
    result = runner.invoke(app, ["check", "redis-dedup-ttl", "--broker", "redis"])
    assert result.exit_code == 3, result.output
    assert "hint" not in result.output
    from mqlab.course.progress import ProgressStore

    with ProgressStore() as store:
        assert store.exercise("redis-dedup-ttl") is None
