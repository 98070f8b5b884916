"""The verdict: a typed ledger summary, every expectation judged in one place, one result.

A run is judged on three things, all of them folded from the observation stream, so a recorded
trace gives the very same verdict as the live run:

- the **ledger** (:mod:`mqlab.scenarios.ledger`): what happened to every message, summed up in a
  :class:`LedgerSummary` (one field per ``expect`` key of the scenario format) and one
  :class:`GroupSummary` per group;
- the **expectations** of the scenario, global, per system and per group, each held against its
  number (:func:`judge_expectations`);
- the **checks** against the broker's own state (``check`` and ``wait: {until}`` steps, and the
  end-of-run agreement between ledger and broker), reported as ``CheckEvaluated`` observations.

:class:`RunJudge` is the subscriber that folds a run (live or replayed) into a
:class:`RunResult`. The names of :class:`LedgerSummary`'s fields are the names authors write
under ``expect:``; a test holds the scenario format's expectation model to exactly these fields,
so a new ledger number cannot be added without a way to expect it (and the report shows it).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mqlab.course.scenario import Count, Expectations, Scenario
from mqlab.observe.events import CheckEvaluated, Observation, RunEnded, RunStarted
from mqlab.scenarios.ledger import GroupSummary, Ledger, LedgerSummary

_COMPARISON = re.compile(r"^(>=|<=|>|<|==)?\s*(\d+)$")


def compare(actual: int, expected: Count) -> bool:
    """Whether ``actual`` satisfies an expectation (a number, or a comparison like ``">0"``)."""
    if isinstance(expected, int):
        return actual == expected
    match = _COMPARISON.match(expected.strip())
    if match is None:
        raise ValueError(f"bad expectation {expected!r}")
    operator, number = match.group(1) or "==", int(match.group(2))
    return {
        "==": actual == number,
        ">=": actual >= number,
        "<=": actual <= number,
        ">": actual > number,
        "<": actual < number,
    }[operator]


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """One ``expect`` entry held against its number."""

    name: str
    """The ledger field (``lost``) or, for a group, the group's field (``processed``)."""
    expected: str
    """As written: ``5``, ``">0"``."""
    actual: int
    holds: bool
    group: str | None = None
    """The group a per-group expectation is about (``None``: the whole ledger)."""

    @property
    def label(self) -> str:
        """``lost`` or ``groups.billing.processed``: how the scenario file names it."""
        return self.name if self.group is None else f"groups.{self.group}.{self.name}"


def judge_expectations(
    expect: Expectations,
    system: str,
    summary: LedgerSummary,
    groups: dict[str, GroupSummary],
    *,
    simulated: bool = False,
) -> list[ExpectationResult]:
    """Every expectation of a scenario for ``system``, judged.

    A per-group expectation about a group that processed nothing is judged against zeros (a
    group that never received its messages fails ``processed: 5``).
    """
    results = [
        ExpectationResult(name, str(value), summary[name], compare(summary[name], value))
        for name, value in expect.for_system(system, simulated=simulated).items()
    ]
    for group_name, group_expectation in expect.groups.items():
        numbers = groups.get(group_name, GroupSummary())
        for name, value in group_expectation:
            if value is None:
                continue
            actual = numbers[name]
            results.append(
                ExpectationResult(name, str(value), actual, compare(actual, value), group_name)
            )
    return results


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """A check against the broker's own state and what it found."""

    step: int
    """The scenario step that made it (1-based); 0 for the end-of-run agreement."""
    description: str
    observed: str
    holds: bool


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything one run produced: what the CLI prints, the TUI draws, the grader judges.

    Built by :class:`RunJudge` from the observations alone, so a live run and the replay of its
    trace give equal results (:meth:`to_json` is the comparable form).
    """

    scenario_id: str
    broker: str
    """``kafka`` for the lab's broker, ``sim:kafka`` for the simulator."""
    seed: int
    summary: LedgerSummary
    groups: dict[str, GroupSummary]
    expectations: tuple[ExpectationResult, ...]
    checks: tuple[CheckOutcome, ...]
    """Checks made by steps (``step`` >= 1), in order."""
    agreement: tuple[CheckOutcome, ...]
    """The end-of-run comparison of ledger and broker (``step`` 0)."""
    error: str | None = None
    """Why the run could not complete; None when it did."""
    restore_problem: str | None = None
    """What the cleanup could not put back; None when everything was restored."""
    scenario_seconds: float = 0.0
    """Time from the first to the last observation (virtual seconds on the simulator)."""
    observations: tuple[Observation, ...] = field(default=(), compare=False, repr=False)
    wall_seconds: float = field(default=0.0, compare=False)
    """Real time the run took (not part of the comparable result)."""

    @property
    def simulated(self) -> bool:
        """Whether it ran on the simulator."""
        return self.broker.startswith("sim:")

    @property
    def has_broker(self) -> bool:
        """Whether a message broker took part (a pattern scenario may run on services only)."""
        from mqlab.brokers.registry import SYSTEM_NAMES

        return self.broker.removeprefix("sim:") in SYSTEM_NAMES

    @property
    def passed(self) -> bool:
        """The verdict: it completed, and every expectation and check holds."""
        return (
            self.error is None
            and all(e.holds for e in self.expectations)
            and all(c.holds for c in self.checks)
            and all(a.holds for a in self.agreement)
        )

    @property
    def verdict(self) -> str:
        """``pass``, ``fail`` (an expectation or check does not hold) or ``error``."""
        if self.error is not None:
            return "error"
        return "pass" if self.passed else "fail"

    def failures(self) -> list[str]:
        """One short line per thing that does not hold (empty on a pass)."""
        lines = [
            f"{e.label}: expected {e.expected}, got {e.actual}"
            for e in self.expectations
            if not e.holds
        ]
        lines += [
            f"step {c.step}: {c.description} (observed {c.observed})"
            for c in self.checks
            if not c.holds
        ]
        lines += [f"{a.description} ({a.observed})" for a in self.agreement if not a.holds]
        return lines

    def to_json_dict(self) -> dict[str, Any]:
        """The result as plain JSON data (what ``--json`` prints)."""
        return {
            "scenario": self.scenario_id,
            "broker": self.broker,
            "seed": self.seed,
            "verdict": self.verdict,
            "passed": self.passed,
            "error": self.error,
            "restore_problem": self.restore_problem,
            "ledger": self.summary.as_dict(),
            "groups": {name: group.as_dict() for name, group in sorted(self.groups.items())},
            "expectations": [
                {
                    "name": e.label,
                    "expected": e.expected,
                    "actual": e.actual,
                    "holds": e.holds,
                }
                for e in self.expectations
            ],
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "agreement": [dataclasses.asdict(a) for a in self.agreement],
            "scenario_seconds": round(self.scenario_seconds, 6),
        }

    def to_json(self) -> str:
        """:meth:`to_json_dict` as one line of JSON with sorted keys."""
        return json.dumps(self.to_json_dict(), sort_keys=True)


