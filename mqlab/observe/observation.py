"""The base of every observation and the registry that reads a trace line back into one.

Kept apart from the observation kinds themselves (:mod:`mqlab.observe.events`, and the pattern
library's in :mod:`mqlab.observe.pattern_events`) so that each module of kinds registers its own
on import, and a reader finds the round-trip rules (``kind`` first, JSON lists back to tuples,
unknown kinds and fields refused) in one short place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

_REGISTRY: dict[str, type[Observation]] = {}

_O = TypeVar("_O", bound="type[Observation]")


def registered(cls: _O) -> _O:
    """Register an observation class under its ``kind`` so traces can be read back."""
    _REGISTRY[cls.kind] = cls
    return cls


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """Base of every observation.

    Attributes:
        at: monotonic seconds (virtual seconds on the simulator).
        broker: the adapter name that saw it (``kafka``, ``rabbitmq``, ``sqs``, ``nats``,
            ``sim-kafka`` ...), or ``lab`` / ``runner`` for events from those layers.
    """

    kind: ClassVar[str] = "observation"
    at: float
    broker: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``kind`` first (the shape of one trace line)."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": self.kind, **body}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Observation:
        """Rebuild an observation written by :meth:`to_dict`.

        Raises:
            ValueError: unknown ``kind`` or fields that do not belong to it.
        """
        payload = dict(data)
        kind = payload.pop("kind", None)
        cls = _REGISTRY.get(str(kind))
        if cls is None:
            raise ValueError(f"unknown observation kind {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(payload) - names
        if unknown:
            raise ValueError(f"{kind}: unexpected fields {sorted(unknown)}")
        for f in dataclasses.fields(cls):
            if f.name in payload:
                payload[f.name] = _frozen(payload[f.name])
        return cls(**payload)


def _frozen(value: Any) -> Any:
    """JSON's lists as the tuples the fields hold, at every depth (a Rebalanced assignment is
    a tuple of (member, tuple of partitions)), so a decoded observation equals the original."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


def observation_kinds() -> dict[str, type[Observation]]:
    """Every registered observation kind (for docs, the TUI legend and trace validation)."""
    return dict(_REGISTRY)
