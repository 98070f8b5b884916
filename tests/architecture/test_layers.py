"""The layers of docs/ARCHITECTURE.md hold: the import contract passes on this tree, and it
would fail on a wrong-way import (so the contract is not a check that cannot fail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package with ``line`` added to ``module`` (a path inside mqlab/)."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "mqlab", tree / "mqlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    target = tree / "mqlab" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return tree


def test_the_import_contract_holds() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("lab/paths.py", "import mqlab.scenarios.session", "Layers"),
        ("brokers/base.py", "from mqlab.course import scenario", "Layers"),
        ("scenarios/report.py", "import textual", "Only mqlab.tui imports Textual"),
    ],
)
def test_a_wrong_way_import_breaks_the_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    result = _lint_imports(_copy_with(tmp_path, module, line))
    assert result.returncode != 0
    broken = [text for text in result.stdout.splitlines() if text.endswith("BROKEN")]
    assert any(text.startswith(contract) for text in broken), result.stdout


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
