"""Fuzzing the loaders: thousands of mutated and generated files, each answered in bounds.

Every file mqlab reads comes from a learner's editor or a disk, so for any bytes at all a
loader must either return a value or raise its own error (ContentError, TraceError) with one
line, ``path...: what is wrong``, and it must do so within a time and memory bound set here.

The inputs start from real files (the library's scenarios, traces recorded from simulator runs)
and are mutated the way files get broken: bytes flipped, inserted, cut; lines duplicated,
dropped, swapped; keys misspelled or repeated; numbers replaced by hostile ones (-1, 1e999,
.nan, 5000 digits); values replaced by deep nesting; anchors, aliases and alias bombs pasted
in; control characters, NUL bytes, invalid UTF-8 and byte order marks inserted. Other inputs
are generated from scratch from the format's own vocabulary.

Another content kind joins with one more :class:`FuzzTarget` in :data:`TARGETS` (or
:data:`COURSE_TARGETS`, fuzzed a quarter as much): its seed
files, its load function and the error type it may raise. Lesson files, for example::

    FuzzTarget("lesson", ".yaml", _lesson_files, load_lesson, (ContentError,))

The number of mutated files per target is ``MQLAB_FUZZ_EXAMPLES`` (default 640; a quarter as
many generated ones, and a quarter as many for each course target: 2,080 files in all); runs are
derandomized so CI sees the same inputs every time, and ``MQLAB_FUZZ_RANDOM=1`` explores new
ones (hypothesis prints the failing input, which becomes a regression test in test_format.py).
"""

from __future__ import annotations

import itertools
import os
import re
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.course.content import content_dir
from mqlab.course.loader import ContentError, load_model
from mqlab.course.scenario import load_scenario
from mqlab.observe.events import observation_kinds
from mqlab.observe.trace import TraceError, read_trace
from tests.conftest import computed_once

pytestmark = pytest.mark.sim

TIME_BOUND_SECONDS = 2.0
"""Longest a loader may take for one file (a real answer takes milliseconds; the bound is loose
so that a busy two-core CI machine never flakes)."""

MEMORY_BOUND_BYTES = 64 * 1024 * 1024
"""Most Python memory a loader may allocate for one file (tracemalloc's peak)."""

EXAMPLES = int(os.environ.get("MQLAB_FUZZ_EXAMPLES", "640"))
"""Mutated files per target; a quarter as many generated ones and per course target (2,080 files
in all by default). At one to four mutations a file, each of the 17 mutation kinds is drawn
about 90 times per target; 800 (2,600 files) tried no other kind of input, only more of each,
for a quarter more time in the suite's longest tests."""

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the bound is checked below, with a message that says what took long
    derandomize=os.environ.get("MQLAB_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TRACE_SCENARIOS = (
    "at-most-once-crash",
    "kafka-leader-failover",
    "kafka-consumer-group-rebalance",
    "rabbitmq-priority-queue",
    "sqs-redrive-dlq",
    "nats-ack-wait-max-deliver",
)
"""Recorded on the simulator as seed traces: between them every kind of observation a run
emits (leader changes, rebalances, crashes, dead letters, failed sends)."""


@dataclass(frozen=True)
class FuzzTarget:
    """One kind of file: where real examples come from, how it is loaded, what it may raise."""

    name: str
    suffix: str
    seeds: Callable[[Path], list[bytes]]
    load: Callable[[Path], object]
    errors: tuple[type[Exception], ...]


def _scenario_files(_work: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(content_dir("scenarios").glob("*.yaml"))]


def _recorded_traces(work: Path) -> list[bytes]:
    runner = CliRunner()
    traces = []
    for scenario in TRACE_SCENARIOS:
        trace = work / f"{scenario}.jsonl"
        result = runner.invoke(
            app, ["run", scenario, "--broker", "sim", "--no-predict", "-q", "--record", str(trace)]
        )
        assert trace.is_file(), result.output
        traces.append(trace.read_bytes())
    return traces


def _load_copy(path: Path) -> object:
    # A fuzzed file is a learner's copy: its id need not match the file name.
    return load_scenario(path, id_must_match_file=False)


def _lesson_files(_work: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(content_dir("lessons").glob("*/lesson.yaml"))]


def _course_files(_work: Path) -> list[bytes]:
    return [(content_dir("lessons") / "course.yaml").read_bytes()]


def _load_course(path: Path) -> object:
    from mqlab.course.lesson import Course

    return load_model(Course, path)


def _exercise_files(_work: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(content_dir("lessons").glob("*/exercises/*/*.yaml"))]


def _load_lesson_copy(path: Path) -> object:
    # A fuzzed lesson sits in no lesson folder: load it as the format, then its own checks.
    from mqlab.course.lesson import Lesson, lesson_problems

    lesson = load_model(Lesson, path)
    lesson_problems(lesson)
    return lesson


