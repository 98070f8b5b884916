"""The lab's SQS server: moto with its queue operations serialised (mqlab/lab/native/sqs_server.py).

The race is staged on moto's own classes in this process, with no server: one DeleteMessage is
slowed down while it walks the queue's message list, a second delete and a send happen
meanwhile. Unguarded, moto loses the sent message and brings the deleted one back; serialised,
neither happens. Each staging runs in a fresh subprocess: the patch changes moto's classes for
the whole process, and the unguarded staging needs a moto that was never patched.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.sim  # moto in-process: no lab needed


def _printed(script: str, *arguments: str) -> list[str]:
    """The words ``script`` prints, run in a fresh interpreter (a moto never patched before)."""
    done = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.split()


STAGED_RACE = textwrap.dedent(
    """
    import sys, threading, time
    from moto.sqs.models import Message, sqs_backends
    from mqlab.lab.native.sqs_server import serialise_queue_operations

    if sys.argv[1] == "serialised":
        serialise_queue_operations()
    backend = sqs_backends["123456789012"]["us-east-1"]
    queue = backend.create_queue("staged")
    for number in range(20):
        backend.send_message("staged", f"m{number}")
    first, second = backend.receive_message("staged", 2, 0, 30)
    walking = threading.Event()
    had_receipt_handle = Message.had_receipt_handle

    calls = []

    def slowly(self, handle):
        if threading.current_thread().name == "slow-delete":
            calls.append(handle)
            # Its first two calls find the handle (moto checks it exists); from the fourth on
            # it is walking the list it will write back.
            if len(calls) >= 4:
                walking.set()
            time.sleep(0.01)
        return had_receipt_handle(self, handle)

    Message.had_receipt_handle = slowly
    slow = threading.Thread(
        target=backend.delete_message, args=("staged", second.receipt_handle),
        name="slow-delete",
    )
    slow.start()
    walking.wait(5)
    # Meanwhile (serialised: once the slow delete is done) a quick delete writes back the
    # list without its message, and a send appends to that new list.
    backend.delete_message("staged", first.receipt_handle)
    backend.send_message("staged", "sent-meanwhile")
    slow.join(10)
    Message.had_receipt_handle = had_receipt_handle
    bodies = sorted(message.body for message in queue._messages)
    print("sent-meanwhile" in bodies, first.body in bodies, second.body in bodies, len(bodies))
    """
)


def _staged(mode: str) -> tuple[bool, bool, bool, int]:
    kept, first_back, second_back, count = _printed(STAGED_RACE, mode)
    return kept == "True", first_back == "True", second_back == "True", int(count)


def test_moto_alone_loses_a_message_sent_during_two_overlapping_deletes() -> None:
    """What the lab's server guards against, shown on moto as it ships: the send is lost or a
    deleted message comes back (which one depends on how the threads interleave)."""
    kept, first_back, second_back, _ = _staged("unguarded")
    if kept and not first_back and not second_back:
        from importlib import metadata

        pytest.skip(
            f"moto {metadata.version('moto')} no longer shows the race: the guard in "
            "mqlab/lab/native/sqs_server.py may be dropped"
        )
    assert not kept or first_back or second_back


def test_serialised_the_sent_message_stays_and_both_deletes_hold() -> None:
    assert _staged("serialised") == (True, False, False, 19)


LONG_POLL = textwrap.dedent(
    """
    import threading, time
    from moto.sqs.models import sqs_backends
    from mqlab.lab.native.sqs_server import serialise_queue_operations

    serialise_queue_operations()
    serialise_queue_operations()  # twice: applied once
    backend = sqs_backends["123456789012"]["us-east-1"]
    backend.create_queue("polled", VisibilityTimeout="1")
    started = time.monotonic()
    assert backend.receive_message("polled", 1, 1, 1) == []
    empty_wait = time.monotonic() - started

    # A send wakes a waiting long poll: it answers long before its 10 s.
    answer = []
    poller = threading.Thread(
        target=lambda: answer.extend(backend.receive_message("polled", 1, 10, 1))
    )
    started = time.monotonic()
    poller.start()
    time.sleep(0.2)
    backend.send_message("polled", "wake-up")
    poller.join(15)
    woken_after = time.monotonic() - started

    # A message whose visibility timeout runs out is seen by a poll already waiting.
    started = time.monotonic()
    again = backend.receive_message("polled", 1, 10, 1)
    back_after = time.monotonic() - started
    bodies = lambda messages: ",".join(m.body for m in messages) or "-"
    print(f"{empty_wait:.2f} {bodies(answer)} {woken_after:.2f} {bodies(again)} {back_after:.2f}")
    """
)


def test_a_serialised_long_poll_waits_its_time_and_wakes_for_a_send_or_a_timeout() -> None:
    empty_wait, answer, woken_after, again, back_after = _printed(LONG_POLL)
    assert float(empty_wait) >= 1.0  # an empty queue: the whole wait
    assert answer == "wake-up"
    assert float(woken_after) < 10.0  # the send woke it
    assert again == "wake-up"  # the received message came back after its 1 s
    assert 0.5 <= float(back_after) < 10.0


DEDUP_AFTER_DELETE = textwrap.dedent(
    """
    import sys
    from moto.sqs.models import sqs_backends
    from mqlab.lab.native.sqs_server import FIRST_SENDS_ATTRIBUTE, serialise_queue_operations

    if sys.argv[1] == "serialised":
        serialise_queue_operations()
    backend = sqs_backends["123456789012"]["us-east-1"]
    queue = backend.create_queue("orders.fifo", FifoQueue="true")

    def send(body, dedup_id):
        sent = backend.send_message(
            "orders.fifo", body, deduplication_id=dedup_id, group_id="g"
        )
        return sent.id, sent.sequence_number

    def drain():
        received = backend.receive_message("orders.fifo", 10, 0, 30)
        for message in received:
            backend.delete_message("orders.fifo", message.receipt_handle)
        return ",".join(m.body for m in received) or "-"

    original = send("first", "order-1")
    answers = [send("resent-while-queued", "order-1")]  # moto's own check catches this one
    first = drain()
    answers.append(send("resent-after-delete", "order-1"))
    send("other", "order-2")
    after_delete = drain()
    # Five minutes on: the first send's window is over, the id is new again.
    first_sends = getattr(queue, FIRST_SENDS_ATTRIBUTE, {})
    for dedup_id, first_send in first_sends.items():
        first_sends[dedup_id] = first_send._replace(sent_ms=first_send.sent_ms - 300_000)
    send("after-the-window", "order-1")
    later = drain()
    # SQS answers a deduplicated send with the first send's MessageId and SequenceNumber.
    same = "same-ids" if all(answer == original for answer in answers) else "new-ids"
    print(first, after_delete, later, same)
    """
)


def _dedup_staged(mode: str) -> list[str]:
    return _printed(DEDUP_AFTER_DELETE, mode)


def test_moto_alone_forgets_a_deduplication_id_once_its_message_is_deleted() -> None:
    """What the lab's server mends, on moto as it ships: a retried send after the delete is
    stored again (on SQS it is dropped: the window runs from the first send)."""
    first, after_delete, _, _ = _dedup_staged("unguarded")
    assert first == "first"
    if after_delete == "other":
        from importlib import metadata

        pytest.skip(
            f"moto {metadata.version('moto')} keeps deleted messages' deduplication ids: the "
            "first-sends window in mqlab/lab/native/sqs_server.py may be dropped"
        )
    assert after_delete == "resent-after-delete,other"


def test_served_a_deduplication_id_holds_for_the_window_whether_deleted_or_not() -> None:
    assert _dedup_staged("serialised") == ["first", "other", "after-the-window", "same-ids"]


def test_moto_alone_answers_a_deduplicated_send_with_new_ids() -> None:
    """SQS answers with the first send's ids; moto as it ships makes new ones."""
    *_, same = _dedup_staged("unguarded")
    if same == "same-ids":
        from importlib import metadata

        pytest.skip(
            f"moto {metadata.version('moto')} answers a deduplicated send with the first "
            "send's ids: the lab's server need not"
        )
    assert same == "new-ids"
