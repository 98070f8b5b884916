"""How the runner executes a scenario's ``pattern:`` steps.

A pattern step runs a program of :mod:`mqlab.patterns.programs` on the run's bus. Where the
program runs depends on the crash it is asked to suffer:

- on the simulator, and on a real run without a crash, it runs in the runner's process; a
  simulated crash raises :class:`~mqlab.patterns.harness.Crashed` at the crash point, which
  drops everything the program held in memory (the run's in-memory stores, which stand for
  the lab's PostgreSQL and Redis, survive: a database survives a crash of its client);
- on a real run with a crash, it runs in a worker process (``python -m
  mqlab.scenarios.worker`` in its pattern mode) that SIGKILLs itself at the crash point, so
  the crash is as real as the consumer crashes: nothing in that process finishes, and only what
  the lab's services committed is left for the next step (a ``recover: true`` orchestrator).

Whatever the programs created on the lab (a PostgreSQL schema, Redis keys) carries the run's
namespace and is deleted when the run ends (:meth:`PatternSteps.cleanup`).
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
from typing import Any

from mqlab.course.scenario import CrashAt, PatternRun, Scenario
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import ConsumerCrashed, FaultInjected, Observation
from mqlab.patterns.harness import Crashed, CrashHook, Reporter, kill_self, no_crash
from mqlab.patterns.programs import ProgramContext, close_shared, find_program
from mqlab.scenarios.worker import start_worker


def crash_hook(
    crash: CrashAt | None, bus: ObservationBus, program: str, *, kill: bool
) -> CrashHook:
    """The hook a program gets: it crashes at ``crash`` (raising :class:`Crashed`, or with
    ``kill`` a SIGKILL of this process), after reporting the fault so the timeline shows it."""
    if crash is None:
        return no_crash
    passes = 0

    async def hook(point: str, detail: str) -> None:
        nonlocal passes
        if point != crash.point or (crash.detail is not None and detail != crash.detail):
            return
        passes += 1
        if passes != crash.occurrence:
            return
        bus.emit(
            FaultInjected(
                at=bus.now(),
                broker="runner",
                fault="crash",
                target=program,
                params=(("point", point), ("detail", detail)),
            )
        )
        if kill:
            sys.stdout.flush()
            kill_self()
        raise Crashed(point, detail)

    return hook


class PatternSteps:
    """The pattern steps of one run: their shared state, their namespace, their cleanup.

    Args:
        scenario: the scenario (the worker gets it to rebuild the step).
        bus: the run's bus.
        simulated: the simulator's stand-ins instead of the lab's services.
        seed: the run's seed (each step's random source is seeded from it and its number).
        namespace: the run's namespace.
        broker: the run's adapter, when the scenario has a broker.
        source: what the programs' observations name as their store (``sim:postgres`` ...).
    """

    def __init__(
        self,
        scenario: Scenario,
        bus: ObservationBus,
        *,
        simulated: bool,
        seed: int,
        namespace: str,
        broker: object | None,
        source: str,
    ) -> None:
        self.scenario = scenario
        self.bus = bus
        self.simulated = simulated
        self.seed = seed
        self.namespace = namespace
        self.broker = broker
        self.source = source
        self.endpoints = Endpoints.local()
        self.shared: dict[str, Any] = {}
        self.used_services: set[str] = set()

    def context(self, run: PatternRun, number: int, crash: CrashHook) -> ProgramContext:
        """The context a program of step ``number`` runs with."""
        program = find_program(run.program)
        self.used_services.update(program.services)
        return ProgramContext(
            reporter=Reporter(self.bus, self.source),
            params=program.with_defaults(run.params),
            simulated=self.simulated,
            seed=self.seed,
            namespace=self.namespace,
            endpoints=self.endpoints,
            crash=crash,
            broker=self.broker,
            channel=self.scenario.channel.name,
            shared=self.shared,
            rng=random.Random(f"{self.seed}:{number}"),
        )

    async def run(self, run: PatternRun, number: int) -> None:
        """Run step ``number``'s program to its end or its crash."""
        program = find_program(run.program)
        if not self.simulated and run.crash is not None:
            self.used_services.update(program.services)
            await self._in_worker(number)
            return
        hook = crash_hook(run.crash, self.bus, run.program, kill=False)
        try:
            await program.run(self.context(run, number, hook))
        except Crashed as crash:
            self._crashed(run.program, crash.point)
            # Like a process that died: its connections go, its stores' state in the
            # database stays. The next program opens the stores again.
            await close_shared(self.shared)
            if not self.simulated:
                self.shared.clear()

    def _crashed(self, program: str, point: str) -> None:
        self.bus.emit(
            ConsumerCrashed(at=self.bus.now(), broker="runner", consumer=program, point=point)
        )

    async def _in_worker(self, number: int) -> None:
        """Run step ``number`` in a worker process and re-emit what it reports."""
        order = {
            "mode": "pattern",
            "scenario": self.scenario.model_dump(mode="json"),
            "step": number,
            "seed": self.seed,
            "namespace": self.namespace,
            "source": self.source,
            # The worker opens its own adapter of the run's system on the run's namespace
            # (the outbox's publish, a consumer loop), as the consumer workers do.
            "system": getattr(self.broker, "system", None),
        }
        process = await start_worker(order)
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            async for raw in process.stdout:
                line = raw.decode().strip()
                if line:
                    try:
                        self.bus.emit(Observation.from_dict(json.loads(line)))
                    except (ValueError, TypeError):
                        continue
            error = (await process.stderr.read()).decode().strip().splitlines()
            await process.wait()
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        step = self.scenario.steps[number - 1].pattern
        assert step is not None
        if process.returncode == -9:
            self._crashed(step.program, step.crash.point if step.crash else "killed")
        elif process.returncode != 0:
            from mqlab.scenarios.runner import ScenarioError

            raise ScenarioError(
                f"pattern step {number} ({step.program}) failed: {error[-1] if error else ''}"
            )

    async def cleanup(self) -> None:
        """Close the stores and delete what the programs created on the lab."""
        await close_shared(self.shared)
        if self.simulated:
            return
        if "postgres" in self.used_services:
            from mqlab.patterns.postgres import drop_namespace

            # The lab may be down at the end of a failed run: cleanup is best effort.
            with contextlib.suppress(Exception):
                await drop_namespace(self.endpoints.postgres_dsn, self.namespace)
        if "redis" in self.used_services:
            await _delete_keys(self.endpoints.redis_url, self.namespace)