def _load_exercise_copy(path: Path) -> object:
    from mqlab.course.exercise import Exercise

    return load_model(Exercise, path)


TARGETS = [
    FuzzTarget("scenario", ".yaml", _scenario_files, _load_copy, (ContentError,)),
    FuzzTarget("trace", ".jsonl", _recorded_traces, read_trace, (TraceError,)),
]
"""The files a learner edits or feeds back most: fuzzed with :data:`EXAMPLES` each."""

COURSE_TARGETS = [
    FuzzTarget("lesson", ".yaml", _lesson_files, _load_lesson_copy, (ContentError,)),
    FuzzTarget("exercise", ".yaml", _exercise_files, _load_exercise_copy, (ContentError,)),
    FuzzTarget("course", ".yaml", _course_files, _load_course, (ContentError,)),
]
"""Course authors' files: the same loader, so a quarter as many examples each (a lesson file is
twenty times a scenario's size, and each example costs as much more)."""

_SEED_CACHE: dict[str, list[bytes]] = {}


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-seeds")


def seeds_of(target: FuzzTarget, work: Path) -> list[bytes]:
    if target.name not in _SEED_CACHE:
        # Once per run, not per xdist worker: the traces are recorded by six simulator runs.
        _SEED_CACHE[target.name] = computed_once(
            f"fuzz-seeds-{target.name}", lambda: target.seeds(work)
        )
        assert _SEED_CACHE[target.name], f"no seed files for {target.name}"
    return _SEED_CACHE[target.name]


# --- mutations ----------------------------------------------------------------------------

HOSTILE_NUMBERS = [
    "-1", "0", "-0.0", "-3", "1e308", "1e999", "-1e999", ".nan", ".inf", "-.inf", "NaN",
    "Infinity", "-Infinity", "9" * 40, "9" * 5000, "0x7fffffff", "1_000", "0o17", "1:30",
    "2024-13-45", "true", "null", "~", '""', "[]", "{}", "1.5", "-2.5e-308",
]  # fmt: skip

HOSTILE_TEXT = [
    "\x00", "\x01", "\x1b[31m", "\x7f", "\ufeff", "\r", "\t", "\u2028", "\ud7ff", "#", " #",
    "&a", "*a", "!!binary", "!!python/object:os.system", "<<: {a: 1}", "? [a]", "{", "}",
    "[", "]", '"', "'", "{i}", "{i:>999999999}", "{0}", "{i.__class__}", "%s", "---", "...",
]  # fmt: skip

INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\x80",
]

BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
)

_NUMBER = re.compile(rb"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_KEY = re.compile(
    rb'(?m)^(\s*-?\s*)"?([A-Za-z_][\w-]*)"?\s*:|(?<=[{,])\s*"?([A-Za-z_][\w-]*)"?\s*:'
)


def _nesting(depth: int, json_style: bool) -> str:
    if json_style:
        return "[" * depth + "]" * depth
    return "{a: " * depth + "1" + "}" * depth


