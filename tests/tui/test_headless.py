"""The headless rule: only the TUI imports Textual, and only when it opens.

Each probe runs in a fresh interpreter and reports, at exit, whether any ``textual`` module was
loaded; the last test shows the probe does see Textual when the app is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_REPORT = (
    "import atexit, json, sys\n"
    "def _report():\n"
    "    loaded = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
    "    sys.stderr.write('TEXTUAL-MODULES ' + json.dumps(loaded) + '\\n')\n"
    "atexit.register(_report)\n"
)


def _textual_modules(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _REPORT + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    line = next(
        (row for row in result.stderr.splitlines() if row.startswith("TEXTUAL-MODULES ")), None
    )
    assert line is not None, result.stderr
    loaded: list[str] = json.loads(line.removeprefix("TEXTUAL-MODULES "))
    return loaded


@pytest.mark.parametrize(
    "modules",
    [
        "mqlab.cli, mqlab.cli.app, mqlab.cli.course",
        "mqlab.scenarios.session, mqlab.scenarios.report",
        "mqlab.course.scenario, mqlab.course.lesson, mqlab.course.library, mqlab.course.progress",
        "mqlab.player.player",
        "mqlab.grader",
    ],
)
def test_the_core_imports_no_textual(modules: str) -> None:
    for name in modules.split(", "):
        if name == "mqlab.grader" and not (ROOT / "mqlab" / "grader").is_dir():
            pytest.skip("no grader in this tree")
    assert _textual_modules(f"import {modules}") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "kafka-partition-ordering", "--broker", "sim"],
        ["course", "--plain"],
        ["course"],  # standard output is not a terminal here: the text walkthrough
    ],
)
def test_commands_that_do_not_open_the_app_never_import_textual(argv: list[str]) -> None:
    code = f"import sys\nsys.argv = ['mqlab', *{argv!r}]\nfrom mqlab.cli import main\nmain()\n"
    assert _textual_modules(code) == []


def test_the_probe_sees_textual_when_the_app_is_imported() -> None:
    assert "textual" in _textual_modules("import mqlab.tui.app")
