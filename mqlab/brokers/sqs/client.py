"""The real SQS (+ SNS) adapter: boto3 against the lab's SQS-compatible server (moto).

Layout (the same in every system's package): this module is the adapter, :class:`SqsBroker`;
its HTTP side (boto3 clients, bounded calls, error mapping, health) is
:class:`~mqlab.brokers.sqs.endpoint.SqsEndpoint` in :mod:`~mqlab.brokers.sqs.endpoint`.

Why it looks the way it does:

- boto3 is blocking, so every call runs in a worker thread (``asyncio.to_thread``) with bounded
  connect/read timeouts and at most two attempts (botocore ``Config``). Long polls use a second
  client whose read timeout covers the 20 s maximum wait.
- An endpoint that cannot be reached is asked again every quarter second for up to
  ``request_timeout`` (``connect_timeout`` while connecting), so a short network cut delays a
  call instead of failing it (the RabbitMQ and NATS adapters wait for their reconnect the same
  way); after that the call raises :class:`~mqlab.brokers.base.BrokerUnavailable`. A request
  that reached the server but got no answer is not repeated (it may have been carried out): it
  raises :class:`~mqlab.brokers.base.OperationTimedOut`.
- HTTP has no connection to lose, so broker health is inferred from the calls themselves: the
  first call that cannot reach the endpoint emits ``BrokerDown``; while down, a small probe
  asks the endpoint twice a second and emits ``BrokerUp`` as soon as it answers (any call that
  succeeds does the same).
- Credentials are dummies set in code: the lab's server accepts any, and a learner's
  ``~/.aws`` (or a real AWS account) is never touched.
- Queue and topic names are namespaced: pass a logical name (``orders``) or one that already
  starts with the namespace (``mq-3f2a9c-orders``); either way the broker-side name is
  ``mq-3f2a9c-orders``, and that is what observations and :meth:`SqsBroker.inspect` report.

Where the lab's moto server differs from AWS (and what this adapter does about it):

- A deduplicated FIFO send is answered like an accepted one (AWS and the lab's server answer
  with the first send's MessageId and SequenceNumber, see :mod:`mqlab.lab.native.sqs_server`;
  moto as it ships makes new ones), so the broker's answer cannot tell a duplicate apart
  unless one remembers every id it was given. The adapter remembers the deduplication ids it
  sent per queue for the 5-minute window (the SHA-256 of the body for content-based
  deduplication, as SQS computes it) and flags ``Produced(duplicate=True)`` when it resends one
  inside the window. A duplicate sent by *another* process is not flagged (SQS's answer to it
  looks like any accepted send).
- A stale receipt handle (from an earlier receive of a message that has since been received
  again) is accepted by moto's DeleteMessage, which deletes the message anyway; AWS accepts
  the call but may keep the message (standard) or rejects an expired handle (FIFO). A handle
  the server never issued is rejected by both: that raises :class:`ReceiptHandleInvalid`, as
  does AWS's "receipt handle has expired" answer.
- SQS moves a message to its dead-letter queue silently, during some consumer's
  ReceiveMessage on the source queue. Neither moto nor AWS tells anyone, so ``DeadLettered``
  is emitted when this adapter receives the message from the dead-letter queue (it recognises
  a DLQ through ListDeadLetterSourceQueues and the message by its ``mqlab-id`` attribute).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from mqlab.brokers.base import BrokerError, BrokerUnavailable
from mqlab.brokers.sqs.api import (
    DEDUP_WINDOW_SECONDS,
    MESSAGE_ID_ATTRIBUTE,
    BatchEntry,
    NewQueue,
    Outgoing,
    QueueMissing,
    SendResult,
    SnsTopicInfo,
    SqsAPI,
    SqsMessage,
    SqsOptions,
    SqsQueueInfo,
    SqsRequestRefused,
    SqsSnapshot,
    arn_name,
    check_batch,
    redrive_reason,
)
from mqlab.brokers.sqs.endpoint import SqsEndpoint
from mqlab.observe.events import (
    DeadLettered,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import MessageTypeDef

_T = TypeVar("_T")

REGION = "us-east-1"
_REMEMBERED_MESSAGES = 100_000
"""How many receipt handles / message origins are kept for observations (oldest dropped)."""


@dataclass(slots=True)
class _QueueSettings:
    """What the adapter needs to know about a queue without asking again."""

    url: str
    fifo: bool
    content_based_dedup: bool
    arn: str | None = None  # fetched when first needed (redrive, SNS subscription)


class _Bounded(OrderedDict[str, _T]):
    """A dict that forgets its oldest entries beyond ``limit`` (memory stays flat in long runs)."""

    def __init__(self, limit: int = _REMEMBERED_MESSAGES) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: str, value: _T) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class SqsBroker(SqsAPI):
    """SQS standard and FIFO queues plus SNS fan-out on the lab's moto server (boto3).

    Args:
        region: the AWS region name the server is addressed as (moto accepts any).
        options: see :class:`~mqlab.brokers.sqs.api.SqsAPI` (``request_timeout`` is the read
            timeout).
    """

    def __init__(self, *, region: str = REGION, **options: Unpack[SqsOptions]) -> None:
        super().__init__(**options)
        self.endpoint_url = self.endpoints.sqs_endpoint
        self.address = self.endpoint_url.removeprefix("http://").removeprefix("https://")
        self.region = region
        self._queues: dict[str, _QueueSettings] = {}
        self._topics: dict[str, str] = {}
        self._dlq_sources: dict[str, tuple[str, ...]] = {}
        self._max_receive_counts: dict[str, int] = {}
        self._sent_dedup_ids: dict[str, dict[str, float]] = {}
        self._last_source: _Bounded[str] = _Bounded()
        self._dead_lettered: _Bounded[bool] = _Bounded()
        self._endpoint = SqsEndpoint(self)

    # --- lifecycle ----------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._endpoint.open()
        try:
            await self._endpoint.call(
                "ListQueues",
                self.address,
                lambda: self._endpoint.sqs.list_queues(
                    QueueNamePrefix=self.namespace, MaxResults=1
                ),
                patience=self.connect_timeout,
            )
        except BrokerError as error:
            await self._endpoint.close()
            if isinstance(error, BrokerUnavailable):
                raise
            raise BrokerUnavailable(self.system, self.address, str(error)) from None

    async def _close(self) -> None:
        await self._endpoint.close()

    async def cleanup(self) -> None:
        """Delete every queue and SNS topic (with its subscriptions) of this namespace."""
        if not self._endpoint.is_open:
            return
        for url in await self._list_queue_urls():
            name = url.rsplit("/", 1)[-1]
            await self._delete_queue_url(name, url)
        for name, arn in (await self._list_topics()).items():
            await self._endpoint.call(
                "DeleteTopic", name, partial(self._endpoint.sns.delete_topic, TopicArn=arn)
            )
        self._queues.clear()
        self._topics.clear()

    # --- queues -------------------------------------------------------------------------

    async def _create_queue(self, queue: NewQueue) -> str:
        name = queue.name
        fifo = queue.fifo
        attributes: dict[QueueAttributeNameType, str] = {
            "VisibilityTimeout": str(queue.visibility_timeout),
            "DelaySeconds": str(queue.delay_seconds),
            "ReceiveMessageWaitTimeSeconds": str(queue.receive_wait_time),
        }
        if fifo:
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = (
                "true" if queue.content_based_dedup else "false"
            )
        dlq, max_receive_count = queue.dead_letter_queue, queue.max_receive_count
        if dlq is not None and max_receive_count is not None:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": await self._arn(dlq), "maxReceiveCount": max_receive_count}
            )
        response = await self._endpoint.call(
            "CreateQueue",
            name,
            lambda: self._endpoint.sqs.create_queue(QueueName=name, Attributes=attributes),
        )
        url = response["QueueUrl"]
        # CreateQueue only succeeds when the queue is new or has exactly these attributes.
        self._queues[name] = _QueueSettings(
            url=url, fifo=fifo, content_based_dedup=fifo and queue.content_based_dedup
        )
        if dlq is not None and max_receive_count is not None:
            self._max_receive_counts[name] = max_receive_count
            self._dlq_sources.pop(dlq, None)  # learn the new source on the next receive
        return url

    async def _delete_queue(self, queue: str) -> None:
        try:
            settings = await self._settings(queue)
        except QueueMissing:
            return
        await self._delete_queue_url(queue, settings.url)

    async def _delete_queue_url(self, queue: str, url: str) -> None:
        with contextlib.suppress(QueueMissing):
            await self._endpoint.call(
                "DeleteQueue", queue, lambda: self._endpoint.sqs.delete_queue(QueueUrl=url)
            )
        self._queues.pop(queue, None)
        self._sent_dedup_ids.pop(queue, None)
        self._dlq_sources.pop(queue, None)

    async def _purge_queue(self, queue: str) -> None:
        settings = await self._settings(queue)
        await self._endpoint.call(
            "PurgeQueue", queue, lambda: self._endpoint.sqs.purge_queue(QueueUrl=settings.url)
        )

    async def _queue_info(self, queue: str) -> SqsQueueInfo:
        settings = await self._settings(queue)
        attributes = await self._attributes(queue, settings.url)
        dlq_attributes = None
        dlq_name = _redrive_target(attributes)
        if dlq_name is not None:
            with contextlib.suppress(QueueMissing):
                dlq_settings = await self._settings(dlq_name)
                dlq_attributes = await self._attributes(dlq_name, dlq_settings.url)
        return _queue_info(queue, settings.url, attributes, dlq_attributes)

    # --- messages -----------------------------------------------------------------------

    async def _send(self, queue: str, message: Outgoing) -> tuple[SendResult, bool]:
        settings = await self._settings(queue)
        request: dict[str, Any] = {
            "QueueUrl": settings.url,
            "MessageBody": message.body,
            **_message_fields(message),
        }
        if message.delay_seconds is not None:
            request["DelaySeconds"] = message.delay_seconds
        response = await self._endpoint.call(
            "SendMessage", queue, lambda: self._endpoint.sqs.send_message(**request)
        )
        sent = SendResult(
            sqs_message_id=response["MessageId"],
            message_id=message.message_id,
            sequence_number=response.get("SequenceNumber"),
        )
        return sent, self._deduplicated(queue, settings, message.body, message.dedup_id)

    async def send_batch(self, queue: str, entries: Sequence[BatchEntry]) -> list[SendResult]:
        """SendMessageBatch: one request for up to ten messages (see the interface).

        Raises:
            SqsRequestRefused: no entries or more than ten; or SQS refused some entries (the
                others were sent; the refused ones are reported as ``ProduceFailed``).
        """
        check_batch(entries)
        name = self.queue_name(queue)
        ids = [entry.message_id or self.new_message_id() for entry in entries]

        def failed(error: str, which: Sequence[int]) -> None:
            for index in which:
                self.report_produce_failed(name, ids[index], error, key=entries[index].group_id)

        try:
            settings = await self._settings(name)
            request_entries: list[Any] = []
            for index, entry in enumerate(entries):
                outgoing = Outgoing(entry.body, ids[index], entry.group_id, entry.dedup_id)
                request_entries.append(
                    {"Id": str(index), "MessageBody": entry.body, **_message_fields(outgoing)}
                )
            response = await self._endpoint.call(
                "SendMessageBatch",
                name,
                lambda: self._endpoint.sqs.send_message_batch(
                    QueueUrl=settings.url, Entries=request_entries
                ),
            )
        except BrokerError as error:
            failed(str(error), range(len(entries)))
            raise
        results: dict[int, SendResult] = {}
        for answer in response.get("Successful", []):
            index = int(answer["Id"])
            entry = entries[index]
            self.report_produced(
                name,
                ids[index],
                key=entry.group_id,
                duplicate=self._deduplicated(name, settings, entry.body, entry.dedup_id),
            )
            results[index] = SendResult(
                sqs_message_id=answer["MessageId"],
                message_id=ids[index],
                sequence_number=answer.get("SequenceNumber"),
            )
        refused = response.get("Failed", [])
        if refused:
            first = refused[0]
            refusal = (
                f"sqs refused a batch entry on {name}: {first.get('Code')}: {first.get('Message')}"
            )
            failed(refusal, [int(item["Id"]) for item in refused])
            raise SqsRequestRefused(f"{refusal} ({len(refused)} of {len(entries)} refused)")
        return [results[index] for index in range(len(entries))]

    def _deduplicated(
        self, queue: str, settings: _QueueSettings, body: str, dedup_id: str | None
    ) -> bool:
        """Whether a FIFO queue's deduplication dropped an accepted send (SQS answers a
        deduplicated send like any other)."""
        if not settings.fifo:
            return False
        dedup_key = dedup_id
        if dedup_key is None and settings.content_based_dedup:
            dedup_key = hashlib.sha256(body.encode()).hexdigest()
        return dedup_key is not None and self._seen_dedup_id(queue, dedup_key)

    def _seen_dedup_id(self, queue: str, dedup_key: str) -> bool:
        """Whether this adapter already sent ``dedup_key`` to ``queue`` inside the window.

        The window starts at the first accepted send and is not extended by duplicates,
        which is how SQS counts it (see the module docstring for why this is remembered here).
        """
        now = time.monotonic()
        sent = self._sent_dedup_ids.setdefault(queue, {})
        for key in [k for k, at in sent.items() if now - at >= DEDUP_WINDOW_SECONDS]:
            del sent[key]
        if dedup_key in sent:
            return True
        sent[dedup_key] = now
        return False

    async def _receive(
        self, queue: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None
    ) -> list[SqsMessage]:
        settings = await self._settings(queue)
        request: dict[str, Any] = {
            "QueueUrl": settings.url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = visibility_timeout
        client = self._endpoint.polling if wait_seconds > 0 else self._endpoint.sqs
        response = await self._endpoint.call(
            "ReceiveMessage", queue, lambda: client.receive_message(**request)
        )
        raw_messages = response.get("Messages", [])
        sources = await self._dead_letter_sources(queue) if raw_messages else ()
        messages = [self._to_message(queue, raw) for raw in raw_messages]
        for message in messages:
            if sources:
                self._note_dead_lettered(queue, sources, message)
            self._last_source.remember(message.message_id, queue)
        return messages

    def _to_message(self, queue: str, raw: MessageTypeDef) -> SqsMessage:
        system = raw.get("Attributes", {})
        custom = {
            key: value.get("StringValue", "")
            for key, value in raw.get("MessageAttributes", {}).items()
        }
        sqs_message_id = raw.get("MessageId", "")
        return SqsMessage(
            queue=queue,
            sqs_message_id=sqs_message_id,
            receipt_handle=raw.get("ReceiptHandle", ""),
            body=raw.get("Body", ""),
            message_id=custom.get(MESSAGE_ID_ATTRIBUTE) or sqs_message_id,
            receive_count=int(system.get("ApproximateReceiveCount", "1")),
            group_id=system.get("MessageGroupId"),
            dedup_id=system.get("MessageDeduplicationId"),
            sequence_number=system.get("SequenceNumber"),
            attributes=custom,
        )

    def _note_dead_lettered(self, dlq: str, sources: tuple[str, ...], message: SqsMessage) -> None:
        """Emit DeadLettered the first time a message is seen on a dead-letter queue."""
        if message.message_id in self._dead_lettered:
            return
        self._dead_lettered.remember(message.message_id, True)
        last_seen = self._last_source.get(message.message_id)
        source = last_seen if last_seen in sources else sources[0]
        self.emit(
            DeadLettered(
                at=self.bus.now(),
                broker=self.name,
                source=source,
                target=dlq,
                message_id=message.message_id,
                reason=redrive_reason(self._max_receive_counts.get(source)),
            )
        )

    async def _dead_letter_sources(self, queue: str) -> tuple[str, ...]:
        """Queues whose redrive policy points at ``queue`` (ListDeadLetterSourceQueues, cached)."""
        if queue in self._dlq_sources:
            return self._dlq_sources[queue]
        settings = await self._settings(queue)
        response = await self._endpoint.call(
            "ListDeadLetterSourceQueues",
            queue,
            lambda: self._endpoint.sqs.list_dead_letter_source_queues(QueueUrl=settings.url),
        )
        sources = tuple(url.rsplit("/", 1)[-1] for url in response.get("queueUrls", []))
        for source in sources:
            if source not in self._max_receive_counts:
                source_settings = await self._settings(source)
                attributes = await self._attributes(source, source_settings.url)
                count = _max_receive_count(attributes)
                if count is not None:
                    self._max_receive_counts[source] = count
        self._dlq_sources[queue] = sources
        return sources

    async def _delete_message(self, queue: str, receipt_handle: str) -> str | None:
        """DeleteMessage (see the module docstring for the stale handles moto accepts)."""
        settings = await self._settings(queue)
        await self._endpoint.call(
            "DeleteMessage",
            queue,
            lambda: self._endpoint.sqs.delete_message(
                QueueUrl=settings.url, ReceiptHandle=receipt_handle
            ),
        )
        return None

    async def _change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> str | None:
        settings = await self._settings(queue)
        await self._endpoint.call(
            "ChangeMessageVisibility",
            queue,
            lambda: self._endpoint.sqs.change_message_visibility(
                QueueUrl=settings.url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout
            ),
        )
        return None

    # --- SNS ----------------------------------------------------------------------------

    async def _create_topic(self, topic: str) -> str:
        attributes = {"FifoTopic": "true"} if topic.endswith(".fifo") else {}
        response = await self._endpoint.call(
            "CreateTopic",
            topic,
            lambda: self._endpoint.sns.create_topic(Name=topic, Attributes=attributes),
        )
        arn = response["TopicArn"]
        self._topics[topic] = arn
        return arn

    async def _subscribe_queue(self, topic_arn: str, queue: str, raw: bool) -> str:
        """Subscribe ``queue`` to the topic and allow the topic to send to it.

        The queue policy is what AWS requires before SNS may deliver (moto does not check
        it); setting it keeps the same code working against a real account. Returns the
        SubscriptionArn.
        """
        arn = await self._topic_arn(topic_arn)
        settings = await self._settings(queue)
        queue_arn = await self._arn(queue)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": arn}},
                }
            ],
        }
        await self._endpoint.call(
            "SetQueueAttributes",
            queue,
            lambda: self._endpoint.sqs.set_queue_attributes(
                QueueUrl=settings.url, Attributes={"Policy": json.dumps(policy)}
            ),
        )
        response = await self._endpoint.call(
            "Subscribe",
            arn_name(arn),
            lambda: self._endpoint.sns.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true" if raw else "false"},
                ReturnSubscriptionArn=True,
            ),
        )
        return response.get("SubscriptionArn", "")

    async def _publish(self, topic_arn: str, topic: str, message: Outgoing) -> None:
        arn = await self._topic_arn(topic_arn)
        request = {"TopicArn": arn, "Message": message.body, **_message_fields(message)}
        await self._endpoint.call("Publish", topic, lambda: self._endpoint.sns.publish(**request))

    async def _topic_arn(self, topic: str) -> str:
        if topic.startswith("arn:"):
            return topic
        name = self.queue_name(topic)
        if name not in self._topics:
            self._topics.update(await self._list_topics())
        if name not in self._topics:
            raise SqsRequestRefused(f"SNS topic {name!r} does not exist")
        return self._topics[name]

    # --- inspection ---------------------------------------------------------------------

    async def inspect(self) -> SqsSnapshot:
        """Every queue (depths, FIFO settings, redrive, DLQ depth) and topic of the namespace."""
        urls = await self._list_queue_urls()
        names = [url.rsplit("/", 1)[-1] for url in urls]
        all_attributes = await asyncio.gather(
            *(self._attributes(name, url) for name, url in zip(names, urls, strict=True))
        )
        by_name = dict(zip(names, all_attributes, strict=True))
        queues = []
        for name, url in zip(names, urls, strict=True):
            attributes = by_name[name]
            dlq_name = _redrive_target(attributes)
            dlq_attributes = by_name.get(dlq_name) if dlq_name else None
            if dlq_name is not None and dlq_attributes is None:
                with contextlib.suppress(QueueMissing):
                    dlq_settings = await self._settings(dlq_name)
                    dlq_attributes = await self._attributes(dlq_name, dlq_settings.url)
            queues.append(_queue_info(name, url, attributes, dlq_attributes))
        topics = []
        for topic, arn in sorted((await self._list_topics()).items()):
            response = await self._endpoint.call(
                "ListSubscriptionsByTopic",
                topic,
                partial(self._endpoint.sns.list_subscriptions_by_topic, TopicArn=arn),
            )
            subscribed = tuple(
                sorted(
                    arn_name(sub.get("Endpoint", ""))
                    for sub in response.get("Subscriptions", [])
                    if sub.get("Protocol") == "sqs"
                )
            )
            topics.append(SnsTopicInfo(name=topic, arn=arn, subscribed_queues=subscribed))
        return SqsSnapshot(queues=tuple(queues), topics=tuple(topics))

    # --- plumbing -----------------------------------------------------------------------

    async def _settings(self, queue: str) -> _QueueSettings:
        settings = self._queues.get(queue)
        if settings is not None:
            return settings
        url_response = await self._endpoint.call(
            "GetQueueUrl", queue, lambda: self._endpoint.sqs.get_queue_url(QueueName=queue)
        )
        url = url_response["QueueUrl"]
        attributes = await self._attributes(queue, url)
        settings = _QueueSettings(
            url=url,
            fifo=attributes.get("FifoQueue") == "true",
            content_based_dedup=attributes.get("ContentBasedDeduplication") == "true",
            arn=attributes.get("QueueArn"),
        )
        self._queues[queue] = settings
        return settings

    async def _arn(self, queue: str) -> str:
        settings = await self._settings(queue)
        if settings.arn is None:
            response = await self._endpoint.call(
                "GetQueueAttributes",
                queue,
                lambda: self._endpoint.sqs.get_queue_attributes(
                    QueueUrl=settings.url, AttributeNames=["QueueArn"]
                ),
            )
            settings.arn = response.get("Attributes", {}).get("QueueArn", "")
        return settings.arn

    async def _attributes(self, queue: str, url: str) -> dict[str, str]:
        response = await self._endpoint.call(
            "GetQueueAttributes",
            queue,
            lambda: self._endpoint.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]),
        )
        return {str(key): value for key, value in response.get("Attributes", {}).items()}

    async def _list_queue_urls(self) -> list[str]:
        urls: list[str] = []
        token: str | None = None
        prefix = f"{self.namespace}-"
        while True:
            request: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 1000}
            if token:
                request["NextToken"] = token
            response = await self._endpoint.call(
                "ListQueues", prefix, partial(self._endpoint.sqs.list_queues, **request)
            )
            urls.extend(response.get("QueueUrls", []))
            token = response.get("NextToken")
            if not token:
                break
        return [url for url in urls if url.rsplit("/", 1)[-1].startswith(prefix)]

    async def _list_topics(self) -> dict[str, str]:
        topics: dict[str, str] = {}
        token: str | None = None
        prefix = f"{self.namespace}-"
        while True:
            request: dict[str, Any] = {"NextToken": token} if token else {}
            response = await self._endpoint.call(
                "ListTopics", prefix, partial(self._endpoint.sns.list_topics, **request)
            )
            for topic in response.get("Topics", []):
                arn = topic.get("TopicArn", "")
                if arn_name(arn).startswith(prefix):
                    topics[arn_name(arn)] = arn
            token = response.get("NextToken")
            if not token:
                break
        return topics


def _message_fields(message: Outgoing) -> dict[str, Any]:
    """The request fields a SendMessage, a batch entry and an SNS Publish share: mqlab's id
    as a message attribute, the message group, the deduplication id."""
    fields: dict[str, Any] = {
        "MessageAttributes": {
            key: {"DataType": "String", "StringValue": value}
            for key, value in message.attributes.items()
        }
    }
    if message.group_id is not None:
        fields["MessageGroupId"] = message.group_id
    if message.dedup_id is not None:
        fields["MessageDeduplicationId"] = message.dedup_id
    return fields


def _queue_info(
    name: str, url: str, attributes: dict[str, str], dlq_attributes: dict[str, str] | None
) -> SqsQueueInfo:
    dlq_depth = None
    if dlq_attributes is not None:
        dlq_depth = sum(_depths(dlq_attributes))
    visible, in_flight, delayed = _depths(attributes)
    return SqsQueueInfo(
        name=name,
        url=url,
        fifo=attributes.get("FifoQueue") == "true",
        visible=visible,
        in_flight=in_flight,
        delayed=delayed,
        visibility_timeout=int(attributes.get("VisibilityTimeout", "30")),
        delay_seconds=int(attributes.get("DelaySeconds", "0")),
        content_based_dedup=attributes.get("ContentBasedDeduplication") == "true",
        dead_letter_queue=_redrive_target(attributes),
        max_receive_count=_max_receive_count(attributes),
        dead_letter_depth=dlq_depth,
    )


def _depths(attributes: dict[str, str]) -> tuple[int, int, int]:
    """(visible, in flight, delayed) from ApproximateNumberOfMessages*."""
    return (
        int(attributes.get("ApproximateNumberOfMessages", "0")),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
        int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
    )


def _redrive(attributes: dict[str, str]) -> dict[str, Any] | None:
    raw = attributes.get("RedrivePolicy")
    if not raw:
        return None
    policy = json.loads(raw)
    return policy if isinstance(policy, dict) else None


def _redrive_target(attributes: dict[str, str]) -> str | None:
    policy = _redrive(attributes)
    return arn_name(str(policy["deadLetterTargetArn"])) if policy else None


def _max_receive_count(attributes: dict[str, str]) -> int | None:
    policy = _redrive(attributes)
    return int(policy["maxReceiveCount"]) if policy else None
