"""Hidden check of the redis-dedup-ttl exercise.

Messages are delivered to the learner's ``handle(redis, message, process, ttl=...)`` at least
once: some twice in a row, some again within the TTL (a lost ack), one again *after* its key
must have expired, and twice the consumer crashes inside ``process``: once before the work
took effect, once after it and before the learner could record the key. After a crash the
same delivery comes to a consumer that starts from nothing (the module loaded afresh on
``sim``, a new process on the lab, where the previous one was SIGKILLed); Redis keeps what it
was told.

``redis`` speaks redis-py's vocabulary: the real ``redis.asyncio`` client on the lab (behind
a key prefix, the run's namespace), a small in-memory Redis with TTLs on the virtual clock on
``sim``. ``process`` is the check's business work: it reports each time it takes effect
(``EffectApplied``). The message ids say what a message is for: ``pay-`` messages must take
effect exactly once (``no-double-effect`` with that prefix); ``rerun-01``, whose consumer
crashed after the work and before the record, is done again by the redelivery (the price of
a store that cannot commit with the work); ``late-01`` comes back after its TTL and must be
done again too (the price of a TTL). ``checks-hold`` reads the keys' TTLs back.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from mqlab.brokers.base import BrokerUnavailable
from mqlab.grader.context import GradingContext, LearnerMistake, learner_function
from mqlab.grader.loops import fresh_module
from mqlab.observe.events import Acked, Delivered, EffectApplied, Nacked, Produced
from mqlab.patterns.harness import Crashed, CrashHook

QUEUE = "orders"
CONSUMER = "order-consumer"
TTL = 3
"""Seconds a dedup key lives (short, so that a late redelivery costs seconds, not a day)."""
LATE_BY = 1.5
"""How long after the TTL ran out the late redelivery comes."""
GAP = 0.1
"""Seconds between two deliveries."""
WORK = 0.05
"""How long ``process`` takes."""
NACK_DELAY = 0.5
"""A delivery answered ``in_progress`` comes back this much later."""
MAX_NACKS = 20
MESSAGES = 10
DURING_WORK = "during_work"
AFTER_WORK = "after_work"


@dataclass(frozen=True, slots=True)
class Message:
    """One message; ``message_id`` is its dedup key's name (``dedup:<message_id>``)."""

    message_id: str
    body: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """``why``: first, duplicate, redelivery, late; ``gap``: seconds to wait before it."""

    message: Message
    why: str
    gap: float = GAP
    crash: str = ""
    """A crash point armed during this delivery's first attempt ('' for none)."""


def _plan(rng: random.Random) -> list[Delivery]:
    """The deliveries in order. A redelivery "within the TTL" never has a consumer crash
    between it and its first delivery: on the lab a crash is a SIGKILL and a new process,
    whose start on a loaded machine can outlast the 3 s TTL, and the key would have expired
    (the redelivery rightly done again, and ``no-double-effect`` failing a right answer)."""
    messages = [Message(f"pay-{n:02d}", f"order {n}") for n in range(1, MESSAGES + 1)]
    crashed, *duplicated = rng.sample(messages, 4)
    redelivered = rng.sample([m for m in messages if m not in duplicated], 3)
    deliveries: list[Delivery] = []
    for message in messages:
        deliveries.append(
            Delivery(message, "first", crash=DURING_WORK if message == crashed else "")
        )
        if message in duplicated:
            deliveries.append(Delivery(message, "duplicate", gap=0.0))
    rerun = Message("rerun-01", "order 11")
    deliveries.insert(rng.randint(1, len(deliveries)), Delivery(rerun, "first", crash=AFTER_WORK))
    for message in redelivered:
        first = next(i for i, d in enumerate(deliveries) if d.message == message)
        crashes = [i for i, d in enumerate(deliveries) if d.crash and i > first]
        # Inserted at `position`, the redelivery follows deliveries first+1 .. position-1.
        latest = min([first + 8, len(deliveries), *crashes])
        earliest = min(first + 2, latest)
        deliveries.insert(rng.randint(earliest, latest), Delivery(message, "redelivery"))
    late = Message("late-01", "order 12")
    deliveries.append(Delivery(late, "first"))
    deliveries.append(Delivery(late, "late", gap=TTL + LATE_BY))
    return deliveries


# --- the Redis the learner gets -------------------------------------------------------------


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value).encode()
    raise LearnerMistake(f"redis values are bytes, str or numbers, not {type(value).__name__}")


