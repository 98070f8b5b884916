"""The content loader on its own: limits, refusals and messages, for any pydantic model.

Scenarios, lessons and exercises all go through :mod:`mqlab.course.loader`; these tests use a
small model of their own so that they pin the loader's behaviour, not one format's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from mqlab.course import loader
from mqlab.course.loader import (
    MAX_NESTING,
    ContentError,
    Location,
    describe,
    line_for,
    load_model,
    parse_yaml,
    read_document,
)

pytestmark = pytest.mark.sim

FILE = Path("lesson.yaml")


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    limit: int = Field(1, ge=1)
    """A positive count."""


class Sample(BaseModel):
    """A stand-in for a content format: text, numbers, lists, a union and a nested model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    title: str = Field(max_length=20)
    seconds: float = Field(1.0, gt=0, le=60)
    items: list[int] = Field(default_factory=list, max_length=3)
    level: Literal["easy", "hard"] = "easy"
    wait: float | Inner | None = Field(None, gt=0)
    inner: Inner = Inner()
    names: list[str] = Field(default_factory=list)

    def content_problems(self) -> Iterator[tuple[Location, str]]:
        """Each name must be one of the items' numbers written out (a cross-reference)."""
        for index, name in enumerate(self.names):
            if not name.isdigit() or int(name) not in self.items:
                yield ("names", index), f"{name!r} is not one of the items"


def load(text: str) -> Sample:
    return load_model(Sample, FILE, text)


def problem(text: str) -> str:
    with pytest.raises(ContentError) as caught:
        load(text)
    return str(caught.value)


