"""The consume loop every scenario consumer runs: explicit, because it is the lesson.

    receive -> [ack if "before"] -> process -> [ack if "after"]

Crash points sit between those lines (after_receive, before_ack, after_ack, after_processing),
and a crash is real: in a worker process the loop calls a hook that sends SIGKILL to its own
process, so nothing gets a chance to clean up, exactly like a consumer killed by the OOM killer.
On the simulator the hook raises :class:`CrashNow` instead and the runner makes the simulated
consumer vanish without leaving its group.

Which message counts as "processed" is reported by this loop as :class:`Processed`
observations; everything else (deliveries, acks, commits) is reported by the adapter.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mqlab.brokers.base import BrokerError
from mqlab.course.scenario import Consume, CrashPoint
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import Note, Processed, ProcessingFailed
from mqlab.patterns.idempotency import DedupStore
from mqlab.scenarios.drivers.base import ConsumerSession, Incoming

CrashHook = Callable[[CrashPoint, Incoming], Awaitable[None]]


class CrashNow(Exception):
    """Raised by the in-process crash hook: the consumer must vanish at this point."""

    def __init__(self, point: CrashPoint) -> None:
        super().__init__(point)
        self.point = point


@dataclass(slots=True)
class ConsumeOutcome:
    """How a consume step ended."""

    processed: int = 0
    handled: int = 0
    failed: int = 0
    stopped_by: str = "idle"  # idle | count | max_time | stop


async def raise_crash(point: CrashPoint, message: Incoming) -> None:
    """In-process crash hook."""
    raise CrashNow(point)


async def consume_loop(
    session: ConsumerSession,
    step: Consume,
    bus: ObservationBus,
    broker_name: str,
    *,
    crash_hook: CrashHook = raise_crash,
    stop: asyncio.Event | None = None,
    dedup: DedupStore | None = None,
) -> ConsumeOutcome:
    """Run ``step`` on ``session`` until count / idle / max_time / stop.

    Args:
        crash_hook: called at the configured crash point; must not return normally
            (SIGKILL in a worker, :class:`CrashNow` in-process).
        stop: set it to make the loop finish the current message and return.
        dedup: the idempotent consumer's store (required when ``step.idempotent``).
    """
    loop = asyncio.get_running_loop()
    outcome = ConsumeOutcome()
    attempts: Counter[str] = Counter()
    deadline = loop.time() + step.max_time
    last_activity = loop.time()
    crash = step.crash

    async def maybe_crash(point: CrashPoint, message: Incoming) -> None:
        if crash is not None and crash.after == outcome.handled and crash.point == point:
            bus.emit(
                Note(
                    at=bus.now(),
                    broker=broker_name,
                    text=f"{session.name} crashes {point.replace('_', ' ')} "
                    f"of message {outcome.handled}",
                )
            )
            await crash_hook(point, message)

    was_held = False

    async def hold_checked() -> bool:
        """Whether the idle window restarts now: the session is held up, or was at the last
        check (the hold ended during the last wait, so the whole window starts after it;
        otherwise a link back up at the window's last instant ends the step before the
        messages it brings back arrive)."""
        nonlocal was_held
        held = await session.held_up()
        restart, was_held = held or was_held, held
        return restart

    while True:
        now = loop.time()
        if stop is not None and stop.is_set():
            outcome.stopped_by = "stop"
            break
        if now >= deadline - 1e-3:
            outcome.stopped_by = "max_time"
            break
        if step.count is not None and outcome.processed >= step.count:
            outcome.stopped_by = "count"
            break
        idle_left = step.idle - (now - last_activity)
        # Below a millisecond counts as idle: float rounding must not turn the last sliver of
        # the idle window into an endless series of zero-length polls.
        if idle_left <= 1e-3 or deadline - now <= 1e-3:
            outcome.stopped_by = "idle"
            break
        try:
            batch = await session.receive(step.batch, wait=min(idle_left, 1.0, deadline - now))
        except BrokerError as error:
            # A real consumer does not die because the broker blinked: it says so and polls
            # again. The idle clock stops while the session is held up (its broker is away);
            # max_time ends the step if the broker never comes back.
            await _report_and_pause(bus, broker_name, session, error)
            if await hold_checked():
                last_activity = loop.time()
            continue
        if not batch:
            if await hold_checked():
                last_activity = loop.time()
            continue
        was_held = False
        last_activity = loop.time()
        for message in batch:
            if step.count is not None and outcome.processed >= step.count:
                break
            outcome.handled += 1
            attempts[message.message_id] += 1
            attempt = max(message.attempt, attempts[message.message_id])
            await maybe_crash("after_receive", message)
            if step.ack == "before":
                await maybe_crash("before_ack", message)
                await session.ack(message)
                await maybe_crash("after_ack", message)
            if step.processing_time:
                await asyncio.sleep(step.processing_time)
            if message.fails_on(attempt):
                outcome.failed += 1
                try:
                    settled = await _handle_failure(session, step, message, attempt)
                except BrokerError as error:
                    await _report_and_pause(bus, broker_name, session, error)
                    settled = False
                bus.emit(
                    ProcessingFailed(
                        at=bus.now(),
                        broker=broker_name,
                        message_id=message.message_id,
                        consumer=session.name,
                        group=session.group,
                        attempt=attempt,
                        error="poison message" if message.poison else "transient error",
                        then=_what_next(step, settled=settled),
                    )
                )
                if not settled and session.rewinds_on_requeue:
                    break  # the position was rewound: the rest of this batch comes again
                continue
            await _process(session, step, message, bus, broker_name, dedup)
            outcome.processed += 1
            await maybe_crash("after_processing", message)
            if step.ack == "after":
                await maybe_crash("before_ack", message)
                try:
                    await session.ack(message)
                except BrokerError as error:
                    # Processed but not acknowledged: the broker will deliver it again.
                    await _report_and_pause(bus, broker_name, session, error)
                    continue
                await maybe_crash("after_ack", message)
            last_activity = loop.time()
            if stop is not None and stop.is_set():
                break
    return outcome


async def _report_and_pause(
    bus: ObservationBus, broker_name: str, session: ConsumerSession, error: BrokerError
) -> None:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    bus.emit(Note(at=bus.now(), broker=broker_name, text=f"{session.name}: {text}; retrying"))
    await asyncio.sleep(0.5)


async def _process(
    session: ConsumerSession,
    step: Consume,
    message: Incoming,
    bus: ObservationBus,
    broker_name: str,
    dedup: DedupStore | None,
) -> None:
    """The business logic: here, recording that it ran (or was skipped as a duplicate)."""
    skipped = False
    if step.idempotent:
        if dedup is None:
            raise RuntimeError("an idempotent consumer needs a dedup store")
        # Check-then-record *after* the work would be done: a crash between the two means the
        # message is processed again (at-least-once), never lost. Recording first (the
        # cheat sheet's SET NX before processing) would lose it instead.
        skipped = await dedup.seen(f"{session.group}:{message.message_id}")
    bus.emit(
        Processed(
            at=bus.now(),
            broker=broker_name,
            message_id=message.message_id,
            consumer=session.name,
            group=session.group,
            key=message.key,
            skipped_duplicate=skipped,
        )
    )
    if step.idempotent and not skipped and dedup is not None:
        await dedup.remember(f"{session.group}:{message.message_id}")


def _what_next(step: Consume, *, settled: bool) -> str:
    """What became of a message whose processing failed (see ProcessingFailed.then)."""
    if step.ack == "before":
        return "lost"
    if not settled:
        return "retry"
    return {"dead_letter": "dead_letter", "drop": "drop", "ignore": "ignore"}.get(
        step.on_error, "retry"
    )


async def _handle_failure(
    session: ConsumerSession, step: Consume, message: Incoming, attempt: int
) -> bool:
    """Apply the step's error policy; True when the message is settled (it will not come
    back to this consumer), False when it will be delivered again."""
    if step.ack == "before":
        # Already acknowledged: the failure cannot be retried. This is the at-most-once trade.
        return True
    match step.on_error:
        case "requeue":
            await session.nack(message, requeue=True)
            return False
        case "drop":
            await session.nack(message, requeue=False)
            return True
        case "dead_letter":
            return await session.dead_letter(message, attempt)
        case "ignore":
            await session.ack(message)
            return True
    return True
