"""The layers of docs/ARCHITECTURE.md hold: the import contract passes on this tree, and it
would fail on a wrong-way import (so the contract is not a check that cannot fail)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import computed_once

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's import contract over the package found in ``tree``."""
    linter = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(linter), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


WRONG_WAY_IMPORTS = [
    ("lab/paths.py", "import mqlab.scenarios.session", "mqlab.scenarios.session", "Layers"),
    ("brokers/base.py", "from mqlab.course import scenario", "mqlab.course.scenario", "Layers"),
    ("scenarios/report.py", "import textual", "textual", "Only mqlab.tui imports Textual"),
]
"""(module inside mqlab/, the line added to it, the module it then imports, the contract that
must catch it)."""


def test_the_import_contract_holds() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wrong_way_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """lint-imports over one copy of the package with every wrong-way import added.

    One run instead of one per import (each builds the whole import graph, one to two seconds):
    the report names every illegal import on a line of its own, so each case below still
    shows its own import caught by its own contract.
    """

    def lint_a_broken_copy() -> tuple[int, str]:
        tree = tmp_path_factory.mktemp("wrong-way") / "tree"
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "mqlab", tree / "mqlab", ignore=ignore)
        shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
        for module, line, _, _ in WRONG_WAY_IMPORTS:
            target = tree / "mqlab" / module
            target.write_text(target.read_text() + f"\n{line}\n")
        result = _lint_imports(tree)
        return result.returncode, result.stdout

    returncode, report = computed_once("wrong-way-imports", lint_a_broken_copy)
    assert returncode != 0, report
    return report


def _contract_section(report: str, contract: str) -> str:
    """The text under the heading of the broken contract whose name starts with ``contract``
    (a heading is a line underlined with dashes)."""
    _, _, broken = report.partition("Broken contracts")
    lines = broken.splitlines()
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for number, text in enumerate(lines):
        underline = lines[number + 1] if number + 1 < len(lines) else ""
        if text.strip() and underline and set(underline) == {"-"}:
            current = sections.setdefault(text, [])
        else:
            current.append(text)
    return "\n".join(
        text for name, section in sections.items() if name.startswith(contract) for text in section
    )


@pytest.mark.parametrize(
    ("module", "line", "imported", "contract"),
    WRONG_WAY_IMPORTS,
    ids=[f"{module}-{line}" for module, line, _, _ in WRONG_WAY_IMPORTS],
)
def test_a_wrong_way_import_breaks_the_contract(
    wrong_way_report: str, module: str, line: str, imported: str, contract: str
) -> None:
    broken = [text for text in wrong_way_report.splitlines() if text.endswith("BROKEN")]
    assert any(text.startswith(contract) for text in broken), wrong_way_report
    importer = "mqlab." + module.removesuffix(".py").replace("/", ".")
    assert re.search(
        rf"^-\s+{re.escape(importer)} -> {re.escape(imported)} \(l\.\d+\)$",
        _contract_section(wrong_way_report, contract),
        re.MULTILINE,
    ), wrong_way_report


def test_the_headless_core_imports_no_textual() -> None:
    probe = (
        "import sys, mqlab.cli, mqlab.cli.app, mqlab.scenarios.session, mqlab.scenarios.report, "
        "mqlab.course.scenario; "
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
