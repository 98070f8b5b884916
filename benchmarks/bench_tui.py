"""How fast the TUI starts and how much it absorbs: printed, never asserted.

1. **First frame**: the time from process start to the first painted frame of ``mqlab``.
   Measured two ways: a child interpreter that builds the app as the CLI does and reports
   when its first frame has been painted (headless, so it is the app's own cost), and the real
   ``mqlab`` binary in tmux, polled until the course map is on the pane (a real terminal;
   includes tmux and polling, skipped without tmux). Goal: under 0.6 s.
2. **Absorption**: synthetic Kafka observations are pushed into an open scenario screen's feed
   from another thread at a fixed rate (the way a run's thread pushes them), while keys are
   pressed; for each rate it prints the observations folded per second, the backlog left, and
   the latency from a key press to the repaint it causes. Goal: at least 50,000
   observations per second with the key press repainted within 100 ms.

Run::

    python benchmarks/bench_tui.py            # both
    python benchmarks/bench_tui.py start      # first frame only
    python benchmarks/bench_tui.py absorb --rates 25000 50000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

_PAINTED = """
import sys, time
def _report_first_paint(app):
    def painted():
        sys.stdout.write(f"{{time.time():.6f}} {{time.process_time():.6f}}\\n")
        sys.stdout.flush()
        app.exit()
    app.call_after_refresh(lambda: app.call_later(lambda: app.screen.call_after_refresh(painted)))
"""
"""Prints the wall-clock time and the process's CPU seconds once the first screen has been
painted, then ends the app. The parent subtracts the time it spawned the child, so the number
includes the interpreter's own start, as a learner's ``mqlab`` does."""

_CHILDREN = {
    "bare": _PAINTED
    + """
from textual.app import App
from textual.widgets import Static
class Bare(App):
    def compose(self):
        yield Static("hello")
app = Bare()
_report_first_paint(app)
app.run(headless=True, size=(120, 40))
""",
    "app": _PAINTED
    + """
from pathlib import Path
from mqlab.tui.app import make_app
app = make_app(progress=Path({progress!r}))
_report_first_paint(app)
app.run(headless=True, size=(120, 40))
""",
    "command": _PAINTED
    + """
import mqlab.cli  # what the console script imports: Typer and every command group
from textual.app import App
_run = App.run
def _headless_run(self, *args, **kwargs):
    _report_first_paint(self)
    return _run(self, headless=True, size=(120, 40))
