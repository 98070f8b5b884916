"""Pattern programs: the pattern library packaged as runnable steps for scenarios and lessons.

A scenario's ``pattern:`` step names a program (``order-saga``, ``idempotent-consumer`` ...)
and gives it parameters and, optionally, a crash point. A program is an async function of a
:class:`ProgramContext`: it builds the pattern's stores (the lab's PostgreSQL and Redis on a
real run, in-memory stand-ins on the simulator), runs the pattern with the context's crash
hook, and everything it does is reported on the run's bus, where the ledger folds it.

Programs are registered by family in the modules of this package and found lazily by id
(:func:`find_program`), with a "did you mean" for a wrong id and a check of every parameter
(:meth:`Program.problems`), so a scenario with a misspelt program or parameter is refused when
it loads, not half-way through a run.
"""

from __future__ import annotations

import difflib
import importlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import JsonValue

from mqlab.patterns.harness import CrashHook, Reporter, no_crash

if TYPE_CHECKING:
    from mqlab.lab.endpoints import Endpoints
    from mqlab.patterns.database import BusinessDatabase, ReportingDatabase
    from mqlab.patterns.event_sourcing import EventStore
    from mqlab.patterns.idempotency import DedupStore
    from mqlab.patterns.saga import SagaLog


class _Store(Protocol):
    """What :meth:`ProgramContext._run_store` needs of a store: it can be set up."""

    async def setup(self) -> None: ...


StoreT = TypeVar("StoreT", bound=_Store)

