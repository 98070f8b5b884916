"""The replay screen: a recorded trace played back at a chosen pace, with pause and step.

The same timeline, ledger and live views as a live run, fed by a
:class:`~mqlab.tui.runs.TracePlayer` instead of a run session; the end shows the very result
the recorded run had (the trace is judged as ``mqlab replay`` judges it).
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from textual.binding import Binding
from textual.worker import Worker

from mqlab.scenarios.verdict import RunResult
from mqlab.tui.messages import RunFinished
from mqlab.tui.models.ledger import LedgerPicture
from mqlab.tui.runs import TracePlayer
from mqlab.tui.screens.run_screen import RunScreen


class ReplayScreen(RunScreen):
    """Play ``path`` back (``speed``: recorded seconds per real second; None: all at once).

    Raises:
        TraceError: the file is not a readable trace.
    """

    BINDINGS = [
        Binding("n,full_stop", "step", "step"),
        Binding("r", "restart", "from the start"),
    ]

    def __init__(self, path: Path, *, speed: float | None = 1.0) -> None:
        self.player = TracePlayer(path, speed=speed)
        header = self.player.header
        system = header.broker.removeprefix("sim:")
        title = header.scenario or path.name
        super().__init__(system, title=title, where=f"replay {header.broker}")
        self.player.draw_into(self.models)
        self.feed = self.player.feed
        self._initial_speed = speed
        self._worker: Worker[RunResult | None] | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self.start()

    def start(self) -> None:
        """Play from the first observation."""
        self.running = True
        self._worker = self.run_worker(self._play, thread=True, group="replay", exit_on_error=False)
        self._update_status()

    def _play(self) -> RunResult | None:
        try:
            result = self.player.run()
        except ValueError as error:
            self.post_message(RunFinished(None, str(error)))
            return None
        if result is not None:
            self.post_message(RunFinished(result, picture=self.player.final_picture))
        return result

    def request_picture(self) -> concurrent.futures.Future[LedgerPicture | None]:
        return self.player.request_picture()

    @property
    def speed(self) -> float | None:
        return self.player.speed

    def apply_speed(self, speed: float | None) -> None:
        self.player.set_speed(speed)

    def pace_label(self) -> str:
        played = f"{self.player.position}/{len(self.player.observations)}"
        return f"{super().pace_label()} · {played}"

    def action_step(self) -> None:
        if self.player.speed != 0:
            self.apply_speed(0)  # stepping means walking it by hand: pause first
        self.player.step()

    async def action_restart(self) -> None:
        await self.stop()
        self.app.switch_screen(ReplayScreen(self.player.path, speed=self._initial_speed))

    def frame(self) -> None:
        super().frame()
        if self.running:
            self._update_status()  # the position moves even in a quiet stretch

    def on_unmount(self) -> None:
        self.player.cancel()  # a paused player would otherwise wait forever

    async def stop(self) -> None:
        """Stop playing."""
        self.player.cancel()
        if self._worker is not None:
            await self._worker.wait()
