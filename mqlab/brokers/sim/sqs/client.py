"""The simulated SQS/SNS adapter: the real adapter's interface and behaviour (names, message
ids, errors, reachability) over the world's shared
:class:`~mqlab.brokers.sim.sqs.server.SimSqsServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mqlab.brokers.base import (
    BrokerError,
    BrokerUnavailable,
    OperationTimedOut,
    Placement,
    Reachability,
)
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.link import (
    connection_refused,
    first_of,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.sqs.queues import ACCOUNT, REGION, QueueMissing, Stored
from mqlab.brokers.sim.sqs.server import (
    MAX_DELAY_SECONDS,
    MAX_VISIBILITY_TIMEOUT,
    NODE,
    SimSqsServer,
    configure_sqs,
)
from mqlab.brokers.sim.world import NodeState, NodeUnreachable, SimWorld
from mqlab.brokers.sqs.api import (
    MESSAGE_ID_ATTRIBUTE,
    Receipts,
    SendResult,
    SqsAPI,
    SqsMessage,
    SqsQueueInfo,
    SqsRequestRefused,
    SqsSnapshot,
    check_queue_settings,
)
from mqlab.lab.endpoints import Endpoints
from mqlab.observe.bus import ObservationBus

_T = TypeVar("_T")

MAX_LONG_POLL_SECONDS = 20
MAX_BATCH = 10

_PROBE_INTERVAL = 0.5
_RETRY_INTERVAL = 0.25  # how often a call asks an unreachable endpoint again


class SimSqsBroker(SimBroker, SqsAPI):
    """The simulator's SQS/SNS adapter: the real adapter's interface and behaviour over the
    world's shared :class:`SimSqsServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        bus, namespace, endpoints, connect_timeout: see :class:`mqlab.brokers.base.Broker`.
        request_timeout: seconds a request may take (long polls get their wait on top).
        duplicate_rate, reorder_rate: set the world's SQS behaviour (see
            :func:`configure_sqs`); ``None`` keeps what the world has.
    """

    nodes = (NODE,)

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        bus: ObservationBus | None = None,
        namespace: str | None = None,
        endpoints: Endpoints | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float | None = None,
        duplicate_rate: float | None = None,
        reorder_rate: float | None = None,
    ) -> None:
        super().__init__(
            world=world,
            bus=bus,
            namespace=namespace,
            endpoints=endpoints,
            connect_timeout=connect_timeout,
        )
        self.request_timeout = connect_timeout if request_timeout is None else request_timeout
        self._duplicate_rate = duplicate_rate
        self._reorder_rate = reorder_rate
        self._server: SimSqsServer | None = None
        self._receipts = Receipts()
        self._health = Reachability(self, self._probe, interval=_PROBE_INTERVAL)

    # --- lifecycle ----------------------------------------------------------------------

    async def _connect(self) -> None:
        server = configure_sqs(
            self.world, duplicate_rate=self._duplicate_rate, reorder_rate=self._reorder_rate
        )
        self._server = server
        try:
            await self._call(
                "ListQueues", self.address, lambda: None, patience=self.connect_timeout
            )
        except BrokerError as error:
            self._server = None
            if isinstance(error, BrokerUnavailable):
                raise
            raise self.unavailable(str(error)) from None

    async def _close(self) -> None:
        await self._health.close()
        self._server = None
        await self._release_world()

    async def cleanup(self) -> None:
        """Delete every queue and SNS topic (with its subscriptions) of this namespace."""
        if self._server is None:
            return
        server = self._server
        prefix = f"{self.namespace}-"

        def delete_all() -> None:
            for name in [n for n in server.queues if n.startswith(prefix)]:
                server.delete_queue(name)
            for name in [n for n in server.topics if n.startswith(prefix)]:
                server.delete_topic(name)

        await self._call("DeleteQueue", prefix, delete_all)

    # --- queues -------------------------------------------------------------------------

    async def create_queue(
        self,
        name: str,
        *,
        visibility_timeout: int = 30,
        delay_seconds: int = 0,
        content_based_dedup: bool = False,
        receive_wait_time: int = 0,
        dead_letter_queue: str | None = None,
        max_receive_count: int | None = None,
    ) -> str:
        """CreateQueue (FIFO when the name ends in ``.fifo``); returns the queue URL.

        Raises:
            SqsRequestRefused: a setting SQS does not accept for this queue type.
        """
        queue = self.queue_name(name)
        check_queue_settings(
            queue,
            content_based_dedup=content_based_dedup,
            dead_letter_queue=dead_letter_queue,
            max_receive_count=max_receive_count,
        )
        _check_range(queue, "VisibilityTimeout", visibility_timeout, MAX_VISIBILITY_TIMEOUT)
        _check_range(queue, "DelaySeconds", delay_seconds, MAX_DELAY_SECONDS)
        _check_range(queue, "ReceiveMessageWaitTimeSeconds", receive_wait_time, 20)
        if max_receive_count is not None and not 1 <= max_receive_count <= 1000:
            raise SqsRequestRefused(
                f"CreateQueue on {queue} refused: InvalidParameterValue: maxReceiveCount must "
                "be between 1 and 1000"
            )
        dead_letter = self.queue_name(dead_letter_queue) if dead_letter_queue else None
        server = self.require_server()
        created = await self._call(
            "CreateQueue",
            queue,
            lambda: server.create_queue(
                queue,
                visibility_timeout=visibility_timeout,
                delay_seconds=delay_seconds,
                content_based_dedup=content_based_dedup,
                receive_wait_time=receive_wait_time,
                dead_letter_queue=dead_letter,
                max_receive_count=max_receive_count,
            ),
        )
        return created.url

    async def delete_queue(self, name: str) -> None:
        """DeleteQueue; a queue that is already gone is not an error."""
        queue = self.queue_name(name)
        server = self.require_server()
        with contextlib.suppress(QueueMissing):
            await self._call("DeleteQueue", queue, lambda: server.delete_queue(queue))

    async def purge_queue(self, name: str) -> None:
        """PurgeQueue: drop every message, visible or in flight."""
        queue = self.queue_name(name)
        server = self.require_server()
        await self._call("PurgeQueue", queue, lambda: server.purge(queue))

    async def queue_info(self, name: str) -> SqsQueueInfo:
        """Depth and settings of one queue (and its DLQ's depth), fresh from the server."""
        queue = self.queue_name(name)
        server = self.require_server()
        return await self._call("GetQueueAttributes", queue, lambda: server.queue_info(queue))

    # --- messages -----------------------------------------------------------------------

    async def send(
        self,
        queue: str,
        body: str,
        *,
        group_id: str | None = None,
        dedup_id: str | None = None,
        delay_seconds: int | None = None,
        message_id: str | None = None,
    ) -> SendResult:
        """SendMessage with mqlab's id in the ``mqlab-id`` message attribute.

        Raises:
            SqsRequestRefused: e.g. a FIFO send without ``group_id``, or without ``dedup_id``
                on a queue without content-based deduplication.
        """
        name = self.queue_name(queue)
        mqlab_id = message_id or self.new_message_id()
        server = self.require_server()
        stored, _ = await self.send_reported(
            self._call(
                "SendMessage",
                name,
                lambda: server.send(
                    name,
                    body,
                    {MESSAGE_ID_ATTRIBUTE: mqlab_id},
                    group_id=group_id,
                    dedup_id=dedup_id,
                    delay_seconds=delay_seconds,
                ),
                nbytes=len(body.encode()),
            ),
            destination=name,
            message_id=mqlab_id,
            key=group_id,
            placed=lambda outcome: Placement(duplicate=outcome[1]),
        )
        return SendResult(
            sqs_message_id=stored.sqs_message_id,
            message_id=mqlab_id,
            sequence_number=stored.sequence_number,
        )

    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_time: float = 0,
        visibility_timeout: int | None = None,
        consumer: str = "consumer",
    ) -> list[SqsMessage]:
        """ReceiveMessage; ``wait_time`` > 0 long-polls (SQS counts whole seconds, rounded up)
        and returns as soon as at least one message is there.

        Raises:
            SqsRequestRefused: ``max_messages`` outside 1..10 or ``wait_time`` above 20.
        """
        name = self.queue_name(queue)
        if not 1 <= max_messages <= MAX_BATCH:
            raise SqsRequestRefused(f"max_messages must be 1..{MAX_BATCH} (SQS limit)")
        wait_seconds = math.ceil(wait_time) if wait_time > 0 else 0
        if wait_seconds > MAX_LONG_POLL_SECONDS:
            raise SqsRequestRefused(f"wait_time must be at most {MAX_LONG_POLL_SECONDS} s")
        if visibility_timeout is not None:
            _check_range(name, "VisibilityTimeout", visibility_timeout, MAX_VISIBILITY_TIMEOUT)
        server = self.require_server()

        async def poll() -> list[Stored]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_seconds
            while True:
                state = self.world.state(NODE)
                if state is NodeState.DOWN:
                    raise NodeUnreachable(NODE, "connection reset by peer")
                if state is NodeState.PAUSED:
                    await self.world.next_change(NODE)  # a stopped server answers nothing
                    continue
                target = server.queue(name, "ReceiveMessage")
                hidden_for = (
                    target.visibility_timeout if visibility_timeout is None else visibility_timeout
                )
                found = server.receive(name, max_messages, hidden_for)
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return found
                wake = target.next_visibility(loop.time())
                if wake is not None:
                    remaining = min(remaining, wake - loop.time())
                await first_of(remaining, target.changed(), self.world.next_change(NODE))

        stored = await self._call_async(
            "ReceiveMessage",
            name,
            poll,
            extra=wait_seconds,
            answer_size=lambda found: sum(len(m.body.encode()) for m in found),
        )
        messages: list[SqsMessage] = []
        for item in stored:
            message = SqsMessage(
                queue=name,
                sqs_message_id=item.sqs_message_id,
                receipt_handle=item.receipt_handle or "",
                body=item.body,
                message_id=item.message_id,
                receive_count=item.receive_count,
                group_id=item.group_id,
                dedup_id=item.dedup_id,
                sequence_number=item.sequence_number,
                attributes=dict(item.attributes),
            )
            messages.append(message)
            self._receipts.received(message, consumer)
            self.report_received(message, consumer)
        return messages

    async def delete_message(self, queue: str, receipt_handle: str, *, consumer: str = "") -> None:
        """DeleteMessage: the acknowledgement.

        Raises:
            ReceiptHandleInvalid: the server never issued this handle.
        """
        name = self.queue_name(queue)
        server = self.require_server()
        deleted = await self._call(
            "DeleteMessage", name, lambda: server.delete_message(name, receipt_handle)
        )
        receipt = self._receipts.pop(receipt_handle)
        message_id = receipt.message_id if receipt else None
        if message_id is None:
            message_id = deleted.message_id if deleted is not None else receipt_handle
        self.report_settled(name, message_id, consumer or (receipt.consumer if receipt else ""))

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        """ChangeMessageVisibility; 0 hands the message back at once (emits ``Nacked``).

        Raises:
            ReceiptHandleInvalid: the handle is unknown or its message is gone.
        """
        name = self.queue_name(queue)
        server = self.require_server()
        changed = await self._call(
            "ChangeMessageVisibility",
            name,
            lambda: server.change_visibility(name, receipt_handle, timeout),
        )
        if timeout == 0:
            receipt = self._receipts.get(receipt_handle)
            self.report_settled(
                name,
                receipt.message_id if receipt else changed.message_id,
                receipt.consumer if receipt else "",
                requeue=True,
            )

    # --- SNS ----------------------------------------------------------------------------

    async def create_topic(self, name: str) -> str:
        """CreateTopic (a FIFO topic when the name ends in ``.fifo``); returns its ARN."""
        topic = self.queue_name(name)
        server = self.require_server()
        created = await self._call("CreateTopic", topic, lambda: server.create_topic(topic))
        return created.arn

    async def subscribe_queue(self, topic_arn: str, queue: str, *, raw: bool = True) -> str:
        """Subscribe ``queue`` to the topic; returns the SubscriptionArn."""
        name = self.queue_name(queue)
        server = self.require_server()
        arn = self._topic_arn(topic_arn)
        return await self._call("Subscribe", name, lambda: server.subscribe(arn, name, raw))

    async def publish(
        self,
        topic_arn: str,
        body: str,
        *,
        group_id: str | None = None,
        dedup_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """SNS Publish with mqlab's id as a message attribute (raw delivery keeps it)."""
        mqlab_id = message_id or self.new_message_id()
        topic = self.topic_name(topic_arn)
        server = self.require_server()

        async def published() -> None:
            arn = self._topic_arn(topic_arn)
            await self._call(
                "Publish",
                topic,
                lambda: server.publish(
                    arn,
                    body,
                    {MESSAGE_ID_ATTRIBUTE: mqlab_id},
                    group_id=group_id,
                    dedup_id=dedup_id,
                ),
            )

        await self.send_reported(published(), destination=topic, message_id=mqlab_id, key=group_id)
        return mqlab_id

    # --- inspection ---------------------------------------------------------------------

    def peek(self) -> SqsSnapshot | None:
        """This namespace's state straight from the server model (see :meth:`SimBroker.peek`)."""
        if self._server is None:
            return None
        return self._server.snapshot(f"{self.namespace}-")

    async def inspect(self) -> SqsSnapshot:
        """Every queue (depths, FIFO settings, redrive, DLQ depth) and topic of the namespace."""
        server = self.require_server()
        prefix = f"{self.namespace}-"
        return await self._call("ListQueues", prefix, lambda: server.snapshot(prefix))

    # --- plumbing -----------------------------------------------------------------------

    def require_server(self) -> SimSqsServer:
        if self._server is None:
            raise BrokerError("the sqs adapter is not connected (use: async with broker)")
        return self._server

    def _topic_arn(self, topic: str) -> str:
        if topic.startswith("arn:"):
            return topic
        return f"arn:aws:sns:{REGION}:{ACCOUNT}:{self.queue_name(topic)}"

    async def _call(
        self,
        operation: str,
        target: str,
        action: Callable[[], _T],
        *,
        patience: float | None = None,
        nbytes: int = 0,
    ) -> _T:
        async def run() -> _T:
            return action()

        return await self._call_async(operation, target, run, patience=patience, nbytes=nbytes)

    async def _call_async(
        self,
        operation: str,
        target: str,
        action: Callable[[], Awaitable[_T]],
        *,
        extra: float = 0.0,
        patience: float | None = None,
        nbytes: int = 0,
        answer_size: Callable[[_T], int] | None = None,
    ) -> _T:
        """One HTTP request over the simulated network, as the real adapter makes it.

        An endpoint that cannot be reached is asked again every quarter second for up to
        ``patience`` (``request_timeout`` by default), then the call raises
        BrokerUnavailable. A request that reached the server but got no answer within
        ``request_timeout`` (+ the long-poll wait) raises OperationTimedOut and is not
        repeated: it may have been carried out (the server acts on it even after the client
        gave up, e.g. once a paused server is resumed). ``nbytes`` / ``answer_size`` are the
        payload sizes of the two legs (what a bandwidth limit slows down).
        """
        world = self.world
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.request_timeout if patience is None else patience)

        async def request() -> _T:
            await world.transmit(NODE, "upstream", nbytes)
            return await action()

        while True:
            try:
                async with asyncio.timeout(self.request_timeout + extra):
                    if world.clear_path(NODE):
                        result = await action()  # nothing on the way (a long poll may wait)
                    else:
                        result = await outlive_caller(world, request(), f"sqs {operation}")
                    size = answer_size(result) if answer_size is not None else 0
                    await world.transmit(NODE, "downstream", size)
            except TimeoutError:
                self._health.unreachable(
                    f"{operation} got no answer within {self.request_timeout:g} s"
                )
                raise OperationTimedOut(
                    f"sqs did not answer {operation} on {target} within "
                    f"{self.request_timeout:g} s at {self.address}"
                ) from None
            except NodeUnreachable as error:
                self._health.unreachable(error.reason)
                if loop.time() + _RETRY_INTERVAL > deadline:
                    raise self.unavailable(error.reason) from None
                await asyncio.sleep(_RETRY_INTERVAL)
                continue
            self._health.reachable()
            return result

    async def _probe(self) -> bool:
        """One cheap request that only succeeds when the endpoint answers."""
        if connection_refused(self.world, NODE) is not None:
            return False
        try:
            await within(2.0, self.world.transmit(NODE, "upstream"))
            await within(2.0, self.world.transmit(NODE, "downstream"))
        except (TimeoutError, NodeUnreachable):
            return False
        return True


def _check_range(queue: str, attribute: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise SqsRequestRefused(
            f"{queue}: {attribute} must be between 0 and {maximum}, not {value}"
        )