App.run = _headless_run
from mqlab.cli.course import open_app
open_app()
""",
}
"""``bare``: a minimal Textual app (one Static), the floor any Textual app pays here. ``app``:
mqlab's app built as the CLI builds it. ``command``: what ``mqlab course`` runs in a terminal
(the CLI imported, the broker checked, the app opened), headless."""


def first_frame_headless(variant: str, runs: int) -> list[tuple[float, float]]:
    """(seconds from spawning the child to its first painted frame, CPU seconds the child had
    used by then), per run."""
    samples = []
    with tempfile.TemporaryDirectory() as folder:
        code = _CHILDREN[variant].format(progress=str(Path(folder) / "progress.sqlite3"))
        environment = {**os.environ, "MQLAB_DATA_DIR": folder}
        for _ in range(runs):
            spawned = time.time()
            result = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env=environment,
            )
            painted, cpu = result.stdout.strip().splitlines()[-1].split()
            samples.append((float(painted) - spawned, float(cpu)))
    return samples


def first_frame_tmux(runs: int) -> list[float] | None:
    """Seconds from spawning ``mqlab`` in tmux to the course map on the pane (None: no tmux).

    Each run on a tmux server of its own (``-L``), as the end-to-end tests do: a server
    someone else started would give mqlab that server's environment, and whatever state the
    default server is in is not the benchmark's to depend on (one invocation died at its first
    "new-session" with status 1, on the default server; not seen again in 15 runs, cause not
    found).
    """
    if shutil.which("tmux") is None:
        return None
    mqlab = Path(sys.executable).with_name("mqlab")
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(runs):
            name = f"mqlab-bench-{uuid.uuid4().hex[:8]}"

            def tmux(*arguments: str, server: str = name) -> list[str]:
                return ["tmux", "-L", server, *arguments]

            command = f"env MQLAB_DATA_DIR={folder} TERM=xterm-256color {mqlab} course"
            started = time.perf_counter()
            subprocess.run(
                tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", command),
                check=True,
            )
            try:
                while True:
                    pane = subprocess.run(
                        tmux("capture-pane", "-p", "-t", name),
                        capture_output=True,
                        text=True,
                        check=False,
                    ).stdout
                    if "scenario library" in pane:
                        times.append(time.perf_counter() - started)
                        break
                    if time.perf_counter() - started > 30:
                        raise RuntimeError("mqlab did not paint within 30 s")
                    time.sleep(0.005)
            finally:
                subprocess.run(tmux("kill-server"), capture_output=True, check=False)
    return times


async def _key_to_repaint(pilot: Any, screen: Any, key: str) -> float:
    """Seconds from pressing ``key`` (a tab switch) to the end of the repaint it causes."""
    painted = asyncio.Event()
    pressed_at = time.perf_counter()
    latency: list[float] = []
    original = screen.action_show_tab

    def repainted() -> None:
        latency.append(time.perf_counter() - pressed_at)
        painted.set()

    def show_and_mark(tab: str) -> None:
        original(tab)
        screen.call_after_refresh(repainted)

    screen.action_show_tab = show_and_mark
    try:
        await pilot.press(key)
        await asyncio.wait_for(painted.wait(), 10)
    finally:
        screen.action_show_tab = original
    return latency[0]


async def _absorb(rate: int, seconds: float, presses: int) -> dict[str, float]:
    from mqlab.observe.events import Produced
    from mqlab.scenarios.library import find
    from mqlab.tui.app import make_app
    from mqlab.tui.screens.scenario import ScenarioScreen

    with tempfile.TemporaryDirectory() as folder:
        app = make_app(progress=Path(folder) / "progress.sqlite3")
        async with app.run_test(size=(120, 40)) as pilot:
            app.open_scenario(find("kafka-partition-ordering"))
            while not isinstance(app.screen, ScenarioScreen) or app.screen.result is not None:
                await pilot.pause(0.01)
            screen = app.screen
            await pilot.pause(0.2)
            # The screen's feed before a run folds into the live views and a judge of its own:
            # pushing into it from this thread costs what a live run's thread pays (the
            # runner's judge, then the feed's fold into the views).
            feed = screen.feed
            stop = threading.Event()
            offered = [0]

            def push() -> None:
                sent = 0
                begun = time.perf_counter()
                while not stop.is_set():
                    due = int((time.perf_counter() - begun) * rate)
                    offered[0] = due
                    for index in range(sent, due):
                        feed(
                            Produced(
                                at=index / rate,
                                broker="sim:kafka",
                                destination="mq-bench-events",
                                message_id=f"m{index}",
                                partition=index % 4,
                                position=index // 4,
                            )
                        )
                    sent = max(sent, due)
                    time.sleep(0.001)

            feeder = threading.Thread(target=push, daemon=True)
            begun = time.perf_counter()
            feeder.start()
            latencies: list[float] = []
            tabs = ["v", "l"]
            interval = seconds / presses
            for press in range(presses):
                await pilot.pause(interval)
                latencies.append(await _key_to_repaint(pilot, screen, tabs[press % 2]))
            elapsed = time.perf_counter() - begun
            absorbed = feed.folded
            backlog = max(0, offered[0] - absorbed)
            stop.set()
            feeder.join()
            drawn = screen.picture.summary.produced
            latencies.sort()
            return {
                "offered": rate,
                "absorbed_per_s": absorbed / elapsed,
                "backlog": backlog,
                "ledger_drawn": drawn,
                "median_ms": statistics.median(latencies) * 1000,
                "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
                "max_ms": latencies[-1] * 1000,
            }


def _loadavg() -> str:
    """``/proc/loadavg`` as it reads (1, 5 and 15 minute load, runnable/all tasks): the
    machine is shared, so every number is printed beside it."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:4])
    except OSError:
        return " ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", choices=["start", "absorb", "all"], default="all")
    parser.add_argument("--runs", type=int, default=5, help="start-up runs (default 5)")
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[10_000, 25_000, 50_000, 100_000, 200_000]
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per rate (default 3)")
    arguments = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, /proc/loadavg {_loadavg()}")
    if arguments.what in ("start", "all"):
        runs = arguments.runs
        print(f"first frame (median of {runs} runs; CPU: the process's own seconds by then)")
        for variant, label in (
            ("bare", "bare Textual app (one Static)"),
            ("app", "mqlab's app (make_app)"),
            ("command", "mqlab course (CLI + app)"),
        ):
            load = os.getloadavg()[0]
            samples = first_frame_headless(variant, arguments.runs)
            walls = [wall for wall, _ in samples]
            cpus = [cpu for _, cpu in samples]
            print(
                f"  {label:<32} {statistics.median(walls):.3f} s wall "
                f"(min {min(walls):.3f}, max {max(walls):.3f}), "
                f"{statistics.median(cpus):.3f} s CPU, load {load:.1f}"
            )
        load = os.getloadavg()[0]
        real = first_frame_tmux(arguments.runs)
        if real is None:
            print("  mqlab in tmux: skipped (no tmux)")
        else:
            print(
                f"  {'mqlab in tmux (to course map)':<32} {statistics.median(real):.3f} s wall "
                f"(min {min(real):.3f}, max {max(real):.3f}), load {load:.1f}; goal < 0.6 s"
            )
    if arguments.what in ("absorb", "all"):
        load = os.getloadavg()[0]
        print(f"absorption ({arguments.seconds:g} s per rate, load {load:.1f})")
        print("  offered/s  absorbed/s  backlog  ledger drawn  key->repaint median  p95  max (ms)")
        for rate in arguments.rates:
            row = asyncio.run(_absorb(rate, arguments.seconds, presses=20))
            print(
                f"  {row['offered']:>9,.0f}  {row['absorbed_per_s']:>10,.0f}  "
                f"{row['backlog']:>7,.0f}  {row['ledger_drawn']:>12,.0f}  "
                f"{row['median_ms']:>19.1f}  {row['p95_ms']:>4.1f}  {row['max_ms']:>4.1f}"
            )
        print(f"  /proc/loadavg afterwards {_loadavg()}; goal: 50,000/s within 100 ms")


if __name__ == "__main__":
    main()
