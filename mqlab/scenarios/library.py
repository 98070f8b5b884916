"""The scenario library: find, list and load scenario files by id or path.

The library is the folder ``scenarios/`` (see :func:`mqlab.course.content.content_dir`): there
a file is named after its scenario's id and ids are unique. A file given by path from anywhere
else is a learner's copy or an author's draft: it runs as it is, whatever its id.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from mqlab.course.content import content_dir
from mqlab.course.loader import ContentError, describe, line_for, parse_yaml
from mqlab.course.scenario import Scenario
from mqlab.course.scenario import load_scenario as _load_scenario_file

SCENARIO_SUFFIXES = (".yaml", ".yml")


class UnknownScenario(ContentError):
    """No scenario with that id (the message suggests the closest one)."""


def pattern_problems(scenario: Scenario) -> list[tuple[tuple[str | int, ...], str]]:
    """What is wrong with the scenario's ``pattern:`` steps: an unknown program, a parameter
    it does not take or of the wrong type, a crash point it does not have; and a program that
    needs a lab service the scenario does not name (so its real run would fail half-way)."""
    from mqlab.patterns.programs import UnknownProgram, find_program

    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, step in enumerate(scenario.steps):
        run = step.pattern
        if run is None:
            continue
        where: tuple[str | int, ...] = ("steps", index, "pattern")
        try:
            program = find_program(run.program)
        except UnknownProgram as error:
            problems.append(((*where, "program"), str(error)))
            continue
        for problem in program.problems(run.params, run.crash.point if run.crash else None):
            problems.append(((*where, "params"), problem))
        missing = [s for s in program.services if s not in scenario.services]
        if missing:
            problems.append(
                (
                    (*where, "program"),
                    f"{run.program} uses {', '.join(missing)} on a real run: add "
                    f"services: [{', '.join(missing)}] to the scenario",
                )
            )
    return problems


def load_scenario(path: Path, *, id_must_match_file: bool = True) -> Scenario:
    """Load a scenario file and check its pattern steps against the pattern library.

    Raises:
        ContentError: ``path:line: what is wrong``.
    """
    scenario = _load_scenario_file(path, id_must_match_file=id_must_match_file)
    problems = pattern_problems(scenario)
    if problems:
        location, message = problems[0]
        _, table = parse_yaml(path)
        raise ContentError(path, line_for(table, location), f"{describe(location)}: {message}")
    return scenario


def _library_dir(directory: Path | None) -> Path:
    return directory or content_dir("scenarios")


def scenario_paths(directory: Path | None = None) -> list[Path]:
    """Every ``*.yaml`` / ``*.yml`` scenario file of the library, sorted by name."""
    folder = _library_dir(directory)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix in SCENARIO_SUFFIXES)


def load_all(directory: Path | None = None) -> list[Scenario]:
    """Load every library scenario; the first invalid file raises :class:`ContentError`.

    Raises:
        ContentError: an invalid file, an id that differs from its file name, or two files
            with one id (``a.yaml`` and ``a.yml``).
    """
    scenarios: list[Scenario] = []
    seen: dict[str, Path] = {}
    for path in scenario_paths(directory):
        scenario = load_scenario(path)
        if scenario.id in seen:
            raise ContentError(
                path, None, f"id {scenario.id!r} is already the id of {seen[scenario.id]}"
            )
        seen[scenario.id] = path
        scenarios.append(scenario)
    return scenarios


def _is_library_file(path: Path, directory: Path | None) -> bool:
    try:
        return path.resolve().parent == _library_dir(directory).resolve()
    except OSError:
        return False


def find(name: str, directory: Path | None = None) -> Scenario:
    """A scenario by id (``kafka-leader-failover``) or by path to a YAML file.

    ``name`` is a path when it ends in ``.yaml`` / ``.yml``, contains a ``/`` or names an
    existing file; otherwise it is an id of the library. A path inside the library must be
    named after its id; a path elsewhere (a learner's copy) need not be.

    Raises:
        UnknownScenario: no such id; with a "did you mean" when one is close.
        ContentError: the file is invalid.
    """
    candidate = Path(name)
    if candidate.suffix in SCENARIO_SUFFIXES or "/" in name or candidate.is_file():
        return load_scenario(candidate, id_must_match_file=_is_library_file(candidate, directory))
    paths = {path.stem: path for path in scenario_paths(directory)}
    if name in paths:
        return load_scenario(paths[name])
    close = difflib.get_close_matches(name, paths, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else " (see: mqlab scenarios list)"
    raise UnknownScenario(name, None, f"no such scenario{hint}")