def _recorded_scenario(document: str) -> Scenario:
    """The scenario a ``run_started`` observation carries.

    Raises:
        ValueError: it is not a valid scenario (a trace edited by hand), in one line.
    """
    from pydantic import ValidationError

    from mqlab.course.loader import describe, error_message

    try:
        return Scenario.model_validate_json(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = describe([p for p in first["loc"] if isinstance(p, str | int)])
        raise ValueError(
            f"run_started: the recorded scenario is not valid: {where}: {error_message(first)}"
        ) from None


class RunJudge:
    """Folds one run's observations into its ledger, checks and end, then judges them.

    A bus subscriber: the run session subscribes it to a live run, and a replay feeds it the
    trace. It learns the scenario from the run's ``RunStarted`` observation unless it is given
    one, so a trace is judged by the scenario it was recorded with.
    """

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario
        self.ledger = Ledger()
        self.system: str | None = None
        self.simulated = False
        self.seed = 0
        self.checks: list[CheckOutcome] = []
        self.agreement: list[CheckOutcome] = []
        self.ended: RunEnded | None = None
        self.first_at: float | None = None
        self.last_at: float | None = None

    def __call__(self, observation: Observation) -> None:
        if self.first_at is None:
            self.first_at = observation.at
        self.last_at = observation.at
        match observation:
            case RunStarted():
                self.system = observation.system
                self.simulated = observation.simulated
                self.seed = observation.seed
                if self.scenario is None:
                    self.scenario = _recorded_scenario(observation.scenario)
            case CheckEvaluated():
                outcome = CheckOutcome(
                    observation.step,
                    observation.description,
                    observation.observed,
                    observation.holds,
                )
                (self.checks if observation.step > 0 else self.agreement).append(outcome)
            case RunEnded():
                self.ended = observation
            case _:
                self.ledger(observation)

    def result(
        self,
        *,
        observations: tuple[Observation, ...] = (),
        wall_seconds: float = 0.0,
    ) -> RunResult:
        """The judged result of everything folded so far.

        Raises:
            ValueError: no scenario is known (neither given nor in a ``RunStarted``).
        """
        if self.scenario is None:
            raise ValueError("no scenario to judge against (the trace has no run_started line)")
        system = self.system or self.scenario.targets[0]
        summary, groups = self.ledger.summary(), self.ledger.per_group()
        ended = self.ended
        error = ended.error if ended is not None else "the run did not finish (trace cut short)"
        restore = ended.restore_problem if ended is not None else ""
        span = (self.last_at or 0.0) - (self.first_at or 0.0)
        return RunResult(
            scenario_id=self.scenario.id,
            broker=f"sim:{system}" if self.simulated else system,
            seed=self.seed,
            summary=summary,
            groups=groups,
            expectations=tuple(
                judge_expectations(
                    self.scenario.expect, system, summary, groups, simulated=self.simulated
                )
            ),
            checks=tuple(self.checks),
            agreement=tuple(self.agreement),
            error=error or None,
            restore_problem=restore or None,
            scenario_seconds=span,
            observations=observations,
            wall_seconds=wall_seconds,
        )
