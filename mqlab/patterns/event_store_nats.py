"""The event store in NATS JetStream: the server itself refuses a stale append.

The optimistic-concurrency check is a publish header
(``Nats-Expected-Last-Subject-Sequence``), so JetStream, not this code, decides the
conflict. Kept apart from :mod:`mqlab.patterns.event_sourcing` (the model) like the other
stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from mqlab.patterns.event_sourcing import (
    DomainEvent,
    EventStore,
    Snapshot,
    StoredEvent,
    VersionConflictError,
    check_batch,
)

_SUBJECT_TOKEN_FORBIDDEN = frozenset(" .*>\t\r\n")

_EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a failed ``Nats-Expected-Last-*`` check."""
_NO_MESSAGE_FOUND = 10037


class NatsEventStore(EventStore):
    """Events in NATS JetStream: stream ``<namespace>-events`` with one subject per aggregate
    (``<namespace>.events.<aggregate id>``) and one message per event.

    The append reads the aggregate's last message (its stream sequence and version) and
    publishes with ``Nats-Expected-Last-Subject-Sequence`` set to that sequence (0 for a new
    aggregate). If any event landed on the subject in between, JetStream refuses the publish
    ("wrong last sequence"), which is the conflict, decided by the server. Several events go
    out as one atomic batch (``Nats-Batch-Id`` ... ``Nats-Batch-Commit``, nats-server 2.12 or
    later, as the lab has): all of them or none.

    Snapshots live in a second stream that keeps the last message per subject.

    Aggregate ids become subject tokens, so they must not contain dots, spaces, ``*`` or
    ``>``.

    Args:
        url: the server (the lab's: ``Endpoints.local().nats_url``).
        namespace: prefix of the streams and subjects.
    """

    def __init__(self, url: str, namespace: str, *, name: str = "nats") -> None:
        self.url = url
        self.namespace = namespace
        self.name = name
        self.stream = f"{namespace}-events"
        self.snapshot_stream = f"{namespace}-snapshots"
        self._nc: Any = None
        self._js: Any = None

    def _subject(self, aggregate_id: str) -> str:
        if not aggregate_id or _SUBJECT_TOKEN_FORBIDDEN & set(aggregate_id):
            raise ValueError(
                f"aggregate id {aggregate_id!r} cannot be a NATS subject token "
                "(no dots, spaces, '*' or '>')"
            )
        return f"{self.namespace}.events.{aggregate_id}"

    async def setup(self) -> None:
        from nats.js.api import StreamConfig

        if self._nc is None:
            self._nc = await self._connect()
            self._js = self._nc.jetstream()
        await self._js.add_stream(
            StreamConfig(
                name=self.stream, subjects=[f"{self.namespace}.events.>"], allow_atomic=True
            )
        )
        await self._js.add_stream(
            StreamConfig(
                name=self.snapshot_stream,
                subjects=[f"{self.namespace}.snapshots.>"],
                max_msgs_per_subject=1,
            )
        )

    async def _connect(self) -> Any:
        """A nats-py client, or :class:`BrokerUnavailable` within a few seconds.

        The port is probed first: nats-py on its own keeps retrying a refused connection
        without a bound and prints each failure.
        """
        from urllib.parse import urlsplit

        import nats

        from mqlab.brokers.base import BrokerUnavailable

        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        address = f"{host}:{port}"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=3.0)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        except (OSError, TimeoutError) as error:
            raise BrokerUnavailable("nats", address, str(error) or "no answer") from None

        async def quiet(error: Exception) -> None:
            """nats-py's default error callback prints a traceback; the caller gets the error."""

        try:
            return await asyncio.wait_for(
                nats.connect(self.url, allow_reconnect=False, connect_timeout=3, error_cb=quiet),
                timeout=5.0,
            )
        except (OSError, TimeoutError, nats.errors.Error) as error:
            raise BrokerUnavailable("nats", address, str(error) or "no answer") from None

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = self._js = None

    async def drop(self) -> None:
        """Delete both streams (and every event in them)."""
        from nats.js.errors import NotFoundError

        for stream in (self.stream, self.snapshot_stream):
            with contextlib.suppress(NotFoundError):
                await self._js.delete_stream(stream)

    async def _last(self, subject: str) -> tuple[int, int]:
        """(stream sequence, version) of the subject's last event; (0, 0) when none."""
        from nats.js.errors import NotFoundError

        try:
            message = await self._js.get_last_msg(self.stream, subject)
        except NotFoundError:
            return 0, 0
        return int(message.seq), DomainEvent.from_json(message.data).version

    async def append(
        self, aggregate_id: str, events: Sequence[DomainEvent], expected_version: int
    ) -> int:
        from nats.js.errors import APIError

        subject = self._subject(aggregate_id)
        check_batch(aggregate_id, events, expected_version)
        sequence, actual = await self._last(subject)
        if actual != expected_version:
            raise VersionConflictError(aggregate_id, expected_version, actual)
        try:
            await self._publish_batch(subject, events, sequence)
        except APIError as error:
            if error.err_code != _WRONG_LAST_SEQUENCE:
                raise
            _, actual = await self._last(subject)
            raise VersionConflictError(aggregate_id, expected_version, actual) from None
        return events[-1].version

    async def _publish_batch(
        self, subject: str, events: Sequence[DomainEvent], last_sequence: int
    ) -> None:
        expected = {_EXPECTED_LAST_SUBJECT_SEQUENCE: str(last_sequence)}
        if len(events) == 1:
            await self._js.publish(subject, events[0].to_json().encode(), headers=expected)
            return
        batch_id = events[0].event_id
        for number, event in enumerate(events, start=1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number == 1:
                headers.update(expected)  # the check is made once, for the whole batch
            if number < len(events):
                # Parts of an atomic batch are plain publishes: the server keeps them aside
                # and answers only the commit, with the fate of the whole batch.
                await self._nc.publish(subject, event.to_json().encode(), headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                await self._js.publish(subject, event.to_json().encode(), headers=headers)

    async def _messages(self, subject: str, first_sequence: int) -> list[tuple[int, bytes]]:
        """(sequence, data) of every message on ``subject`` (wildcards allowed) from
        ``first_sequence`` on, one direct get per message."""
        from nats.js.errors import NotFoundError

        found: list[tuple[int, bytes]] = []
        sequence = max(1, first_sequence)
        while True:
            try:
                message = await self._js.get_msg(
                    self.stream, seq=sequence, subject=subject, next=True
                )
            except NotFoundError:
                return found
            found.append((int(message.seq), bytes(message.data)))
            sequence = int(message.seq) + 1

    async def load(self, aggregate_id: str, after_version: int = 0) -> list[DomainEvent]:
        events = [
            DomainEvent.from_json(data)
            for _, data in await self._messages(self._subject(aggregate_id), 1)
        ]
        return [e for e in events if e.version > after_version]

    async def read_all(self, after_position: int = 0) -> list[StoredEvent]:
        return [
            StoredEvent(sequence, DomainEvent.from_json(data))
            for sequence, data in await self._messages(
                f"{self.namespace}.events.>", after_position + 1
            )
        ]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        current = await self.load_snapshot(snapshot.aggregate_id)
        if current is not None and current.version >= snapshot.version:
            return
        payload = json.dumps(
            {"version": snapshot.version, "state": dict(snapshot.state)}, sort_keys=True
        )
        self._subject(snapshot.aggregate_id)  # the same rule for the id
        await self._js.publish(
            f"{self.namespace}.snapshots.{snapshot.aggregate_id}", payload.encode()
        )

    async def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        from nats.js.errors import NotFoundError

        self._subject(aggregate_id)
        try:
            message = await self._js.get_last_msg(
                self.snapshot_stream, f"{self.namespace}.snapshots.{aggregate_id}"
            )
        except NotFoundError:
            return None
        raw = json.loads(message.data)
        return Snapshot(aggregate_id, int(raw["version"]), dict(raw["state"]))
