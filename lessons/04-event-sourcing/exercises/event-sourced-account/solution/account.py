"""An event-sourced account with optimistic concurrency: the reference solution."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from mqlab.patterns.event_sourcing import CommandRejected, DomainEvent, VersionConflictError

RETRIES = 3


class Account:
    """State is the fold of the events; ``apply`` is the only way it changes."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.version = 0
        self.balance = 0
        self.owner: str | None = None
        self.pending: list[DomainEvent] = []

    # -- commands: check the rules on the current state, then record an event --

    def open(self, owner: str) -> None:
        if self.owner is not None:
            raise CommandRejected(f"{self.account_id} is already open")
        self._record("AccountOpened", {"owner": owner})

    def deposit(self, amount: int) -> None:
        self._require_open()
        self._record("MoneyDeposited", {"amount": amount})

    def withdraw(self, amount: int) -> None:
        self._require_open()
        if amount > self.balance:
            raise CommandRejected(f"{self.account_id}: balance {self.balance} < {amount}")
        self._record("MoneyWithdrawn", {"amount": amount})

    def _require_open(self) -> None:
        if self.owner is None:
            raise CommandRejected(f"{self.account_id} is not open")

    def _record(self, event_type: str, data: dict[str, Any]) -> None:
        event = DomainEvent(
            event_id=uuid.uuid4().hex,
            aggregate_id=self.account_id,
            event_type=event_type,
            version=self.version + 1,  # the version after this event, written into it
            timestamp=time.time(),
            data=data,
        )
        self.apply(event)
        self.pending.append(event)

    # -- the one path for new and loaded events --

    def apply(self, event: DomainEvent) -> None:
        if event.version != self.version + 1:
            raise ValueError(
                f"{self.account_id}: event version {event.version} after {self.version}"
            )
        if event.event_type == "AccountOpened":
            self.owner = event.data["owner"]
        elif event.event_type == "MoneyDeposited":
            self.balance += event.data["amount"]
        elif event.event_type == "MoneyWithdrawn":
            self.balance -= event.data["amount"]
        self.version = event.version

    @classmethod
    def load_from_events(cls, account_id: str, events: Iterable[DomainEvent]) -> Account:
        account = cls(account_id)
        for event in events:
            account.apply(event)
        return account


async def execute(store: Any, account_id: str, command: Callable[[Account], None]) -> None:
    """Load, decide, append at the version loaded; on a conflict start over on fresh state
    (the command decides again: that is what makes the retry right)."""
    for attempt in range(RETRIES + 1):
        account = Account.load_from_events(account_id, await store.load(account_id))
        loaded = account.version
        command(account)  # CommandRejected goes to the caller
        try:
            await store.append(account_id, account.pending, expected_version=loaded)
        except VersionConflictError:
            if attempt == RETRIES:
                raise
            continue
        return
