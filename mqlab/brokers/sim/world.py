"""The simulated world one run shares: virtual clock, seeded randomness, faults, observations.

Every simulated adapter of a run takes the same :class:`SimWorld`, so a Kafka model, a
RabbitMQ model and the scenario runner agree on "now", draw random numbers from one seeded
stream (same seed, same run) and see the same injected faults.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from mqlab.observe.bus import ObservationBus


@dataclass(slots=True)
class NetworkFault:
    """A fault on the path between a client and a simulated broker node."""

    kind: str  # latency | timeout | reset_peer | bandwidth | partition
    latency: float = 0.0
    params: dict[str, float] = field(default_factory=dict)


class SimWorld:
    """Shared state of one simulated run.

    Args:
        seed: seeds :attr:`rng`; the only source of randomness the simulator may use.
        bus: observation bus; its clock is replaced by the virtual clock.
    """

    def __init__(self, seed: int = 0, bus: ObservationBus | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.bus = bus if bus is not None else ObservationBus()
        self.bus.clock = self.now
        self.paused_nodes: set[str] = set()
        self.killed_nodes: set[str] = set()
        self.network_faults: dict[str, NetworkFault] = {}
        self._id_counter = 0

    def now(self) -> float:
        """Virtual seconds (the running loop's clock; 0.0 outside a loop)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0

    def next_id(self, prefix: str) -> str:
        """A deterministic unique id (``prefix-000001``): no uuid4 in the simulator."""
        self._id_counter += 1
        return f"{prefix}-{self._id_counter:06d}"
