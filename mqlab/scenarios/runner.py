"""Execute one scenario's steps on one broker (real or simulated).

The runner is the engine under :class:`~mqlab.scenarios.session.RunSession` (which is what the
CLI, the TUI and the grader use). It executes the steps in order and reports everything it does
and knows as observations on its bus: the run's start (with the scenario document), each
message handed to a producer (key, priority), each consumer started, each check against the
broker's own state, the run's end (with its error). A :class:`~mqlab.scenarios.verdict.RunJudge`
subscribed to the same bus folds them into the ledger and the verdict; the runner never writes
into the ledger, so the replay of a recorded trace is judged exactly like the live run.

On real brokers a consumer that is meant to crash runs as a separate OS process
(``python -m mqlab.scenarios.worker``), so the crash is a real SIGKILL at an exact point of the
consume loop; the other consumers run as tasks in this process on the same real adapter. On the
simulator everything runs in this process on the virtual clock.

Whatever happens (an error, a broker that dies, Ctrl-C), the ``finally`` path stops the
consumers, puts the lab back together (restarts killed brokers, removes toxics) and deletes
the run's topics, queues and streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from mqlab import __version__
from mqlab.brokers.base import Broker, BrokerError
from mqlab.brokers.registry import BrokerOptions, BrokerRef, create_broker
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.course.scenario import Consume, Produce, Scenario, Step, WaitFor
from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import (
    CheckEvaluated,
    ConsumerCrashed,
    ConsumerStarted,
    Note,
    Observation,
    ProduceRequested,
    RunEnded,
    RunStarted,
)
from mqlab.patterns.idempotency import DedupStore, MemoryDedupStore
from mqlab.scenarios.consumer import ConsumeOutcome, CrashNow, consume_loop
from mqlab.scenarios.drivers import driver_for
from mqlab.scenarios.drivers.base import (
    FLAKY_MARK,
    POISON_MARK,
    CheckResult,
    ConsumerSession,
    Driver,
    OutgoingMessage,
)
from mqlab.scenarios.faults import FaultInjector
from mqlab.scenarios.pattern_steps import PatternSteps
from mqlab.scenarios.verdict import RunJudge, RunResult

STOP_GRACE_SECONDS = 15.0
"""How long a stopped background consumer may take to leave before it is killed."""


class ScenarioError(Exception):
    """A scenario could not run (bad step for this broker, broker error); one-line message."""


class _BackgroundConsumer:
    """A consumer running while later steps execute (in-process task or worker process)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.task: asyncio.Task[ConsumeOutcome | None]  # set as soon as the task is created
        self.stop_event = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self.session: ConsumerSession | None = None