@st.composite
def mutation(draw: st.DrawFn, data: bytes, json_style: bool) -> bytes:
    """``data`` broken in one of the ways real files get broken."""
    size = len(data)
    position = draw(st.integers(0, max(size - 1, 0)))
    kind = draw(
        st.sampled_from(
            [
                "flip", "insert", "delete", "truncate", "line-dup", "line-drop", "line-swap",
                "line-repeat", "number", "key-rename", "key-dup", "nest", "alias", "bomb",
                "hostile-text", "bad-utf8", "long-text",
            ]
        )
    )  # fmt: skip
    if kind == "flip" and size:
        return data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1 :]
    if kind == "insert":
        return data[:position] + draw(st.binary(min_size=1, max_size=16)) + data[position:]
    if kind == "delete":
        length = draw(st.integers(1, 64))
        return data[:position] + data[position + length :]
    if kind == "truncate":
        return data[:position]
    lines = data.split(b"\n")
    line = draw(st.integers(0, len(lines) - 1))
    if kind == "line-dup":
        return b"\n".join([*lines[: line + 1], lines[line], *lines[line + 1 :]])
    if kind == "line-drop":
        return b"\n".join(lines[:line] + lines[line + 1 :])
    if kind == "line-swap":
        other = draw(st.integers(0, len(lines) - 1))
        lines[line], lines[other] = lines[other], lines[line]
        return b"\n".join(lines)
    if kind == "line-repeat":
        times = draw(st.integers(2, 1000))
        return b"\n".join([*lines[:line], *([lines[line]] * times), *lines[line + 1 :]])
    if kind == "number":
        numbers = list(_NUMBER.finditer(data))
        if numbers:
            found = numbers[draw(st.integers(0, len(numbers) - 1))]
            hostile = draw(st.sampled_from(HOSTILE_NUMBERS)).encode()
            return data[: found.start()] + hostile + data[found.end() :]
    if kind in ("key-rename", "key-dup"):
        keys = list(_KEY.finditer(data))
        if keys:
            found = keys[draw(st.integers(0, len(keys) - 1))]
            group = 2 if found.group(2) is not None else 3
            start, end = found.span(group)
            if kind == "key-rename":
                name = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True)).encode()
                return data[:start] + name + data[end:]
            start_of_line = data.rfind(b"\n", 0, start) + 1
            end_of_line = data.find(b"\n", start)
            end_of_line = size if end_of_line < 0 else end_of_line
            whole = data[start_of_line:end_of_line]
            return data[:end_of_line] + b"\n" + whole + data[end_of_line:]
    if kind == "nest":
        depth = draw(st.integers(1, 6000))
        return data[:position] + _nesting(depth, json_style).encode() + data[position:]
    if kind == "alias":
        return (
            data[:position]
            + draw(st.sampled_from([b"&x ", b"*x", b"<<: *x", b"&x [1, *x]"]))
            + data[position:]
        )
    if kind == "bomb":
        return BOMB.encode() + data
    if kind == "hostile-text":
        return (
            data[:position]
            + draw(st.sampled_from(HOSTILE_TEXT)).encode("utf-8", "surrogatepass")
            + data[position:]
        )
    if kind == "bad-utf8":
        return data[:position] + draw(st.sampled_from(INVALID_UTF8)) + data[position:]
    # long-text: a value an editor or a script made huge
    return data[:position] + b"x" * draw(st.integers(1000, 300_000)) + data[position:]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], json_style: bool) -> bytes:
    data = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 4))):
        data = draw(mutation(data, json_style))
    return data


# --- generated files ----------------------------------------------------------------------

SCENARIO_WORDS = [
    "format_version", "id", "title", "topic", "summary", "brokers", "steps", "produce",
    "consume", "fault", "toxic", "heal", "wait", "until", "timeout", "check", "join", "stop",
    "crash", "note", "only", "channel", "kafka", "rabbitmq", "sqs", "nats", "expect",
    "count", "idle", "max_time", "target", "action", "label", "repeat", "source", "name",
    "background", "queues", "subjects", "dead_letter", "predict", "choices", "answer",
]  # fmt: skip

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["kafka", "sim", "kill", "leader", "kafka-broker-9", "broker", "1"]),
)


def _documents(words: list[str]) -> st.SearchStrategy[object]:
    keys = st.one_of(st.sampled_from(words), st.text(min_size=1, max_size=10))
    return st.recursive(
        _scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6), st.dictionaries(keys, children, max_size=6)
        ),
        max_leaves=60,
    )


# Built once: hypothesis works out a recursive strategy's properties on first use, and a new
# strategy per example paid for that again every time (a fifth of the generated files' time).
_SCENARIO_DOCUMENTS = _documents(SCENARIO_WORDS)


@st.composite
def generated_scenario(draw: st.DrawFn) -> bytes:
    document = draw(_SCENARIO_DOCUMENTS)
    if isinstance(document, dict) and draw(st.booleans()):
        document = {"format_version": 1, "id": "x", "title": "t", "topic": "t", "summary": "s", "brokers": ["kafka", "sim"], **document}  # fmt: skip
    return yaml.safe_dump(document, allow_unicode=draw(st.booleans())).encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def generated_trace(draw: st.DrawFn) -> bytes:
    import json

    kinds = list(observation_kinds())
    words = ["at", "broker", "message_id", "destination", "consumer", "group", "partition", "isr", "assignment", "params"]  # fmt: skip
    header = json.dumps({"mqlab_trace": {"broker": "sim", **draw(st.dictionaries(st.sampled_from(["format_version", "seed", "scenario", "versions"]), _scalars, max_size=3))}})  # fmt: skip
    lines = [header]
    for _ in range(draw(st.integers(0, 8))):
        values = st.one_of(
            _scalars, st.lists(st.one_of(_scalars, st.lists(_scalars, max_size=3)), max_size=3)
        )
        fields = draw(st.dictionaries(st.sampled_from(words), values, max_size=6))
        lines.append(json.dumps({"kind": draw(st.sampled_from(kinds)), **fields}))
    return ("\n".join(lines) + "\n").encode()


GENERATORS: dict[str, Callable[[], st.SearchStrategy[bytes]]] = {
    "scenario": generated_scenario,
    "trace": generated_trace,
}


# --- the property -------------------------------------------------------------------------


