"""Retry under contention: the experiment behind "use jitter".

N clients start at the same instant and each makes *one* optimistic-concurrency write to the
same row: read the row's version, then ``UPDATE ... WHERE version = <what I read>``. Exactly
one of the writes that raced on a version wins; the others see "0 rows changed" (a version
conflict, a transient error), back off by their strategy's delay and try again (read, then
write). The strategies are compared by the work they cause (calls to the database) and by
how long the whole group takes (the completion time: when the last client's write landed and
its answer was back).

The network model is the same wherever the row lives: every request (a read or a write)
takes a delay drawn from ``|Normal(mean, sd)|``; the database acts on it halfway (after
``delay / 2``) and the answer is back after the other half. A client sends its write as soon
as its read's answer arrives; after a conflict it waits its backoff delay and starts over with
a read. So a write conflicts exactly when another client's write landed between this
client's read and its write.

Three ways to run it, one model:

- :func:`simulate_trial`: a plain discrete-event loop over the row (a heap of "request
  reaches the database" events). No asyncio, no tasks: thousands of trials in seconds, the
  same numbers for the same seed. This is what ``mqlab retries contention`` runs on ``sim``.
- :func:`run_trial` with a :class:`MemoryRow`: the clients as asyncio tasks that use
  :func:`mqlab.patterns.retry.retry` (observations included) against a row in memory. On the
  simulator's virtual loop (``mqlab.brokers.sim.clock.run_virtual``) it is deterministic per
  seed and costs no wall time; a scenario step or a lesson calls it with a bus, the virtual
  clock and a seed to show one trial's retries on the timeline.
- :func:`run_trial` with ``PostgresRow`` (:mod:`mqlab.patterns.contention_postgres`): the
  same clients against a real row in the lab's PostgreSQL, in real time, one connection per
  client, the rowcount of the real ``UPDATE`` deciding.

Every conflict is caused by another client's successful write, and there are only N of
those, so every trial ends (no livelock) even without any back-off.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import statistics
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from mqlab.patterns.harness import loop_clock
from mqlab.patterns.retry import (
    Backoff,
    ErrorClass,
    RetryError,
    RetryPolicy,
    Strategy,
    TransientError,
    retry,
)

if TYPE_CHECKING:
    from mqlab.observe.bus import ObservationBus

ALL_STRATEGIES: tuple[Strategy, ...] = (
    Strategy.NONE,
    Strategy.EXPONENTIAL,
    Strategy.FULL_JITTER,
    Strategy.EQUAL_JITTER,
    Strategy.DECORRELATED_JITTER,
)


@dataclass(frozen=True, slots=True)
class ContentionSettings:
    """One experiment's parameters (seconds throughout).

    Attributes:
        clients: how many clients race for the row (each makes one write).
        base: the backoff's base delay.
        cap: the backoff's cap.
        delay_mean: the mean network delay of one request (a read or a write).
        delay_sd: its standard deviation (the draw is ``|Normal(mean, sd)|``).

    Raises:
        ValueError: (on construction) fewer than one client, a negative or non-finite time,
            a cap below the base.
    """

    clients: int
    base: float
    cap: float
    delay_mean: float
    delay_sd: float

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError(f"clients must be at least 1 (got {self.clients})")
        for name in ("base", "cap", "delay_mean", "delay_sd"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite, non-negative number (got {value})")
        if self.cap < self.base:
            raise ValueError(f"cap ({self.cap}) must not be smaller than base ({self.base})")

    def backoff(self, strategy: Strategy) -> Backoff:
        """``strategy`` with this experiment's base and cap."""
        return Backoff(strategy, self.base, self.cap)

    def network_delay(self, rng: random.Random) -> float:
        """One request's network delay: ``|Normal(delay_mean, delay_sd)|``."""
        return abs(rng.gauss(self.delay_mean, self.delay_sd))


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What one trial of the experiment cost.

    Attributes:
        strategy: the backoff every client used.
        clients: how many clients wrote.
        calls: requests sent to the database (reads plus writes).
        conflicts: writes that lost the race (``0 rows changed``).
        completion: seconds from the start until the last client had its write confirmed.
        mean_client_completion: the same per client, averaged.
        final_version: the row's version at the end (every client wrote once: ``clients``).
    """

    strategy: Strategy
    clients: int
    calls: int
    conflicts: int
    completion: float
    mean_client_completion: float
    final_version: int


def trial_rng(seed: int, strategy: Strategy, clients: int, run: int) -> random.Random:
    """The random source of one trial: network delays and jitter both come from it.

    Seeded by a string so that each (seed, strategy, clients, run) has its own stream,
    independent of the other trials and of Python's hash randomisation.
    """
    return random.Random(f"contention:{seed}:{strategy.value}:{clients}:{run}")


# --- the discrete-event model ---------------------------------------------------------------

_READ = 0
_WRITE = 1


def simulate_trial(
    strategy: Strategy, settings: ContentionSettings, rng: random.Random
) -> TrialResult:
    """One trial on a discrete-event model of the row (no asyncio; deterministic per ``rng``).

    Each heap entry is a request reaching the database: ``(time, sequence, client, kind,
    version read, time the answer takes back)``. The sequence number breaks ties in the
    order requests were sent, so equal times never depend on anything but the seed.
    """
    backoff = settings.backoff(strategy)
    # settings.network_delay, inlined: this loop runs millions of times per experiment.
    gauss = rng.gauss
    mean, sd = settings.delay_mean, settings.delay_sd
    clients = settings.clients
    version = 0
    calls = 0
    conflicts = 0
    sequence = 0
    retries = [0] * clients
    previous_delay: list[float | None] = [None] * clients
    done_at = [0.0] * clients
    events: list[tuple[float, int, int, int, int, float]] = []
    for client in range(clients):
        delay = abs(gauss(mean, sd))
        events.append((delay / 2, sequence, client, _READ, 0, delay / 2))
        sequence += 1
    heapq.heapify(events)
    calls = clients
    while events:
        at, _, client, kind, seen, way_back = heapq.heappop(events)
        if kind == _READ:
            # The answer (the version) is back at the client after way_back; it sends the
            # conditional write at once.
            delay = abs(gauss(mean, sd))
            arrives = at + way_back + delay / 2
            heapq.heappush(events, (arrives, sequence, client, _WRITE, version, delay / 2))
        elif seen == version:
            version += 1
            done_at[client] = at + way_back
            continue
        else:
            conflicts += 1
            wait = backoff.delay(retries[client], previous_delay[client], rng)
            previous_delay[client] = wait
            retries[client] += 1
            delay = abs(gauss(mean, sd))
            arrives = at + way_back + wait + delay / 2
            heapq.heappush(events, (arrives, sequence, client, _READ, 0, delay / 2))
        sequence += 1
        calls += 1
    return TrialResult(
        strategy=strategy,
        clients=clients,
        calls=calls,
        conflicts=conflicts,
        completion=max(done_at),
        mean_client_completion=statistics.fmean(done_at),
        final_version=version,
    )


# --- the same clients as asyncio tasks, on any row ------------------------------------------


class RowVersionConflict(TransientError):
    """The conditional write changed no row: another client wrote since this one read."""


def _only_conflicts_are_transient(error: Exception) -> ErrorClass:
    """The experiment retries lost races, nothing else: with no retry limit, retrying a
    database that went away would never end."""
    return ErrorClass.TRANSIENT if isinstance(error, RowVersionConflict) else ErrorClass.PERMANENT


class SharedRow(Protocol):
    """The one row the clients race for, reached separately by each client (its connection).

    ``client`` is the client's index, from 0; a row backed by a database gives each client its
    own connection, so the clients' requests really run concurrently.
    """

    async def read(self, client: int) -> int:
        """The row's current version."""
        ...

    async def write(self, client: int, seen: int) -> bool:
        """Increment the version if it is still ``seen``; True if this write changed the row."""
        ...