class ScenarioRunner:
    """Runs ``scenario`` on one system.

    Args:
        scenario: the validated scenario.
        system: "kafka", "rabbitmq", "sqs" or "nats".
        sim: run on the simulator instead of the lab's real broker. Must then be driven by
            :func:`run_scenario`, which provides the virtual-time event loop.
        seed: the simulator's seed (recorded for real runs too, for the trace header).
        in_process: True runs every consumer as a task in this process (always so on ``sim``);
            False runs every consumer in a worker process; None (default) uses a worker
            process only for consumers that crash (``consume.crash`` or a ``crash:`` step),
            where a real SIGKILL matters, and tasks for the others, which saves a process
            start per consume step.
        on_observation: called for every observation as it happens (live timeline).
    """

    def __init__(
        self,
        scenario: Scenario,
        system: str,
        *,
        sim: bool = False,
        seed: int = 0,
        in_process: bool | None = None,
        on_observation: Callable[[Observation], None] | None = None,
    ) -> None:
        if system not in scenario.systems and not (
            scenario.service_only and system in scenario.targets
        ):
            raise ScenarioError(
                f"scenario {scenario.id!r} does not run on {system} "
                f"(it runs on: {', '.join(scenario.brokers)})"
            )
        if sim and not scenario.runs_on_sim:
            raise ScenarioError(f"scenario {scenario.id!r} does not list sim")
        self.scenario = scenario
        self.system = system
        self.sim = sim
        self.seed = seed
        self.in_process = in_process
        self._crash_targets = {step.crash for step in scenario.steps if step.crash is not None}
        self.bus = ObservationBus()
        self.recorder = Recorder()
        self.judge = RunJudge(scenario)
        self.bus.subscribe(self.recorder)
        self.bus.subscribe(self.judge)
        if on_observation is not None:
            self.bus.subscribe(on_observation)
        self.broker_name = f"sim:{system}" if sim else system
        self.world: Any = None
        self._message_counter = 0
        self._labelled: dict[str, list[OutgoingMessage]] = {}
        self._consumers: dict[str, _BackgroundConsumer] = {}
        self._producers: dict[str, asyncio.Task[int]] = {}
        self._dedup: DedupStore | None = None
        self._roles: dict[str, str] = {}
        self._error: str | None = None
        self._restore_problem: str | None = None
        self.faults: FaultInjector | None = None
        """The run's fault injector once the run started (live faults from the TUI use it)."""
        self._driver: Driver | None = None
        self._patterns: PatternSteps | None = None

    # --- set-up -------------------------------------------------------------------------

    def _make_broker(self) -> Broker:
        options = BrokerOptions()
        if self.system == "sqs":
            sqs = self.scenario.channel.sqs
            options = BrokerOptions(
                sqs_duplicate_rate=sqs.duplicate_rate, sqs_reorder_rate=sqs.reorder_rate
            )
        broker = create_broker(
            BrokerRef.of(self.system, simulated=self.sim),
            bus=self.bus,
            seed=self.seed,
            options=options,
        )
        self._broker_faults = broker.faults
        if isinstance(broker, SimBroker):
            self.world = broker.world
        return broker

    def _make_faults(self) -> FaultInjector:
        return FaultInjector(self.bus, self._broker_faults, source="sim" if self.sim else "lab")

    async def _dedup_store(self, broker: Broker) -> DedupStore:
        if self._dedup is None:
            if self.sim:
                self._dedup = MemoryDedupStore()
            else:
                from mqlab.patterns.idempotency import RedisDedupStore

                self._dedup = RedisDedupStore(broker.endpoints.redis_url, broker.namespace)
        return self._dedup

    # --- the run ------------------------------------------------------------------------

    def _run_started(self) -> None:
        self.bus.emit(
            RunStarted(
                at=self.bus.now(),
                broker="runner",
                scenario_id=self.scenario.id,
                system=self.system,
                simulated=self.sim,
                seed=self.seed,
                scenario=self.scenario.model_dump_json(),
                mqlab_version=__version__,
            )
        )

    def _pattern_steps(self, namespace: str, broker: Broker | None) -> PatternSteps:
        service = self.system if self.scenario.service_only else "postgres"
        self._patterns = PatternSteps(
            self.scenario,
            self.bus,
            simulated=self.sim,
            seed=self.seed,
            namespace=namespace,
            broker=broker,
            source=f"sim:{service}" if self.sim else service,
        )
        return self._patterns

    async def _run_without_broker(self) -> RunResult:
        """A pattern scenario with no broker: its programs run against the lab's services
        (or the simulator's stand-ins); only pattern, note and wait steps exist."""
        wall_start = time.perf_counter()
        if self.sim:
            self.bus.clock = _loop_clock  # the virtual clock, as a simulated world would set
        self._run_started()
        from mqlab.brokers.base import new_namespace

        patterns = self._pattern_steps("mq-sim" if self.sim else new_namespace(), None)
        try:
            for number, step in enumerate(self.scenario.steps, start=1):
                if step.pattern is not None:
                    await patterns.run(step.pattern, number)
                elif step.note is not None:
                    self.bus.emit(Note(at=self.bus.now(), broker="runner", text=step.note))
                elif isinstance(step.wait, int | float):
                    await asyncio.sleep(step.wait)
        except (BrokerError, ScenarioError, OSError, RuntimeError) as error:
            self._error = _one_line(error)
        except Exception as error:  # a bug must still end as a result, never half-cleaned
            self._error = f"internal error: {type(error).__name__}: {_one_line(error)}"
        finally:

            async def cleanup() -> None:
                await patterns.cleanup()
                self._run_ended()

            await asyncio.shield(cleanup())
        return self.judge.result(
            observations=tuple(self.recorder.observations),
            wall_seconds=time.perf_counter() - wall_start,
        )

    def _run_ended(self) -> None:
        self.bus.emit(
            RunEnded(
                at=self.bus.now(),
                broker="runner",
                error=self._error or "",
                restore_problem=self._restore_problem or "",
            )
        )

    async def run(self) -> RunResult:
        """Execute every step, then judge. Never raises for broker trouble: the error is in
        :attr:`RunResult.error` (Ctrl-C still propagates after cleanup)."""
        if self.scenario.service_only:
            return await self._run_without_broker()
        wall_start = time.perf_counter()
        broker = self._make_broker()
        self._pattern_steps(broker.namespace, broker)
        self._run_started()
        faults = self._make_faults()
        self.faults = faults
        driver: Driver | None = None
        try:
            await broker.connect()
            driver = driver_for(broker, self.scenario)
            self._driver = driver
            await driver.setup()
            for number, step in enumerate(self.scenario.steps, start=1):
                if step.runs_on(self.system, sim=self.sim):
                    await self._step(number, step, broker, driver, faults)
            await self._finish_background(broker)
            await driver.reconcile()
            for outcome in await driver.broker_agreement(self.judge.ledger):
                self._report_check(0, outcome)
        except (BrokerError, ScenarioError, CrashNow, OSError, RuntimeError) as error:
            self._error = _one_line(error)
        except Exception as error:  # a bug must still end as a result, never half-cleaned
            self._error = f"internal error: {type(error).__name__}: {_one_line(error)}"
        finally:
            await self._teardown(broker, driver, faults)
        return self.judge.result(
            observations=tuple(self.recorder.observations),
            wall_seconds=time.perf_counter() - wall_start,
        )

    def _report_check(self, step: int, outcome: CheckResult) -> None:
        self.bus.emit(
            CheckEvaluated(
                at=self.bus.now(),
                broker="runner",
                step=step,
                description=outcome.description,
                observed=outcome.observed,
                holds=outcome.holds,
            )
        )

    async def _teardown(
        self,
        broker: Broker,
        driver: Driver | None,
        faults: FaultInjector,
    ) -> None:
        """Stop consumers, restore the lab and delete the run's resources, whatever happened.

        Shielded from cancellation (Ctrl-C) so the cleanup itself is not interrupted.
        """

        async def cleanup() -> None:
            await self._kill_background()
            try:
                await faults.restore_all()
            except RuntimeError as error:
                self._restore_problem = _one_line(error)
            if driver is not None:
                with contextlib.suppress(BrokerError):
                    await driver.close()
            if self._dedup is not None:
                clear = getattr(self._dedup, "clear", None)
                if clear is not None:
                    # Deleting the run's dedup keys is best-effort: they expire by TTL anyway.
                    with contextlib.suppress(Exception):
                        await clear()
                await self._dedup.close()
            if self._patterns is not None:
                await self._patterns.cleanup()
            try:
                await broker.close()
            except BrokerError as error:
                problems = [p for p in (self._restore_problem, _one_line(error)) if p]
                self._restore_problem = "; ".join(problems)
            self._run_ended()

        await asyncio.shield(cleanup())

    async def _step(
        self,
        number: int,
        step: Step,
        broker: Broker,
        driver: Driver,
        faults: FaultInjector,
    ) -> None:
        action = step.action
        if step.produce is not None:
            await self._produce(step.produce, driver, number)
        elif step.consume is not None:
            await self._consume(step.consume, broker, driver, number)
        elif step.stop is not None:
            await self._stop(step.stop)
        elif step.crash is not None:
            await self._crash(step.crash)
        elif step.join is not None:
            await self._join(step.join)
        elif step.fault is not None:
            target = await self._resolve(step.fault.target, driver)
            await faults.apply(step.fault.action, target)
        elif step.toxic is not None:
            target = await self._resolve(step.toxic.target, driver)
            await faults.add_toxic(step.toxic.model_copy(update={"target": target}))
        elif step.heal is not None:
            await faults.heal(await self._resolve(step.heal.target, driver))
        elif step.wait is not None:
            if isinstance(step.wait, WaitFor):
                self._report_check(number, await self._wait_for(step.wait, driver))
            else:
                await asyncio.sleep(step.wait)
        elif step.check is not None:
            self._report_check(number, await driver.check(step.check))
        elif step.note is not None:
            self.bus.emit(Note(at=self.bus.now(), broker="runner", text=step.note))
        elif step.pattern is not None and self._patterns is not None:
            await self._patterns.run(step.pattern, number)
        else:  # pragma: no cover - the model guarantees one action
            raise ScenarioError(f"step {number}: unknown action {action}")

    async def resolve_target(self, target: str) -> str:
        """A role or process name resolved as the scenario's own fault steps resolve it.

        Raises:
            ScenarioError: the run has not set up its channel yet.
        """
        if self._driver is None:
            raise ScenarioError("the run has not set up its broker yet")
        return await self._resolve(target, self._driver)

    async def crash_consumer(self, name: str) -> None:
        """SIGKILL (or cancel, in process) a running consumer now, as a ``crash:`` step does.

        Raises:
            ScenarioError: no consumer of that name.
        """
        await self._crash(name)

    async def _resolve(self, target: str, driver: Driver) -> str:
        """Resolve a role (leader, follower-1, broker) once per run: "pause follower-1" and a
        later "resume follower-1" must mean the same broker even after leadership moved."""
        if target not in self._roles:
            self._roles[target] = await driver.resolve_fault_target(target)
        return self._roles[target]

    # --- produce ------------------------------------------------------------------------

    def _messages(self, step: Produce) -> list[OutgoingMessage]:
        if step.repeat is not None:
            return list(self._labelled[step.repeat])
        messages = []
        for i in range(step.count):
            self._message_counter += 1
            values = {"i": i, "n": step.count}
            key = step.key.format(**values) if step.key else None
            if step.keys:
                key = f"key-{i % step.keys}"
            body = step.body.format(**values)
            if i in step.poison:
                body = f"{POISON_MARK} {body}"
            elif i in step.flaky:
                body = f"{FLAKY_MARK}{step.flaky[i]} {body}"
            messages.append(
                OutgoingMessage(
                    index=i,
                    message_id=f"m{self._message_counter:05d}",
                    body=body,
                    key=key,
                    routing_key=step.routing_key.format(**values) if step.routing_key else None,
                    priority=step.priorities[i % len(step.priorities)] if step.priorities else None,
                    dedup_id=step.dedup_id.format(**values) if step.dedup_id else None,
                )
            )
        if step.label:
            self._labelled[step.label] = messages
        return messages

    async def _produce(self, step: Produce, driver: Driver, number: int) -> None:
        messages = self._messages(step)
        for message in messages:
            self.bus.emit(
                ProduceRequested(
                    at=self.bus.now(),
                    broker="runner",
                    message_id=message.message_id,
                    step=number,
                    key=message.key,
                    priority=message.priority,
                )
            )
        if step.background:
            name = step.label or f"producer-{number}"
            self._producers[name] = asyncio.create_task(driver.produce(step, messages))
            return
        await driver.produce(step, messages)

    # --- consumers ----------------------------------------------------------------------

    async def _consume(self, step: Consume, broker: Broker, driver: Driver, number: int) -> None:
        if step.name in self._consumers and not self._consumers[step.name].task.done():
            raise ScenarioError(f"consumer {step.name!r} is already running")
        self.bus.emit(
            ConsumerStarted(
                at=self.bus.now(),
                broker="runner",
                consumer=step.name,
                group=step.source or step.group or driver.default_group,
                step=number,
            )
        )
        dedup = await self._dedup_store(broker) if step.idempotent else None
        background = _BackgroundConsumer(step.name)
        if self._consumes_in_process(step):
            coroutine = self._run_in_process(step, driver, background, dedup)
        else:
            coroutine = self._run_worker(step, broker, background)
        background.task = asyncio.create_task(coroutine)
        self._consumers[step.name] = background
        if not step.background:
            await self._join(step.name)

    def _consumes_in_process(self, step: Consume) -> bool:
        if self.sim:
            return True
        if self.in_process is not None:
            return self.in_process
        return step.crash is None and step.name not in self._crash_targets

    async def _run_in_process(
        self,
        step: Consume,
        driver: Driver,
        background: _BackgroundConsumer,
        dedup: DedupStore | None,
    ) -> ConsumeOutcome | None:
        session = await driver.open_consumer(step)
        background.session = session
        try:
            outcome = await consume_loop(
                session, step, self.bus, self.broker_name, stop=background.stop_event, dedup=dedup
            )
        except CrashNow as crash:
            await session.crash()
            self._crashed(step.name, crash.point, unless_reported=True)
            return None
        except asyncio.CancelledError:
            await session.crash()
            self._crashed(step.name, "killed")
            raise
        await session.close()
        return outcome

    async def _run_worker(
        self, step: Consume, broker: Broker, background: _BackgroundConsumer
    ) -> ConsumeOutcome | None:
        from mqlab.scenarios.worker import spawn_worker

        process = await spawn_worker(self.scenario, self.system, broker.namespace, step)
        background.process = process
        try:
            outcome = await _pump_worker(process, self.bus)
        except BaseException:
            # Cancelled (Ctrl-C, a failed run): the worker is in a session of its own, so
            # nothing else stops it, and the run's clean-up sees this task done.
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode is not None and process.returncode < 0:
            self._crashed(step.name, "SIGKILL" if process.returncode == -9 else "signal")
            return None
        if process.returncode not in (0, None):
            raise ScenarioError(f"consumer {step.name!r} failed: {outcome}")
        return None

    def _crashed(self, name: str, point: str, *, unless_reported: bool = False) -> None:
        last = self.recorder.observations[-1] if self.recorder.observations else None
        if unless_reported and isinstance(last, ConsumerCrashed) and last.consumer == name:
            return  # the simulated consumer already reported its own crash
        self.bus.emit(
            ConsumerCrashed(at=self.bus.now(), broker=self.broker_name, consumer=name, point=point)
        )

    def _background(self, name: str) -> _BackgroundConsumer:
        if name not in self._consumers:
            known = ", ".join(self._consumers) or "none"
            raise ScenarioError(f"no consumer named {name!r} (running: {known})")
        return self._consumers[name]

    async def _stop(self, name: str) -> None:
        consumer = self._background(name)
        consumer.stop_event.set()
        if consumer.process is not None and consumer.process.returncode is None:
            consumer.process.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(consumer.task), STOP_GRACE_SECONDS)
        except TimeoutError:
            await self._crash(name)

    async def _crash(self, name: str) -> None:
        consumer = self._background(name)
        if consumer.process is not None:
            if consumer.process.returncode is None:
                consumer.process.kill()
            await asyncio.gather(consumer.task, return_exceptions=True)
            return
        if not consumer.task.done():
            consumer.task.cancel()
            await asyncio.gather(consumer.task, return_exceptions=True)

    async def _join(self, name: str) -> None:
        if name in self._producers:
            await self._producers.pop(name)
            return
        consumer = self._background(name)
        await consumer.task

    async def _finish_background(self, broker: Broker) -> None:
        """Let background producers finish and stop background consumers cleanly."""
        for name in list(self._producers):
            await self._join(name)
        for name, consumer in list(self._consumers.items()):
            if not consumer.task.done():
                await self._stop(name)

    async def _kill_background(self) -> None:
        for task in self._producers.values():
            task.cancel()
        await asyncio.gather(*self._producers.values(), return_exceptions=True)
        for name, consumer in self._consumers.items():
            worker_alive = consumer.process is not None and consumer.process.returncode is None
            if not consumer.task.done() or worker_alive:
                await self._crash(name)

    # --- waiting --------------------------------------------------------------------------

    async def _wait_for(self, wait: WaitFor, driver: Driver) -> CheckResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait.timeout
        while True:
            try:
                outcome = await driver.check(wait.until)
            except BrokerError as error:
                outcome = CheckResult(False, _one_line(error), "broker answers")
            if outcome.holds or loop.time() >= deadline:
                if not outcome.holds:
                    return CheckResult(
                        False,
                        outcome.observed,
                        f"{outcome.description} (waited {wait.timeout:g}s)",
                    )
                return outcome
            await asyncio.sleep(0.5)


async def _pump_worker(process: asyncio.subprocess.Process, bus: ObservationBus) -> str:
    """Re-emit a worker's observations (JSON lines on stdout); return its error line."""
    import json

    assert process.stdout is not None
    assert process.stderr is not None
    async for raw in process.stdout:
        line = raw.decode().strip()
        if not line:
            continue
        try:
            bus.emit(Observation.from_dict(json.loads(line)))
        except (ValueError, TypeError):
            continue
    error = (await process.stderr.read()).decode().strip().splitlines()
    await process.wait()
    return error[-1] if error else ""


def _loop_clock() -> float:
    return asyncio.get_running_loop().time()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