@pytest.fixture(params=["libyaml", "pure-python"])
def event_source(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with libyaml's event parser and with PyYAML's own (when libyaml is absent)."""
    if request.param == "pure-python":
        monkeypatch.setattr(yaml, "__with_libyaml__", False)
    elif not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML was built without libyaml")
    return str(request.param)


# --- reading and parsing ------------------------------------------------------------------


def test_a_valid_file_loads_with_its_lines(event_source: str) -> None:
    document = read_document(FILE, "title: t\nitems:\n  - 1\n  - 2\ninner: {limit: 3}\n")
    assert document.data == {"title": "t", "items": [1, 2], "inner": {"limit": 3}}
    assert document.lines == {
        (): 1,
        ("title",): 1,
        ("items",): 2,
        ("items", 0): 3,
        ("items", 1): 4,
        ("inner",): 5,
        ("inner", "limit"): 5,
    }
    assert load("title: t\nitems: [1]\nnames: ['1']\n").names == ["1"]


def test_the_old_parse_yaml_api_still_answers() -> None:
    data, table = parse_yaml(FILE, "title: t\n")
    assert data == {"title": "t"}
    assert line_for(table, ("title", "missing", 3)) == 1
    assert describe(("steps", 3, "wait", "timeout")) == "steps[3].wait.timeout"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: &x 1\n",
            "lesson.yaml:1: YAML anchors and aliases (&name, *name) are not supported: write the value out",
        ),
        (
            "a: 1\nb: *x\n",
            "lesson.yaml:2: YAML anchors and aliases (&name, *name) are not supported: write the value out",
        ),
        (
            "a: {<<: {b: 1}}\n",
            "lesson.yaml:1: merge keys (<<) are not supported: write the keys out",
        ),
        ("? [a, b]\n: 1\n", "lesson.yaml:1: a key must be a plain value, not a list or mapping"),
        ("a: !!set {b}\n", "lesson.yaml:1: YAML tag tag:yaml.org,2002:set is not supported here"),
        (
            "a: !!python/object:os.system ls\n",
            "lesson.yaml:1: YAML tag tag:yaml.org,2002:python/object:os.system is not supported here",
        ),
        ("a: 1\n---\nb: 2\n", "lesson.yaml:2: a content file holds one YAML document, not several"),
        ("a:\n  b: 1\n  b: 2\n", "lesson.yaml:3: a.b: duplicate key (already on line 2)"),
        ("1: a\n01: b\n", "lesson.yaml:2: [1]: duplicate key (already on line 1)"),
        (
            "a: 2024-02-30\n",
            "lesson.yaml:1: a: '2024-02-30' cannot be read as a date (quote text to keep it as is)",
        ),
        ("a: [1, 2\n", "lesson.yaml:2: YAML syntax error: did not find expected ',' or ']'"),
    ],
)
def test_structural_refusals(event_source: str, text: str, message: str) -> None:
    with pytest.raises(ContentError) as caught:
        read_document(FILE, text)
    if event_source == "pure-python" and "syntax error" in message:
        # PyYAML's own parser words its syntax errors differently; the line is the same.
        assert str(caught.value).startswith(message.split(" YAML syntax error", maxsplit=1)[0])
    else:
        assert str(caught.value) == message


def test_nesting_limit_is_exact(event_source: str) -> None:
    deepest = "a: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1) + "\n"
    assert read_document(FILE, deepest).data is not None
    too_deep = "a: " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\n"
    with pytest.raises(ContentError, match=f"nested more than {MAX_NESTING} levels deep"):
        read_document(FILE, too_deep)


def test_a_deep_file_never_reaches_the_python_stack(event_source: str) -> None:
    with pytest.raises(ContentError, match="nested more than"):
        read_document(FILE, "a: " + "{b: " * 100_000 + "1" + "}" * 100_000)


def test_the_value_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_VALUES", 5)
    assert read_document(FILE, "[1, 2, 3, 4]\n").data == [1, 2, 3, 4]
    with pytest.raises(ContentError, match=r"^lesson.yaml:1: more than 5 values in one file$"):
        read_document(FILE, "[1, 2, 3, 4, 5]\n")


def test_size_limit_is_checked_before_reading_everything(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "b" * 3000 + "\n")
    with pytest.raises(ContentError) as caught:
        load_model(Sample, path, max_bytes=2048)
    assert (
        str(caught.value) == f"{path}: file is larger than 2 KiB, the limit for this kind of file"
    )
    with pytest.raises(ContentError, match="text is larger than 2 KiB"):
        load_model(Sample, path, path.read_text(), max_bytes=2048)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            b"title: t\n\x00\x01",
            "x.yaml:2: binary data (a NUL byte at byte offset 9): this is not a text file",
        ),
        (
            b"title: t\nitems: [\xc3\x28]\n",
            "x.yaml:2: text is not UTF-8 (byte 0xc3 at byte offset 17); save the file as UTF-8",
        ),
        (
            "title: t\n".encode("utf-16"),
            "x.yaml:1: text is UTF-16 (it starts with a UTF-16 byte order mark); save the file as UTF-8",
        ),
        (
            b"title: t\x7f\n",
            "x.yaml:1: control character U+007F at column 9 is not allowed in a text file",
        ),
    ],
)
def test_bytes_that_are_not_yaml_text(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(raw)
    with pytest.raises(ContentError) as caught:
        load_model(Sample, path)
    assert str(caught.value) == f"{tmp_path}/{message}"


def test_a_byte_order_mark_and_windows_line_ends_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xef\xbb\xbftitle: t\r\nseconds: -1\r\n")
    with pytest.raises(ContentError) as caught:
        load_model(Sample, path)
    assert str(caught.value) == f"{path}:2: seconds: must be greater than 0, got -1"


def test_text_given_by_the_caller_is_checked_too() -> None:
    with pytest.raises(ContentError) as caught:
        load("title: \ud800\n")
    assert str(caught.value) == (
        "lesson.yaml:1: control character U+D800 at column 8 is not allowed in a text file"
    )


# --- validation messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seconds: 2\n", "lesson.yaml:1: title: required field is missing"),
        (
            "title: t\ntitel: u\n",
            "lesson.yaml:2: titel: unexpected key (check the spelling; see the format docs)",
        ),
        ("title: t\nseconds: 0\n", "lesson.yaml:2: seconds: must be greater than 0, got 0"),
        ("title: t\nseconds: 61\n", "lesson.yaml:2: seconds: must be at most 60, got 61"),
        ("title: t\nseconds: .nan\n", "lesson.yaml:2: seconds: must be a finite number, got .nan"),
        (
            "title: t\nseconds: -.inf\n",
            "lesson.yaml:2: seconds: must be a finite number, got -.inf",
        ),
        ("title: t\nseconds: soon\n", "lesson.yaml:2: seconds: must be a number, got 'soon'"),
        ("title: t\nitems: [1, 2, 3, 4]\n", "lesson.yaml:2: items: has 4 items, at most 3 allowed"),
        ("title: t\nitems: [1, x]\n", "lesson.yaml:2: items[1]: must be a whole number, got 'x'"),
        ("title: t\nitems: 3\n", "lesson.yaml:2: items: must be a list, got 3"),
        (
            "title: " + "t" * 21 + "\n",
            "lesson.yaml:1: title: is 21 characters long, at most 20 allowed",
        ),
        (
            "title: t\nlevel: medium\n",
            "lesson.yaml:2: level: must be 'easy' or 'hard', got 'medium'",
        ),
        ("title: t\ninner: {limit: 0}\n", "lesson.yaml:2: inner.limit: must be at least 1, got 0"),
        ("title: t\ninner: 3\n", "lesson.yaml:2: inner: must be a mapping (key: value), got 3"),
        ("title: [t]\n", "lesson.yaml:1: title: must be text, got a list"),
        ("just text\n", "lesson.yaml:1: must be a mapping (key: value), got 'just text'"),
        ("# only a comment\n", "lesson.yaml: file is empty"),
    ],
)
def test_field_errors_in_the_formats_words(text: str, message: str) -> None:
    assert problem(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the number member's rule is what the author broke, not "not a mapping"
        ("title: t\nwait: -2\n", "lesson.yaml:2: wait: must be greater than 0, got -2"),
        # the mapping matched Inner: the error inside it is the relevant one
        ("title: t\nwait:\n  limit: -2\n", "lesson.yaml:3: wait.limit: must be at least 1, got -2"),
        # the mapping matched Inner, and its field has the wrong type
        (
            "title: t\nwait: {limit: many}\n",
            "lesson.yaml:2: wait.limit: must be a whole number, got 'many'",
        ),
        # nothing matched: say what would have
        (
            "title: t\nwait: [1]\n",
            "lesson.yaml:2: wait: must be a number or a mapping (key: value), got a list",
        ),
    ],
)
def test_a_union_reports_its_most_relevant_member(text: str, message: str) -> None:
    assert problem(text) == message


def test_the_first_problem_by_line_is_reported() -> None:
    assert problem("title: t\nitems: [1, x]\nseconds: 0\n") == (
        "lesson.yaml:2: items[1]: must be a whole number, got 'x'"
    )
    assert problem("seconds: 0\ntitle: " + "t" * 30 + "\n") == (
        "lesson.yaml:1: seconds: must be greater than 0, got 0"
    )


def test_content_problems_are_reported_at_their_line() -> None:
    text = "title: t\nitems: [1, 2]\nnames:\n  - '2'\n  - '7'\n  - '9'\n"
    assert problem(text) == "lesson.yaml:5: names[1]: '7' is not one of the items"


def test_a_model_without_content_problems_is_only_validated() -> None:
    assert load_model(Inner, FILE, "limit: 3\n").limit == 3


def test_document_error_names_the_location() -> None:
    document = read_document(FILE, "steps:\n  - wait: 1\n  - join: w\n")
    error = document.error(("steps", 1, "join"), "no such step")
    assert str(error) == "lesson.yaml:3: steps[1].join: no such step"
    assert (error.path, error.line, error.message) == (FILE, 3, "steps[1].join: no such step")


def test_the_scanners_own_depth_limit_gets_the_loaders_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PyYAML 6.0.4 and later stop a deep line in the scanner, before the loader has counted
    33 levels (the scanner reads a line ahead): the learner still reads the loader's limit,
    not "YAML syntax error: exceeded maximum nesting depth" (what a fresh install showed)."""

    def scanner_refuses(text: str) -> None:
        mark = yaml.Mark("x.yaml", 0, 0, 900, None, None)
        raise yaml.scanner.ScannerError(problem="exceeded maximum nesting depth", problem_mark=mark)

    monkeypatch.setattr(loader, "_build", scanner_refuses)
    with pytest.raises(ContentError) as refused:
        read_document(tmp_path / "x.yaml", "steps: [[[]]]\n")
    assert str(refused.value) == f"{tmp_path / 'x.yaml'}:1: nested more than 32 levels deep"
