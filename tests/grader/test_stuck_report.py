"""The child's stuck report: where the learner's code was when its time ran nearly out.

It replaced ``faulthandler.dump_traceback_later``, whose watchdog walks the threads' frames
without the GIL: with the dump repeated during a simulated check, 11 of 16 child processes died
of SIGSEGV, which the grader reported as "ran out of memory" (one fresh-clone suite run under
load hit it once, in test_learner_code's slow-start test). The report is read by the grader's
own parser, so these tests read it with that parser too.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from mqlab.grader.child import _StuckReport
from mqlab.grader.run import _STACK_DUMP, _stuck_at
from mqlab.scenarios.library import find
from mqlab.scenarios.session import run_scenario


def spin_until_reported(reader: int, within: float) -> str:
    """Keep this thread busy in this function until the report is written; return it."""
    deadline = time.monotonic() + within
    text = b""
    while not text.endswith(b"\n") or b"(most recent call first)" not in text:
        assert time.monotonic() < deadline, f"no report within {within} s: {text!r}"
        with contextlib.suppress(BlockingIOError):
            text += os.read(reader, 65536)
    return text.decode()


def _pipe() -> tuple[int, int]:
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    return reader, writer


def test_the_report_names_the_function_and_line_the_thread_is_in() -> None:
    reader, writer = _pipe()
    try:
        report = _StuckReport(writer)
        report.arm(0.05)
        lines = spin_until_reported(reader, within=30).splitlines()
    finally:
        os.close(reader)
        os.close(writer)
    line, function = _stuck_at(lines, __file__)
    assert function == "spin_until_reported"
    assert line is not None
    assert line > 0
    assert _STACK_DUMP.match(lines[0]), lines[0]  # the grader keeps its own lines out of
    assert _STACK_DUMP.match(lines[1]), lines[1]  # what it shows the learner


def test_a_disarmed_report_writes_nothing() -> None:
    reader, writer = _pipe()
    try:
        report = _StuckReport(writer)
        report.arm(0.2)
        report.disarm()
        time.sleep(0.6)  # the condition is that nothing happens: waiting past its time is it
        with pytest.raises(BlockingIOError):
            os.read(reader, 65536)
    finally:
        os.close(reader)
        os.close(writer)


def test_reports_written_again_and_again_during_a_simulated_run_do_not_crash_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The shape of the crash: a stack read while the thread runs an event loop full of
    # coroutine frames. Here the report is re-armed every 10 ms for the whole run.
    report = _StuckReport()
    running = threading.Event()

    def rearm() -> None:
        while not running.is_set():
            report.arm(0.005)
            time.sleep(0.01)
        report.disarm()

    rearmer = threading.Thread(target=rearm)
    rearmer.start()
    try:
        for _ in range(3):
            result = run_scenario(find("at-least-once-crash"), "sim:kafka", seed=1)
            assert result.passed
    finally:
        running.set()
        rearmer.join()
    assert "Timeout (" in capfd.readouterr().err  # the reports were written meanwhile