def _answer(target: FuzzTarget, path: Path) -> None:
    """Load ``path``; the target's own error is an answer, anything else propagates."""
    try:
        target.load(path)
    except target.errors as error:
        message = str(error)
        assert "\n" not in message, message
        assert message.startswith(str(path)), message
        for internal in ("Traceback", "Input should", "pydantic", "__init__", "Error("):
            assert internal not in message, message


def answer_within_bounds(target: FuzzTarget, data: bytes, path: Path) -> None:
    """Load ``data`` as ``target``: a value or the target's own one-line error, in bounds.

    Memory is measured under tracemalloc, which only adds work (up to ten times as much for
    allocation-heavy code): a traced load within the time bound shows the plain load is too.
    Only a traced load past the bound is timed again without tracemalloc, so that the time
    bound judges the loader and not tracemalloc.
    """
    path.write_bytes(data)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        _answer(target, path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND_BYTES, f"{target.name}: {peak / 2**20:.0f} MiB for {len(data)} bytes"
    if elapsed >= TIME_BOUND_SECONDS:
        started = time.perf_counter()
        _answer(target, path)
        elapsed = time.perf_counter() - started
    assert elapsed < TIME_BOUND_SECONDS, f"{target.name}: {elapsed:.2f} s for {len(data)} bytes"


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.name)
@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_files_are_answered_within_bounds(
    target: FuzzTarget,
    seed_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
) -> None:
    seeds = seeds_of(target, seed_dir)
    content = data.draw(mutated(seeds, json_style=target.suffix == ".jsonl"), label="file")
    path = seed_dir / f"fuzzed{target.suffix}"
    answer_within_bounds(target, content, path)


@pytest.mark.parametrize("target", COURSE_TARGETS, ids=lambda target: target.name)
@settings(FUZZ_SETTINGS, max_examples=max(EXAMPLES // 4, 1))
@given(data=st.data())
def test_mutated_course_files_are_answered_within_bounds(
    target: FuzzTarget,
    seed_dir: Path,
    data: st.DataObject,
) -> None:
    seeds = seeds_of(target, seed_dir)
    content = data.draw(mutated(seeds, json_style=False), label="file")
    answer_within_bounds(target, content, seed_dir / f"fuzzed-{target.name}{target.suffix}")


@pytest.mark.parametrize(
    "target", [t for t in TARGETS if t.name in GENERATORS], ids=lambda target: target.name
)
@settings(FUZZ_SETTINGS, max_examples=max(EXAMPLES // 4, 1))
@given(data=st.data())
def test_generated_files_are_answered_within_bounds(
    target: FuzzTarget, seed_dir: Path, data: st.DataObject
) -> None:
    content = data.draw(GENERATORS[target.name](), label="file")
    answer_within_bounds(target, content, seed_dir / f"generated{target.suffix}")


@pytest.mark.parametrize("target", TARGETS + COURSE_TARGETS, ids=lambda target: target.name)
def test_every_seed_file_loads(target: FuzzTarget, seed_dir: Path) -> None:
    """The starting points are valid, so the mutations are what breaks them."""
    for number, content in enumerate(seeds_of(target, seed_dir)):
        path = seed_dir / f"seed-{number}{target.suffix}"
        path.write_bytes(content)
        target.load(path)


def test_the_property_fails_for_a_loader_that_breaks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part of the property catches a loader that breaks it: not a test that cannot fail."""
    path = tmp_path / "x.yaml"

    def loader(behaviour: Callable[[Path], object]) -> FuzzTarget:
        return FuzzTarget("broken", ".yaml", _scenario_files, behaviour, (ContentError,))

    def expands(_path: Path) -> object:
        return bytearray(MEMORY_BOUND_BYTES + 2**20)  # what expanding an alias bomb costs

    def foreign(source: Path) -> object:
        return yaml.safe_load(source.read_text())

    def two_lines(source: Path) -> object:
        raise ContentError(source, 1, "first line\nsecond line")

    def internals(source: Path) -> object:
        raise ContentError(source, 1, "Input should be a valid number")

    with pytest.raises(AssertionError, match="MiB"):
        answer_within_bounds(loader(expands), b"a: 1\n", path)
    with pytest.raises(yaml.YAMLError):
        answer_within_bounds(loader(foreign), b"a: [", path)
    with pytest.raises(AssertionError, match="second line"):
        answer_within_bounds(loader(two_lines), b"a: 1\n", path)
    with pytest.raises(AssertionError, match="Input should"):
        answer_within_bounds(loader(internals), b"a: 1\n", path)
    clock = itertools.count(0.0, TIME_BOUND_SECONDS + 1)
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    with pytest.raises(AssertionError, match=r"3.00 s for 5 bytes"):
        answer_within_bounds(loader(lambda _path: None), b"a: 1\n", path)
