"""JSONL traces: a header line, then one observation per line.

A trace is what ``mqlab run --record`` writes and ``mqlab replay`` reads back without any broker.
The header says what produced it (broker, versions, seed, scenario) so a replay can say what it
is showing. Lines are written with sorted keys and no whitespace so that two runs of the
simulator with the same seed give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from mqlab.observe.events import Observation, observation_kinds

TRACE_FORMAT_VERSION = 1


class TraceError(ValueError):
    """A trace file is missing, truncated or not a mqlab trace (message is ``path:line: why``)."""


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """First line of every trace."""

    broker: str
    seed: int | None = None
    scenario: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = TRACE_FORMAT_VERSION

    def to_json(self) -> str:
        """The header as one JSON line (without the newline)."""
        return json.dumps({"mqlab_trace": asdict(self)}, sort_keys=True, separators=(",", ":"))


def _line(observation: Observation) -> str:
    return json.dumps(observation.to_dict(), sort_keys=True, separators=(",", ":"))


class TraceWriter:
    """Write a trace incrementally (a subscriber for the observation bus).

    The file is written to a temporary name in the same directory and renamed on ``close()``,
    so an interrupted run never leaves a half-written trace under the requested name.
    """

    def __init__(self, path: Path, header: TraceHeader) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self._tmp = Path(tmp)
        self._file: IO[str] = os.fdopen(fd, "w", encoding="utf-8")
        self._file.write(header.to_json() + "\n")

    def __call__(self, observation: Observation) -> None:
        self._file.write(_line(observation) + "\n")

    def close(self) -> None:
        """Flush, fsync and move the trace into place."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        """Drop the partial trace (used when a run is abandoned)."""
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_trace(path: Path, header: TraceHeader, observations: Iterable[Observation]) -> None:
    """Write a whole trace at once (atomically)."""
    writer = TraceWriter(path, header)
    try:
        for observation in observations:
            writer(observation)
    except BaseException:
        writer.discard()
        raise
    writer.close()


def dumps(header: TraceHeader, observations: Iterable[Observation]) -> str:
    """A trace as a string (used to compare two runs byte for byte)."""
    lines = [header.to_json(), *(_line(o) for o in observations)]
    return "\n".join(lines) + "\n"


MAX_TRACE_BYTES = 256 * 1024 * 1024
"""A trace larger than this (256 MiB) is refused before it is read. A library scenario's trace
is a few hundred KiB; 256 MiB holds about a million observations."""

MAX_TRACE_LINE_BYTES = 32 * 1024 * 1024
"""The longest line a trace may have (32 MiB). Observations are a few hundred bytes; the
longest line mqlab writes is ``run_started``, which carries the whole scenario as JSON."""


def _size(limit: int) -> str:
    if limit >= 1024 * 1024:
        return f"{limit / (1024 * 1024):g} MiB"
    return f"{limit / 1024:g} KiB" if limit >= 1024 else f"{limit} bytes"


def _fail(path: Path, line: int | None, message: str) -> TraceError:
    return TraceError(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")


def read_trace(
    path: Path,
    *,
    max_bytes: int = MAX_TRACE_BYTES,
    max_line_bytes: int = MAX_TRACE_LINE_BYTES,
) -> tuple[TraceHeader, list[Observation]]:
    """Read a trace written by :class:`TraceWriter`, treating the file as hostile input.

    The file is read line by line within the size limits; each line must be UTF-8 JSON, the
    first a header this mqlab understands, the others observations whose fields have the
    names and types of their kind (checked here, so a hand-edited or truncated trace gets a
    sentence, not a Python error).

    Raises:
        TraceError: with ``path:line: what is wrong``, for every kind of bad input.
    """
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > max_bytes:
                raise _fail(path, None, f"trace is larger than {_size(max_bytes)}")
            lines = _lines(path, stream, max_line_bytes)
            first = next(lines, None)
            if first is None:
                raise _fail(path, None, "not a mqlab trace (the file is empty)")
            header = _parse_header(path, first[1])
            observations = [
                _parse_observation(path, number, text) for number, text in lines if text.strip()
            ]
    except OSError as error:
        raise _fail(path, None, f"cannot read trace: {error.strerror or error}") from None
    return header, observations


def _lines(path: Path, stream: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, refusing binary data, bad UTF-8, huge lines."""
    offset = 0
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes:
            raise _fail(path, number, f"line is longer than {_size(max_line_bytes)}")
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise _fail(
                path,
                number,
                f"binary data (a NUL byte at byte offset {offset + nul}): not a mqlab trace",
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.start + 1].hex()
            raise _fail(
                path,
                number,
                f"text is not UTF-8 (byte 0x{bad} at byte offset {offset + error.start}): "
                "not a mqlab trace",
            ) from None
        offset += len(raw)
        yield number, text


