"""Safe YAML loading with line numbers, so validation errors point at the offending line.

PyYAML's ``safe_load`` forgets where values came from. Here the document is composed into nodes
first (still the safe loader: no arbitrary tags), a table from value paths to line numbers is
built, and the plain data is validated by a pydantic model. A ``ValidationError`` location such
as ``("steps", 3, "produce", "count")`` is then mapped back to the nearest line that exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

_M = TypeVar("_M", bound=BaseModel)

PathKey = tuple[str | int, ...]


class ContentError(ValueError):
    """A content file is unreadable or invalid; ``str()`` is ``path:line: message``."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


def _line_table(node: yaml.Node, path: PathKey, table: dict[PathKey, int]) -> None:
    table[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            table[(*path, key)] = key_node.start_mark.line + 1
            _line_table(value_node, (*path, key), table)
            # keep the key's own line for "unexpected key" errors
            table[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_table(item, (*path, index), table)


def parse_yaml(path: Path, text: str | None = None) -> tuple[Any, dict[PathKey, int]]:
    """Read ``path`` safely; return the data and the path -> line table.

    Raises:
        ContentError: unreadable file or YAML syntax error (with its line).
    """
    try:
        source = text if text is not None else path.read_text(encoding="utf-8")
    except OSError as error:
        raise ContentError(path, None, f"cannot read file: {error.strerror}") from None
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        data = yaml.safe_load(source)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or str(error)
        raise ContentError(path, line, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise ContentError(path, None, f"YAML error: {error}") from None
    table: dict[PathKey, int] = {}
    if node is not None:
        _line_table(node, (), table)
    return data, table


def line_for(table: dict[PathKey, int], location: Sequence[str | int]) -> int | None:
    """The line of the longest prefix of ``location`` that exists in the document."""
    loc = tuple(location)
    while loc:
        if loc in table:
            return table[loc]
        loc = loc[:-1]
    return table.get(())


def _describe(location: Sequence[str | int]) -> str:
    parts: list[str] = []
    for item in location:
        parts.append(f"[{item}]" if isinstance(item, int) else (f".{item}" if parts else item))
    return "".join(parts)


def validate(model: type[_M], path: Path, data: Any, table: dict[PathKey, int]) -> _M:
    """Validate ``data`` as ``model``; the first error becomes a ContentError with a line.

    pydantic locations include union-member tags (e.g. ``function-after[...]`` or a model name)
    which are not keys of the document; they are dropped before looking up the line.
    """
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = [p for p in first["loc"] if isinstance(p, int) or p in _keys_of(table)]
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unexpected key (check the spelling; see the format docs)"
        where = _describe(location)
        text = f"{where}: {message}" if where else message
        more = len(error.errors()) - 1
        if more:
            text += f" (+{more} more problem{'s' if more > 1 else ''})"
        raise ContentError(path, line_for(table, location), text) from None


def _keys_of(table: dict[PathKey, int]) -> set[str | int]:
    return {part for key in table for part in key}


def load_model(model: type[_M], path: Path, text: str | None = None) -> _M:
    """Parse and validate one content file."""
    data, table = parse_yaml(path, text)
    if data is None:
        raise ContentError(path, None, "file is empty")
    return validate(model, path, data, table)
