"""The run session: the one headless owner of a scenario run.

Everything that starts a run goes through here: ``mqlab run``, ``compare``, the text
walkthrough, the lesson player, the TUI and the grader. A session

- resolves the broker name (``kafka``, ``sim``, ``sim:kafka``) against the scenario,
- streams every observation to any number of subscribers (a live timeline, a TUI widget, the
  grader) and, when asked, to a JSONL trace written atomically,
- runs on the right event loop (the simulator's virtual-time loop, optionally paced so a person
  can watch it; asyncio's own loop for the lab's brokers),
- accepts live faults while it runs (from another thread too: a TUI key press), and
- returns one :class:`~mqlab.scenarios.verdict.RunResult`: the ledger, each expectation judged,
  the broker checks and the verdict.

:func:`replay_trace` is the other half: a recorded trace folded by the same
:class:`~mqlab.scenarios.verdict.RunJudge`, so it gives the very same result without a broker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from mqlab.brokers.registry import BrokerRef
from mqlab.course.scenario import Scenario, Toxic
from mqlab.observe.bus import Subscriber
from mqlab.observe.events import Observation
from mqlab.observe.trace import TraceHeader, TraceWriter, read_trace
from mqlab.scenarios.runner import ScenarioError, ScenarioRunner
from mqlab.scenarios.verdict import RunJudge, RunResult

if TYPE_CHECKING:
    from mqlab.brokers.base import Broker

JudgedT = TypeVar("JudgedT")
"""What a :meth:`RunSession.request_judged` reader returns."""


def resolve_broker(name: str, scenario: Scenario) -> tuple[str, bool]:
    """``kafka`` -> (kafka, real); ``sim`` -> (the scenario's first system, simulated);
    ``sim:nats`` -> (nats, simulated). For a pattern scenario without a broker, its target:
    ``postgres`` -> (postgres, real), ``sim`` -> (postgres, simulated).

    Raises:
        UnknownBroker: not a broker name at all (with a "did you mean").
        ScenarioError: a broker the scenario does not run on.
    """
    normalised = name.strip().lower()
    if normalised == "sim":
        if not scenario.runs_on_sim:
            raise ScenarioError(f"scenario {scenario.id!r} does not run on the simulator")
        return scenario.targets[0], True
    simulated = normalised.startswith("sim:")
    system = normalised.removeprefix("sim:")
    if scenario.service_only:
        # A pattern scenario without a broker runs against the lab's services themselves.
        if system not in scenario.targets:
            runs_on = ", ".join(["sim", *scenario.targets])
            raise ScenarioError(f"scenario {scenario.id!r} runs on {runs_on}, not {name}")
        if simulated and not scenario.runs_on_sim:
            raise ScenarioError(f"scenario {scenario.id!r} does not run on the simulator")
        return system, simulated
    ref = BrokerRef.parse(name)  # raises UnknownBroker with a "did you mean"
    if ref.system not in scenario.systems:
        runs_on = ", ".join(scenario.systems) + (" (and sim)" if scenario.runs_on_sim else "")
        raise ScenarioError(f"scenario {scenario.id!r} runs on {runs_on}, not {ref.system}")
    if ref.simulated and not scenario.runs_on_sim:
        raise ScenarioError(f"scenario {scenario.id!r} does not run on the simulator")
    return ref.system, ref.simulated


LiveAction = Literal["kill", "pause", "resume", "restart", "latency", "cut", "heal", "crash"]
"""What a learner can do to a running scenario: a process fault on a broker, a network fault
on its path, healing that path, or crashing a running consumer."""


@dataclass(frozen=True, slots=True)
class LiveFault:
    """A fault asked for while a run is going on (a TUI key press).

    ``target`` is a lab process or role (``broker``, ``leader``, ``kafka-broker-2``) for the
    broker faults, and a consumer's name for ``crash``.
    """

    action: LiveAction
    target: str
    latency_ms: int = 500


class RunSession:
    """One scenario run on one broker, owned from start to result.

    Args:
        scenario: the validated scenario.
        broker: ``kafka`` | ``rabbitmq`` | ``sqs`` | ``nats`` (the lab's real broker), ``sim``
            (the simulator, for the scenario's first system) or ``sim:<system>``.
        seed: the simulator's seed (recorded for real runs too).
        record: write the observations to this JSONL trace (atomically; an interrupted run
            leaves no file).
        speed: simulator only: virtual seconds per real second so a person can watch (None:
            as fast as possible; 0: paused). Real brokers run in real time anyway.
        in_process: see :class:`~mqlab.scenarios.runner.ScenarioRunner`.

    Raises:
        UnknownBroker, ScenarioError: a broker name the scenario cannot run on.
    """

    def __init__(
        self,
        scenario: Scenario,
        broker: str = "sim",
        *,
        seed: int = 0,
        record: Path | None = None,
        speed: float | None = None,
        in_process: bool | None = None,
    ) -> None:
        if seed < 0:
            raise ScenarioError(f"the seed must be 0 or more, not {seed}")
        system, simulated = resolve_broker(broker, scenario)
        self.scenario = scenario
        self.system = system
        self.simulated = simulated
        self.seed = seed
        self.record = record
        self._speed = speed
        self.runner = ScenarioRunner(
            scenario, system, sim=simulated, seed=seed, in_process=in_process
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[object] | None = None
        self._started = threading.Event()

    @property
    def broker_name(self) -> str:
        """``kafka`` or ``sim:kafka``: how results and traces name the broker."""
        return f"sim:{self.system}" if self.simulated else self.system

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Receive every observation of the run as it happens; returns an unsubscribe.

        Subscribers run on the run's thread, synchronously: they must be quick (a TUI posts
        a message and returns). One that raises is dropped without stopping the run.
        """
        return self.runner.bus.subscribe(subscriber)

    # --- running -------------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run to the end and return the judged result.

        Must be awaited on a virtual-time loop for the simulator (:meth:`run_sync` picks the
        right loop); the lab's brokers run on any asyncio loop. Broker trouble ends in
        ``RunResult.error``; Ctrl-C (cancellation) propagates after the cleanup, and a trace
        being recorded is then discarded.
        """
        writer: TraceWriter | None = None
        unsubscribe: Callable[[], None] | None = None
        if self.record is not None:
            from mqlab import __version__

            header = TraceHeader(
                broker=self.broker_name,
                seed=self.seed,
                scenario=self.scenario.id,
                versions={"mqlab": __version__},
            )
            writer = TraceWriter(self.record, header)
            unsubscribe = self.subscribe(writer)
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self._started.set()
        try:
            result = await self.runner.run()
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        finally:
            if unsubscribe is not None:
                unsubscribe()
            self._loop = None
        if writer is not None:
            writer.close()
        return result

    def run_sync(self) -> RunResult:
        """Run on a fresh event loop of the right kind and block until the result."""
        if self.simulated:
            from mqlab.brokers.sim.clock import run_virtual

            return run_virtual(self.run(), speed=self._speed)
        return asyncio.run(self.run())

    # --- live control (thread-safe) ------------------------------------------------------

    def wait_started(self, timeout: float) -> bool:
        """Block until the run's loop is running (for callers on another thread)."""
        return self._started.wait(timeout)

    def set_speed(self, speed: float | None) -> None:
        """Change a simulated run's pace while it runs (0 pauses, None runs flat out)."""
        self._speed = speed
        loop = self._loop
        if loop is None:
            return

        def apply() -> None:
            from mqlab.brokers.sim.clock import VirtualTimeLoop

            if isinstance(loop, VirtualTimeLoop):
                loop.speed = speed

        loop.call_soon_threadsafe(apply)

    def request_fault(self, fault: LiveFault) -> concurrent.futures.Future[None]:
        """Ask for a fault from another thread; the future ends when it was applied (or
        holds the error, e.g. no such consumer).

        Raises:
            ScenarioError: the run is not running.
        """
        loop = self._loop
        if loop is None:
            raise ScenarioError("the run is not running")
        return asyncio.run_coroutine_threadsafe(self.inject(fault), loop)

    async def inject(self, fault: LiveFault) -> None:
        """Apply a live fault on the run's loop, through the same fault injector as the
        scenario's own fault steps (so the run's cleanup undoes it too).

        Raises:
            ScenarioError: the run has not started its faults yet, or the target is unknown.
            BrokerError: the lab or the simulator refused the fault.
        """
        runner = self.runner
        faults = runner.faults
        if faults is None:
            raise ScenarioError("the run has not started yet")
        if fault.action == "crash":
            await runner.crash_consumer(fault.target)
            return
        target = await runner.resolve_target(fault.target)
        if fault.action in ("kill", "pause", "resume", "restart"):
            await faults.apply(fault.action, target)
        elif fault.action == "heal":
            await faults.heal(target)
        elif fault.action == "latency":
            await faults.add_toxic(
                Toxic(kind="latency", target=target, latency_ms=fault.latency_ms)
            )
        else:
            await faults.add_toxic(Toxic(kind="cut", target=target))

    async def snapshot(self) -> object | None:
        """The run's broker state now, as its adapter's typed snapshot (``KafkaSnapshot``,
        ``RabbitSnapshot``, ``SqsSnapshot``, ``NatsSnapshot``): what the TUI's live widgets
        draw. None before the run has set up its broker, after it closed it, or when the broker
        cannot answer (a killed RabbitMQ, a cut network).

        Awaited on the run's loop (:meth:`request_snapshot` from another thread). On the
        simulator it is the adapter's ``peek()``, read from the server model: ``inspect()``
        there is a request over the simulated network (timers, a reconnect, a "broker up"
        observation), and a snapshot taken to draw a run must never change the run. Same
        seed, same run, however often the UI looks.
        """
        driver = self.runner._driver
        if driver is None:
            return None
        broker = driver.broker
        if self.simulated:
            return _simulated_snapshot(broker)
        from mqlab.brokers.base import BrokerError

        try:
            return await asyncio.wait_for(broker.inspect(), SNAPSHOT_TIMEOUT_SECONDS)
        except (BrokerError, OSError, TimeoutError):
            return None

    def request_snapshot(self) -> concurrent.futures.Future[object | None]:
        """:meth:`snapshot` from another thread (a UI's poll); the future holds None when the
        run is not running. A run that ends before getting to the request leaves the future
        pending, as :meth:`request_judged` does."""
        idle: concurrent.futures.Future[object | None] = concurrent.futures.Future()
        idle.set_result(None)
        loop = self._loop
        if loop is None:
            return idle
        snapshot = self.snapshot()
        try:
            return asyncio.run_coroutine_threadsafe(snapshot, loop)
        except RuntimeError:  # the loop closed between the check and the call
            snapshot.close()  # never awaited: no "coroutine was never awaited" warning
            return idle

    def request_judged(
        self, read: Callable[[RunJudge], JudgedT]
    ) -> concurrent.futures.Future[JudgedT | None]:
        """``read(judge)`` on the run's own thread, between two observations, from any thread.

        This is how a UI looks at the ledger the run folds without folding every observation a
        second time: the judge is only ever touched on the run's thread, so ``read`` sees it
        whole and needs no lock. The future holds ``read``'s value (or its exception), None
        when the run is not running. A run that ends before getting to ``read`` leaves the
        future pending: a caller polls it, and takes the run's result at the end instead.
        """
        future: concurrent.futures.Future[JudgedT | None] = concurrent.futures.Future()
        loop = self._loop
        if loop is None:
            future.set_result(None)
            return future
        judge = self.runner.judge

        def on_the_run_thread() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(read(judge))
            except BaseException as error:  # handed to the caller, never lost in the loop
                future.set_exception(error)

        try:
            loop.call_soon_threadsafe(on_the_run_thread)
        except RuntimeError:  # the loop closed between the check and the call
            future.set_result(None)
        return future

    def cancel(self) -> None:
        """Stop the run from another thread (its cleanup still runs)."""
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            loop.call_soon_threadsafe(main.cancel)


SNAPSHOT_TIMEOUT_SECONDS = 2.0
"""How long a real broker may take to answer :meth:`RunSession.snapshot` (a UI polls again)."""


def _simulated_snapshot(broker: Broker) -> object | None:
    """The simulated broker's state without a simulated request (``SimBroker.peek``)."""
    from mqlab.brokers.sim.adapter import SimBroker

    return broker.peek() if isinstance(broker, SimBroker) else None


def run_scenario(
    scenario: Scenario,
    broker: str,
    *,
    seed: int = 0,
    on_observation: Subscriber | None = None,
    record: Path | None = None,
    in_process: bool | None = None,
) -> RunResult:
    """One run from start to result, blocking (a session with at most one subscriber)."""
    session = RunSession(scenario, broker, seed=seed, record=record, in_process=in_process)
    if on_observation is not None:
        session.subscribe(on_observation)
    return session.run_sync()


def judge_observations(observations: Iterable[Observation]) -> RunResult:
    """Fold recorded observations into the result their run had.

    Raises:
        ValueError: the observations carry no ``run_started`` (nothing to judge against).
    """
    judge = RunJudge()
    recorded = tuple(observations)
    for observation in recorded:
        judge(observation)
    return judge.result(observations=recorded)


def replay_trace(
    path: Path,
    on_observation: Subscriber | None = None,
    *,
    speed: float = 0.0,
) -> tuple[TraceHeader, RunResult]:
    """Play a recorded trace back and judge it exactly as the live run was judged.

    Args:
        path: a trace written by ``mqlab run --record``.
        on_observation: called for each observation in order (the timeline).
        speed: 0 plays everything at once; 1 at the pace it was recorded; 2 twice as fast.

    Raises:
        TraceError: the file is not a readable trace.
        ValueError: the trace carries no run (recorded by an older mqlab).
    """
    header, observations = read_trace(path)
    judge = RunJudge()
    previous = observations[0].at if observations else 0.0
    for observation in observations:
        if speed > 0:
            time.sleep(max(0.0, (observation.at - previous) / speed))
        previous = observation.at
        judge(observation)
        if on_observation is not None:
            on_observation(observation)
    return header, judge.result(observations=tuple(observations))
