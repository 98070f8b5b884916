"""What a RabbitMQ adapter declared, so it can declare it all again after a reconnect.

RabbitMQ forgets nothing a client declared while the client is away, except what died with a
restarted node (non-durable queues and exchanges, and the bindings to them). The official
clients therefore re-declare their exchanges, queues and bindings once they reconnect
("topology recovery"), and so do both of mqlab's adapters, the real one and the simulator's,
from this record. Declarations are kept in the order they were made: queues before the
bindings that need them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class QueueDeclaration:
    """One queue as it was declared."""

    name: str
    durable: bool
    arguments: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class BindingDeclaration:
    """One binding as it was made."""

    queue: str
    exchange: str
    routing_key: str
    arguments: tuple[tuple[str, Any], ...]


class Topology:
    """The exchanges (name -> type, durable), queues and bindings an adapter declared."""

    def __init__(self) -> None:
        self.exchanges: dict[str, tuple[str, bool]] = {}
        self.queues: dict[str, QueueDeclaration] = {}
        self.bindings: dict[BindingDeclaration, None] = {}

    def exchange_declared(self, name: str, kind: str, durable: bool) -> None:
        """Remember an exchange declaration."""
        self.exchanges[name] = (kind, durable)

    def queue_declared(self, name: str, durable: bool, arguments: Mapping[str, Any]) -> None:
        """Remember a queue declaration (with its ``x-*`` arguments)."""
        self.queues[name] = QueueDeclaration(name, durable, tuple(sorted(arguments.items())))

    def bound(
        self, queue: str, exchange: str, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        """Remember a binding."""
        binding = BindingDeclaration(queue, exchange, routing_key, tuple(sorted(arguments.items())))
        self.bindings[binding] = None

    def queue_deleted(self, name: str) -> None:
        """Forget a queue and its bindings."""
        self.queues.pop(name, None)
        for binding in [b for b in self.bindings if b.queue == name]:
            del self.bindings[binding]

    def exchange_deleted(self, name: str) -> None:
        """Forget an exchange and its bindings."""
        self.exchanges.pop(name, None)
        for binding in [b for b in self.bindings if b.exchange == name]:
            del self.bindings[binding]

    def clear(self) -> None:
        """Forget everything (after the namespace was cleaned up)."""
        self.exchanges.clear()
        self.queues.clear()
        self.bindings.clear()

    def queue_arguments(self, name: str) -> dict[str, Any]:
        """The arguments ``name`` was declared with (empty if this adapter did not declare it)."""
        declaration = self.queues.get(name)
        return dict(declaration.arguments) if declaration is not None else {}

    def summary(self) -> str:
        """What a recovery re-declares, in words (for the BrokerUp observation)."""
        return (
            f"{len(self.exchanges)} exchanges, {len(self.queues)} queues, "
            f"{len(self.bindings)} bindings"
        )
