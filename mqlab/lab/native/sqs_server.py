"""The lab's SQS server: moto's server mode, with each queue's messages changed by one request
at a time.

moto's server answers requests on parallel threads, and its queue keeps its messages in a plain
list that ``DeleteMessage`` rebuilds without the lock ``SendMessage`` appends under. Two deletes
that overlap (a consumer deleting a batch with parallel calls does) each write back a copy of the
list as it was when they started: a message sent meanwhile is lost although moto acknowledged
it, and a message the other delete removed comes back. A learner would be told that SQS lost a
message, or delivered a deleted one; a bench run saw 399 of 400 arrive, then nothing.
(tests/lab/test_sqs_server.py shows both on moto's own classes.)

So the lab runs moto with its queue operations serialised on the queue's own lock:
``add_message`` and ``delete_message`` hold it, and so does every pass of ``ReceiveMessage`` and
``ChangeMessageVisibility``. A long poll waits on the lock's condition between passes (woken at
once by a send, and every :data:`LONG_POLL_RECHECK` seconds for messages whose visibility
timeout ran out), never holding the lock while it waits.

moto also forgets a FIFO message's deduplication id once the message is deleted, while SQS keeps
it for the five minutes from its first send, deleted or not: a producer that retries a send
after a consumer already deleted the first copy would see it stored and delivered again on the
lab (and the real adapter, which flags that resend ``duplicate``, would contradict what the
learner then receives). So the lab keeps each FIFO queue's first sends for the window itself
(:func:`_deduplicated`) and drops a resend inside it, as SQS does, answering it with the first
send's MessageId and SequenceNumber as SQS does too (moto answers with new ones, as for a
message it stored). Everything else is moto's.

Run as ``python -m mqlab.lab.native.sqs_server -H HOST -p PORT`` (moto.server's arguments).
"""

from __future__ import annotations

import functools
import sys
import time
from collections import OrderedDict
from typing import Any, NamedTuple

LONG_POLL_RECHECK = 0.05
"""Seconds between two passes of a waiting ReceiveMessage when no send woke it: how late a
message whose visibility timeout ran out may be seen by a long poll already waiting."""


FIRST_SENDS_ATTRIBUTE = "_mqlab_first_sends"
"""The attribute of a moto FIFO queue that holds its deduplication ids' first sends (id ->
:class:`FirstSend`, oldest first) for :func:`_deduplicated`."""


class FirstSend(NamedTuple):
    """The send that started a deduplication id's window: what a resend inside it is
    answered with."""

    sent_ms: int
    """moto's SentTimestamp of the first send (milliseconds since the epoch)."""
    message_id: str
    sequence_number: str | None


def _deduplicated(queue: Any, message: Any) -> bool:
    """Whether ``message`` repeats a deduplication id first sent to the FIFO ``queue`` within
    SQS's window, whether or not that first message is still in the queue (call holding the
    queue's lock). A duplicate takes the first send's MessageId and SequenceNumber, which moto
    then answers with; it does not extend the window. A new id is remembered from this send
    on. Ids are kept oldest first, so forgetting the expired ones stops at the first live one:
    a send costs the same however many ids the window holds.
    """
    from moto.sqs.models import DEDUPLICATION_TIME_IN_SECONDS

    dedup_id = message.deduplication_id
    if not queue.fifo_queue or dedup_id is None:
        return False
    first_sends: OrderedDict[str, FirstSend] | None = getattr(queue, FIRST_SENDS_ATTRIBUTE, None)
    if first_sends is None:
        first_sends = OrderedDict()
        setattr(queue, FIRST_SENDS_ATTRIBUTE, first_sends)
    now_ms: int = message.sent_timestamp
    window_ms = DEDUPLICATION_TIME_IN_SECONDS * 1000
    while first_sends and now_ms - next(iter(first_sends.values())).sent_ms >= window_ms:
        first_sends.popitem(last=False)
    first = first_sends.get(dedup_id)
    if first is not None:
        message.id = first.message_id
        message.sequence_number = first.sequence_number
        return True
    first_sends[dedup_id] = FirstSend(now_ms, message.id, message.sequence_number)
    return False


def serialise_queue_operations() -> None:
    """Make moto's queue operations hold the queue's lock, and its FIFO queues keep their
    deduplication ids for the whole window (idempotent; the process's moto)."""
    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue, "_mqlab_serialised", False):
        return
    add_message = Queue.add_message
    delete_message = Queue.delete_message
    receive_message = SQSBackend.receive_message
    change_message_visibility = SQSBackend.change_message_visibility

    @functools.wraps(add_message)
    def add_serialised(self: Queue, message: Any) -> None:
        with self._messages_lock:
            if not _deduplicated(self, message):
                add_message(self, message)

    @functools.wraps(delete_message)
    def delete_serialised(self: Queue, receipt_handle: str) -> None:
        with self._messages_lock:
            delete_message(self, receipt_handle)

    @functools.wraps(change_message_visibility)
    def change_visibility_serialised(
        self: SQSBackend, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            change_message_visibility(self, queue_name, receipt_handle, visibility_timeout)

    @functools.wraps(receive_message)
    def receive_serialised(
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        queue = self.get_queue(queue_name)
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        with queue._messages_lock:
            while True:
                # One pass without waiting (moto's own loop ends after one when told not to).
                result: list[Any] = receive_message(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
                remaining = deadline - time.monotonic()
                if result or remaining <= 0:
                    return result
                # Releases the lock while it waits; a send's notify_all wakes it at once.
                queue._messages_lock.wait(timeout=min(remaining, LONG_POLL_RECHECK))

    setattr(Queue, "add_message", add_serialised)  # noqa: B010 (mypy: no assigning to a method)
    setattr(Queue, "delete_message", delete_serialised)  # noqa: B010
    setattr(SQSBackend, "change_message_visibility", change_visibility_serialised)  # noqa: B010
    setattr(SQSBackend, "receive_message", receive_serialised)  # noqa: B010
    setattr(Queue, "_mqlab_serialised", True)  # noqa: B010


def main(argv: list[str] | None = None) -> None:
    """moto's server, with :func:`serialise_queue_operations` applied first."""
    serialise_queue_operations()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