class MemoryRow:
    """The row in memory: reads and conditional writes take no time of their own (the
    network delay is the trial's), so on the virtual loop it is the discrete-event model."""

    def __init__(self) -> None:
        self.version = 0
        self.writers: list[int] = []
        """Who wrote, in order (one entry per successful write)."""

    async def read(self, client: int) -> int:
        return self.version

    async def write(self, client: int, seen: int) -> bool:
        if self.version != seen:
            return False
        self.version += 1
        self.writers.append(client)
        return True


async def run_trial(
    row: SharedRow,
    strategy: Strategy,
    settings: ContentionSettings,
    rng: random.Random,
    *,
    bus: ObservationBus | None = None,
    broker: str = "contention",
    clock: Callable[[], float] = loop_clock,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> TrialResult:
    """One trial with the clients as tasks, each writing once through :func:`retry`.

    The row is reached through ``row`` (in memory or a real database); the network delay is
    waited here, half before the request and half after, so every row gets the same model.
    With a ``bus`` every client's calls, delays and (never expected) give-up are observations
    named ``client-<n>``. ``final_version`` is read back from the row.
    """
    policy = RetryPolicy(backoff=settings.backoff(strategy), max_retries=None)
    started = clock()
    calls = 0
    conflicts = 0
    done_at = [0.0] * settings.clients

    async def request(action: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal calls
        calls += 1
        delay = settings.network_delay(rng)
        await sleep(delay / 2)
        answer = await action()
        await sleep(delay / 2)
        return answer

    async def client(index: int) -> None:
        async def write_once() -> None:
            nonlocal conflicts
            seen: int = await request(lambda: row.read(index))
            if not await request(lambda: row.write(index, seen)):
                conflicts += 1
                raise RowVersionConflict(f"version {seen} was already written by another client")

        await retry(
            write_once,
            policy,
            name=f"client-{index}",
            bus=bus,
            broker=broker,
            clock=clock,
            sleep=sleep,
            rng=rng,
            classify=_only_conflicts_are_transient,
        )
        done_at[index] = clock() - started

    try:
        async with asyncio.TaskGroup() as group:
            for index in range(settings.clients):
                group.create_task(client(index))
    except ExceptionGroup as failed:
        # A client gave up: the row's own error (a lost connection) is what the caller can
        # act on; the other clients were cancelled by the task group.
        gave_up = [e for e in failed.exceptions if isinstance(e, RetryError)]
        if gave_up:
            raise gave_up[0].last_error from failed
        raise
    return TrialResult(
        strategy=strategy,
        clients=settings.clients,
        calls=calls,
        conflicts=conflicts,
        completion=max(done_at),
        mean_client_completion=statistics.fmean(done_at),
        final_version=await row.read(0),
    )


# --- many trials, summarised ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StrategySummary:
    """The mean cost of one strategy at one client count, over ``runs`` trials.

    Attributes:
        strategy: the backoff strategy.
        clients: the client count.
        runs: how many trials the means are over.
        mean_calls: requests to the database per trial (reads plus writes).
        mean_conflicts: lost writes per trial.
        mean_completion: seconds until the last client's write was confirmed, per trial.
        p95_completion: the 95th percentile of that completion time.
        mean_client_completion: seconds until a client's write was confirmed, averaged over
            clients and trials.
    """

    strategy: Strategy
    clients: int
    runs: int
    mean_calls: float
    mean_conflicts: float
    mean_completion: float
    p95_completion: float
    mean_client_completion: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``mqlab retries contention --json`` (times in milliseconds)."""
        return {
            "strategy": self.strategy.value,
            "clients": self.clients,
            "runs": self.runs,
            "mean_calls": round(self.mean_calls, 3),
            "mean_conflicts": round(self.mean_conflicts, 3),
            "mean_completion_ms": round(self.mean_completion * 1000, 3),
            "p95_completion_ms": round(self.p95_completion * 1000, 3),
            "mean_client_completion_ms": round(self.mean_client_completion * 1000, 3),
        }


def summarize(results: Sequence[TrialResult]) -> StrategySummary:
    """The means of trials of one strategy at one client count.

    Raises:
        ValueError: no results, or results of different strategies or client counts.
    """
    if not results:
        raise ValueError("no trials to summarise")
    first = results[0]
    if any(r.strategy != first.strategy or r.clients != first.clients for r in results):
        raise ValueError("trials of different strategies or client counts")
    completions = sorted(r.completion for r in results)
    p95_index = min(len(completions) - 1, math.ceil(0.95 * len(completions)) - 1)
    return StrategySummary(
        strategy=first.strategy,
        clients=first.clients,
        runs=len(results),
        mean_calls=statistics.fmean(r.calls for r in results),
        mean_conflicts=statistics.fmean(r.conflicts for r in results),
        mean_completion=statistics.fmean(completions),
        p95_completion=completions[p95_index],
        mean_client_completion=statistics.fmean(r.mean_client_completion for r in results),
    )


class ExperimentOptions(TypedDict):
    """What an experiment takes besides its strategies and client counts, the same on the
    model (:func:`simulate`) and on PostgreSQL
    (:func:`~mqlab.patterns.contention_postgres.run_postgres`); seconds throughout."""

    runs: int
    """Trials per strategy and client count (at least 1)."""
    seed: int
    """Seed of every trial's random source (see :func:`trial_rng`)."""
    base: float
    """The backoff's base delay."""
    cap: float
    """The backoff's cap (not below ``base``)."""
    delay_mean: float
    """The mean network delay of one request."""
    delay_sd: float
    """Its standard deviation."""


def experiment_settings(
    client_counts: Iterable[int], options: ExperimentOptions
) -> list[ContentionSettings]:
    """One :class:`ContentionSettings` per client count, checked before any trial runs.

    Raises:
        ValueError: bad settings (see :class:`ContentionSettings`) or fewer than one run.
    """
    if options["runs"] < 1:
        raise ValueError(f"runs must be at least 1 (got {options['runs']})")
    return [
        ContentionSettings(
            clients, options["base"], options["cap"], options["delay_mean"], options["delay_sd"]
        )
        for clients in client_counts
    ]


def simulate(
    strategies: Iterable[Strategy],
    client_counts: Iterable[int],
    **options: Unpack[ExperimentOptions],
) -> list[StrategySummary]:
    """The experiment on the discrete-event model: ``options["runs"]`` trials per strategy
    and client count, summarised; ordered by client count, then strategy as given.

    Raises:
        ValueError: bad settings (see :func:`experiment_settings`).
    """
    chosen = tuple(strategies)
    seed = options["seed"]
    summaries: list[StrategySummary] = []
    for settings in experiment_settings(client_counts, options):
        for strategy in chosen:
            results = [
                simulate_trial(strategy, settings, trial_rng(seed, strategy, settings.clients, run))
                for run in range(options["runs"])
            ]
            summaries.append(summarize(results))
    return summaries


@dataclass(frozen=True, slots=True)
class Ranking:
    """Which strategy did least work and which finished first at one client count."""

    clients: int
    by_calls: tuple[Strategy, ...]
    """Fewest mean calls first."""
    by_completion: tuple[Strategy, ...]
    """Shortest mean completion time first."""


def rank(summaries: Iterable[StrategySummary]) -> list[Ranking]:
    """Rank the strategies per client count (the statement the docs make, computed)."""
    by_clients: dict[int, list[StrategySummary]] = {}
    for summary in summaries:
        by_clients.setdefault(summary.clients, []).append(summary)
    return [
        Ranking(
            clients=clients,
            by_calls=tuple(s.strategy for s in sorted(group, key=lambda s: s.mean_calls)),
            by_completion=tuple(s.strategy for s in sorted(group, key=lambda s: s.mean_completion)),
        )
        for clients, group in by_clients.items()
    ]
