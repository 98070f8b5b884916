"""The simulated SQS/SNS adapter: the real adapter's interface and behaviour (names, message
ids, errors, reachability) over the world's shared
:class:`~mqlab.brokers.sim.sqs.server.SimSqsServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar, Unpack

from mqlab.brokers.base import (
    BrokerError,
    BrokerUnavailable,
    Reachability,
)
from mqlab.brokers.sim.adapter import SimBroker
from mqlab.brokers.sim.link import (
    connection_refused,
    first_of,
    outlive_caller,
    within,
)
from mqlab.brokers.sim.sqs.queues import ACCOUNT, REGION, Stored
from mqlab.brokers.sim.sqs.server import (
    MAX_DELAY_SECONDS,
    MAX_VISIBILITY_TIMEOUT,
    NODE,
    SimSqsServer,
    configure_sqs,
)
from mqlab.brokers.sim.world import NodeState, NodeUnreachable, SimWorld
from mqlab.brokers.sqs.api import (
    MAX_LONG_POLL_SECONDS,
    NewQueue,
    Outgoing,
    QueueMissing,
    SendResult,
    SqsAPI,
    SqsMessage,
    SqsOptions,
    SqsQueueInfo,
    SqsRequestRefused,
    SqsSnapshot,
)

_T = TypeVar("_T")


_PROBE_INTERVAL = 0.5
_RETRY_INTERVAL = 0.25  # how often a call asks an unreachable endpoint again


class SimSqsBroker(SimBroker, SqsAPI):
    """The simulator's SQS/SNS adapter: the real adapter's interface and behaviour over the
    world's shared :class:`SimSqsServer`.

    Args:
        world: the simulated world (one per run; a private one when omitted).
        options: see :class:`~mqlab.brokers.sqs.api.SqsAPI` (in virtual seconds).
        duplicate_rate, reorder_rate: set the world's SQS behaviour (see
            :func:`configure_sqs`); ``None`` keeps what the world has.
    """

    nodes = (NODE,)

    def __init__(
        self,
        *,
        world: SimWorld | None = None,
        duplicate_rate: float | None = None,
        reorder_rate: float | None = None,
        **options: Unpack[SqsOptions],
    ) -> None:
        super().__init__(world=world, **options)
        self._duplicate_rate = duplicate_rate
        self._reorder_rate = reorder_rate
        self._server: SimSqsServer | None = None
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

    # --- queues (names qualified and requests checked in SqsAPI) -----------------------

    async def _create_queue(self, queue: NewQueue) -> str:
        """CreateQueue, with the range checks the SQS server makes."""
        name = queue.name
        _check_range(name, "VisibilityTimeout", queue.visibility_timeout, MAX_VISIBILITY_TIMEOUT)
        _check_range(name, "DelaySeconds", queue.delay_seconds, MAX_DELAY_SECONDS)
        _check_range(
            name, "ReceiveMessageWaitTimeSeconds", queue.receive_wait_time, MAX_LONG_POLL_SECONDS
        )
        if queue.max_receive_count is not None and not 1 <= queue.max_receive_count <= 1000:
            raise SqsRequestRefused(
                f"CreateQueue on {name} refused: InvalidParameterValue: maxReceiveCount must "
                "be between 1 and 1000"
            )
        server = self.require_server()
        created = await self._call("CreateQueue", name, lambda: server.create_queue(queue))
        return created.url

    async def _delete_queue(self, queue: str) -> None:
        server = self.require_server()
        with contextlib.suppress(QueueMissing):
            await self._call("DeleteQueue", queue, lambda: server.delete_queue(queue))

    async def _purge_queue(self, queue: str) -> None:
        server = self.require_server()
        await self._call("PurgeQueue", queue, lambda: server.purge(queue))

    async def _queue_info(self, queue: str) -> SqsQueueInfo:
        server = self.require_server()
        return await self._call("GetQueueAttributes", queue, lambda: server.queue_info(queue))

    # --- messages -----------------------------------------------------------------------

    async def _send(self, queue: str, message: Outgoing) -> tuple[SendResult, bool]:
        server = self.require_server()
        stored, duplicate = await self._call(
            "SendMessage",
            queue,
            lambda: server.send(
                queue,
                message.body,
                message.attributes,
                group_id=message.group_id,
                dedup_id=message.dedup_id,
                delay_seconds=message.delay_seconds,
            ),
            nbytes=len(message.body.encode()),
        )
        sent = SendResult(
            sqs_message_id=stored.sqs_message_id,
            message_id=message.message_id,
            sequence_number=stored.sequence_number,
        )
        return sent, duplicate

    async def _receive(
        self, queue: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None
    ) -> list[SqsMessage]:
        """ReceiveMessage; a long poll returns as soon as at least one message is there."""
        if visibility_timeout is not None:
            _check_range(queue, "VisibilityTimeout", visibility_timeout, MAX_VISIBILITY_TIMEOUT)
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
                target = server.queue(queue, "ReceiveMessage")
                hidden_for = (
                    target.visibility_timeout if visibility_timeout is None else visibility_timeout
                )
                found = server.receive(queue, max_messages, hidden_for)
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return found
                wake = target.next_visibility(loop.time())
                if wake is not None:
                    remaining = min(remaining, wake - loop.time())
                await first_of(remaining, target.changed(), self.world.next_change(NODE))

        stored = await self._call_async(
            "ReceiveMessage",
            queue,
            poll,
            extra=wait_seconds,
            answer_size=lambda found: sum(len(m.body.encode()) for m in found),
        )
        return [
            SqsMessage(
                queue=queue,
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
            for item in stored
        ]

    async def _delete_message(self, queue: str, receipt_handle: str) -> str | None:
        server = self.require_server()
        deleted = await self._call(
            "DeleteMessage", queue, lambda: server.delete_message(queue, receipt_handle)
        )
        return deleted.message_id if deleted is not None else None

    async def _change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> str | None:
        server = self.require_server()
        changed = await self._call(
            "ChangeMessageVisibility",
            queue,
            lambda: server.change_visibility(queue, receipt_handle, timeout),
        )
        return changed.message_id

    # --- SNS ----------------------------------------------------------------------------

    async def _create_topic(self, topic: str) -> str:
        server = self.require_server()
        created = await self._call("CreateTopic", topic, lambda: server.create_topic(topic))
        return created.arn

    async def _subscribe_queue(self, topic_arn: str, queue: str, raw: bool) -> str:
        server = self.require_server()
        arn = self._topic_arn(topic_arn)
        return await self._call("Subscribe", queue, lambda: server.subscribe(arn, queue, raw))

    async def _publish(self, topic_arn: str, topic: str, message: Outgoing) -> None:
        server = self.require_server()
        arn = self._topic_arn(topic_arn)
        await self._call(
            "Publish",
            topic,
            lambda: server.publish(
                arn,
                message.body,
                message.attributes,
                group_id=message.group_id,
                dedup_id=message.dedup_id,
            ),
        )

    # --- inspection ---------------------------------------------------------------------

    def peek(self) -> SqsSnapshot | None:
        """This namespace's state straight from the server model (see :meth:`SimBroker.peek`)."""
        return self.peek_at(self._server)

    async def inspect(self) -> SqsSnapshot:
        """Every queue (depths, FIFO settings, redrive, DLQ depth) and topic of the namespace."""
        server = self.require_server()
        prefix = f"{self.namespace}-"
        return await self._call("ListQueues", prefix, lambda: server.snapshot(prefix))

    # --- plumbing -----------------------------------------------------------------------

    def require_server(self) -> SimSqsServer:
        if self._server is None:
            raise self.not_connected()
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
                raise self.no_answer(operation, target, self.request_timeout) from None
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
