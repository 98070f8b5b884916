"""Shared test set-up: real-broker markers, the "no silent skip in CI" rule, and the lanes that
let independent systems run at the same time.

Markers. A test that needs a lab service carries that service's marker (``@pytest.mark.kafka``
...). Before it runs, the service's public ports are probed. When a service is not reachable
the test is *skipped* on a developer machine (with the command that starts it) but *fails* in CI
(``CI`` set) or when ``MQLAB_REQUIRE_BROKERS=1``: a missing broker must never pass as green.

Lanes. Most of the suite's time is spent waiting on one broker (a consumer group settling, a
visibility timeout running out, a killed broker being fenced) while the other brokers idle. Run
with pytest-xdist (``-n 7 --dist loadgroup``, as ``./scripts/test`` does), every test gets the
lane of the system it uses (:func:`lane_of`): the tests of one system run one after another in
one worker, as they did before, and the systems run side by side. Kafka's fault tests, which
kill and freeze brokers, have a lane of their own, and Kafka's scenario library another; tests
that start private labs have one more (two of them must not pick the same free ports).

Service locks. A lane keeps a system's tests in order, but some tests reach across lanes: a
Kafka scenario with an idempotent consumer uses Redis while a test elsewhere kills Redis, and
the Kafka fault lane runs beside the Kafka lane. So each test also holds a lock per service it
is marked with, *shared* to use the service and *exclusive* when it is marked ``lab`` (it
breaks the service: kills, pauses or cuts it). While a Kafka fault test has a broker down, no
other Kafka test runs; while nothing breaks Kafka, every Kafka user runs freely. The locks are
taken before the reachability probe, so a test never sees a broker that another test has
broken on purpose. Without xdist the tests run one at a time and the locks are never contended.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from mqlab.lab.endpoints import HOST, KAFKA_BROKER_IDS, Endpoints, port
from mqlab.lab.errors import LabError

if TYPE_CHECKING:
    from mqlab.lab.supervisor import Lab

# marker -> the public ports that must accept connections
SERVICE_PORTS: dict[str, tuple[str, ...]] = {
    "kafka": tuple(f"kafka_broker_{i}" for i in KAFKA_BROKER_IDS),
    "rabbitmq": ("rabbitmq", "rabbitmq_management"),
    "sqs": ("sqs",),
    "nats": ("nats",),
    "redis": ("redis",),
    "postgres": ("postgres",),
    "toxiproxy": ("toxiproxy_api",),
}

# The message brokers, each with a lane of its own. Redis, PostgreSQL and Toxiproxy answer in
# microseconds and serve every lane; their tests go wherever a worker is free.
SYSTEM_LANES = ("kafka", "rabbitmq", "sqs", "nats")
KAFKA_FAULT_LANE = "kafka-faults"
# Kafka is the longest way through the suite (its fault tests exclude every other Kafka test),
# so the rest of its tests take two lanes: the scenario library, and everything else.
KAFKA_LIBRARY_LANE = "kafka-library"
KAFKA_LIBRARY_MODULE = "tests/scenarios/test_library_real.py"
PRIVATE_LAB_LANE = "lab"

_reachable: set[str] = set()


def _unreachable_port(service: str) -> str | None:
    """None when every port of ``service`` accepts a TCP connection, else a description.

    Only success is remembered: a service found down is probed again by the next test, so one
    unlucky probe does not fail every later test of the worker.
    """
    if service in _reachable:
        return None
    for name in SERVICE_PORTS[service]:
        try:
            with socket.create_connection((HOST, port(name)), timeout=1.0):
                pass
        except OSError:
            return f"{name} ({HOST}:{port(name)})"
    _reachable.add(service)
    return None


def brokers_required() -> bool:
    """True in CI (or when asked): a missing broker fails instead of skipping."""
    return bool(os.environ.get("CI")) or os.environ.get("MQLAB_REQUIRE_BROKERS") == "1"


# --- lanes ----------------------------------------------------------------------------------


def lane_of(markers: set[str], module: str = "") -> str | None:
    """The xdist lane of a test with these markers, in this module (its path from the repo
    root); None: any worker may run it.

    A test that breaks Kafka goes to the Kafka fault lane; any other test of a broker to that
    broker's lane (Kafka's scenario library to a second Kafka lane); a ``lab`` test without a
    broker (a private lab of its own) to the lab lane.
    """
    if "kafka" in markers and "lab" in markers:
        return KAFKA_FAULT_LANE
    if "kafka" in markers and module == KAFKA_LIBRARY_MODULE:
        return KAFKA_LIBRARY_LANE
    for system in SYSTEM_LANES:
        if system in markers:
            return system
    if "lab" in markers:
        return PRIVATE_LAB_LANE
    return None


def needs_more_than_sim(markers: set[str]) -> list[str]:
    """The lab markers a ``sim`` test also carries (it should carry none): ``-m sim`` is the
    selection that needs no lab and takes no lab lock, so a test that kills a Kafka broker must
    not be in it (a module-wide ``pytestmark = sim`` once put two there)."""
    if "sim" not in markers:
        return []
    return sorted(markers & (SERVICE_PORTS.keys() | {"lab"}))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: before xdist's own hook turns the xdist_group marks into scheduling groups.
    mislabelled = [
        f"{item.nodeid} ({', '.join(extra)})"
        for item in items
        if (extra := needs_more_than_sim({marker.name for marker in item.iter_markers()}))
    ]
    if mislabelled:
        raise pytest.UsageError(
            "marked sim and also needing the lab: " + "; ".join(mislabelled[:5])
        )
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        lane = lane_of({marker.name for marker in item.iter_markers()}, module)
        if lane is not None:
            item.add_marker(pytest.mark.xdist_group(lane))


# --- service locks --------------------------------------------------------------------------


def service_locks(markers: set[str]) -> list[tuple[str, bool]]:
    """(service, exclusive) for every lock a test with these markers holds, in lock order.

    A ``lab`` test breaks the services it is marked with, so it holds them exclusively; the one
    exception is Toxiproxy itself, which such a test only asks to cut *its* broker's proxy.
    Locks are always taken in the same (sorted) order, so two tests never wait for each other.
    """
    breaks = "lab" in markers
    return [
        (service, breaks and service != "toxiproxy")
        for service in sorted(markers & SERVICE_PORTS.keys())
    ]


class ServiceLock:
    """A lock shared between xdist workers: many holders share it, one excludes all.

    Two ``flock`` files per service. The *turnstile* is taken briefly by everyone on the way in,
    and held by a writer while it waits for the readers to leave, so a stream of shared holders
    (the Kafka lane, test after test) cannot keep an exclusive one (a Kafka fault test) waiting
    for ever.
    """

    def __init__(self, directory: Path, service: str) -> None:
        self.turnstile = directory / f"{service}.turnstile"
        self.resource = directory / f"{service}.lock"

    @contextlib.contextmanager
    def held(self, exclusive: bool) -> Iterator[None]:
        resource = os.open(self.resource, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            turnstile = os.open(self.turnstile, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(turnstile, fcntl.LOCK_EX)
                fcntl.flock(resource, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            finally:
                os.close(turnstile)  # closing releases the turnstile
            yield
        finally:
            os.close(resource)  # and this releases the resource


# Where the lock files live: made by the controlling pytest process before it starts its xdist
# workers (they inherit the environment variable), removed by it at the end.
LOCK_DIRECTORY_VARIABLE = "MQLAB_TEST_SERVICE_LOCKS"


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    # Started in the background by a shell without job control (`cmd &` in a script), the
    # suite inherits SIGINT ignored, and so would every process it starts: a Python started
    # that way never raises KeyboardInterrupt, and every Ctrl-C test fails. Catching it here
    # gives the children the default action back (exec resets a caught signal).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _is_xdist_worker(config):
        return
    directory = tempfile.mkdtemp(prefix="mqlab-service-locks-")
    config.stash[_lock_directory_key] = Path(directory)
    os.environ[LOCK_DIRECTORY_VARIABLE] = directory


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_lock_directory_key, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop(LOCK_DIRECTORY_VARIABLE, None)


_lock_directory_key = pytest.StashKey[Path]()

T = TypeVar("T")


def computed_once(name: str, compute: Callable[[], T]) -> T:
    """``compute()`` once per pytest run, its value shared by every xdist worker.

    A module-scoped fixture runs once per *worker* that gets one of its module's tests, and
    xdist hands a module's tests to whichever workers are free: with seven workers the
    retry-contention experiment (six seconds of CPU) ran four to seven times. The first worker
    to get here computes the value and leaves it, pickled, in the run's lock directory; the
    others wait on the same ``flock`` and read it. Without a lock directory (a run that
    did not go through this conftest's set-up) it simply computes.
    """
    directory = os.environ.get(LOCK_DIRECTORY_VARIABLE)
    if not directory:
        return compute()
    stored = Path(directory) / f"{name}.pickle"
    descriptor = os.open(Path(directory) / f"{name}.compute", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if stored.exists():
            value: T = pickle.loads(stored.read_bytes())
            return value
        value = compute()
        partial = stored.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(value))
        partial.replace(stored)  # whole or absent, even if this worker dies while writing
        return value
    finally:
        os.close(descriptor)  # closing releases the lock


_held_for_item = pytest.StashKey[contextlib.ExitStack]()
_healthy_before = pytest.StashKey[tuple[list[str], set[str]]]()


# --- a test that breaks a service leaves it as it found it -----------------------------------

# The lab's main services: what a `lab` test may break (its private labs are its own business).
BREAKABLE = ("kafka", "rabbitmq", "sqs", "nats", "redis", "postgres")


def healthy_processes(services: list[str], lab: Lab | None = None) -> set[str]:
    """The processes of ``services`` that are healthy now."""
    from mqlab.lab.supervisor import Lab

    return {
        row.process
        for row in (lab or Lab()).status()
        if row.service in services and row.health == "healthy"
    }


def repair(services: list[str], healthy_before: set[str], lab: Lab | None = None) -> list[str]:
    """Put back what a test broke and did not repair: resume, restart, clear the proxies of
    ``services``. Returns what was found broken, for the error that names the test."""
    from mqlab.lab import faults
    from mqlab.lab.supervisor import Lab

    lab = lab or Lab()
    repaired = []
    for row in lab.status():
        if row.process not in healthy_before or row.health == "healthy":
            continue
        if row.health.startswith("unhealthy"):
            continue  # running but slow to answer the probe: not a fault left behind
        if row.health == "paused":
            faults.resume(row.process, lab)
        else:
            faults.restart(row.process, lab)
        repaired.append(f"{row.process} was {row.health}")
    toxics = faults.Toxics(lab=lab)
    for name, proxy in toxics.proxies().items():
        try:
            service = lab.proxy_spec(name).service
        except LabError:  # a proxy the lab does not know: not ours to touch
            continue
        if service in services and (proxy.get("toxics") or proxy.get("enabled") is False):
            toxics.clear(name)
            repaired.append(f"proxy {name} was cut or had toxics")
    return repaired


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    markers = {marker.name for marker in item.iter_markers()}
    directory = os.environ.get(LOCK_DIRECTORY_VARIABLE)
    locks = service_locks(markers)
    if directory:
        stack = contextlib.ExitStack()
        item.stash[_held_for_item] = stack
        for service, exclusive in locks:
            stack.enter_context(ServiceLock(Path(directory), service).held(exclusive))
    for service in sorted(markers & SERVICE_PORTS.keys()):
        problem = _unreachable_port(service)
        if problem is None:
            continue
        message = f"{service} is not reachable at {problem} (run: mqlab lab up {service})"
        if brokers_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    broken_on_purpose = [s for s, exclusive in locks if exclusive and s in BREAKABLE]
    if broken_on_purpose:
        item.stash[_healthy_before] = (
            broken_on_purpose,
            healthy_processes(broken_on_purpose),
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    repaired: list[str] = []
    try:
        yield
        # A test that broke a service must leave it as it found it. One that did not (its
        # clean-up died with the process that was to run it) is repaired here, while it still
        # holds the service, and reported, instead of failing every test that comes after it.
        before = item.stash.get(_healthy_before, None)
        if before is not None:
            repaired = repair(*before)
    finally:
        # After every fixture of the test is torn down: its clean-up still uses the services.
        stack = item.stash.get(_held_for_item, None)
        if stack is not None:
            stack.close()
    if repaired:
        pytest.fail(f"left the lab broken, repaired after it: {'; '.join(repaired)}", pytrace=False)


@pytest.fixture(scope="session")
def endpoints() -> Endpoints:
    """The lab's client endpoints (honours MQLAB_PORT_OFFSET / MQLAB_PORT_<NAME>)."""
    return Endpoints.local()
