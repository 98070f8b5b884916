"""What the TUI's tests share: the app built as the CLI builds it, on a fixture course, and
waiting for what the app shows (with a deadline, never a fixed sleep)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App
from textual.pilot import Pilot

from mqlab.tui.app import MqlabApp, make_app

FIXTURE_COURSE = Path(__file__).parent / "fixtures" / "lessons"
"""One lesson with one step of every kind (stable, unlike the shipped course's text)."""


@pytest.fixture
def progress_path(tmp_path: Path) -> Path:
    """A fresh progress database for one test."""
    return tmp_path / "progress.sqlite3"


@pytest.fixture
def make(progress_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., MqlabApp]:
    """``make(**options)``: the app as ``mqlab`` builds it, on the fixture course."""
    monkeypatch.setenv("MQLAB_THEME", "dark")

    def build(**options: object) -> MqlabApp:
        options.setdefault("course", FIXTURE_COURSE)
        options.setdefault("progress", progress_path)
        return make_app(**options)  # type: ignore[arg-type]

    return build


def screen_text(app: App[object]) -> str:
    """What the terminal shows right now, as plain text.

    Rendered as a repaint and a screenshot render it: with the screens below a modal one
    (``_background_screens``). Without them a modal screen would draw, and cache, a blank
    backdrop, and a snapshot taken later could show that instead of the screen behind it.
    """
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


async def until(
    pilot: Pilot[object], condition: Callable[[], object], what: str, timeout: float = 60.0
) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` saying what."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await pilot.pause(0.02)


async def until_shown(pilot: Pilot[object], *texts: str, timeout: float = 60.0) -> str:
    """Wait until every one of ``texts`` is on the screen at once; returns the screen's text.

    Give every text a test asserts on: parts of a screen arrive in different frames (a
    widget's new content can be read before its new size is laid out, a ledger counted in a
    helper thread comes a frame or two after the run's end), so one text being there says
    nothing about another.
    """
    assert texts, "until_shown needs a text to wait for"
    shown = ""

    def visible() -> bool:
        nonlocal shown
        shown = screen_text(pilot.app)
        return all(text in shown for text in texts)

    deadline = time.monotonic() + timeout
    while not visible():
        if time.monotonic() > deadline:
            missing = [text for text in texts if text not in shown]
            pytest.fail(f"timed out waiting for {missing!r} on screen; it shows:\n{shown}")
        await pilot.pause(0.02)
    return shown
