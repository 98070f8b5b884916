"""What every adapter shares: lifecycle, capabilities, namespace, inspect() and observations.

The shared surface is deliberately small (see docs/ARCHITECTURE.md): everything else an adapter
offers is in its own system's vocabulary and lives in ``mqlab.brokers.<system>.api``.

Lifecycle: an adapter is an async context manager. ``connect()`` is idempotent and does the work
in ``_connect()``; ``close()`` first deletes what this adapter created in its namespace (unless
``keep=True``) and then releases connections in ``_close()``. Both run on error and Ctrl-C
through ``__aexit__``, which is what keeps a learner's broker free of leftover topics/queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypedDict, TypeVar, cast

from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus
from mqlab.observe.events import (
    Acked,
    BrokerDown,
    BrokerUp,
    Delivered,
    Nacked,
    Observation,
    Produced,
    ProduceFailed,
)

if TYPE_CHECKING:
    from mqlab.brokers.faults import Faults

_T = TypeVar("_T")
_Item = TypeVar("_Item")

NAMESPACE_PREFIX = "mq"


def new_namespace() -> str:
    """A fresh namespace like ``mq-3f2a9c`` (short: SQS queue names max out at 80 chars)."""
    return f"{NAMESPACE_PREFIX}-{secrets.token_hex(3)}"


class BrokerError(Exception):
    """Base of every error an adapter raises on purpose. ``str()`` is one line for the learner."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached within the adapter's connect timeout.

    The message names the address and what fixes it, e.g.
    ``kafka is not reachable at 127.0.0.1:19091 (run: mqlab lab up kafka)``. On the simulator
    (``simulated``) the cause is always a fault the run injected, so the hint says that
    instead: starting the lab would not help there.
    """

    def __init__(
        self, system: str, address: str, detail: str = "", *, simulated: bool = False
    ) -> None:
        self.system = system
        self.address = address
        self.detail = detail
        self.simulated = simulated
        why = f": {detail}" if detail else ""
        if simulated:
            hint = "a fault injected in this simulated run; it lasts until the node is healed"
        else:
            hint = f"run: mqlab lab up {system}"
        super().__init__(f"{system} is not reachable at {address}{why} ({hint})")


class OperationTimedOut(BrokerError):
    """A broker call did not complete within its bounded time."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One column of the course's comparison table, as this adapter actually behaves.

    The contract tests check each flag against what the broker does, so the table the TUI shows
    is measured, not copied.

    Attributes:
        ordering: the scope in which order is guaranteed ("partition", "queue", "none" for
            best-effort, "message group", "stream").
        delivery: the default guarantee ("at-least-once"; "exactly-once-within-dedup-window"
            for SQS FIFO, which is what its "exactly-once" claim really means).
        replay: consumers can re-read acknowledged messages from a past position.
        priority: messages can overtake others by priority.
        max_priority: highest priority value (RabbitMQ: 255) or None.
        routing: how messages find their consumers ("partition key", "exchanges",
            "none", "message group", "subject wildcards").
        dedup_window_seconds: broker-side duplicate detection window, None if there is none.
        dead_letter: the broker can move failing messages aside by itself.
        transactions: atomic multi-message (and offset) writes.
        per_key_ordering: order is kept per key / group while scaling out consumers.
        ops_burden: "high", "medium", "low", "zero" (a judgement, from the course).
        throughput: the course's order-of-magnitude claim; measured numbers come from benchmarks.
    """

    ordering: str
    delivery: str
    replay: bool
    priority: bool
    routing: str
    dedup_window_seconds: float | None
    dead_letter: bool
    transactions: bool
    per_key_ordering: bool
    ops_burden: str
    throughput: str
    max_priority: int | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an acknowledged send landed, as :class:`~mqlab.observe.events.Produced` says it:
    Kafka's partition and offset, a NATS stream sequence, or that the broker dropped the
    message as a duplicate (NATS Nats-Msg-Id, SQS FIFO dedup id, Kafka idempotent retry)."""

    partition: int | None = None
    position: int | None = None
    duplicate: bool = False


NOWHERE_IN_PARTICULAR = Placement()
"""The placement of a send the broker acknowledged without saying where (RabbitMQ, SQS)."""


MAX_WINDOW = 10_000
"""The most sends a windowed publish keeps awaiting their acknowledgement at once."""


def check_window(window: int, system: str) -> None:
    """Refuse a window a windowed publish cannot use.

    Raises:
        BrokerError: a window below 1 or above :data:`MAX_WINDOW`.
    """
    if not 1 <= window <= MAX_WINDOW:
        raise BrokerError(f"{system}: window must be 1..{MAX_WINDOW:,}, not {window}")


