"""Traces as hostile input: every bad file is one ``path:line: what is wrong`` (a TraceError), and
``mqlab replay`` of it exits 2 with that line; real traces still round-trip byte for byte."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.observe.events import (
    LeaderChanged,
    Note,
    Produced,
    Rebalanced,
    observation_kinds,
)
from mqlab.observe.trace import (
    MAX_TRACE_LINE_BYTES,
    TRACE_FORMAT_VERSION,
    TraceError,
    TraceHeader,
    dumps,
    read_trace,
)

pytestmark = pytest.mark.sim

runner = CliRunner()

HEADER = TraceHeader(broker="sim:kafka", seed=0, scenario="s", versions={"mqlab": "0"}).to_json()
PRODUCED = '{"at":1.0,"broker":"kafka","destination":"d","kind":"produced","message_id":"m1"}'


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "run.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_a_trace_round_trips_byte_for_byte(tmp_path: Path) -> None:
    header = TraceHeader(broker="sim:kafka", seed=3, scenario="x")
    observations = [
        Produced(at=0.5, broker="kafka", destination="t", message_id="m1", partition=0),
        Rebalanced(
            at=1.0, broker="kafka", group="g", generation=2, assignment=(("c1", ("t:0", "t:1")),)
        ),
        LeaderChanged(
            at=2.0, broker="kafka", topic="t", partition=0, leader=2, isr=(2, 3), previous_isr=None
        ),
        Note(at=3.0, broker="runner", text="naïve ✓"),
    ]
    text = dumps(header, observations)
    path = write(tmp_path, text)
    read_header, read_observations = read_trace(path)
    assert (read_header, read_observations) == (header, observations)
    assert dumps(read_header, read_observations) == text


def test_a_recorded_run_reads_back(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    recorded = runner.invoke(
        app,
        [
            "run",
            "kafka-leader-failover",
            "--broker",
            "sim",
            "--no-predict",
            "-q",
            "--record",
            str(trace),
        ],
    )
    assert recorded.exit_code == 0, recorded.output
    header, observations = read_trace(trace)
    assert header.scenario == "kafka-leader-failover"
    assert len(observations) > 20
    assert dumps(header, observations) == trace.read_text()


BAD_TRACES: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "not a mqlab trace (the file is empty)"),
    (
        "binary",
        b"\x7fELF\x02\x01\x01\x00\x00\x00",
        "1: binary data (a NUL byte at byte offset 7): not a mqlab trace",
    ),
    (
        "not UTF-8",
        f"{HEADER}\n".encode() + b'{"kind":"note","at":1,"broker":"r","text":"caf\xe9"}\n',
        f"2: text is not UTF-8 (byte 0xe9 at byte offset {len(HEADER) + 1 + 46}): not a mqlab trace",
    ),
    ("no header", "hello\n", "1: not a mqlab trace (the first line is not a trace header)"),
    (
        "observation first",
        PRODUCED + "\n",
        "1: not a mqlab trace (the first line is not a trace header)",
    ),
    (
        "newer format",
        '{"mqlab_trace":{"broker":"sim","format_version":2,"compression":"zstd"}}\n',
        "1: written by a newer mqlab: trace format 2, this mqlab reads format 1 (upgrade mqlab to replay it)",
    ),
    (
        "format zero",
        '{"mqlab_trace":{"broker":"sim","format_version":0}}\n',
        "1: trace format 0 does not exist (the first is 1)",
    ),
    (
        "format as text",
        '{"mqlab_trace":{"broker":"sim","format_version":"1"}}\n',
        '1: format_version must be a whole number, got "1"',
    ),
    ("header not an object", '{"mqlab_trace":[1]}\n', "1: the trace header must be a JSON object"),
    ("header field missing", '{"mqlab_trace":{"seed":1}}\n', "1: header: missing field 'broker'"),
    (
        "header field unknown",
        '{"mqlab_trace":{"broker":"sim","colour":"red"}}\n',
        "1: header: unexpected field 'colour'",
    ),
    (
        "header field type",
        '{"mqlab_trace":{"broker":"sim","seed":"zero"}}\n',
        '1: header: seed must be a whole number or null, got "zero"',
    ),
    (
        "header versions type",
        '{"mqlab_trace":{"broker":"sim","versions":{"mqlab":1}}}\n',
        "1: header: versions.mqlab must be text, got 1",
    ),
    (
        "missing fields",
        f'{HEADER}\n{{"kind":"produced","at":1,"broker":"kafka"}}\n',
        "2: produced: missing fields 'destination', 'message_id'",
    ),
    (
        "unknown field",
        f'{HEADER}\n{{"kind":"note","at":1,"broker":"r","text":"t","colour":"red"}}\n',
        "2: note: unexpected field 'colour'",
    ),
    (
        "wrong type",
        f'{HEADER}\n{{"kind":"produced","at":1,"broker":"k","destination":"d","message_id":"m","partition":"0"}}\n',
        '2: produced: partition must be a whole number or null, got "0"',
    ),
    (
        "bool for a number",
        f'{HEADER}\n{{"kind":"produced","at":true,"broker":"k","destination":"d","message_id":"m"}}\n',
        "2: produced: at must be a number, got true",
    ),
    (
        "NaN time",
        f'{HEADER}\n{{"kind":"note","at":NaN,"broker":"r","text":"t"}}\n',
        "2: note: at must be a finite number, got NaN",
    ),
    (
        "nested list",
        f'{HEADER}\n{{"kind":"leader_changed","at":1,"broker":"k","topic":"t","partition":0,"leader":1,"isr":[[1]]}}\n',
        "2: leader_changed: isr[0] must be a whole number, got [1]",
    ),
    (
        "pair of wrong length",
        f'{HEADER}\n{{"kind":"fault_injected","at":1,"broker":"lab","fault":"latency","target":"nats","params":[["ms"]]}}\n',
        '2: fault_injected: params[0] must be a list of 2 items, got ["ms"]',
    ),
    (
        "no kind",
        f'{HEADER}\n{{"at":1}}\n',
        "2: an observation needs a 'kind' (produced, delivered ...)",
    ),
    (
        "misspelled kind",
        f'{HEADER}\n{{"kind":"prodcued"}}\n',
        "2: unknown observation kind \"prodcued\" (did you mean 'produced'?)",
    ),
    (
        "kind from the future",
        f'{HEADER}\n{{"kind":"hologram"}}\n',
        '2: unknown observation kind "hologram" (written by a newer mqlab?)',
    ),
    ("not an object", f"{HEADER}\n[1, 2]\n", "2: an observation must be a JSON object, got [1, 2]"),
    ("broken JSON", f'{HEADER}\n{{"kind": \n', "2: not valid JSON (Expecting value at column 9)"),
    ("deep JSON", f"{HEADER}\n" + "[" * 200_000 + "\n", "2: not valid JSON (nested too deeply)"),
    (
        "huge number",
        f'{HEADER}\n{{"kind":"note","at":{"9" * 5000},"broker":"r","text":"t"}}\n',
        "2: not valid JSON (Exceeds the limit (4300 digits) for integer string conversion)",
    ),
    (
        "truncated",
        f"{HEADER}\n{PRODUCED[:40]}",
        "2: not valid JSON (Expecting ':' delimiter at column 41)",
    ),
]


@pytest.mark.parametrize(
    ("content", "message"), [pytest.param(c, m, id=name) for name, c, m in BAD_TRACES]
)
def test_bad_trace_is_one_line(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    separator = ":" if message[:1].isdigit() else ": "
    assert str(caught.value) == f"{path}{separator}{message}"


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n{PRODUCED}\n" + "x" * 5000 + "\n")
    with pytest.raises(TraceError) as caught:
        read_trace(path, max_line_bytes=4096)
    assert str(caught.value) == f"{path}:3: line is longer than 4 KiB"
    assert MAX_TRACE_LINE_BYTES >= 16 * 1024 * 1024  # a run_started line carries a scenario


def test_a_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n" + f"{PRODUCED}\n" * 100)
    with pytest.raises(TraceError) as caught:
        read_trace(path, max_bytes=1024)
    assert str(caught.value) == f"{path}: trace is larger than 1 KiB"


def test_a_directory_is_not_a_trace(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace: Is a directory"):
        read_trace(tmp_path)


def test_every_observation_kind_reads_back_with_its_defaults(tmp_path: Path) -> None:
    """Each kind's required fields, filled with a value of their type, read back: the type
    check knows every field type the events use (a new one would fail here first)."""
    samples = {"float": 1.5, "int": 2, "str": "s", "bool": True}
    lines = [HEADER]
    for kind, cls in observation_kinds().items():
        hints = typing.get_type_hints(cls)
        fields: dict[str, object] = {"kind": kind}
        for field in dataclasses.fields(cls):
            hint = hints[field.name]
            name = getattr(hint, "__name__", "")
            if name in samples:
                fields[field.name] = samples[name]
            elif typing.get_origin(hint) is tuple:
                fields[field.name] = []
        lines.append(json.dumps(fields))
    path = write(tmp_path, "\n".join(lines) + "\n")
    _header, observations = read_trace(path)
    assert [o.kind for o in observations] == list(observation_kinds())


def test_replay_of_a_binary_file_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")
    result = runner.invoke(app, ["replay", str(path)])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {path}:1: binary data (a NUL byte at byte offset 3): not a mqlab trace\n",
    )


def test_replay_of_a_newer_trace_says_so(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        json.dumps({"mqlab_trace": {"broker": "sim", "format_version": TRACE_FORMAT_VERSION + 1}})
        + "\n",
    )
    result = runner.invoke(app, ["replay", str(path)])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {path}:1: written by a newer mqlab: trace format 2, this mqlab reads format 1 "
        "(upgrade mqlab to replay it)\n",
    )


def test_replay_of_an_observation_with_python_internals_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, f'{HEADER}\n{{"kind":"produced","at":1,"broker":"kafka"}}\n')
    result = runner.invoke(app, ["replay", str(path)])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {path}:2: produced: missing fields 'destination', 'message_id'\n",
    )
