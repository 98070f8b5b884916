"""JSONL traces: a header line, then one observation per line.

A trace is what ``mqlab run --record`` writes and ``mqlab replay`` reads back without any broker.
The header says what produced it (broker, versions, seed, scenario) so a replay can say what it
is showing. Lines are written with sorted keys and no whitespace so that two runs of the
simulator with the same seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mqlab.observe.events import Observation

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


def read_trace(path: Path) -> tuple[TraceHeader, list[Observation]]:
    """Read a trace written by :class:`TraceWriter`.

    Raises:
        TraceError: with ``path:line: what is wrong``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TraceError(f"{path}: cannot read trace: {error.strerror}") from None
    lines = text.splitlines()
    header = _parse_header(path, lines[0] if lines else "")
    return header, list(_parse_observations(path, lines[1:]))


def _parse_header(path: Path, line: str) -> TraceHeader:
    try:
        raw: Any = json.loads(line)["mqlab_trace"]
        header = TraceHeader(**raw)
    except (ValueError, KeyError, TypeError):
        raise TraceError(f"{path}:1: not a mqlab trace (missing header line)") from None
    if header.format_version != TRACE_FORMAT_VERSION:
        raise TraceError(
            f"{path}:1: trace format {header.format_version} is not supported "
            f"(this mqlab reads format {TRACE_FORMAT_VERSION})"
        )
    return header


def _parse_observations(path: Path, lines: list[str]) -> Iterator[Observation]:
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            yield Observation.from_dict(json.loads(line))
        except (ValueError, TypeError) as error:
            raise TraceError(f"{path}:{number}: {error}") from None
