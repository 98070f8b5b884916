"""The HTTP side of the real SQS adapter: boto3 clients, bounded calls, errors, health.

boto3 is blocking, so every call runs in a worker thread (``asyncio.to_thread``) with bounded
connect/read timeouts and at most two attempts (botocore ``Config``); long polls use a second
client whose read timeout covers the 20 s maximum wait. An endpoint that cannot be reached is
asked again every quarter second for up to the call's patience, so a short network cut delays a
call instead of failing it; a request that reached the server but got no answer is not repeated
(it may have been carried out). HTTP has no connection to lose, so the broker's health is
inferred from the calls themselves (:class:`~mqlab.brokers.base.Reachability`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from mqlab.brokers.base import BrokerError, BrokerUnavailable, Reachability
from mqlab.brokers.sqs.api import (
    MAX_LONG_POLL_SECONDS,
    QueueMissing,
    ReceiptHandleInvalid,
    SqsRequestRefused,
)

if TYPE_CHECKING:
    from mypy_boto3_sns.client import SNSClient
    from mypy_boto3_sqs.client import SQSClient

    from mqlab.brokers.sqs.client import SqsBroker

_T = TypeVar("_T")

_PROBE_INTERVAL = 0.5
_RETRY_INTERVAL = 0.25
_RECEIPT_HANDLE_ERRORS = {"ReceiptHandleIsInvalid", "InvalidReceiptHandle"}
_MISSING_QUEUE_ERRORS = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


class SqsEndpoint:
    """The boto3 clients of one adapter and the one way it calls them (:meth:`call`).

    Args:
        broker: the adapter (its timeouts, region, address, and the bus health goes to).
    """

    def __init__(self, broker: SqsBroker) -> None:
        self._broker = broker
        self._sqs_client: SQSClient | None = None
        self._polling_client: SQSClient | None = None
        self._probe_client: SQSClient | None = None
        self._sns_client: SNSClient | None = None
        self.health = Reachability(broker, self._probe, interval=_PROBE_INTERVAL)

    async def open(self) -> None:
        """Create the clients (in a thread: boto3 reads its data files on the way)."""
        (
            self._sqs_client,
            self._polling_client,
            self._probe_client,
            self._sns_client,
        ) = await asyncio.to_thread(self._make_clients)

    async def close(self) -> None:
        """Stop the health probe and close every client."""
        await self.health.close()
        for client in (self._sqs_client, self._polling_client, self._probe_client):
            if client is not None:
                client.close()
        if self._sns_client is not None:
            self._sns_client.close()
        self._sqs_client = self._polling_client = self._probe_client = None
        self._sns_client = None

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._sqs_client is not None

    @property
    def sqs(self) -> SQSClient:
        """The SQS client for ordinary requests."""
        if self._sqs_client is None:
            raise self._broker.not_connected()
        return self._sqs_client

    @property
    def polling(self) -> SQSClient:
        """The SQS client for long polls (its read timeout covers the longest wait)."""
        if self._polling_client is None:
            raise self._broker.not_connected()
        return self._polling_client

    @property
    def sns(self) -> SNSClient:
        """The SNS client."""
        if self._sns_client is None:
            raise self._broker.not_connected()
        return self._sns_client

    def _make_clients(self) -> tuple[SQSClient, SQSClient, SQSClient, SNSClient]:
        broker = self._broker
        # A session of our own, with dummy credentials, so no ~/.aws file or AWS_* variable
        # of the learner can point these calls at a real account.
        session = boto3.session.Session(
            aws_access_key_id="mqlab",
            aws_secret_access_key="mqlab",
            region_name=broker.region,
        )
        # Two attempts: one retry rides out a hiccup, more would only delay the learner's
        # "broker down" message. Timeouts are short on purpose (the server is local).
        regular = Config(
            connect_timeout=broker.connect_timeout,
            read_timeout=broker.request_timeout,
            retries={"total_max_attempts": 2, "mode": "standard"},
            max_pool_connections=32,
        )
        polling = regular.merge(
            Config(
                read_timeout=broker.request_timeout + MAX_LONG_POLL_SECONDS,
                retries={"total_max_attempts": 1, "mode": "standard"},
            )
        )
        probe = Config(connect_timeout=1.0, read_timeout=2.0, retries={"total_max_attempts": 1})
        url = broker.endpoint_url
        return (
            session.client("sqs", endpoint_url=url, config=regular),
            session.client("sqs", endpoint_url=url, config=polling),
            session.client("sqs", endpoint_url=url, config=probe),
            session.client("sns", endpoint_url=url, config=regular),
        )

    async def call(
        self,
        operation: str,
        target: str,
        request: Callable[[], _T],
        *,
        patience: float | None = None,
    ) -> _T:
        """Run one blocking boto3 call in a thread and translate what can go wrong.

        When the endpoint cannot be reached, the call is tried again every quarter second for
        up to ``patience`` seconds (``request_timeout`` by default), so a short network cut
        delays a call instead of failing it; then it raises BrokerUnavailable. A request that
        reached the server but got no answer is not repeated (it may have been carried out).
        Every outcome also updates the broker's reachability (BrokerDown / BrokerUp).
        """
        broker = self._broker
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (broker.request_timeout if patience is None else patience)
        while True:
            try:
                result = await asyncio.to_thread(request)
            except ClientError as error:
                self.health.reachable()  # the server answered, even if with an error
                raise self._translate(operation, target, error) from None
            except ReadTimeoutError:
                self.health.unreachable(
                    f"{operation} got no answer within {broker.request_timeout:g} s"
                )
                raise broker.no_answer(operation, target, broker.request_timeout) from None
            except (BotoConnectionError, HTTPClientError) as error:
                detail = one_line(error)
                self.health.unreachable(detail)
                if loop.time() + _RETRY_INTERVAL > deadline:
                    raise BrokerUnavailable(broker.system, broker.address, detail) from None
                await asyncio.sleep(_RETRY_INTERVAL)
                continue
            except BotoCoreError as error:
                raise BrokerError(
                    f"sqs {operation} on {target} failed: {one_line(error)}"
                ) from None
            self.health.reachable()
            return result

    @staticmethod
    def _translate(operation: str, target: str, error: ClientError) -> BrokerError:
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        message = str(info.get("Message", "")).strip() or code
        if code in _RECEIPT_HANDLE_ERRORS or (
            code == "InvalidParameterValue" and "receipt handle" in message.lower()
        ):
            return ReceiptHandleInvalid(f"{operation} on {target}: {message}")
        if code in _MISSING_QUEUE_ERRORS:
            return QueueMissing(f"queue {target!r} does not exist ({operation})")
        return SqsRequestRefused(f"{operation} on {target} refused: {code}: {message}")

    async def _probe(self) -> bool:
        """One cheap request that only succeeds when the endpoint answers."""
        client = self._probe_client
        if client is None:
            return False
        try:
            await asyncio.to_thread(client.list_queues, QueueNamePrefix=self._broker.namespace)
        except (BotoCoreError, ClientError):
            return False
        return True


def one_line(error: BaseException) -> str:
    """An exception's text on one line (its class name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__
