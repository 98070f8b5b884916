"""A check interrupted mid-fault (Ctrl-C, a kill) leaves a lab broker frozen or dead; the
grader's cleanup run puts back what the children's own reports say they broke and did not
repair (:func:`mqlab.grader.run.left_broken`)."""

from __future__ import annotations

import json

import pytest

from mqlab.grader.run import CLEANUP_SECONDS, left_broken
from mqlab.lab.supervisor import SERVICE_PATHS, SERVICES, Lab
from mqlab.observe.events import FaultInjected, Observation, Produced

pytestmark = pytest.mark.sim


def _line(observation: Observation) -> bytes:
    return json.dumps({"observation": observation.to_dict()}, sort_keys=True).encode() + b"\n"


def _fault(fault: str, target: str, source: str = "lab", at: float = 0.0) -> bytes:
    return _line(FaultInjected(at=at, broker=source, fault=fault, target=target))


def test_what_was_paused_or_killed_and_not_repaired_is_left_broken() -> None:
    lines = [
        _fault("pause", "kafka-broker-1"),
        _line(Produced(at=1.0, broker="kafka", destination="orders", message_id="m-1")),
        _fault("kill", "kafka-broker-1", at=2.0),
        _fault("pause", "kafka-broker-2", at=3.0),
        _fault("pause", "kafka-broker-3", at=4.0),
        _fault("resume", "kafka-broker-3", at=5.0),
        b'{"clock_started": true}\n',
        b"not json\n",
    ]
    assert left_broken(lines) == [("kill", "kafka-broker-1"), ("pause", "kafka-broker-2")]


def test_a_restart_repairs_and_a_resume_does_not_bring_back_a_killed_node() -> None:
    lines = [
        _fault("kill", "kafka-broker-1"),
        _fault("resume", "kafka-broker-1", at=1.0),
        _fault("kill", "kafka-broker-2", at=2.0),
        _fault("restart", "kafka-broker-2", at=3.0),
    ]
    assert left_broken(lines) == [("kill", "kafka-broker-1")]


def test_faults_the_check_reports_itself_are_not_lab_damage() -> None:
    """A learner crash or a duplicate delivery is the grader's (``broker='grader'``), and the
    simulator's faults die with the child's world."""
    lines = [_fault("crash", "learner", source="grader"), _fault("kill", "kafka-2", source="sim")]
    assert left_broken(lines) == []


def test_a_fault_announced_but_never_reported_is_left_broken() -> None:
    """A child killed between its SIGSTOP and its report (Ctrl-C lands there) has still sent
    the ``breaking`` line: the frozen broker is resumed by the cleanup run."""
    lines = [
        b'{"breaking": ["pause", "kafka-broker-1"]}\n',
        b'{"breaking": ["kill", "kafka-broker-2"]}\n',
        _fault("kill", "kafka-broker-2"),
        _fault("restart", "kafka-broker-2", at=1.0),
        b'{"breaking": ["explode", "kafka-broker-3"]}\n',
        b'{"breaking": "kafka-broker-3"}\n',
    ]
    assert left_broken(lines) == [("pause", "kafka-broker-1")]


def test_the_cleanup_run_may_wait_as_long_as_the_lab_waits_for_a_restarted_process() -> None:
    """The cleanup run restarts what a killed child left dead and waits until it is healthy,
    bounded by the lab's own wait (a Kafka broker's is the longest); its own bound must not
    end it first, with room left for its connect and the namespace's deletion."""
    lab = Lab()
    specs = [spec for name in SERVICE_PATHS for spec in SERVICES[name].processes(lab.paths)]
    longest = max(spec.health.timeout for spec in specs)
    assert longest >= 60  # the JVM brokers' bound, as the lab sets it
    assert CLEANUP_SECONDS - longest >= 30, (CLEANUP_SECONDS, longest)
