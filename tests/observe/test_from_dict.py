"""Observations a worker process sends as JSON come back equal to what it emitted."""

from __future__ import annotations

import json

import pytest

from mqlab.observe.events import LeaderChanged, Observation, Rebalanced

pytestmark = pytest.mark.sim


@pytest.mark.parametrize(
    "observation",
    [
        Rebalanced(
            at=1.0,
            broker="kafka",
            group="g",
            generation=2,
            assignment=(("c1", ("t:0", "t:1")), ("c2", ())),
        ),
        LeaderChanged(at=2.0, broker="kafka", topic="t", partition=0, leader=2, isr=(2, 3)),
    ],
)
def test_an_observation_survives_a_json_round_trip(observation: Observation) -> None:
    decoded = Observation.from_dict(json.loads(json.dumps(observation.to_dict())))
    assert decoded == observation
    # Equal also to the ledger, which compares assignments of successive rebalances.
    assert hash(decoded) == hash(observation)


def test_every_kind_is_imported_from_the_one_events_module() -> None:
    """The pattern kinds and the base live in their own modules; ``mqlab.observe.events`` is
    still where every observation is imported from (most of mqlab does)."""
    from mqlab.observe import events

    missing = [
        cls.__name__
        for cls in events.observation_kinds().values()
        if getattr(events, cls.__name__, None) is not cls or cls.__name__ not in events.__all__
    ]
    assert missing == []
    assert {"Observation", "SagaObservation", "observation_kinds"} <= set(events.__all__)
