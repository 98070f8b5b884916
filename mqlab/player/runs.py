"""Where the player's runs go, and which broker a step runs on.

Every scenario a lesson runs (a prediction's, an experiment variant's) goes through
:func:`run_scenario`, one call into the run session, so the CLI, the TUI and the tests run a
lesson's scenarios exactly the way ``mqlab run`` does. The TUI passes its own function of the
same shape (:data:`RunFunction`) when it wants the session itself, to inject faults live.

:class:`LearnerBroker` is the learner's choice (``--broker``): the simulator or the lab, and
optionally a preferred system. A step may pin the system it is about (``broker: kafka``);
otherwise the preferred system is used where the scenario runs on it, and the scenario's first
system where it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

# The systems' names from the registry, not the scenario models: the CLI checks --broker
# through LearnerBroker before the course opens, and building the pydantic models would hold
# up the app's first frame.
from mqlab.brokers.registry import SYSTEM_NAMES as SYSTEMS
from mqlab.brokers.registry import SystemName as System

if TYPE_CHECKING:
    from mqlab.course.scenario import Scenario
    from mqlab.observe.bus import Subscriber
    from mqlab.scenarios.verdict import RunResult

RunFunction = Callable[["Scenario", str, int, "Subscriber | None"], "RunResult"]
"""``(scenario, broker, seed, on_observation) -> RunResult``; ``broker`` is ``kafka`` (the
lab's) or ``sim:kafka``."""


def run_scenario(
    scenario: Scenario, broker: str, seed: int = 0, on_observation: Subscriber | None = None
) -> RunResult:
    """Run ``scenario`` on ``broker`` (``kafka`` or ``sim:kafka``) to its result, blocking.

    Never raises for broker trouble: an unreachable broker is the result's ``error``.
    """
    from mqlab.scenarios.session import RunSession

    session = RunSession(scenario, broker, seed=seed)
    if on_observation is not None:
        session.subscribe(on_observation)
    return session.run_sync()


@dataclass(frozen=True, slots=True)
class LearnerBroker:
    """Where the learner runs things: the simulator or the lab, maybe preferring a system."""

    simulated: bool
    """True: the built-in simulator. False: the lab's real brokers."""
    preferred: System | None = None
    """The system to use where a scenario runs on several (None: the scenario's first)."""

    @classmethod
    def parse(cls, text: str) -> LearnerBroker:
        """``sim``, ``sim:kafka``, ``lab`` (every step on the lab's real broker for its system)
        or a system name (``kafka``: the lab, preferring Kafka).

        Raises:
            UnknownBroker: anything else (with a "did you mean").
        """
        name = text.strip().lower()
        if name == "sim":
            return cls(simulated=True)
        if name in ("lab", "real"):
            return cls(simulated=False)
        system = name.removeprefix("sim:")
        for known in SYSTEMS:
            if system == known:
                return cls(simulated=name.startswith("sim:"), preferred=known)
        import difflib

        from mqlab.brokers.registry import UnknownBroker

        names = ["sim", "lab", *SYSTEMS, *(f"sim:{known}" for known in SYSTEMS)]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownBroker(
            f"unknown broker {text!r}{hint} (use sim, sim:<system>, lab, or a system: "
            f"{', '.join(SYSTEMS)})"
        )

    @property
    def label(self) -> str:
        """How the choice is spelt on the command line."""
        if self.simulated:
            return f"sim:{self.preferred}" if self.preferred else "sim"
        return self.preferred or "lab"

    def system_for(self, scenario: Scenario, pinned: System | None = None) -> str:
        """The system (or, for a pattern scenario without a broker, the service) a step runs
        ``scenario`` on."""
        if pinned is not None:
            return pinned
        if self.preferred is not None and self.preferred in scenario.targets:
            return self.preferred
        return scenario.targets[0]

    def target(self, scenario: Scenario, pinned: System | None = None) -> str:
        """The run session's broker name for a step: ``kafka`` or ``sim:kafka``."""
        system = self.system_for(scenario, pinned)
        return f"sim:{system}" if self.simulated else system
