"""The patterns' observations: registered, frozen, past tense, round-tripping through a trace,
and each described in one human line by the timeline."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from mqlab.observe import events
from mqlab.observe.events import Observation, SagaObservation, observation_kinds
from mqlab.observe.trace import TraceHeader, read_trace, write_trace
from mqlab.scenarios.report import describe

PATTERN_KINDS = {
    # idempotency
    "dedup_miss",
    "dedup_hit",
    "dedup_recorded",
    "effect_applied",
    # sagas
    "saga_started",
    "saga_step_started",
    "saga_step_succeeded",
    "saga_step_failed",
    "compensation_started",
    "compensation_succeeded",
    "compensation_failed",
    "saga_parked",
    "saga_ended",
    "saga_recovered",
    # event sourcing
    "event_appended",
    "version_conflict",
    "snapshot_taken",
    "aggregate_loaded",
    "projection_updated",
    "projection_rebuilt",
    # delivery
    "offset_stored",
    "offset_restored",
    # outbox
    "business_write_committed",
    "outbox_written",
    "outbox_relayed",
}

_SAMPLE: dict[Any, Any] = {str: "x", int: 3, float: 1.5, bool: True}


def sample(cls: type[Observation]) -> Observation:
    """An instance of ``cls`` with every field filled (required and optional)."""
    hints = typing.get_type_hints(cls, vars(events))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if f.name == "at":
            values[f.name] = 2.5
            continue
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        concrete = [o for o in options if o is not type(None)]
        first = concrete[0]
        if typing.get_origin(first) is tuple:
            values[f.name] = ("a", "b")
        else:
            values[f.name] = _SAMPLE[first]
    return cls(**values)


def test_every_pattern_kind_is_registered() -> None:
    assert set(observation_kinds()) >= PATTERN_KINDS


def test_the_old_saga_step_kind_is_gone() -> None:
    assert "saga_step" not in observation_kinds()
    assert not hasattr(events, "SagaStep")


@pytest.mark.parametrize("kind", sorted(PATTERN_KINDS))
def test_a_pattern_observation_is_frozen_and_round_trips(kind: str) -> None:
    observation = sample(observation_kinds()[kind])
    assert Observation.from_dict(observation.to_dict()) == observation
    with pytest.raises(dataclasses.FrozenInstanceError):
        observation.at = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("kind", sorted(PATTERN_KINDS))
def test_a_pattern_observation_has_its_own_timeline_line(kind: str) -> None:
    line = describe(sample(observation_kinds()[kind]))
    assert line
    assert line != kind


def test_an_unknown_observation_falls_back_to_its_kind() -> None:
    """The check above can fail: a kind without a line is described by its name."""

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Undescribed(Observation):
        kind: typing.ClassVar[str] = "undescribed"

    assert describe(Undescribed(at=0.0, broker="x")) == "undescribed"


def test_saga_observations_share_a_base_with_the_saga_id() -> None:
    saga_kinds = [cls for cls in observation_kinds().values() if issubclass(cls, SagaObservation)]
    assert {cls.kind for cls in saga_kinds} == {
        k for k in PATTERN_KINDS if "saga" in k or "compensation" in k
    }
    assert "saga_observation" not in observation_kinds()


def test_pattern_observations_survive_a_trace_file(tmp_path: Path) -> None:
    observations = [sample(observation_kinds()[kind]) for kind in sorted(PATTERN_KINDS)]
    path = tmp_path / "trace.jsonl"
    write_trace(path, TraceHeader(broker="sim"), observations)
    _, read_back = read_trace(path)
    assert read_back == observations