class MemoryRedis:
    """The part of redis-py's asyncio client the task names, in memory, expiring keys on the
    running loop's clock (virtual on ``sim``), with Redis's semantics: ``SET`` without
    ``EX``/``PX`` removes a key's TTL, ``PTTL`` is -2 for a missing key and -1 for a key
    without expiry."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _live(self, name: str) -> tuple[bytes, float | None] | None:
        entry = self._values.get(name)
        if entry is not None and entry[1] is not None and entry[1] <= self._now():
            del self._values[name]
            return None
        return entry

    async def get(self, name: str) -> bytes | None:
        entry = self._live(name)
        return entry[0] if entry else None

    async def set(
        self,
        name: str,
        value: Any,
        ex: float | None = None,
        px: float | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
    ) -> bool | None:
        entry = self._live(name)
        if (nx and entry is not None) or (xx and entry is None):
            return None
        if ex is not None and px is not None:
            raise LearnerMistake("redis SET takes ex or px, not both")
        for unit, amount in (("ex", ex), ("px", px)):
            # redis-py refuses anything but an int (or a timedelta) here, so this does too.
            if amount is not None and (
                not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0
            ):
                raise LearnerMistake(
                    f"redis SET {unit} must be a positive int (redis-py refuses {amount!r})"
                )
        expires: float | None = None
        if ex is not None:
            expires = self._now() + float(ex)
        elif px is not None:
            expires = self._now() + float(px) / 1000
        elif keepttl and entry is not None:
            expires = entry[1]
        self._values[name] = (_encode(value), expires)
        return True

    async def exists(self, *names: str) -> int:
        return sum(1 for name in names if self._live(name) is not None)

    async def delete(self, *names: str) -> int:
        removed = 0
        for name in names:
            if self._live(name) is not None:
                del self._values[name]
                removed += 1
        return removed

    async def expire(self, name: str, time: float) -> bool:
        entry = self._live(name)
        if entry is None:
            return False
        self._values[name] = (entry[0], self._now() + float(time))
        return True

    async def pttl(self, name: str) -> int:
        entry = self._live(name)
        if entry is None:
            return -2
        if entry[1] is None:
            return -1
        return max(0, round((entry[1] - self._now()) * 1000))

    async def ttl(self, name: str) -> int:
        left = await self.pttl(name)
        return left if left < 0 else math.ceil(left / 1000)


class PrefixedRedis:
    """The lab's Redis through redis-py, every key under the run's namespace (so a run's
    keys can be found and deleted, and runs never see each other's)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def _key(self, name: str) -> str:
        if not isinstance(name, str):
            raise LearnerMistake(f"redis key names are strings here, not {type(name).__name__}")
        return f"{self._prefix}:{name}"

    async def get(self, name: str) -> bytes | None:
        value: bytes | None = await self._client.get(self._key(name))
        return value

    async def set(self, name: str, value: Any, **options: Any) -> bool | None:
        unknown = set(options) - {"ex", "px", "nx", "xx", "keepttl"}
        if unknown:
            raise LearnerMistake(
                f"redis SET option {sorted(unknown)[0]!r} is not one the task uses"
            )
        result: bool | None = await self._client.set(self._key(name), _encode(value), **options)
        return result

    async def exists(self, *names: str) -> int:
        return int(await self._client.exists(*(self._key(n) for n in names)))

    async def delete(self, *names: str) -> int:
        return int(await self._client.delete(*(self._key(n) for n in names)))

    async def expire(self, name: str, time: float) -> bool:
        return bool(await self._client.expire(self._key(name), math.ceil(time)))

    async def pttl(self, name: str) -> int:
        return int(await self._client.pttl(self._key(name)))

    async def ttl(self, name: str) -> int:
        return int(await self._client.ttl(self._key(name)))


async def _lab_client(ctx: GradingContext) -> Any:
    """A redis-py client of the lab's Redis, known to answer.

    Raises:
        BrokerUnavailable: Redis does not answer (the learner is told to start it).
    """
    import redis.asyncio as redis_asyncio
    from redis.exceptions import RedisError

    client = redis_asyncio.from_url(ctx.redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        await client.aclose()
        address = ctx.redis_url.removeprefix("redis://").split("/")[0]
        raise BrokerUnavailable("redis", address, str(error)) from None
    return client


# --- the run -------------------------------------------------------------------------------


@dataclass
class Work:
    """The business work the learner's ``handle`` calls: it takes effect once per call that
    gets through, and crashes where this delivery's plan says."""

    ctx: GradingContext
    done: dict[str, int] = field(default_factory=dict)
    """Effects per message in this consumer's life (for the observations' before/after)."""
    message: Message | None = None
    crash: CrashHook | None = None
    crash_point: str = ""
    applied: bool = False

    def start(self, message: Message, crash: str) -> None:
        self.message, self.applied, self.crash_point = message, False, crash
        self.crash = self.ctx.crash_hook(crash, detail=message.message_id) if crash else None

    async def _reach(self, point: str, message: Message) -> None:
        if self.crash is not None and self.crash_point == point:
            crash, self.crash = self.crash, None
            await crash(point, message.message_id)

    async def __call__(self, message: Any) -> None:
        if not isinstance(message, Message):
            raise LearnerMistake(f"process takes the message it is given, not {message!r}")
        await asyncio.sleep(WORK)
        await self._reach(DURING_WORK, message)
        before = self.done.get(message.message_id, 0)
        self.done[message.message_id] = before + 1
        self.applied = True
        self.ctx.emit(
            EffectApplied,
            entity="orders-shipped",
            operation=f"ship {message.body}",
            before=before,
            after=before + 1,
            message_id=message.message_id,
            idempotent=False,
        )
        await self._reach(AFTER_WORK, message)


class Cursor:
    """The broker's memory between consumer lives: the next delivery to make. A key in the
    lab's Redis on a real run (it survives the SIGKILL), in memory on ``sim``."""

    def __init__(self, client: Any, namespace: str) -> None:
        self._client = client
        self._key = f"{namespace}:grader:next-delivery"
        self._next = 0

    async def read(self) -> int:
        if self._client is not None:
            value = await self._client.get(self._key)
            self._next = int(value) if value is not None else 0
        return self._next

    async def advance(self, to: int) -> None:
        self._next = to
        if self._client is not None:
            await self._client.set(self._key, str(to))


async def _check_key(
    ctx: GradingContext, redis: MemoryRedis | PrefixedRedis, message: Message
) -> None:
    """After a delivery that did the work: the key is there and expires within the TTL."""
    key = f"dedup:{message.message_id}"
    left = await redis.pttl(key)
    if left == -2:
        problem = f"no key {key} after handle returned: record dedup:<message_id> after the work"
    elif left == -1:
        problem = f"{key} never expires: Redis keeps it (and every other) for ever"
    elif left > TTL * 1000 + 50:
        problem = f"{key} expires in {left / 1000:g}s, later than the ttl of {TTL:g}s"
    else:
        problem = ""
    ctx.assert_that(
        f"{key} is recorded with a TTL of at most {TTL:g}s",
        holds=not problem,
        observed=problem or f"expires in {left / 1000:.2f}s",
    )


async def drive(learner: ModuleType, ctx: GradingContext) -> None:
    plan = _plan(ctx.rng)
    client = None if ctx.simulated else await _lab_client(ctx)
    redis: MemoryRedis | PrefixedRedis = (
        MemoryRedis() if client is None else PrefixedRedis(client, ctx.namespace)
    )
    cursor = Cursor(client, ctx.namespace)
    index = await cursor.read()
    resumed = ctx.phase > 1  # the previous consumer died during this delivery
    if not resumed:
        ids = dict.fromkeys(d.message.message_id for d in plan)
        for position, message_id in enumerate(ids):
            ctx.emit(Produced, destination=QUEUE, message_id=message_id, position=position)
    handle: Callable[..., Awaitable[Any]] = learner_function(learner, "handle")
    work = Work(ctx)
    processed_at: dict[str, float] = {}
    nacks = 0
    try:
        while index < len(plan):
            delivery = plan[index]
            message = delivery.message
            if not resumed and nacks == 0:
                await asyncio.sleep(delivery.gap)
                fault = {
                    "duplicate": ("duplicate-delivery", "delivered twice"),
                    "redelivery": ("redelivery", "the ack was lost"),
                    "late": ("late-redelivery", f"{TTL + LATE_BY:g}s after it was processed"),
                }.get(delivery.why)
                if fault is not None:
                    ctx.fault(fault[0], message.message_id, reason=fault[1])
            work.start(message, "" if resumed or nacks else delivery.crash)
            ctx.emit(
                Delivered,
                destination=QUEUE,
                message_id=message.message_id,
                consumer=CONSUMER,
                redelivered=resumed or nacks > 0 or delivery.why != "first",
            )
            try:
                outcome = await handle(redis, message, work, ttl=TTL)
            except Crashed:
                # sim: the consumer is gone; a new one gets the same delivery again.
                resumed, nacks = True, 0
                work = Work(ctx, done=work.done)  # what was shipped stays shipped
                handle = learner_function(fresh_module(learner), "handle")
                continue
            if outcome == "in_progress" and nacks < MAX_NACKS:
                nacks += 1
                ctx.emit(
                    Nacked,
                    destination=QUEUE,
                    message_id=message.message_id,
                    consumer=CONSUMER,
                    requeue=True,
                )
                await asyncio.sleep(NACK_DELAY)
                continue
            ctx.emit(Acked, destination=QUEUE, message_id=message.message_id, consumer=CONSUMER)
            if work.applied:
                await _check_key(ctx, redis, message)
            if delivery.why == "late":
                since = ctx.bus.now() - processed_at.get(message.message_id, 0.0)
                ctx.assert_that(
                    f"{message.message_id}, back {since:.1f}s after it was processed "
                    f"(ttl {TTL:g}s), is processed again: what the TTL trades for bounded memory",
                    holds=work.applied,
                    observed="it was"
                    if work.applied
                    else "it was skipped: its key had not expired",
                )
            if work.applied:
                processed_at[message.message_id] = ctx.bus.now()
            resumed, nacks = False, 0
            index += 1
            await cursor.advance(index)
    finally:
        if client is not None:
            await client.aclose()


async def cleanup(ctx: GradingContext) -> None:
    """Delete every key of the run (the learner's and the grader's) from the lab's Redis."""
    client = await _lab_client(ctx)
    try:
        async for name in client.scan_iter(match=f"{ctx.namespace}:*"):
            await client.delete(name)
    finally:
        await client.aclose()
