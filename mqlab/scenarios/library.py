"""The scenario library: find, list and load scenario files by id or path."""

from __future__ import annotations

import difflib
from pathlib import Path

from mqlab.course.content import content_dir
from mqlab.course.loader import ContentError
from mqlab.course.scenario import Scenario, load_scenario


class UnknownScenario(ContentError):
    """No scenario with that id (the message suggests the closest one)."""


def scenario_paths(directory: Path | None = None) -> list[Path]:
    """Every ``*.yaml`` scenario file, sorted by name."""
    folder = directory or content_dir("scenarios")
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def load_all(directory: Path | None = None) -> list[Scenario]:
    """Load every scenario; the first invalid file raises :class:`ContentError`."""
    scenarios = [load_scenario(path) for path in scenario_paths(directory)]
    seen: set[str] = set()
    for scenario in scenarios:
        if scenario.id in seen:
            raise ContentError(Path(scenario.id), None, "duplicate scenario id")
        seen.add(scenario.id)
    return scenarios


def find(name: str, directory: Path | None = None) -> Scenario:
    """A scenario by id (``kafka-leader-failover``) or by path to a YAML file.

    Raises:
        UnknownScenario: no such id; with a "did you mean" when one is close.
        ContentError: the file is invalid.
    """
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return load_scenario(candidate)
    paths = {p.stem: p for p in scenario_paths(directory)}
    if name in paths:
        return load_scenario(paths[name])
    close = difflib.get_close_matches(name, paths, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else " (see: mqlab scenarios list)"
    raise UnknownScenario(name, None, f"no such scenario{hint}")
