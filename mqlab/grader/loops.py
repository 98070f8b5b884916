"""Running a learner's consume loop the way a service manager runs a consumer.

The broker exercises ask for a loop that runs until it is stopped (``consume(consumer,
process)``). A check cannot just ``await`` it: it has to start it, watch what it does, start a
second member next to it, stop it, or have it die at a crash point and start a replacement
from nothing. So a check runs each loop as a :class:`RunningLoop` (a task), waits for
conditions on the recorded history with :func:`wait_until`, and stops a loop by cancelling it,
as ``systemctl stop`` would end the process.

A loop that raises surfaces at once, at the learner's line (the child reports it); a loop that
returns by itself, or swallows the cancellation, is a :class:`LearnerMistake` with a sentence
that says what to change. A crash (:class:`~mqlab.patterns.harness.Crashed`, the simulator's
kill -9) is handed to the check, which makes the consumer vanish without a goodbye
(:meth:`GradedKafkaConsumer.die`) and carries on with the recovery.

:class:`GradedKafkaConsumer` is the learner's own Kafka consumer, handed back to their loop
with one crash point added after each commit; :func:`fresh_module` loads the learner's file
again, so a replacement consumer on ``sim`` starts without the dead one's memory, as a new
process would on the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import ModuleType
from typing import Any

from mqlab.brokers.kafka.api import KafkaAPI, KafkaConsumer, KafkaRecord, TopicPartition
from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.patterns.harness import Crashed, CrashHook, no_crash

POLL_SECONDS = 0.05
"""How often :func:`wait_until` looks at its condition (virtual seconds on ``sim``)."""
STOP_GRACE_SECONDS = 5.0
"""How long a cancelled loop may take to end before it counts as ignoring the stop."""


class RunningLoop:
    """One learner loop running as a task, named for the messages about it.

    Args:
        name: who runs it (``consumer-2``), as the learner reads it in a message.
        function: the learner's function name, for the messages (``consume``).
        call: what calling the learner's function returned: a coroutine, if they wrote it
            with ``async def`` as the task asks.

    Raises:
        LearnerMistake: ``call`` is no coroutine (a plain ``def``).
    """

    def __init__(self, name: str, function: str, call: object) -> None:
        if not asyncio.iscoroutine(call):
            raise LearnerMistake(
                f"{function} must be an async function (async def {function}(...)); "
                f"calling it returned {type(call).__name__}"
            )
        self.name = name
        self.function = function
        coroutine: Coroutine[Any, Any, object] = call
        self.task: asyncio.Task[object] = asyncio.ensure_future(coroutine)
        self._stopping = False

    @property
    def ended(self) -> bool:
        """The loop is over (it returned, raised, crashed or was stopped)."""
        return self.task.done()

    @property
    def crashed(self) -> bool:
        """It ended at a crash point (:class:`Crashed`), not by the learner's doing."""
        done = self.task.done() and not self.task.cancelled()
        return done and isinstance(self.task.exception(), Crashed)

    def check(self) -> None:
        """Re-raise what ended the loop, if it ended by itself.

        Raises:
            Crashed: it reached the crash point the check armed (on ``sim``).
            LearnerMistake: it returned while it should still be consuming.
            Exception: whatever the learner's code raised (reported at their line).
        """
        if not self.task.done() or self._stopping or self.task.cancelled():
            return
        error = self.task.exception()
        if error is not None:
            raise error
        raise LearnerMistake(
            f"{self.function}() returned while there was still work to do; it must keep "
            "polling until the grader stops it (the grader cancels it, as a service manager "
            "stops a process)"
        )

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end.

        Raises:
            LearnerMistake: it did not end within :data:`STOP_GRACE_SECONDS` of the
                cancellation (an ``except BaseException`` or ``except CancelledError`` that
                keeps looping).
            Exception: what the loop raised before it could be stopped.
        """
        if self.task.done():
            with contextlib.suppress(Crashed):
                self.check()
            return
        self._stopping = True
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            raise LearnerMistake(
                f"{self.function}() kept running {STOP_GRACE_SECONDS:g}s after it was "
                "cancelled: let asyncio.CancelledError through (do not catch BaseException)"
            )
        error = None if self.task.cancelled() else self.task.exception()
        # A loop that died at a crash point ends with Crashed: that is how it was meant to end.
        if error is not None and not isinstance(error, Crashed):
            raise error


async def wait_until(
    condition: Callable[[], bool],
    loops: Iterable[RunningLoop],
    *,
    timeout: float,
    idle: float | None = None,
    progress: Callable[[], int] | None = None,
) -> bool:
    """Wait until ``condition()`` holds (True), or ``timeout`` seconds pass, or ``progress()``
    stays the same for ``idle`` seconds (False), whichever comes first.

    Raises:
        Crashed / LearnerMistake / Exception: a loop ended by itself (see
            :meth:`RunningLoop.check`): the check learns it at once, not at the timeout.
    """
    loop = asyncio.get_running_loop()
    watched = list(loops)
    deadline = loop.time() + timeout
    last_progress = progress() if progress is not None else 0
    last_change = loop.time()
    while True:
        for running in watched:
            running.check()
        if condition():
            return True
        now = loop.time()
        if now >= deadline:
            return False
        if progress is not None and idle is not None:
            current = progress()
            if current != last_progress:
                last_progress, last_change = current, now
            elif now - last_change >= idle:
                return False
        await asyncio.sleep(POLL_SECONDS)


def fresh_module(learner: ModuleType) -> ModuleType:
    """The learner's module loaded again from its file: a replacement consumer that starts
    from nothing, as a new process would (module-level state is not carried over)."""
    spec = importlib.util.spec_from_file_location(learner.__name__, learner.__file__ or "")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {learner.__file__} again")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def open_learner_consumer(
    learner: ModuleType, kafka: KafkaAPI, topic: str, group: str
) -> KafkaConsumer:
    """The consumer the learner's ``open_consumer(kafka, topic, group)`` opens.

    Raises:
        LearnerMistake: it returned something that is no consumer.
    """
    opened = await learner_function(learner, "open_consumer")(kafka, topic, group)
    if not isinstance(opened, KafkaConsumer):
        raise LearnerMistake(
            "open_consumer must return the consumer from `await kafka.consumer(...)`, "
            f"not {type(opened).__name__}"
        )
    return opened


async def produce_in_turn(
    kafka: KafkaAPI,
    topic: str,
    records: Sequence[tuple[str, bytes]],
    *,
    partitions: int,
    producer_name: str,
) -> None:
    """Create ``topic`` (``partitions`` partitions, three replicas) and send ``records``
    (message id, value) to its partitions in turn with an idempotent ``acks=all`` producer,
    so record ``n`` is at offset ``n // partitions`` of partition ``n % partitions``: a check
    can then name the record at any stored or committed offset.

    Raises:
        RuntimeError: a record landed anywhere else (the naming would be wrong).
    """
    await kafka.create_topic(topic, partitions=partitions, replication_factor=3)
    producer = await kafka.producer(acks="all", idempotent=True, name=producer_name)
    try:
        for number, (message_id, value) in enumerate(records):
            landed = await producer.send(
                topic, value, partition=number % partitions, message_id=message_id
            )
            if (landed.partition, landed.offset) != (number % partitions, number // partitions):
                raise RuntimeError(f"{message_id} landed at {landed}, not in turn")
    finally:
        await producer.close()


def offsets_text(offsets: dict[TopicPartition, int] | None) -> str:
    """``0@13, 1@7`` (partition@offset), or ``the current positions`` for a bare commit."""
    if offsets is None:
        return "the current positions"
    return ", ".join(f"{tp.partition}@{offset}" for tp, offset in sorted(offsets.items()))


class GradedKafkaConsumer(KafkaConsumer):
    """The learner's consumer with a crash point after each commit, and a way to die.

    Every call goes to the consumer the learner opened (real or simulated). After a
    successful :meth:`commit` it awaits ``crash("after_commit", detail)``, where the detail
    is ``describe(offsets)`` (by default :func:`offsets_text`; a check that knows which
    message sits at which offset names the message). :meth:`die` is the kill -9 of an
    in-process run: from then on every call raises :class:`Crashed` (a dead process reaches
    no broker) except :meth:`close`, which does nothing, so the learner's ``finally: await
    consumer.close()`` cannot say goodbye for it; and the simulated member stops without a
    commit or a LeaveGroup (its partitions move when its session times out).
    """

    def __init__(
        self,
        inner: KafkaConsumer,
        crash: CrashHook = no_crash,
        describe: Callable[[dict[TopicPartition, int] | None], str] = offsets_text,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.group_id = inner.group_id
        self.crash_hook = crash
        self.describe = describe
        self.dead = False

    async def die(self, point: str, loop: RunningLoop | None = None) -> None:
        """Vanish like a killed process (see the class docstring). ``loop`` (the learner's
        loop that uses this consumer) is stopped first, so that nothing it still has in
        flight reaches a member that is half gone."""
        if self.dead:
            return
        self.dead = True
        if loop is not None:
            await loop.stop()
        await self.inner.crash(point)  # the simulated member vanishes

    def _alive(self) -> None:
        if self.dead:
            raise Crashed("dead", self.name)

    async def poll(self, *, max_records: int = 100, timeout: float = 1.0) -> list[KafkaRecord]:
        self._alive()
        records = await self.inner.poll(max_records=max_records, timeout=timeout)
        self._alive()  # died while it waited: the records never reach the loop
        return records

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        self._alive()
        await self.inner.commit(offsets)
        await self.crash_hook("after_commit", self.describe(offsets))

    async def committed(self, tp: TopicPartition) -> int | None:
        self._alive()
        return await self.inner.committed(tp)

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self._alive()
        await self.inner.seek(tp, offset)

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self._alive()
        await self.inner.seek_to_beginning(*tps)

    async def position(self, tp: TopicPartition) -> int:
        self._alive()
        return await self.inner.position(tp)

    def assignment(self) -> frozenset[TopicPartition]:
        self._alive()
        return self.inner.assignment()

    async def behind(self) -> bool:
        return not self.dead and await self.inner.behind()  # never raises, as promised

    async def close(self) -> None:
        if self.dead:
            return
        self.dead = True
        with contextlib.suppress(Exception):
            await self.inner.close()


async def run_to_crash(
    ctx: GradingContext,
    consumer: GradedKafkaConsumer,
    loop: RunningLoop,
    *,
    point: str,
    progress: Callable[[], int],
    timeout: float,
    idle: float,
) -> None:
    """Let ``loop`` run until the crash the check armed at ``point`` happens.

    If it never comes (nothing moves for ``idle`` seconds, or ``timeout`` passes: a loop
    that never commits has no "right after a commit"), the consumer is crashed anyway at
    ``while_idle``, so that a check's stages stay one per process on the lab. On ``sim`` the
    crash ends here with the member vanished (:meth:`GradedKafkaConsumer.die`); on the lab
    the process is gone.
    """
    try:
        await wait_until(lambda: False, [loop], timeout=timeout, idle=idle, progress=progress)
        forced = ctx.crash_hook("while_idle")
        await forced("while_idle", f"{point} was never reached")
    except Crashed as crash:
        await consumer.die(crash.point, loop)
