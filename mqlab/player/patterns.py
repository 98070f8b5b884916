"""Pattern experiments a lesson can run by id (``experiment: {pattern: retry-contention}``).

A scenario experiment varies a scenario file; a pattern experiment varies the parameters of a
pattern from :mod:`mqlab.patterns` and compares the numbers it measures. Each entry here says
which parameters it takes (with defaults and bounds), which metrics it reports and how to run
one variant. The registry also checks a lesson's pattern experiments (it is the
:class:`~mqlab.course.library.PatternCatalog` that lesson validation uses), so a lesson can
only name an experiment that exists in this mqlab, with parameters it understands.

The backing modules are imported when an experiment runs, not before; an entry whose module is
not there is refused by validation like an unknown id.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import JsonValue

from mqlab.course.lesson import Experiment, Location, Problem

ParamValue = int | float | str


class PatternParameterError(ValueError):
    """A parameter value a pattern experiment does not accept; ``name`` is the parameter."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter of a pattern experiment."""

    name: str
    kind: type[int] | type[float] | type[str]
    default: ParamValue
    help: str
    choices: tuple[str, ...] = ()
    """For a text parameter: the values it accepts."""
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: JsonValue) -> ParamValue:
        """``value`` as this parameter's type.

        Raises:
            PatternParameterError: wrong type, out of bounds or not one of the choices.
        """
        if self.kind is str:
            if not isinstance(value, str) or value not in self.choices:
                close = difflib.get_close_matches(str(value), self.choices, n=1, cutoff=0.5)
                hint = (
                    f"did you mean {close[0]!r}?" if close else f"one of {', '.join(self.choices)}"
                )
                raise PatternParameterError(
                    self.name, f"{self.name}={value!r} is not known ({hint})"
                )
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PatternParameterError(self.name, f"{self.name} must be a number, not {value!r}")
        if self.kind is int and not float(value).is_integer():
            raise PatternParameterError(self.name, f"{self.name} must be a whole number")
        number: int | float = int(value) if self.kind is int else float(value)
        if not math.isfinite(number):
            raise PatternParameterError(self.name, f"{self.name} must be finite")
        if self.minimum is not None and number < self.minimum:
            raise PatternParameterError(self.name, f"{self.name} must be at least {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            raise PatternParameterError(self.name, f"{self.name} must be at most {self.maximum:g}")
        return number


@dataclass(frozen=True, slots=True)
class Metric:
    """A number a pattern experiment reports (a row of the comparison)."""

    name: str
    label: str


@dataclass(frozen=True, slots=True)
class PatternExperiment:
    """An experiment on a pattern, runnable with parameters."""

    id: str
    title: str
    module: str
    """The module that implements the pattern (imported only to run)."""
    parameters: tuple[Parameter, ...]
    metrics: tuple[Metric, ...]
    runner: Callable[[Mapping[str, ParamValue], int], dict[str, float]] = field(repr=False)
    """``(parameters, seed) -> {metric: value}``."""
    constraint: Callable[[Mapping[str, ParamValue]], PatternParameterError | None] | None = field(
        default=None, repr=False
    )
    """A rule between parameters (``cap`` not below ``base``): the error, or None."""

    def available(self) -> bool:
        """Whether the pattern's module is part of this mqlab."""
        return importlib.util.find_spec(self.module) is not None

    def parameter(self, name: str) -> Parameter | None:
        """The parameter called ``name``."""
        return next((p for p in self.parameters if p.name == name), None)

    def resolve(self, *layers: Mapping[str, JsonValue]) -> dict[str, ParamValue]:
        """The defaults, overridden by each of ``layers`` in turn, each value checked.

        Raises:
            PatternParameterError: an unknown parameter or a bad value.
        """
        values: dict[str, ParamValue] = {p.name: p.default for p in self.parameters}
        for layer in layers:
            for name, value in layer.items():
                parameter = self.parameter(name)
                if parameter is None:
                    known = ", ".join(p.name for p in self.parameters)
                    raise PatternParameterError(name, f"no parameter {name!r} (known: {known})")
                values[name] = parameter.check(value)
        if self.constraint is not None:
            problem = self.constraint(values)
            if problem is not None:
                raise problem
        return values

    def run(self, values: Mapping[str, ParamValue], seed: int = 0) -> dict[str, float]:
        """Run the experiment once with resolved ``values``; the metrics by name."""
        return self.runner(values, seed)


class PatternRegistry:
    """The pattern experiments by id; also the catalog lesson validation checks against."""

    def __init__(self, experiments: Iterable[PatternExperiment]) -> None:
        self._experiments = {experiment.id: experiment for experiment in experiments}

    def ids(self) -> list[str]:
        """Ids of the experiments that can run in this mqlab."""
        return [key for key, experiment in self._experiments.items() if experiment.available()]

    def get(self, experiment_id: str) -> PatternExperiment:
        """The experiment ``experiment_id``.

        Raises:
            KeyError: no such experiment here (or its module is missing).
        """
        found = self._experiments.get(experiment_id)
        if found is None or not found.available():
            raise KeyError(experiment_id)
        return found

    def experiment_problems(self, experiment: Experiment) -> list[Problem]:
        """What is wrong with a lesson's pattern experiment (locations relative to it)."""
        name = str(experiment.pattern)
        try:
            pattern = self.get(name)
        except KeyError:
            known = ", ".join(self.ids()) or "none yet"
            return [Problem(("pattern",), f"no pattern experiment {name!r} (known: {known})")]
        problems: list[Problem] = []
        shared: Mapping[str, JsonValue] = experiment.params
        try:
            pattern.resolve(shared)
        except PatternParameterError as error:
            problems.append(Problem(("params", error.name), str(error)))
            shared = {}  # judge each variant on its own, not on the shared mistake again
        seen: dict[tuple[tuple[str, ParamValue], ...], int] = {}
        for index, variant in enumerate(experiment.vary.choices):
            at: Location = ("vary", "choices", index, "set")
            if variant.broker is not None:
                problems.append(
                    Problem(
                        ("vary", "choices", index, "broker"),
                        "broker applies to scenario experiments, not to a pattern",
                    )
                )
            try:
                values = pattern.resolve(shared, variant.overrides)
            except PatternParameterError as error:
                problems.append(Problem((*at, error.name), str(error)))
                continue
            fingerprint = tuple(sorted(values.items()))
            if fingerprint in seen:
                problems.append(
                    Problem(
                        at, f"this variant is the same experiment as choices[{seen[fingerprint]}]"
                    )
                )
            seen.setdefault(fingerprint, index)
        metrics = [metric.name for metric in pattern.metrics]
        for index, metric in enumerate(experiment.compare):
            if metric not in metrics:
                problems.append(
                    Problem(
                        ("compare", index),
                        f"{name} reports no {metric!r} (it reports: {', '.join(metrics)})",
                    )
                )
        return problems


# --- retry-contention -----------------------------------------------------------------------


def _run_retry_contention(values: Mapping[str, ParamValue], seed: int) -> dict[str, float]:
    from mqlab.patterns.contention import simulate
    from mqlab.patterns.retry import Strategy

    (summary,) = simulate(
        [Strategy(str(values["strategy"]))],
        [int(values["clients"])],
        runs=int(values["runs"]),
        seed=seed,
        base=float(values["base"]),
        cap=float(values["cap"]),
        delay_mean=float(values["delay_mean"]),
        delay_sd=float(values["delay_sd"]),
    )
    shown = summary.to_dict()
    return {metric.name: float(shown[metric.name]) for metric in RETRY_CONTENTION_METRICS}


def _cap_not_below_base(values: Mapping[str, ParamValue]) -> PatternParameterError | None:
    if float(values["cap"]) < float(values["base"]):
        return PatternParameterError(
            "cap", f"cap ({values['cap']}) must not be below base ({values['base']})"
        )
    return None


RETRY_CONTENTION_METRICS = (
    Metric("mean_calls", "database calls per trial"),
    Metric("mean_conflicts", "lost races (version conflicts) per trial"),
    Metric("mean_completion_ms", "until the last client's write landed (mean, ms)"),
    Metric("p95_completion_ms", "until the last client's write landed (p95, ms)"),
    Metric("mean_client_completion_ms", "one client's wait (mean, ms)"),
)

RETRY_CONTENTION = PatternExperiment(
    id="retry-contention",
    title="Clients racing for one row, retrying with a backoff strategy",
    module="mqlab.patterns.contention",
    parameters=(
        Parameter(
            "strategy",
            str,
            "full-jitter",
            "the backoff between retries",
            choices=("none", "exponential", "full-jitter", "equal-jitter", "decorrelated-jitter"),
        ),
        Parameter(
            "clients",
            int,
            20,
            "clients that start together, one write each",
            minimum=1,
            maximum=500,
        ),
        Parameter(
            "runs", int, 100, "trials the numbers are averaged over", minimum=1, maximum=2000
        ),
        Parameter("base", float, 0.01, "the backoff's base delay (seconds)", minimum=0, maximum=60),
        Parameter("cap", float, 1.0, "the backoff's cap (seconds)", minimum=0, maximum=600),
        Parameter(
            "delay_mean",
            float,
            0.005,
            "mean network delay of a request (seconds)",
            minimum=0,
            maximum=10,
        ),
        Parameter(
            "delay_sd", float, 0.002, "its standard deviation (seconds)", minimum=0, maximum=10
        ),
    ),
    metrics=RETRY_CONTENTION_METRICS,
    runner=_run_retry_contention,
    constraint=_cap_not_below_base,
)

PATTERNS = PatternRegistry([RETRY_CONTENTION])
"""Every pattern experiment a lesson may name."""


def pattern_values(
    pattern: PatternExperiment, experiment: Experiment, variant_index: int
) -> dict[str, ParamValue]:
    """The resolved parameters of one variant: defaults, the step's params, the variant's set."""
    variant = experiment.vary.choices[variant_index]
    return pattern.resolve(experiment.params, variant.overrides)


def known_metric_labels(pattern: PatternExperiment) -> dict[str, str]:
    """Metric name -> label."""
    return {metric.name: metric.label for metric in pattern.metrics}


__all__ = [
    "PATTERNS",
    "Metric",
    "Parameter",
    "PatternExperiment",
    "PatternParameterError",
    "PatternRegistry",
    "known_metric_labels",
    "pattern_values",
]