async def send_windowed(
    items: Sequence[_Item], window: int, send: Callable[[_Item], Awaitable[_T]]
) -> list[_T]:
    """``send`` every item with at most ``window`` sends awaiting their acknowledgement at
    once, and the results in the items' order.

    A client that awaits each acknowledgement before the next send measures one round trip
    per message; keeping a window of them outstanding lets the broker confirm them in
    batches (RabbitMQ confirms, JetStream PubAcks). ``window`` workers share one sequence of
    items, so no task is created per message. At the first failure no further item is sent;
    the sends already in flight are awaited (each reports its own outcome), then the first
    error is raised. Items after it were never handed to the broker, so they report nothing.

    The first item is sent alone, before the window opens, so the items reach the broker in
    their order: the first send opens what the others need (a publisher channel, a partition's
    metadata), and while it is being opened later sends would wait for it in a queue that a
    worker done with its first item can overtake. Once it is open, each send reaches the
    client's write in the order it was taken (a RabbitMQ channel, a Kafka partition and a
    JetStream stream keep the order they were written in).
    """
    if not items:
        return []
    results: list[_T | None] = [await send(items[0])]
    results += [None] * (len(items) - 1)
    positions = iter(range(1, len(items)))
    failures: list[BaseException] = []

    async def worker() -> None:
        for position in positions:  # shared: every item is taken by exactly one worker
            if failures:
                return
            try:
                results[position] = await send(items[position])
            except Exception as error:
                failures.append(error)
                return

    workers = [asyncio.ensure_future(worker()) for _ in range(min(window, len(items) - 1))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    if failures:
        raise failures[0]
    return cast("list[_T]", results)  # every position was filled


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Base of every system's ``inspect()`` answer (``KafkaSnapshot``, ``RabbitSnapshot``,
    ``SqsSnapshot``, ``NatsSnapshot``): the broker's state inside one namespace, complete
    enough that a UI can draw it without further I/O. Code written against one system's
    interface gets that system's snapshot type back; code that handles any broker gets this
    one and tells them apart with ``isinstance``.
    """

    system: ClassVar[str]
    """The system the snapshot describes."""


class AdapterOptions(TypedDict, total=False):
    """The options every adapter takes (see :class:`Broker`); an adapter's ``__init__``
    adds its own and passes these on with ``**options: Unpack[AdapterOptions]``."""

    bus: ObservationBus | None
    namespace: str | None
    endpoints: Endpoints | None
    connect_timeout: float


class Broker(ABC):
    """Base class of every adapter, real or simulated.

    Args:
        bus: where observations go; a private bus is created when omitted.
        namespace: prefix for every topic/queue/stream/group this adapter creates; a fresh one
            per adapter by default so concurrent runs never collide.
        endpoints: lab addresses (real adapters only; the simulator ignores them).
        connect_timeout: seconds before an unreachable broker raises :class:`BrokerUnavailable`.
    """

    system: ClassVar[str]
    """The system this adapter speaks: "kafka", "rabbitmq", "sqs" or "nats"."""
    backend: ClassVar[str] = "real"
    """"real" for a broker process, "sim" for the simulator."""
    capabilities: ClassVar[Capabilities]

    def __init__(
        self,
        *,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.bus = bus if bus is not None else ObservationBus()
        self.namespace = namespace or new_namespace()
        self.endpoints = endpoints or Endpoints.local()
        self.connect_timeout = connect_timeout
        self.address = ""
        """Where the broker is, as error messages and observations name it (set by adapters)."""
        self._connected = False
        self._nodes_down: set[str] = set()
        self._message_ids = itertools.count(1)
        self._client_numbers: dict[str, int] = {}

    @property
    def name(self) -> str:
        """Registry name: ``kafka`` for a real adapter, ``sim:kafka`` for the simulator's."""
        return self.system if self.backend == "real" else f"{self.backend}:{self.system}"

    def qualify(self, logical_name: str) -> str:
        """The broker-side name for ``logical_name`` inside this adapter's namespace."""
        return f"{self.namespace}-{logical_name}"

    def new_message_id(self) -> str:
        """A fresh mqlab message id for a send without one: ``<namespace>-000001``, ...
        (deterministic on the simulator, whose namespaces are)."""
        return f"{self.namespace}-{next(self._message_ids):06d}"

    def new_client_name(self, kind: str) -> str:
        """``consumer-1``, ``consumer-2``, ``producer-1`` ...: a name for a client (a consumer,
        a producer) created without one, numbered per kind."""
        number = self._client_numbers.get(kind, 0) + 1
        self._client_numbers[kind] = number
        return f"{kind}-{number}"

    def unqualify(self, broker_name: str) -> str:
        """Strip this adapter's namespace prefix again (for display); other names unchanged."""
        prefix = f"{self.namespace}-"
        return broker_name[len(prefix) :] if broker_name.startswith(prefix) else broker_name

    def emit(self, observation: Observation) -> None:
        """Publish an observation on this adapter's bus."""
        self.bus.emit(observation)

    # -- observations every adapter reports the same way ------------------------------------

    async def send_reported(
        self,
        send: Awaitable[_T],
        *,
        destination: str,
        message_id: str,
        key: str | None = None,
        producer: str = "",
        placed: Callable[[_T], Placement] | None = None,
    ) -> _T:
        """Await ``send`` and report its outcome: ``Produced`` once the broker acknowledged it
        (where, from ``placed(result)``), ``ProduceFailed`` when it raised a BrokerError
        (which then propagates). Every adapter's publish goes through here, so the ledger
        reads the same on every broker and on the simulator."""
        try:
            result = await send
        except BrokerError as error:
            self.report_produce_failed(
                destination, message_id, str(error), key=key, producer=producer
            )
            raise
        where = placed(result) if placed is not None else NOWHERE_IN_PARTICULAR
        self.report_produced(
            destination,
            message_id,
            key=key,
            partition=where.partition,
            position=where.position,
            producer=producer,
            duplicate=where.duplicate,
        )
        return result

    def report_produced(
        self,
        destination: str,
        message_id: str,
        *,
        key: str | None = None,
        partition: int | None = None,
        position: int | None = None,
        producer: str = "",
        duplicate: bool = False,
    ) -> None:
        """Emit ``Produced``: the broker acknowledged ``message_id`` on ``destination``."""
        self.emit(
            Produced(
                at=self.bus.now(),
                broker=self.name,
                destination=destination,
                message_id=message_id,
                key=key,
                partition=partition,
                position=position,
                producer=producer,
                duplicate=duplicate,
            )
        )

    def report_produce_failed(
        self,
        destination: str,
        message_id: str,
        error: str,
        *,
        key: str | None = None,
        producer: str = "",
    ) -> None:
        """Emit ``ProduceFailed``: the send of ``message_id`` was not acknowledged."""
        self.emit(
            ProduceFailed(
                at=self.bus.now(),
                broker=self.name,
                destination=destination,
                message_id=message_id,
                error=error,
                producer=producer,
                key=key,
            )
        )

    def report_delivered(
        self,
        destination: str,
        message_id: str,
        consumer: str,
        *,
        key: str | None = None,
        partition: int | None = None,
        position: int | None = None,
        delivery_count: int = 1,
        redelivered: bool = False,
    ) -> None:
        """Emit ``Delivered``: ``consumer`` received ``message_id`` (``redelivered`` is the
        broker's own flag)."""
        self.emit(
            Delivered(
                at=self.bus.now(),
                broker=self.name,
                destination=destination,
                message_id=message_id,
                consumer=consumer,
                key=key,
                partition=partition,
                position=position,
                delivery_count=delivery_count,
                redelivered=redelivered,
            )
        )

    def report_settled(
        self, destination: str, message_id: str, consumer: str, *, requeue: bool | None = None
    ) -> None:
        """Emit ``Acked`` (``requeue`` None) or ``Nacked`` (the broker delivers it again when
        ``requeue``, drops or dead-letters it when not)."""
        now = self.bus.now()
        if requeue is None:
            self.emit(
                Acked(
                    at=now,
                    broker=self.name,
                    destination=destination,
                    message_id=message_id,
                    consumer=consumer,
                )
            )
        else:
            self.emit(
                Nacked(
                    at=now,
                    broker=self.name,
                    destination=destination,
                    message_id=message_id,
                    consumer=consumer,
                    requeue=requeue,
                )
            )

    def report_node_down(self, node: str, detail: str) -> None:
        """Emit ``BrokerDown``: ``node`` stopped answering this adapter (its connection
        dropped, it left the cluster ...; ``detail`` says how)."""
        self._nodes_down.add(node)
        self.emit(BrokerDown(at=self.bus.now(), broker=self.name, node=node, detail=detail))

    def report_node_up(self, node: str, detail: str) -> None:
        """Emit ``BrokerUp``: ``node`` answers this adapter again (``detail`` says how: a
        reconnect, and what it restored)."""
        self._nodes_down.discard(node)
        self.emit(BrokerUp(at=self.bus.now(), broker=self.name, node=node, detail=detail))

    @property
    def nodes_down(self) -> frozenset[str]:
        """The nodes this adapter reported down and not up again: while a single-node
        system's node is in it, the adapter is reconnecting and nothing can be received."""
        return frozenset(self._nodes_down)

    def unavailable(self, detail: str = "") -> BrokerUnavailable:
        """The error for "this broker cannot be reached", with the hint that fits it."""
        return BrokerUnavailable(self.system, self.address, detail, simulated=self.backend == "sim")

    def not_connected(self) -> BrokerError:
        """The error for a call on an adapter that is not connected (or closed already)."""
        return BrokerError(f"the {self.system} adapter is not connected (use: async with broker)")

    def no_answer(self, operation: str, target: str, seconds: float) -> OperationTimedOut:
        """The error for a request that reached the broker but got no answer within
        ``seconds`` (it may still have been carried out: the caller must not assume either)."""
        return OperationTimedOut(
            f"{self.system} did not answer {operation} on {target} within {seconds:g} s "
            f"at {self.address}"
        )

    @property
    def faults(self) -> Faults:
        """What can be done to this broker's nodes (kill, pause, network faults ...): the local
        lab's processes and proxies for a real adapter, the run's world for a simulated one."""
        from mqlab.brokers.faults import LabFaults

        return LabFaults()

    def start_background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` in the background for this adapter (a probe, a reconnect loop).

        Simulated adapters run it as a task of their world, so the world can stop it and an
        unexpected error in it fails the run instead of vanishing.
        """
        return asyncio.get_running_loop().create_task(work, name=f"{self.name} {name}")

    async def connect(self) -> Self:
        """Connect once; later calls return immediately.

        Raises:
            BrokerUnavailable: the broker did not answer within ``connect_timeout``.
        """
        if not self._connected:
            await self._connect()
            self._connected = True
        return self

    async def close(self, *, keep: bool = False) -> None:
        """Delete this namespace's resources (unless ``keep``), then disconnect. Idempotent."""
        if not self._connected:
            return
        try:
            if not keep:
                await self.cleanup()
        finally:
            self._connected = False
            await self._close()
            self._nodes_down.clear()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def _connect(self) -> None:
        """Open connections and check the broker answers.

        Raises:
            BrokerUnavailable: within ``connect_timeout`` if it does not.
        """

    @abstractmethod
    async def _close(self) -> None:
        """Release every connection, producer, consumer and thread this adapter opened."""

    @abstractmethod
    async def cleanup(self) -> None:
        """Delete every topic/queue/exchange/stream/group whose name starts with the namespace.

        Must be safe to call twice and when some resources are already gone.
        """

    @abstractmethod
    async def inspect(self) -> Snapshot:
        """A typed snapshot of the broker's state inside this namespace (each system's
        interface narrows it to its own ``*Snapshot``)."""


class Reachability:
    """The health of a broker reached request by request (HTTP: there is no connection to lose).

    The first request that cannot reach the broker reports it down (``BrokerDown``); while it is
    down, ``probe`` asks it every ``interval`` seconds, and the first answer (or any request
    that gets one) reports it up again (``BrokerUp``). Until the adapter has connected once
    nothing is reported: a failed first connect is not "the broker went down".

    Args:
        broker: the adapter whose bus gets the observations.
        probe: one cheap request; True when the broker answered.
        interval: seconds between two probes.
        node: the node the observations name (the system's, by default).
    """

    def __init__(
        self,
        broker: Broker,
        probe: Callable[[], Awaitable[bool]],
        *,
        interval: float,
        node: str | None = None,
    ) -> None:
        self._broker = broker
        self._probe = probe
        self._interval = interval
        self._node = node or broker.system
        self._up: bool | None = None
        self._prober: asyncio.Task[None] | None = None

    def unreachable(self, detail: str) -> None:
        """A request could not reach the broker (``detail`` says how)."""
        if self._up is not True:
            return
        self._up = False
        broker = self._broker
        broker.report_node_down(self._node, detail)
        if self._prober is None or self._prober.done():
            self._prober = broker.start_background(self._probe_until_up(), "reachability probe")

    def reachable(self) -> None:
        """A request got an answer (an error answer counts: the broker is there)."""
        if self._up is not False:
            self._up = True
            return
        self._up = True
        self._broker.report_node_up(self._node, f"answering again at {self._broker.address}")

    async def close(self) -> None:
        """Stop probing and forget the state (a later connect starts afresh)."""
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        self._up = None

    async def _probe_until_up(self) -> None:
        """While the broker is down, ask it every interval so BrokerUp shows without calls."""
        while self._up is False:
            await asyncio.sleep(self._interval)
            if await self._probe():
                self.reachable()
