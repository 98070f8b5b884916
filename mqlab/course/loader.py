"""The one loader for every content file mqlab reads (scenarios, lessons, exercises).

Content files are written by course authors and by learners who copy, edit and break them, so
the loader treats every file as hostile and answers each problem with one line,
``path:line: what is wrong``, naming the field (:class:`ContentError`), never a traceback. It
refuses, before anything costs time or memory:

* files over a size limit (:data:`MAX_FILE_BYTES` unless the caller passes another),
* binary files (a NUL byte), text that is not UTF-8 (with the line and byte offset of the
  first bad byte), and control characters YAML does not allow,
* YAML anchors and aliases (``&name`` / ``*name``): they are refused at the first event that
  carries one, so a "billion laughs" file is answered in microseconds instead of expanding
  into gigabytes,
* nesting deeper than :data:`MAX_NESTING` and more than :data:`MAX_VALUES` values in one file,
* a key that appears twice in one mapping (YAML would silently keep the last one), merge keys
  (``<<``), non-scalar keys, more than one document, and tags outside YAML's core scalars.

Parsing is event based: libyaml (PyYAML's C parser, when it is installed) turns the text into
events and this module builds the plain data from them in one loop without recursion, so the
checks above happen while reading and a deep file cannot exhaust the Python stack. Every value's
line is kept in a table, so a pydantic ``ValidationError`` at ``("steps", 3, "wait",
"timeout")`` becomes ``file.yaml:17: steps[3].wait.timeout: must be greater than 0, got -1``.

A model can also check what a field constraint cannot see (cross-references between steps, a
fault target that the scenario's systems do not have): :func:`load_model` calls the model's
``content_problems()`` method, if it has one, and reports the first problem it yields, at the
line of the location it names (see :class:`CheckedContent`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

_M = TypeVar("_M", bound=BaseModel)

Location = tuple[str | int, ...]
"""Where a value sits in a document: keys and list indexes, e.g. ``("steps", 3, "wait")``."""

PathKey = Location
"""The former name of :data:`Location` (the line table's keys)."""

MAX_FILE_BYTES = 1024 * 1024
"""Default size limit of a content file (1 MiB). The library's scenarios are 1-3 KiB; a
lesson with its text is a few tens of KiB. A caller may pass its own ``max_bytes``."""

MAX_NESTING = 32
"""Deepest nesting of mappings and lists (a scenario needs 6 levels)."""
NESTED_TOO_DEEP = f"nested more than {MAX_NESTING} levels deep"

MAX_VALUES = 10_000
"""Most values (scalars, mappings, lists) in one file; a library scenario has about 100."""

_ALLOWED_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:timestamp",
}
_MAPPING_TAG = "tag:yaml.org,2002:map"
_SEQUENCE_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"

# Characters YAML 1.1 accepts in a stream (its "printable" set); anything else is refused
# before parsing, with its line and column.
_NOT_PRINTABLE = re.compile(r"[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class ContentError(ValueError):
    """A content file is unreadable or invalid; ``str()`` is ``path:line: message``.

    Attributes:
        path: the file.
        line: 1-based line of the problem, or None when it concerns the whole file.
        message: what is wrong, naming the field (``steps[2].fault.target: ...``).
    """

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@runtime_checkable
class CheckedContent(Protocol):
    """A model that checks more than its fields can (cross-references, per-system rules).

    :func:`load_model` calls ``content_problems()`` after pydantic validation succeeded and
    reports the problem on the smallest line as a :class:`ContentError`.
    """

    def content_problems(self) -> Iterable[tuple[Location, str]]:
        """Yield ``(location, message)`` for every problem; nothing when the content is fine.

        ``location`` names the value the problem is about (``("steps", 3, "join")``); the
        error is printed as ``path:line: steps[3].join: message``.
        """
        ...


@dataclass
class Document:
    """A parsed content file: plain data plus the line of every value."""

    path: Path
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)

    def line_of(self, location: Sequence[str | int]) -> int | None:
        """The line of ``location``, or of its longest prefix that exists in the document."""
        return line_for(self.lines, location)

    def error(self, location: Sequence[str | int], message: str) -> ContentError:
        """A ContentError about ``location``: ``path:line: steps[3].join: message``."""
        where = describe(location)
        return ContentError(
            self.path, self.line_of(location), f"{where}: {message}" if where else message
        )


