"""A scenario consumer in its own OS process, so that a crash is a real ``kill -9``.

The runner starts ``python -m mqlab.scenarios.worker`` and writes one JSON document to its
stdin: the system, the run's namespace, the scenario and the consume step. The worker connects
its own adapter (same namespace, so it sees the run's topics/queues), runs the shared consume
loop and writes every observation as a JSON line to stdout, where the runner re-emits it.

At the configured crash point the worker flushes stdout and sends SIGKILL to itself: no
``finally`` runs, no consumer leaves its group, no unacked message is settled, which is the
whole point. SIGTERM asks it to finish the current message and leave cleanly. It runs in its
own session, so a Ctrl-C in the learner's terminal reaches only the runner, which then stops
its workers itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

from mqlab.course.scenario import Consume, CrashPoint, Scenario
from mqlab.scenarios.drivers.base import Incoming


async def spawn_worker(
    scenario: Scenario, system: str, namespace: str, step: Consume
) -> asyncio.subprocess.Process:
    """Start a worker process for ``step`` and hand it its instructions."""
    order = {
        "system": system,
        "namespace": namespace,
        "scenario": scenario.model_dump(mode="json"),
        "step": step.model_dump(mode="json"),
    }
    return await start_worker(order)


async def start_worker(order: dict[str, Any]) -> asyncio.subprocess.Process:
    """Start ``python -m mqlab.scenarios.worker`` in a session of its own, write ``order`` to
    its stdin and close it; its stdout (the observations) and stderr are pipes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mqlab.scenarios.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(order).encode() + b"\n")
    await process.stdin.drain()
    process.stdin.close()
    return process


def _emit_line(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _kill_self(point: CrashPoint, message: Incoming) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(3600)  # never reached: SIGKILL cannot be caught


async def _work(order: dict[str, Any]) -> int:
    from mqlab.brokers.base import BrokerError
    from mqlab.brokers.registry import get_broker_class
    from mqlab.observe.bus import ObservationBus
    from mqlab.patterns.idempotency import RedisDedupStore
    from mqlab.scenarios.consumer import consume_loop
    from mqlab.scenarios.drivers import driver_for

    scenario = Scenario.model_validate(order["scenario"])
    step = Consume.model_validate(order["step"])
    bus = ObservationBus()
    bus.subscribe(lambda observation: _emit_line(observation.to_dict()))
    broker = get_broker_class(order["system"])(bus=bus, namespace=order["namespace"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    dedup = None
    try:
        await _connect_patiently(broker, bus, step)
        if step.idempotent:
            dedup = RedisDedupStore(broker.endpoints.redis_url, order["namespace"])
        driver = driver_for(broker, scenario)
        session = await driver.open_consumer(step)
        try:
            await consume_loop(
                session, step, bus, broker.name, crash_hook=_kill_self, stop=stop, dedup=dedup
            )
        finally:
            await session.close()
            await driver.close()
    except BrokerError as error:
        print(str(error).splitlines()[0] if str(error) else type(error).__name__, file=sys.stderr)
        return 3
    finally:
        if dedup is not None:
            await dedup.close()
        # keep=True: the runner owns the namespace and deletes it at the end of the run.
        await broker.close(keep=True)
    return 0


async def _connect_patiently(broker: Any, bus: Any, step: Consume) -> None:
    """Connect, retrying while the broker is unreachable, as a real consumer process does
    when it starts during an outage; gives up after the step's idle window (plus one connect
    timeout), so a broker that is simply not there still fails the step promptly."""
    from mqlab.brokers.base import BrokerUnavailable
    from mqlab.observe.events import Note

    loop = asyncio.get_running_loop()
    give_up = loop.time() + min(step.idle, step.max_time)
    while True:
        try:
            await broker.connect()
            return
        except BrokerUnavailable as error:
            if loop.time() >= give_up:
                raise
            bus.emit(Note(at=bus.now(), broker=broker.name, text=f"{step.name}: {error}; retrying"))
            await asyncio.sleep(0.5)


def main() -> int:
    """Entry point of ``python -m mqlab.scenarios.worker``."""
    order = json.loads(sys.stdin.readline())
    try:
        if order.get("mode") == "pattern":
            from mqlab.scenarios.pattern_steps import run_pattern_worker

            return asyncio.run(run_pattern_worker(order))
        return asyncio.run(_work(order))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