def _json(path: Path, number: int, text: str) -> Any:
    try:
        return json.loads(text.strip())
    except json.JSONDecodeError as error:
        raise _fail(path, number, f"not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise _fail(path, number, "not valid JSON (nested too deeply)") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        reason = str(error).split(";")[0].split(":")[0]
        raise _fail(path, number, f"not valid JSON ({reason})") from None


def _parse_header(path: Path, line: str) -> TraceHeader:
    try:
        data: Any = json.loads(line)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or "mqlab_trace" not in data:
        raise _fail(path, 1, "not a mqlab trace (the first line is not a trace header)")
    raw = data["mqlab_trace"]
    if not isinstance(raw, dict):
        raise _fail(path, 1, "the trace header must be a JSON object")
    version = raw.get("format_version", TRACE_FORMAT_VERSION)
    if not _is_int(version):
        raise _fail(path, 1, f"format_version must be a whole number, got {_show(version)}")
    if version > TRACE_FORMAT_VERSION:
        raise _fail(
            path,
            1,
            f"written by a newer mqlab: trace format {version}, this mqlab reads format "
            f"{TRACE_FORMAT_VERSION} (upgrade mqlab to replay it)",
        )
    if version < 1:
        raise _fail(path, 1, f"trace format {version} does not exist (the first is 1)")
    return _build(path, 1, TraceHeader, raw, "header")


def _parse_observation(path: Path, number: int, text: str) -> Observation:
    data = _json(path, number, text)
    if not isinstance(data, dict):
        raise _fail(path, number, f"an observation must be a JSON object, got {_show(data)}")
    payload = dict(data)
    kind = payload.pop("kind", None)
    if kind is None:
        raise _fail(path, number, "an observation needs a 'kind' (produced, delivered ...)")
    kinds = observation_kinds()
    if not isinstance(kind, str) or kind not in kinds:
        close = difflib.get_close_matches(str(kind), kinds, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "written by a newer mqlab?"
        raise _fail(path, number, f"unknown observation kind {_show(kind)} ({hint})")
    observation = _build(path, number, kinds[kind], payload, kind)
    assert isinstance(observation, Observation)
    return observation


_T = TypeVar("_T")


def _build(path: Path, number: int, cls: type[_T], payload: dict[str, Any], name: str) -> _T:
    """``cls(**payload)`` after checking the field names and each value's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [key for key in payload if key not in fields]
    if unknown:
        listed = ", ".join(repr(key) for key in unknown[:3])
        raise _fail(path, number, f"{name}: unexpected {_fields(len(unknown))} {listed}")
    missing = [
        f.name
        for f in fields.values()
        if f.name not in payload
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        listed = ", ".join(repr(key) for key in missing)
        raise _fail(path, number, f"{name}: missing {_fields(len(missing))} {listed}")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for key, value in payload.items():
        try:
            values[key] = _convert(value, hints[key])
        except _WrongType as wrong:
            raise _fail(
                path,
                number,
                f"{name}: {key}{wrong.where} must be {wrong.expected}, got {_show(wrong.value)}",
            ) from None
    return cls(**values)


def _fields(count: int) -> str:
    return "field" if count == 1 else "fields"


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved type of each field (the annotations are strings in the source)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


class _WrongType(Exception):
    """A value that does not fit its field: ``where`` is the path inside the field
    (``[0]``, ``.mqlab``), ``value`` the part that does not fit."""

    def __init__(self, expected: str, value: Any, where: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.where = where

    def inside(self, step: str) -> _WrongType:
        return _WrongType(self.expected, self.value, step + self.where)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expected(hint: Any) -> str:
    """A type hint in words (``int | None`` -> ``a whole number or null``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in typing.get_args(hint))
    if origin is tuple or origin is dict:
        return "a list" if origin is tuple else "an object"
    return {float: "a number", int: "a whole number", str: "text", bool: "true or false"}.get(
        hint, "null" if hint is type(None) else str(hint)
    )


def _convert(value: Any, hint: Any) -> Any:
    """``value`` checked against ``hint``, with JSON lists turned into the tuples it names.

    Raises:
        _WrongType: the value (or a part of it) does not fit; it says what would.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        deeper: _WrongType | None = None
        for option in typing.get_args(hint):
            try:
                return _convert(value, option)
            except _WrongType as wrong:
                # A member whose shape matched (a list for a list) failed inside: that is
                # the more useful message.
                deeper = wrong if wrong.where and deeper is None else deeper
        raise deeper or _WrongType(_expected(hint), value)
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if _is_int(value):
            return value
    elif hint is float:
        if (_is_int(value) or isinstance(value, float)) and math.isfinite(value):
            return value
        if isinstance(value, float):
            raise _WrongType("a finite number", value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        return _convert_tuple(value, typing.get_args(hint))
    elif origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if isinstance(value, dict):
            converted = {}
            for key, item in value.items():
                try:
                    converted[_convert(key, key_hint)] = _convert(item, value_hint)
                except _WrongType as wrong:
                    raise wrong.inside(f".{key}") from None
            return converted
    raise _WrongType(_expected(hint), value)


def _convert_tuple(value: Any, arguments: tuple[Any, ...]) -> tuple[Any, ...]:
    repeated = len(arguments) == 2 and arguments[1] is Ellipsis
    if not isinstance(value, list) or (not repeated and len(value) != len(arguments)):
        raise _WrongType("a list" if repeated else f"a list of {len(arguments)} items", value)
    items = []
    for index, item in enumerate(value):
        try:
            items.append(_convert(item, arguments[0] if repeated else arguments[index]))
        except _WrongType as wrong:
            raise wrong.inside(f"[{index}]") from None
    return tuple(items)


def _show(value: Any) -> str:
    """A JSON value, short, as it appears in the file (``NaN`` as JSON spells it)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else f"{text[:40]}..."