# --- reading the bytes ----------------------------------------------------------------------


def _size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size} bytes"


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as stream:
            raw = stream.read(max_bytes + 1)
    except OSError as error:
        raise ContentError(path, None, f"cannot read file: {error.strerror or error}") from None
    if len(raw) > max_bytes:
        raise ContentError(
            path,
            None,
            f"file is larger than {_size_text(max_bytes)}, the limit for this kind of file",
        )
    return raw


def _line_of_offset(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def decode_text(path: Path, raw: bytes) -> str:
    """Strict UTF-8 decoding with a one-line error for binary data and bad bytes.

    Raises:
        ContentError: a NUL byte (a binary file) or a byte sequence that is not UTF-8.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ContentError(
            path,
            1,
            "text is UTF-16 (it starts with a UTF-16 byte order mark); save the file as UTF-8",
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ContentError(
            path,
            _line_of_offset(raw, nul),
            f"binary data (a NUL byte at byte offset {nul}): this is not a text file",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.start + 1].hex()
        raise ContentError(
            path,
            _line_of_offset(raw, error.start),
            f"text is not UTF-8 (byte 0x{bad} at byte offset {error.start}); "
            "save the file as UTF-8",
        ) from None


def _check_printable(path: Path, text: str) -> None:
    bad = _NOT_PRINTABLE.search(text)
    if bad is None:
        return
    line = text.count("\n", 0, bad.start()) + 1
    column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
    raise ContentError(
        path,
        line,
        f"control character U+{ord(bad.group()):04X} at column {column} is not allowed "
        "in a text file",
    )


# --- parsing --------------------------------------------------------------------------------


class _Scalars(yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """YAML's implicit typing (``3`` is an int, ``true`` a bool) and its safe scalar types."""

    def __init__(self) -> None:
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


def _event_source(text: str) -> Any:
    """An object with ``check_event`` / ``get_event``: libyaml's parser when available."""
    if getattr(yaml, "__with_libyaml__", False):
        from yaml._yaml import CParser

        return CParser(text)
    return yaml.SafeLoader(text)


class _Refused(Exception):
    """A structural problem found while reading events (line is 1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class _Open:
    """A mapping or list being built, with where it sits in the document."""

    location: Location
    container: dict[Any, Any] | list[Any]
    key: Any = None
    has_key: bool = False
    key_lines: dict[Any, int] = field(default_factory=dict)


def _line(event: Any) -> int:
    return int(event.start_mark.line) + 1


_TAG_WORDS = {"int": "a whole number", "float": "a number", "timestamp": "a date", "bool": "a bool"}


def _scalar(scalars: _Scalars, event: Any, stack: list[_Open]) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = scalars.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    if tag == _MERGE_TAG:
        raise _Refused(_line(event), "merge keys (<<) are not supported: write the keys out")
    if tag not in _ALLOWED_SCALAR_TAGS:
        raise _Refused(_line(event), f"YAML tag {event.tag} is not supported here")
    if tag == _STR_TAG:
        return event.value
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return scalars.construct_object(node)
    except (ValueError, OverflowError):
        # Python refuses to convert ints of more than 4300 digits; a date like 2024-13-45
        # matches YAML's timestamp pattern but is no date.
        shown = event.value if len(event.value) <= 40 else f"{event.value[:40]}..."
        kind = tag.rsplit(":", 1)[-1]
        what = _TAG_WORDS.get(kind, kind)
        where = _where_next(stack)
        raise _Refused(
            _line(event), f"{where}{shown!r} cannot be read as {what} (quote text to keep it as is)"
        ) from None


def _collection_tag(event: Any, default: str) -> None:
    if event.tag not in (None, "!", default):
        raise _Refused(_line(event), f"YAML tag {event.tag} is not supported here")


def _build(text: str) -> tuple[Any, dict[Location, int]]:
    """Turn the text into plain data and a line table, enforcing the structural limits."""
    source = _event_source(text)
    scalars = _Scalars()
    lines: dict[Location, int] = {}
    stack: list[_Open] = []
    documents = 0
    values = 0
    result: Any = None

    def place(value: Any, event: Any, is_collection: bool) -> Location:
        """Attach ``value`` to the open collection; return its location."""
        if not stack:
            lines[()] = _line(event)
            return ()
        top = stack[-1]
        if isinstance(top.container, list):
            location = (*top.location, len(top.container))
            top.container.append(value)
            lines[location] = _line(event)
            return location
        if not top.has_key:
            if is_collection:
                raise _Refused(_line(event), "a key must be a plain value, not a list or mapping")
            try:
                hash(value)
            except TypeError:
                raise _Refused(_line(event), "a key must be a plain value") from None
            if value in top.key_lines:
                where = describe((*top.location, value))
                raise _Refused(
                    _line(event),
                    f"{where}: duplicate key (already on line {top.key_lines[value]})",
                )
            top.key_lines[value] = _line(event)
            top.key, top.has_key = value, True
            return top.location
        location = (*top.location, top.key)
        top.container[top.key] = value
        lines[location] = top.key_lines[top.key]
        top.has_key = False
        return location

    while source.check_event():
        event = source.get_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                _line(event),
                "YAML anchors and aliases (&name, *name) are not supported: write the value out",
            )
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _Refused(_line(event), "a content file holds one YAML document, not several")
            continue
        if isinstance(event, yaml.ScalarEvent | yaml.SequenceStartEvent | yaml.MappingStartEvent):
            values += 1
            if values > MAX_VALUES:
                raise _Refused(_line(event), f"more than {MAX_VALUES} values in one file")
        if isinstance(event, yaml.ScalarEvent):
            value = _scalar(scalars, event, stack)
            place(value, event, is_collection=False)
            if not stack:
                result = value
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if len(stack) >= MAX_NESTING:
                raise _Refused(_line(event), NESTED_TOO_DEEP)
            is_list = isinstance(event, yaml.SequenceStartEvent)
            _collection_tag(event, _SEQUENCE_TAG if is_list else _MAPPING_TAG)
            container: dict[Any, Any] | list[Any] = [] if is_list else {}
            location = place(container, event, is_collection=True)
            if not stack:
                result = container
            stack.append(_Open(location, container))
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            stack.pop()
    return result, lines


def _where_next(stack: list[_Open]) -> str:
    """``steps[3].count: `` for the value the next event will be (used in messages)."""
    if not stack:
        return ""
    top = stack[-1]
    if isinstance(top.container, list):
        location: Location = (*top.location, len(top.container))
    elif top.has_key:
        location = (*top.location, top.key)
    else:
        return f"{describe(top.location)}: a key: " if top.location else "a key: "
    return f"{describe(location)}: "


def read_document(
    path: Path, text: str | None = None, *, max_bytes: int = MAX_FILE_BYTES
) -> Document:
    """Read and parse ``path`` (or ``text``, reported as ``path``) within the limits.

    Raises:
        ContentError: unreadable, too large, binary, not UTF-8, not valid YAML, or using
            what the loader refuses (anchors, duplicate keys, deep nesting ...).
    """
    if text is None:
        text = decode_text(path, _read_bytes(path, max_bytes))
    elif len(text) > max_bytes:
        raise ContentError(path, None, f"text is larger than {_size_text(max_bytes)}")
    _check_printable(path, text)
    try:
        data, lines = _build(text)
    except _Refused as refused:
        raise ContentError(path, refused.line, refused.message) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or error.context or "not valid YAML"
        if "nesting depth" in problem:
            # PyYAML 6.0.4 and later: the scanner, which reads a line ahead of the events this
            # loader counts, has a depth limit of its own (far above MAX_NESTING): the file is
            # deeper than the loader's limit either way, so it gets the loader's message.
            raise ContentError(path, line, NESTED_TOO_DEEP) from None
        raise ContentError(path, line, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else "not valid YAML"
        raise ContentError(path, None, f"YAML error: {message}") from None
    return Document(path, data, lines)


def parse_yaml(path: Path, text: str | None = None) -> tuple[Any, dict[Location, int]]:
    """Read ``path`` safely; return the data and the location -> line table.

    Kept for callers written before :func:`read_document`.

    Raises:
        ContentError: see :func:`read_document`.
    """
    document = read_document(path, text)
    return document.data, document.lines


def line_for(table: dict[Location, int], location: Sequence[str | int]) -> int | None:
    """The line of the longest prefix of ``location`` that exists in the document."""
    loc = tuple(location)
    while loc:
        if loc in table:
            return table[loc]
        loc = loc[:-1]
    return table.get(())


def describe(location: Sequence[str | int]) -> str:
    """``("steps", 3, "wait")`` -> ``steps[3].wait`` (a key longer than 40 characters is cut)."""
    parts: list[str] = []
    for item in location:
        if isinstance(item, int) and not isinstance(item, bool):
            parts.append(f"[{item}]")
            continue
        name = str(item) if len(str(item)) <= 40 else f"{str(item)[:40]}..."
        parts.append(f".{name}" if parts else name)
    return "".join(parts)


# --- validation messages ----------------------------------------------------------------------

_TYPE_NAMES = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "tuple_type": "a list",
    "none_required": "empty (null)",
}


def _show(value: Any) -> str:
    """A value as the author wrote it, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 200 else f"a number of {len(str(value))} digits"
        return text
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else f"{value[:40]}...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _bound(value: Any) -> str:
    """A limit from a field constraint: ``0.0`` reads as ``0``, ``3600.0`` as ``3600``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


_LIMITS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}
"""pydantic's number-limit errors: what the value must be, and the constraint holding the
limit."""


def error_message(error: ErrorDetails) -> str:
    """pydantic's error for one value, in the words of the format (no pydantic internals)."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    got = f", got {_show(value)}"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unexpected key (check the spelling; see the format docs)"
    if kind in _LIMITS:
        words, limit = _LIMITS[kind]
        # YAML reads 1e308 (no dot) as text and pydantic then converts it: show it as written.
        shown = value if isinstance(value, str) else _show(value)
        return f"must be {words} {_bound(ctx[limit])}, got {shown}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind == "too_long":
        actual = ctx.get("actual_length")
        return f"has {actual} items, at most {ctx['max_length']} allowed"
    if kind == "too_short":
        return f"needs at least {_plural(int(ctx['min_length']), 'item')}{got}"
    if kind == "string_too_long":
        length = len(value) if isinstance(value, str) else "too many"
        return f"is {length} characters long, at most {ctx['max_length']} allowed"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {_plural(int(ctx['min_length']), 'character')} long{got}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}{got}"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx['pattern']}{got}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "assertion_error":
        return str(error["msg"]).removeprefix("Assertion failed, ")
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}{got}"
    return f"{error['msg']}{got}"


