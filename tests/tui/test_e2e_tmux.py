"""End to end: the real ``mqlab`` binary in a real terminal (tmux), on the lab's Kafka.

tmux gives the app a terminal of a fixed size; keys go in with ``send-keys`` and the screen
comes back with ``capture-pane``. Every wait polls the pane with a deadline. The lesson is the
fixture course (``MQLAB_CONTENT_DIR`` points at it, the shipped scenarios beside it), so the
test does not depend on the shipped lessons' wording.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import brokers_required
from tests.tui.conftest import FIXTURE_COURSE

ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 120, 40

pytestmark = [pytest.mark.kafka, pytest.mark.lab]


class Terminal:
    """One tmux session running one command, on a tmux server of its own.

    Its own server (``-L``, a socket named after the session): a pane's command gets the
    environment of the server it runs on, and a server that was already running (another
    test's, another lane's, a developer's own) would run mqlab with that server's
    environment: another lab's ports (``MQLAB_PORT_OFFSET``), another state dir.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *arguments: str) -> list[str]:
        """A tmux command line on this terminal's own server."""
        return ["tmux", "-L", self.name, *arguments]

    def keys(self, *keys: str) -> None:
        """Type keys (tmux key names: Enter, Right, Escape, or literal characters)."""
        subprocess.run(self.tmux("send-keys", "-t", self.name, *keys), check=True)

    def screen(self) -> str:
        """What the pane shows now ("" once the command has exited)."""
        result = subprocess.run(
            self.tmux("capture-pane", "-p", "-t", self.name),
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout if result.returncode == 0 else ""

    def alive(self) -> bool:
        """Whether the command still runs."""
        return (
            subprocess.run(
                self.tmux("has-session", "-t", self.name), capture_output=True, check=False
            ).returncode
            == 0
        )

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        """Poll the pane until ``pattern`` (a regex) shows; returns the pane."""
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = self.screen()
            if re.search(pattern, shown):
                return shown
            if not self.alive():
                pytest.fail(f"mqlab exited while waiting for {pattern!r}; last screen:\n{shown}")
            time.sleep(0.1)  # the polling interval of a deadline wait, not a wait for an event
        pytest.fail(f"timed out waiting for {pattern!r}; the screen shows:\n{shown}")

    def wait_exit(self, timeout: float = 120.0) -> None:
        """Poll until the command has exited."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                pytest.fail(f"mqlab did not exit; the screen shows:\n{self.screen()}")
            time.sleep(0.1)


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """A content dir: the fixture course's lessons beside the shipped scenarios."""
    folder = tmp_path / "content"
    folder.mkdir()
    shutil.copytree(FIXTURE_COURSE, folder / "lessons")
    (folder / "scenarios").symlink_to(ROOT / "scenarios")
    return folder


@pytest.fixture
def terminal(tmp_path: Path, content: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        message = "tmux is not installed (./scripts/test installs it)"
        if brokers_required():
            pytest.fail(message)
        pytest.skip(message)
    name = f"mqlab-e2e-{uuid.uuid4().hex[:8]}"
    terminal = Terminal(name)
    yield terminal
    subprocess.run(terminal.tmux("kill-server"), capture_output=True, check=False)


def _start(terminal: Terminal, tmp_path: Path, content: Path, *arguments: str) -> None:
    mqlab = Path(sys.executable).with_name("mqlab")
    command = " ".join([str(mqlab) if mqlab.exists() else "mqlab", *arguments])
    environment = {
        "MQLAB_CONTENT_DIR": str(content),
        "MQLAB_DATA_DIR": str(tmp_path / "data"),
        "MQLAB_THEME": "dark",
        "TERM": "xterm-256color",
    }
    exports = " ".join(f"{key}={value}" for key, value in environment.items())
    subprocess.run(
        terminal.tmux(
            "new-session",
            "-d",
            "-s",
            terminal.name,
            "-x",
            str(WIDTH),
            "-y",
            str(HEIGHT),
            f"env {exports} {command}",
        ),
        check=True,
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm-256color"},
    )


def _kafka_brokers_healthy() -> bool:
    from mqlab.lab.supervisor import Lab

    rows = [row for row in Lab().status() if row.service == "kafka"]
    return bool(rows) and all(row.health == "healthy" for row in rows)


def test_a_lesson_on_the_lab(terminal: Terminal, tmp_path: Path, content: Path) -> None:
    _start(terminal, tmp_path, content, "course", "--broker", "kafka")
    terminal.wait_for(r"Every kind of step")
    terminal.keys("Enter")
    terminal.wait_for(r"step 1 of 6")
    terminal.wait_for(r"drawn live from the lab's Kafka cluster|an example", timeout=90)
    terminal.keys("Right")
    terminal.wait_for(r"How many leaders")
    terminal.keys("2")
    terminal.wait_for(r"Not quite\.")
    terminal.keys("1")
    terminal.wait_for(r"Right\. Exactly one replica")
    terminal.keys("Right")
    terminal.wait_for(r"Are any acknowledged messages lost")
    terminal.keys("2")
    terminal.wait_for(r"running kafka-leader-failover on kafka")
    # The reveal's verdict may wrap ("FAIL on" at a line's end, the scrollbar's block
    # characters after it, "kafka" on the next line).
    shown = terminal.wait_for(r"(PASS|FAIL|ERROR) on[\s\u2580-\u259f]*kafka", timeout=180)
    assert "on sim" not in shown
    terminal.keys("q")
    terminal.wait_exit()


def test_a_scenario_on_the_lab_with_a_broker_killed_from_the_keyboard(
    terminal: Terminal, tmp_path: Path, content: Path
) -> None:
    _start(
        terminal,
        tmp_path,
        content,
        "course",
        "--broker",
        "kafka",
        "--scenario",
        "kafka-consumer-group-rebalance",
    )
    terminal.wait_for(r"kafka-consumer-group-rebalance · running · kafka · real time", timeout=90)
    terminal.keys("v")
    terminal.wait_for(r"clicks:0 leader \d", timeout=90)
    terminal.keys("k")
    terminal.wait_for(r"done: kill leader", timeout=60)
    terminal.wait_for(r"✗ \d down|broker kafka-broker-\d DOWN", timeout=60)
    # The status line at the top: the ledger's own verdict line may be below the fold.
    shown = terminal.wait_for(
        r"kafka-consumer-group-rebalance · (PASS|FAIL|ERROR) · kafka", timeout=240
    )
    assert "cleanup:" not in shown  # the run put back what it (and the learner) broke
    terminal.keys("q")
    terminal.wait_exit()
    # The run's cleanup restarted the broker killed from the keyboard: the lab is whole.
    deadline = time.monotonic() + 180
    while not _kafka_brokers_healthy():
        if time.monotonic() > deadline:
            from mqlab.lab.supervisor import Lab

            rows = [f"{r.process}: {r.health}" for r in Lab().status() if r.service == "kafka"]
            pytest.fail(f"the Kafka brokers were not all healthy after the run: {rows}")
        time.sleep(0.5)