PROGRAM_MODULES = (
    "mqlab.patterns.programs.retries",
    "mqlab.patterns.programs.idempotency",
    "mqlab.patterns.programs.sagas",
    "mqlab.patterns.programs.event_sourcing",
    "mqlab.patterns.programs.delivery",
    "mqlab.patterns.programs.outbox",
)
"""The modules that register programs (imported on first lookup)."""


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a program."""

    kinds: tuple[type, ...]
    """The JSON types it accepts (``(int,)``, ``(str,)``, ``(dict,)`` ...)."""
    default: JsonValue
    doc: str
    choices: tuple[str, ...] = ()
    """For a string: the values it may take (empty: any)."""


@dataclass(frozen=True, slots=True)
class Program:
    """A runnable pattern.

    Attributes:
        id: what a ``pattern:`` step names.
        summary: one line for ``mqlab scenarios programs``.
        run: the program itself.
        params: its parameters by name.
        crash_points: the points its crash hook is called at (what ``crash.point`` may name).
        services: what a real run needs from the lab (``postgres``, ``redis``).
    """

    id: str
    summary: str
    run: Callable[[ProgramContext], Awaitable[None]]
    params: Mapping[str, Param] = field(default_factory=dict)
    crash_points: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def problems(self, params: Mapping[str, JsonValue], crash_point: str | None) -> list[str]:
        """Everything wrong with a step's parameters and crash point (empty: fine)."""
        found: list[str] = []
        for name, value in params.items():
            spec = self.params.get(name)
            if spec is None:
                close = difflib.get_close_matches(name, self.params, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                known = ", ".join(self.params) or "none"
                found.append(f"{self.id} has no parameter {name!r} ({hint}parameters: {known})")
                continue
            if (isinstance(value, bool) and bool not in spec.kinds) or not isinstance(
                value, spec.kinds
            ):
                found.append(f"{self.id}.{name}: must be {_kinds(spec.kinds)}, got {value!r}")
            elif spec.choices and value is not None and value not in spec.choices:
                found.append(f"{self.id}.{name}: {value!r} is not one of {', '.join(spec.choices)}")
        if crash_point is not None and crash_point not in self.crash_points:
            points = ", ".join(self.crash_points) or "none"
            found.append(f"{self.id} has no crash point {crash_point!r} (points: {points})")
        return found

    def with_defaults(self, params: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
        """The parameters a run uses: the step's, and the defaults for the rest."""
        return {name: params.get(name, spec.default) for name, spec in self.params.items()}


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false",
             dict: "a mapping", list: "a list"}  # fmt: skip
    return " or ".join(names.get(kind, kind.__name__) for kind in kinds)


_PROGRAMS: dict[str, Program] = {}


ProgramFunction = Callable[["ProgramContext"], Awaitable[None]]


def program(
    id: str,
    summary: str,
    *,
    params: Mapping[str, Param] | None = None,
    crash_points: tuple[str, ...] = (),
    services: tuple[str, ...] = (),
) -> Callable[
    [Callable[[ProgramContext], Awaitable[None]]], Callable[[ProgramContext], Awaitable[None]]
]:
    """Register the decorated function as the program ``id``."""

    def register(
        run: Callable[[ProgramContext], Awaitable[None]],
    ) -> Callable[[ProgramContext], Awaitable[None]]:
        _PROGRAMS[id] = Program(id, summary, run, dict(params or {}), crash_points, services)
        return run

    return register


def all_programs() -> dict[str, Program]:
    """Every registered program by id."""
    for module in PROGRAM_MODULES:
        importlib.import_module(module)
    return dict(_PROGRAMS)


class UnknownProgram(KeyError):
    """No program has that id; ``str()`` suggests the closest."""

    def __str__(self) -> str:
        return str(self.args[0])


def find_program(program_id: str) -> Program:
    """The program ``program_id``.

    Raises:
        UnknownProgram: with a "did you mean" and the known ids.
    """
    programs = all_programs()
    if program_id in programs:
        return programs[program_id]
    close = difflib.get_close_matches(program_id, programs, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownProgram(
        f"no pattern program {program_id!r} ({hint}programs: {', '.join(sorted(programs))})"
    )


@dataclass
class ProgramContext:
    """What a program runs with.

    Attributes:
        reporter: emits observations on the run's bus (source: ``postgres``, ``sim:postgres``
            ... the store the program works against).
        params: the step's parameters, defaults filled in.
        simulated: in-memory stand-ins (and the virtual clock) instead of the lab's services.
        seed: the run's seed; ``rng`` is seeded from it and the step's position.
        namespace: the run's namespace (PostgreSQL schema, Redis key prefix).
        endpoints: the lab's addresses (real runs).
        crash: the step's crash hook (no crash when the step names none).
        broker: the run's broker adapter when the scenario has a broker (an outbox publishes
            through it), else None. In a worker process (a real run with a crash) it is the
            worker's own adapter on the run's namespace, so a SIGKILL takes its connections.
        channel: the scenario's channel name (unqualified: the adapter qualifies it), where
            a program consumes what the scenario produced, or publishes.
        shared: state that outlives one step within a run: the simulator's stores live here,
            so a recovery step finds what the crashed step left behind.
    """

    reporter: Reporter
    params: dict[str, JsonValue]
    simulated: bool
    seed: int
    namespace: str
    endpoints: Endpoints
    crash: CrashHook = no_crash
    broker: object | None = None
    channel: str = "orders"
    shared: dict[str, Any] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def int_param(self, name: str) -> int:
        """A whole-number parameter (validated on load)."""
        value = self.params[name]
        assert isinstance(value, int)
        return value

    def float_param(self, name: str) -> float:
        """A number parameter."""
        value = self.params[name]
        assert isinstance(value, int | float)
        return float(value)

    def str_param(self, name: str) -> str:
        """A text parameter."""
        value = self.params[name]
        assert isinstance(value, str)
        return value

    def optional_str(self, name: str) -> str | None:
        """A text parameter that may be null."""
        value = self.params[name]
        return value if isinstance(value, str) else None

    def store_name(self, service: str) -> str:
        """What observations call a store standing for ``service`` (``sim:postgres``)."""
        return f"sim:{service}" if self.simulated else service

    async def _run_store(
        self, key: str, simulated: Callable[[], StoreT], real: Callable[[], StoreT]
    ) -> StoreT:
        """The store this run keeps under ``key`` in :attr:`shared`, made and set up on first
        use: ``simulated()`` on the simulator, ``real()`` (the lab's service) otherwise."""
        found: StoreT | None = self.shared.get(key)
        if found is None:
            found = simulated() if self.simulated else real()
            await found.setup()
            self.shared[key] = found
        return found

    async def database(self) -> ReportingDatabase:
        """The run's business database (the same tables for every step of the run), with
        every committed business write reported as an ``EffectApplied`` on this context's
        reporter; its ``inner`` writes without reporting (opening balances)."""
        from mqlab.patterns.database import MemoryDatabase, PostgresDatabase, ReportingDatabase

        found: BusinessDatabase = await self._run_store(
            "database",
            lambda: MemoryDatabase(name=self.store_name("postgres"), namespace=self.namespace),
            lambda: PostgresDatabase(self.endpoints.postgres_dsn, self.namespace),
        )
        return ReportingDatabase(found, self.reporter)

    async def saga_log(self) -> SagaLog:
        """The run's saga log (PostgreSQL on the lab, memory on the simulator)."""
        from mqlab.patterns.saga import MemorySagaLog
        from mqlab.patterns.saga_log_postgres import PostgresSagaLog

        log: SagaLog = await self._run_store(
            "saga_log",
            lambda: MemorySagaLog(name=self.store_name("postgres")),
            lambda: PostgresSagaLog(self.endpoints.postgres_dsn, self.namespace),
        )
        return log

    async def event_store(self) -> EventStore:
        """The run's event store (PostgreSQL on the lab, memory on the simulator)."""
        from mqlab.patterns.event_sourcing import MemoryEventStore
        from mqlab.patterns.event_store_postgres import PostgresEventStore

        store: EventStore = await self._run_store(
            "event_store",
            lambda: MemoryEventStore(name=self.store_name("postgres")),
            lambda: PostgresEventStore(self.endpoints.postgres_dsn, self.namespace),
        )
        return store

    async def dedup_store(self, ttl: float | None) -> DedupStore:
        """The run's dedup store with ``ttl`` (Redis on the lab, memory on the simulator)."""
        from mqlab.patterns.idempotency import MemoryDedupStore, RedisDedupStore

        key = f"dedup:{ttl}"
        found = self.shared.get(key)
        if found is None:
            if self.simulated:
                found = MemoryDedupStore(ttl=ttl, name=self.store_name("redis"))
            else:
                found = RedisDedupStore(
                    self.endpoints.redis_url, f"{self.namespace}:dedup", ttl or 86_400
                )
            self.shared[key] = found
        return found


async def close_shared(shared: dict[str, Any]) -> None:
    """Close the stores a run's programs opened (best effort: the run is ending)."""
    for store in shared.values():
        close = getattr(store, "close", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:  # closing at the end of a run must not hide its result
            continue