def _document_location(data: Any, loc: Sequence[str | int], kind: str) -> tuple[Location, int]:
    """The part of pydantic's ``loc`` that is keys and indexes of the document.

    pydantic inserts union-member tags (``WaitFor``, ``float``, ``function-after[...]``) that
    are not in the document; they are recognised by not being a key or index of the data at
    that point. Returns the document location and the index in ``loc`` of the first tag (the
    union the error belongs to), or ``len(loc)`` when there is none.
    """
    current = data
    location: list[str | int] = []
    first_tag = len(loc)
    for index, part in enumerate(loc):
        in_mapping = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_mapping or in_list:
            current = current[part]
            location.append(part)
        elif kind == "missing" and index == len(loc) - 1 and isinstance(current, dict):
            location.append(part)  # the missing field's own name
        elif part == "[key]":
            location.append("(key)")
        else:
            first_tag = min(first_tag, index)
    return tuple(location), first_tag


@dataclass
class _Problem:
    location: Location
    line: int
    order: int
    alternatives: list[ErrorDetails]


def _is_type_mismatch(error: ErrorDetails) -> bool:
    return error["type"] in _TYPE_NAMES


def _best_message(problem: _Problem, data: Any) -> tuple[Location, str]:
    """One message for one problem; a union reports its most relevant member.

    A member that matched the value's shape and failed inside it (a mapping that is a
    ``WaitFor`` with a bad ``timeout``) says the most; then a member whose type matched but
    whose value broke a rule (``-1`` for a number that must be positive). When every member
    failed on the type alone, the message lists what would have been accepted.
    """
    scored = []
    for error in problem.alternatives:
        location, _ = _document_location(data, error["loc"], error["type"])
        inside = len(location) > len(problem.location)
        scored.append((inside, not _is_type_mismatch(error), len(location), error, location))
    if len(scored) > 1 and not any(entry[0] or entry[1] for entry in scored):
        wanted: list[str] = []
        for entry in scored:
            name = _TYPE_NAMES[entry[3]["type"]]
            if name not in wanted:
                wanted.append(name)
        value = scored[0][3].get("input")
        return problem.location, f"must be {' or '.join(wanted)}, got {_show(value)}"
    best = max(scored, key=lambda entry: entry[:3])
    return best[4], error_message(best[3])