async def _delete_keys(url: str, prefix: str) -> None:
    """Delete every Redis key of the run's namespace (best effort)."""
    import redis.asyncio as redis_asyncio

    client: Any = redis_asyncio.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    except Exception:  # cleanup of keys that also expire must not fail the run
        pass
    finally:
        await client.aclose()


async def run_pattern_worker(order: dict[str, Any]) -> int:
    """The worker's pattern mode: run one step, SIGKILL at its crash point."""
    scenario = Scenario.model_validate(order["scenario"])
    number = int(order["step"])
    step = scenario.steps[number - 1].pattern
    if step is None:
        print(f"step {number} is not a pattern step", file=sys.stderr)
        return 2
    bus = ObservationBus()

    def forward(observation: Observation) -> None:
        sys.stdout.write(json.dumps(observation.to_dict(), separators=(",", ":")) + "\n")
        sys.stdout.flush()

    bus.subscribe(forward)
    namespace = str(order["namespace"])
    broker: Any = None
    if order.get("system"):
        from mqlab.brokers.registry import get_broker_class

        broker = get_broker_class(str(order["system"]))(bus=bus, namespace=namespace)
    steps = PatternSteps(
        scenario,
        bus,
        simulated=False,
        seed=int(order["seed"]),
        namespace=namespace,
        broker=broker,
        source=str(order["source"]),
    )
    program = find_program(step.program)
    hook = crash_hook(step.crash, bus, step.program, kill=True)
    try:
        if broker is not None:
            await broker.connect()
        await program.run(steps.context(step, number, hook))
    except Exception as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(text, file=sys.stderr)
        return 3
    finally:
        await close_shared(steps.shared)
        if broker is not None:
            # keep=True: the runner owns the namespace and deletes it at the end of the run.
            with contextlib.suppress(Exception):
                await broker.close(keep=True)
    return 0
