"""The scenario screen: run a scenario, watch it live, break things from the keyboard.

The run belongs to a :class:`~mqlab.tui.runs.LiveRun` (a run session) driven by a thread
worker; snapshots are polled by a second worker; faults are applied by short-lived workers.
None of them touches a widget: they post :mod:`mqlab.tui.messages` back, or feed the
observation feed the frame loop drains.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.text import Text
from textual.binding import Binding
from textual.worker import Worker

from mqlab.course.scenario import Scenario
from mqlab.scenarios.session import LiveFault, resolve_broker
from mqlab.scenarios.verdict import RunJudge, RunResult
from mqlab.tui.feed import ObservationFeed
from mqlab.tui.messages import FaultApplied, FaultRefused, RunFinished, SnapshotTaken
from mqlab.tui.models.ledger import LedgerPicture
from mqlab.tui.runs import LiveRun
from mqlab.tui.screens.fault_menu import FaultMenu, describe_fault
from mqlab.tui.screens.run_screen import RunScreen


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class ScenarioScreen(RunScreen):
    """One scenario on one broker: the intro (with the scenario's question), then the run.

    Args:
        scenario: the scenario to run.
        broker: ``sim``, ``sim:<system>`` or a real system of the lab.
        seed: the simulator's seed.
        speed: the simulator's pace (virtual seconds per real second; None: flat out).
        autostart: run at once instead of showing the intro first.
        record: write the run's trace there too.

    Raises:
        UnknownBroker, ScenarioError: the scenario does not run on that broker.
    """

    BINDINGS = [
        Binding("r", "run", "run"),
        Binding("k", "kill", "kill broker"),
        Binding("f", "faults", "faults"),
        Binding("x", "crash", "crash consumer"),
        Binding("y", "other_system", "system", show=False),
        *(Binding(str(n), f"predict({n})", show=False) for n in range(1, 10)),
    ]

    def __init__(
        self,
        scenario: Scenario,
        broker: str = "sim",
        *,
        seed: int = 0,
        speed: float | None = 1.0,
        autostart: bool = False,
        record: Path | None = None,
    ) -> None:
        system, simulated = resolve_broker(broker, scenario)
        where = f"sim:{system}" if simulated else system
        super().__init__(system, title=scenario.id, where=where)
        self.scenario = scenario
        self.broker = where
        self.seed = seed
        self._speed = speed if simulated else None
        self.autostart = autostart
        self.record = record
        self.feed = ObservationFeed(self.models, judge=RunJudge(scenario))
        self.live: LiveRun | None = None
        self.prediction: int | None = None
        self._run_worker: Worker[RunResult | None] | None = None

    # --- intro ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        super().on_mount()
        # The tabs compose their panes after this screen's mount: wait for them.
        self.call_after_refresh(self._begin)

    def _begin(self) -> None:
        self.show_intro(self._intro())
        if self.autostart:
            self.start_run()

    def _intro(self) -> RenderableType:
        scenario = self.scenario
        parts: list[RenderableType] = [
            Text(scenario.title, style="bold"),
            Markdown(scenario.summary),
        ]
        predict = scenario.predict
        if predict is not None:
            parts.append(Text(""))
            parts.append(Text(predict.question, style="bold"))
            for number, choice in enumerate(predict.choices, start=1):
                parts.append(Text(f"  {number}. {choice}"))
            parts.append(Text(""))
            parts.append(Text("Press a number to predict and run, or r to just run.", "dim"))
        else:
            parts.append(Text("Press r to run it.", style="dim"))
        others = [s for s in scenario.systems if s != self.system]
        if self.broker.startswith("sim:") and others:
            parts.append(Text(f"y: run it on another system ({', '.join(others)})", "dim"))
        return Group(*parts)

    # --- running --------------------------------------------------------------------------

    @property
    def speed(self) -> float | None:
        return self._speed

    def apply_speed(self, speed: float | None) -> None:
        if not self.broker.startswith("sim:"):
            return
        self._speed = speed
        if self.live is not None:
            self.live.set_speed(speed)

    def pace_label(self) -> str:
        if not self.broker.startswith("sim:"):
            return "real time"
        return super().pace_label()

    def start_run(self) -> None:
        """Start a (new) run of the scenario."""
        if self.running:
            return
        self._reset()
        try:
            live = LiveRun(
                self.scenario,
                self.broker,
                seed=self.seed,
                speed=self._speed,
                record=self.record,
                models=self.models,
            )
        except Exception as error:  # a broker name the scenario refuses
            self.finish(RunFinished(None, _one_line(error)))
            return
        self.live = live
        self.feed = live.feed
        self.running = True
        self._update_status()
        self._run_worker = self.run_worker(
            self._run_in_thread, thread=True, group="run", exit_on_error=False
        )
        self.run_worker(self._poll_in_thread, thread=True, group="snapshots", exit_on_error=False)

    def _reset(self) -> None:
        self.reset_models()
        self.result = None
        self.error = None
        self.queues.visibility_timeout = float(self.scenario.channel.sqs.visibility_timeout)

    def _run_in_thread(self) -> RunResult | None:
        live = self.live
        assert live is not None
        try:
            result = live.run()
        except Exception as error:
            self.post_message(RunFinished(None, _one_line(error)))
            return None
        self.post_message(RunFinished(result, picture=live.final_picture))
        return result

    def _poll_in_thread(self) -> None:
        live = self.live
        if live is not None:

            def post(snapshot: object, requested_after: int | None) -> None:
                self.post_message(SnapshotTaken(snapshot, requested_after))

            live.poll_snapshots(post, stamp=lambda: self.kafka.liveness_reports)

    def ledger_epilogue(self) -> list[RenderableType]:
        """Below the final ledger: the prediction's fate and the scenario's explanation."""
        if self.result is None:
            return []
        parts: list[RenderableType] = [Text("")]
        predict = self.scenario.predict
        if predict is not None and self.prediction is not None:
            held = self.prediction == predict.answer
            right = predict.choices[predict.answer]
            parts.append(
                Text(
                    "Your prediction held." if held else f"Not quite: the answer is {right!r}.",
                    style="bold green" if held else "bold yellow",
                )
            )
        parts.append(Markdown(self.scenario.explain))
        parts.append(Text("r: run it again   escape: back", style="dim"))
        return parts

    # --- keys -----------------------------------------------------------------------------

    def action_run(self) -> None:
        self.start_run()

    def action_predict(self, number: int) -> None:
        predict = self.scenario.predict
        if self.running or self.result is not None or predict is None:
            return
        if not 1 <= number <= len(predict.choices):
            return
        self.prediction = number - 1
        self.notice(f"you predicted: {predict.choices[number - 1]}")
        self.start_run()

    def action_other_system(self) -> None:
        if self.running or not self.broker.startswith("sim:"):
            return
        systems: list[str] = list(self.scenario.targets)
        following = systems[(systems.index(self.system) + 1) % len(systems)]
        self.app.switch_screen(
            ScenarioScreen(self.scenario, f"sim:{following}", seed=self.seed, speed=self._speed)
        )

    def action_kill(self) -> None:
        self.inject(LiveFault("kill", "leader" if self.system == "kafka" else "broker"))

    def action_crash(self) -> None:
        running = self.running_consumers()
        if not running:
            self.notice("no consumer is running", error=True)
            return
        self.inject(LiveFault("crash", running[-1]))

    def action_faults(self) -> None:
        if not self.running:
            self.notice("start the run first (r)", error=True)
            return

        def chosen(fault: LiveFault | None) -> None:
            if fault is not None:
                self.inject(fault)

        self.app.push_screen(FaultMenu(self.system, self.running_consumers()), chosen)

    def running_consumers(self) -> list[str]:
        """Consumers started in this run and not crashed (as far as the observations tell)."""
        with self.feed.lock:
            return self.models.running_consumers()

    def intro_scenario(self) -> Scenario | None:
        return self.scenario

    def request_picture(self) -> concurrent.futures.Future[LedgerPicture | None]:
        """The ledger so far: from the run's own judge while a run goes on."""
        live = self.live
        if live is not None and self.running:
            return live.request_picture()
        return super().request_picture()

    def inject(self, fault: LiveFault) -> None:
        """Apply ``fault`` from a worker; the outcome comes back as a message."""
        live = self.live
        description = describe_fault(fault)
        if live is None or not self.running:
            self.notice(f"{description}: start the run first (r)", error=True)
            return
        self.notice(f"you asked: {description}")

        def apply() -> None:
            try:
                live.inject(fault)
            except Exception as error:
                self.post_message(FaultRefused(description, _one_line(error)))
                return
            self.post_message(FaultApplied(description))

        self.run_worker(apply, thread=True, group="faults", exit_on_error=False)

    def on_fault_applied(self, message: FaultApplied) -> None:
        self.notice(f"done: {message.description}")

    def on_fault_refused(self, message: FaultRefused) -> None:
        self.notice(f"{message.description} refused: {message.error}", error=True)

    def on_unmount(self) -> None:
        if self.live is not None:
            self.live.cancel()  # the app is going away: the run must not outlive it

    async def stop(self) -> None:
        """Cancel the run and wait until its cleanup put the broker back."""
        live, worker = self.live, self._run_worker
        if live is None or worker is None or live.finished:
            return
        self.notify("stopping the run and cleaning up…", timeout=3)
        live.cancel()
        await worker.wait()