def validation_problem(
    error: ValidationError, data: Any, lines: dict[Location, int]
) -> tuple[Location, int | None, str]:
    """The first problem of a ValidationError (by line): its location, line and message."""
    problems: dict[Location, _Problem] = {}
    for order, details in enumerate(error.errors()):
        location, first_tag = _document_location(data, details["loc"], details["type"])
        if first_tag < len(details["loc"]):
            # Alternatives of one union are grouped by where the union sits in the document.
            anchor, _ = _document_location(data, details["loc"][:first_tag], details["type"])
        else:
            anchor = location
        line = line_for(lines, location) or 0
        problem = problems.setdefault(anchor, _Problem(anchor, line, order, []))
        problem.alternatives.append(details)
        problem.line = min(problem.line, line)
    first = min(problems.values(), key=lambda problem: (problem.line, problem.order))
    location, message = _best_message(first, data)
    return location, line_for(lines, location), message


def validate_document(model: type[_M], document: Document) -> _M:
    """Validate ``document`` as ``model`` and run its ``content_problems()``.

    Raises:
        ContentError: the first problem (by line), as ``path:line: field: what is wrong``.
    """
    if document.data is None:
        raise ContentError(document.path, None, "file is empty")
    try:
        instance = model.model_validate(document.data)
    except ValidationError as error:
        location, line, message = validation_problem(error, document.data, document.lines)
        where = describe(location)
        raise ContentError(
            document.path, line, f"{where}: {message}" if where else message
        ) from None
    except RecursionError:  # pragma: no cover - MAX_NESTING keeps documents shallow
        raise ContentError(document.path, None, "nested too deeply") from None
    if isinstance(instance, CheckedContent):
        found = list(instance.content_problems())
        if found:
            location, message = min(found, key=lambda problem: document.line_of(problem[0]) or 0)
            raise document.error(location, message)
    return instance


def validate(model: type[_M], path: Path, data: Any, table: dict[Location, int]) -> _M:
    """Validate already parsed ``data`` as ``model`` (see :func:`validate_document`)."""
    return validate_document(model, Document(path, data, table))


def load_model(
    model: type[_M], path: Path, text: str | None = None, *, max_bytes: int = MAX_FILE_BYTES
) -> _M:
    """Read, parse and validate one content file.

    Args:
        model: the pydantic model of the file (its own ``content_problems()`` runs too).
        path: the file; also how errors name it when ``text`` is given.
        text: the file's text, when the caller already has it.
        max_bytes: the size limit for this kind of file.

    Raises:
        ContentError: ``path:line: what is wrong``.
    """
    return validate_document(model, read_document(path, text, max_bytes=max_bytes))
