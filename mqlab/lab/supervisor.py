"""The supervisor: starts the lab's services as local processes, waits for them to be healthy,
reports on them, and stops exactly what it started.

What makes it safe to run on a learner's machine:

- every process gets a pid record (pid + kernel start time + command, see
  :mod:`mqlab.lab.process`); ``down`` only ever signals a pid whose start time still matches;
- ports are checked before a start, and a taken port is reported with its owner;
- a process that does not become healthy in time is stopped again and its log tail shown;
- Ctrl-C during ``up`` stops what that ``up`` had started;
- one ``fcntl`` lock per state dir (:mod:`mqlab.lab.lock`) serialises ``mqlab lab``
  commands, so two of them never start the same server twice.

Progress goes to the ``mqlab.lab`` logger (the CLI prints it); errors a learner can fix are
:class:`LabError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import TypeVar

from mqlab.lab import process as proc
from mqlab.lab.endpoints import HOST
from mqlab.lab.errors import LabError
from mqlab.lab.lock import state_dir_lock
from mqlab.lab.paths import lab_paths
from mqlab.lab.process import ProcessRecord
from mqlab.lab.services import SERVICE_PATHS, SERVICES, resolve_service_name
from mqlab.lab.spec import LabPaths, ProcessSpec, ProxySpec, Service

__all__ = ["Lab", "LabError", "LabInterrupted", "ProcessStatus"]

log = logging.getLogger("mqlab.lab")

TOXIPROXY = "toxiproxy"
# Seconds one `lab status` probe may take: a paused or wedged server must not stall the table.
STATUS_PROBE_TIMEOUT = 1.0
_LOG_TAIL_LINES = 20
_Spec = TypeVar("_Spec", ProcessSpec, ProxySpec)


class _Cancelled(Exception):
    """Raised in an ``up`` worker thread after Ctrl-C; the main thread cleans up."""


class LabInterrupted(LabError):
    """Ctrl-C during ``up``: what that call had started has been stopped again."""


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One row of ``mqlab lab status`` (and of what ``up`` did).

    Attributes:
        address: where clients connect: the proxy's address for a proxied broker, otherwise
            the process's first port.
        health: "healthy", "unhealthy: <why>", "paused", "killed" (by a fault), "crashed"
            (gone without the lab stopping it), "stopped", or "unavailable: <why>".
        uptime: seconds since the lab started it; None when it is not running.
        action: what the call that produced this row did ("started", "already running").
    """

    service: str
    process: str
    address: str
    pid: int | None
    version: str
    health: str
    uptime: float | None
    action: str = ""

    @property
    def running(self) -> bool:
        """True when the process is alive (healthy, unhealthy or paused)."""
        return (
            self.health == "healthy"
            or self.health.startswith("unhealthy")
            or (self.health == "paused")
        )


class Lab:
    """The local lab of one state dir (``$MQLAB_STATE_DIR`` or the platform state dir).

    Args:
        paths: the lab's directories; :func:`mqlab.lab.paths.lab_paths` by default.
    """

    def __init__(self, paths: LabPaths | None = None) -> None:
        self.paths = paths or lab_paths()
        # Set when Ctrl-C interrupts `up`: service threads stop waiting for health.
        self._cancel = threading.Event()

    # ------------------------------------------------------------------ locking

    def locked(
        self, purpose: str, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Hold the state dir's lock (:func:`mqlab.lab.lock.state_dir_lock`); wait for another
        ``mqlab lab`` command to finish.

        Args:
            purpose: shown to whoever waits for this lock ("up", "fault kill").
            timeout: give up after this many seconds (None: wait as long as it takes).

        Raises:
            LabError: ``timeout`` expired.
        """
        return state_dir_lock(self.paths.state, purpose, timeout)

    # ------------------------------------------------------------------ names

    def _expand(self, services: Sequence[str]) -> list[str]:
        """Resolve names, add dependencies, return them in start order."""
        wanted = (
            {resolve_service_name(name) for name in services} if services else set(SERVICE_PATHS)
        )
        pending = list(wanted)
        while pending:
            name = pending.pop()
            for dependency in SERVICES[name].depends_on:
                if dependency not in wanted:
                    wanted.add(dependency)
                    pending.append(dependency)
        return [name for name in SERVICE_PATHS if name in wanted]

    def process_spec(self, process: str) -> ProcessSpec:
        """The spec of the process called ``process`` (e.g. ``kafka-broker-2``).

        Raises:
            LabError: no service has such a process ("did you mean ...").
        """
        specs = self._every_service(lambda service: service.processes(self.paths))
        return _named(specs, process, "process", "processes")

    def proxy_spec(self, proxy: str) -> ProxySpec:
        """The proxy called ``proxy`` (e.g. ``rabbitmq``, ``kafka-broker-1``).

        Raises:
            LabError: no service has such a proxy ("did you mean ...").
        """
        proxies = self._every_service(lambda service: service.proxies())
        return _named(proxies, proxy, "proxy", "proxies")

    @staticmethod
    def _every_service(specs_of: Callable[[Service], Sequence[_Spec]]) -> list[_Spec]:
        """What ``specs_of`` gives for every service, in start order; a service that cannot
        say (its config is unreadable) is passed over."""
        found: list[_Spec] = []
        for name in SERVICE_PATHS:
            with contextlib.suppress(LabError):
                found.extend(specs_of(SERVICES[name]))
        return found

    # ------------------------------------------------------------------ records

    def record(self, process: str) -> ProcessRecord | None:
        """The pid record of ``process``, None when the lab has not started it."""
        return proc.read_record(self.paths.pid_file(process))

    def records(self) -> list[ProcessRecord]:
        """Every pid record of this lab, oldest start first."""
        run_dir = self.paths.state / "run"
        found = []
        for pid_file in sorted(run_dir.glob("*.json")) if run_dir.is_dir() else []:
            record = proc.read_record(pid_file)
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda record: record.started_at)

    def _write_record(self, record: ProcessRecord) -> None:
        proc.write_atomically(self.paths.pid_file(record.name), record.to_json())

    def _forget(self, process: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.paths.pid_file(process).unlink()

    def mark_killed(self, record: ProcessRecord) -> None:
        """Keep ``record`` but note that a fault killed it (``status`` says "killed")."""
        self._write_record(replace(record, state="killed"))

    # ------------------------------------------------------------------ install

    def missing(self, services: Sequence[str] = ()) -> dict[str, list[str]]:
        """``service -> ["what (fix: command)", ...]`` for what is not installed."""
        result: dict[str, list[str]] = {}
        for name in self._expand(services):
            gaps = SERVICES[name].missing(self.paths)
            if gaps:
                result[name] = [f"{gap.what} (fix: {gap.fix})" for gap in gaps]
        return result

    def install(self, services: Sequence[str] = ()) -> None:
        """Install what the services (and their dependencies) need; what is already there is
        left alone.

        Raises:
            LabError: a step failed or needs root (the message names the command).
        """
        for name in self._expand(services):
            service = SERVICES[name]
            gaps = service.missing(self.paths)
            if not gaps:
                log.info(
                    "%s: already installed %s", name, _parenthesised(service.version(self.paths))
                )
                continue
            log.info("%s: installing %s", name, "; ".join(gap.what for gap in gaps))
            service.install(self.paths)
            still = service.missing(self.paths)
            if still:
                raise LabError(
                    f"{name} is still missing {still[0].what} after installing; run: {still[0].fix}"
                )
            log.info("%s: installed %s", name, _parenthesised(service.version(self.paths)))

    # ------------------------------------------------------------------ up

    def up(self, services: Sequence[str] = ()) -> list[ProcessStatus]:
        """Start ``services`` (all when empty) and their dependencies; wait until healthy.

        Idempotent: running processes are left alone ("already running"). Toxiproxy starts
        first and every service's proxies are (re)created in it.

        Raises:
            LabError: something is not installed, a port is taken, or a process did not become
                healthy in time (it is stopped again; ``details`` holds its log tail).
            LabInterrupted: Ctrl-C; what this call had started is stopped again.
        """
        names = self._expand(services)
        started: list[ProcessRecord] = []
        with self.locked("up"):
            self._require_installed(names)
            self._warn_about_ephemeral_ports(names)
            self._cancel.clear()
            try:
                return self._up_all(names, started)
            except KeyboardInterrupt:
                with _interrupt_deferred(reraise=False):  # a second Ctrl-C must not cut this short
                    stopped = self._stop_all(list(reversed(started)))
                what = ", ".join(stopped) if stopped else "nothing had started yet"
                raise LabInterrupted(
                    f"interrupted; stopped what this command started: {what}"
                ) from None

    def _up_all(self, names: list[str], started: list[ProcessRecord]) -> list[ProcessStatus]:
        """Toxiproxy first (the others' proxies live in it), then the other services side by
        side: each in its own thread, its processes in order. Waiting for a JVM and an Erlang
        VM at the same time roughly halves a cold ``up`` of the whole lab."""
        results: dict[str, list[ProcessStatus]] = {}
        first = [name for name in names if name == TOXIPROXY]
        rest = [name for name in names if name != TOXIPROXY]
        for name in first:
            results[name] = self._up_service(SERVICES[name], started)
        errors: list[LabError] = []
        if rest:
            pool = ThreadPoolExecutor(max_workers=len(rest), thread_name_prefix="mqlab-up")
            futures = {
                pool.submit(self._up_service, SERVICES[name], started): name for name in rest
            }
            try:
                pending = set(futures)
                while pending:
                    # A short wait in a loop keeps the main thread responsive to Ctrl-C.
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in done:
                        error = future.exception()
                        if isinstance(error, LabError):
                            errors.append(error)
                        elif error is not None:
                            raise error
                        else:
                            results[futures[future]] = future.result()
            except BaseException:
                self._cancel.set()  # the workers stop waiting; the caller stops what started
                with _interrupt_deferred(reraise=False):
                    pool.shutdown(wait=True)
                raise
            pool.shutdown(wait=True)
        if errors:
            others = "; ".join(str(error) for error in errors[1:])
            details = "\n".join(
                part for part in (errors[0].details, f"also: {others}" if others else "") if part
            )
            raise LabError(str(errors[0]), details)
        return [row for name in names for row in results.get(name, [])]

    def _warn_about_ephemeral_ports(self, names: list[str]) -> None:
        """Ports in the OS's ephemeral range can be taken at any moment by some outgoing
        connection (the lab's own servers make many); say so before it bites."""
        ephemeral = proc.ephemeral_port_range()
        if ephemeral is None:
            return
        low, high = ephemeral
        risky = sorted(
            {
                port_number
                for name in names
                for spec in SERVICES[name].processes(self.paths)
                for port_number in spec.ports
                if low <= port_number <= high
            }
        )
        if risky:
            log.warning(
                "lab ports in the range the OS gives to outgoing connections (%d-%d) may be "
                "taken at any time: %s; use a smaller MQLAB_PORT_OFFSET",
                low,
                high,
                ", ".join(map(str, risky[:4])) + (" ..." if len(risky) > 4 else ""),
            )

    def _require_installed(self, names: list[str]) -> None:
        gaps = [(name, gap) for name in names for gap in SERVICES[name].missing(self.paths)]
        if not gaps:
            return
        missing_services = sorted({name for name, _ in gaps}, key=names.index)
        details = "\n".join(f"  {name}: {gap.what} (fix: {gap.fix})" for name, gap in gaps)
        raise LabError(
            f"not installed: {', '.join(missing_services)}; "
            f"run: mqlab lab install {' '.join(missing_services)}",
            details,
        )

    def _up_service(self, service: Service, started: list[ProcessRecord]) -> list[ProcessStatus]:
        try:
            service.prepare(self.paths)
        except OSError as error:
            raise LabError(
                f"{service.name}: cannot write its config or data dir: {error}"
            ) from None
        results = []
        started_here: list[ProcessRecord] = []
        version = service.version(self.paths)
        for spec in service.processes(self.paths):
            existing = self._running_record(spec.name)
            if existing is not None:
                log.info("%s: already running (pid %d)", spec.name, existing.pid)
                if proc.process_state(existing) == "paused":
                    health = "paused"
                else:
                    failure = proc.probe(spec.health, timeout=STATUS_PROBE_TIMEOUT)
                    health = "healthy" if failure is None else f"unhealthy: {failure}"
                results.append(
                    self._row(service, spec, existing, version, health, "already running")
                )
                continue
            if self._cancel.is_set():
                raise _Cancelled(spec.name)
            try:
                record = self.start_process(spec, started)
            except LabError:
                # A multi-process service is only useful whole: undo what this call started.
                self._stop_all(list(reversed(started_here)))
                raise
            started_here.append(record)
            results.append(self._row(service, spec, record, version, "healthy", "started"))
        service.on_healthy(self.paths)
        if service.name == TOXIPROXY:
            self.sync_proxies()
        elif service.proxies():
            self._create_proxies(service.proxies())
        return results

    def _running_record(self, process: str) -> ProcessRecord | None:
        """The record of ``process`` if it is alive; a dead one is reported and removed."""
        record = self.record(process)
        if record is None:
            return None
        if proc.live_process(record) is not None:
            return record
        if record.state == "killed":
            log.info("%s: was killed by a fault (pid %d); starting it again", process, record.pid)
        else:
            log.warning(
                "%s: stale pid file (pid %d is gone or is no longer ours); removing it",
                process,
                record.pid,
            )
        proc.stop(record, signal.SIGTERM, 0)  # only clears leftovers of its session
        self._forget(process)
        return None

    def start_process(
        self, spec: ProcessSpec, started: list[ProcessRecord] | None = None
    ) -> ProcessRecord:
        """Start one process and wait until its health check passes.

        Raises:
            LabError: a port is taken, it cannot be started, or it is not healthy in time (it
                is stopped again and its log tail is in ``details``).
        """
        began = time.monotonic()
        record = self._launch(spec, started)
        self._wait_healthy(spec, record)
        log.info(
            "%s: healthy after %.1fs (pid %d)", spec.name, time.monotonic() - began, record.pid
        )
        return record

    def _launch(
        self, spec: ProcessSpec, started: list[ProcessRecord] | None = None
    ) -> ProcessRecord:
        """Start one process and write its pid record, without waiting for it to be healthy."""
        self._check_ports(spec)
        log.info("%s: starting", spec.name)
        # Ctrl-C between the fork and the pid file would leave a process nobody knows of.
        with _interrupt_deferred():
            record = proc.start_detached(spec, self.paths.log_file(spec.name))
            if started is not None:
                started.append(record)
            self._write_record(record)
        return record

    def _check_ports(self, spec: ProcessSpec) -> None:
        for port_number in spec.ports:
            if proc.port_is_free(port_number):
                continue
            owner = proc.port_owner(port_number) or "another process"
            raise LabError(
                f"port {port_number} needed by {spec.name} is already in use by {owner}; "
                "stop it, or move the lab's ports with MQLAB_PORT_OFFSET"
            )

    def _wait_healthy(self, spec: ProcessSpec, record: ProcessRecord) -> None:
        deadline = time.monotonic() + spec.health.timeout
        while True:
            if self._cancel.is_set():
                raise _Cancelled(spec.name)
            if proc.live_process(record) is None:
                code = proc.exit_code(record)
                how = f" with exit code {code}" if code is not None else ""
                self._fail_start(spec, record, f"{spec.name} exited during start-up{how}")
            remaining = deadline - time.monotonic()
            problem = proc.probe(spec.health, timeout=max(0.2, min(2.0, remaining)))
            if problem is None:
                return
            if time.monotonic() >= deadline:
                self._fail_start(
                    spec,
                    record,
                    f"{spec.name} not healthy within {spec.health.timeout:g}s ({problem})",
                )
            time.sleep(0.1)

    def _fail_start(self, spec: ProcessSpec, record: ProcessRecord, message: str) -> None:
        proc.stop(record, spec.stop_signal, min(spec.stop_timeout, 5.0))
        self._forget(spec.name)
        log_file = self.paths.log_file(spec.name)
        raise LabError(
            f"{message}; it was stopped again (log: {log_file})",
            "\n".join(proc.tail(log_file, _LOG_TAIL_LINES)),
        )

    # ------------------------------------------------------------------ proxies

    def _toxiproxy_running(self) -> bool:
        record = self.record(TOXIPROXY)
        return record is not None and proc.live_process(record) is not None

    def _create_proxies(self, proxies: list[ProxySpec]) -> None:
        from mqlab.lab.native.toxiproxy import ToxiproxyClient

        if not self._toxiproxy_running():
            raise LabError("toxiproxy is not running; run: mqlab lab up toxiproxy")
        client = ToxiproxyClient()
        existing = client.proxies()
        needed = [
            proxy
            for proxy in proxies
            if existing.get(proxy.name, {}).get("listen") != f"{HOST}:{proxy.listen_port}"
            or existing.get(proxy.name, {}).get("upstream") != f"{HOST}:{proxy.upstream_port}"
        ]
        for proxy in needed:
            if not proc.port_is_free(proxy.listen_port):
                owner = proc.port_owner(proxy.listen_port) or "another process"
                raise LabError(
                    f"port {proxy.listen_port} of the {proxy.name} proxy is already in use by "
                    f"{owner}; stop it, or move the lab's ports with MQLAB_PORT_OFFSET"
                )
        client.populate(needed)
        for proxy in needed:
            log.info(
                "%s: proxy %s:%d -> %s:%d",
                proxy.name,
                HOST,
                proxy.listen_port,
                HOST,
                proxy.upstream_port,
            )

    def sync_proxies(self) -> None:
        """(Re)create the proxies of every service that has a running process: after
        Toxiproxy (re)starts it knows none of them."""
        running_services = {
            record.service for record in self.records() if proc.live_process(record) is not None
        }
        proxies: list[ProxySpec] = []
        for name in SERVICE_PATHS:
            if name in running_services and name != TOXIPROXY:
                with contextlib.suppress(LabError):
                    proxies.extend(SERVICES[name].proxies())
        if proxies:
            self._create_proxies(proxies)

    def _delete_proxies(self, service_name: str) -> None:
        from mqlab.lab.native.toxiproxy import ToxiproxyClient

        if service_name == TOXIPROXY or not self._toxiproxy_running():
            return
        try:
            proxies = SERVICES[service_name].proxies() if service_name in SERVICE_PATHS else []
            client = ToxiproxyClient()
            for proxy in proxies:
                client.delete(proxy.name)
        except LabError as error:
            log.warning("%s: could not remove its proxies: %s", service_name, error)

    # ------------------------------------------------------------------ down

    def down(self, services: Sequence[str] = (), *, wipe: bool = False) -> list[str]:
        """Stop ``services`` (all when empty): exactly the processes recorded in pid files,
        in reverse start order, Toxiproxy last. With ``wipe`` their data dirs are deleted.

        Returns:
            One line per process saying what happened.
        """
        names = [resolve_service_name(name) for name in services]
        with self.locked("down"):
            records = [record for record in self.records() if not names or record.service in names]
            order = list(SERVICE_PATHS)

            def stop_order(record: ProcessRecord) -> tuple[int, float]:
                rank = order.index(record.service) if record.service in order else -1
                return (-rank, -record.started_at)

            by_service: dict[str, list[ProcessRecord]] = {}
            for record in sorted(records, key=stop_order):
                by_service.setdefault(record.service, []).append(record)
            last = by_service.pop(TOXIPROXY, [])
            # Services stop side by side (each in reverse start order); Toxiproxy goes last, so
            # the brokers' proxies can be removed from it first.
            with ThreadPoolExecutor(
                max_workers=max(1, len(by_service)), thread_name_prefix="mqlab-down"
            ) as pool:
                outcomes = list(pool.map(self._stop_service, by_service.items()))
            messages = [message for outcome in outcomes for message in outcome]
            messages.extend(self._stop_service((TOXIPROXY, last)))
            if wipe:
                for name in names or list(SERVICE_PATHS):
                    messages.extend(self._wipe(name))
        return messages

    def _stop_service(self, service_records: tuple[str, list[ProcessRecord]]) -> list[str]:
        service, records = service_records
        if records:
            self._delete_proxies(service)
        return [self._stop_record(record) for record in records]

    def _stop_spec_defaults(self, record: ProcessRecord) -> tuple[int, float]:
        try:
            spec = self.process_spec(record.name)
        except LabError:
            return (signal.SIGTERM, 15.0)
        return (spec.stop_signal, spec.stop_timeout)

    def _stop_record(self, record: ProcessRecord) -> str:
        alive = proc.live_process(record) is not None
        stop_signal, stop_timeout = self._stop_spec_defaults(record)
        if alive:
            log.info("%s: stopping (pid %d)", record.name, record.pid)
        outcome = proc.stop(record, stop_signal, stop_timeout)
        self._forget(record.name)
        if alive:
            return f"{record.name}: {outcome} (pid {record.pid})"
        if record.state == "killed":
            return f"{record.name}: had been killed by a fault (pid {record.pid}); record removed"
        return f"{record.name}: was not running (stale pid file for pid {record.pid} removed)"

    def _stop_all(self, records: list[ProcessRecord]) -> list[str]:
        stopped = []
        for record in records:
            stop_signal, stop_timeout = self._stop_spec_defaults(record)
            proc.stop(record, stop_signal, stop_timeout)
            self._forget(record.name)
            stopped.append(record.name)
        return stopped

    def _wipe(self, name: str) -> list[str]:
        try:
            directories = SERVICES[name].data_dirs(self.paths)
        except LabError as error:
            return [f"{name}: not wiped ({error})"]
        messages = []
        for directory in directories:
            if directory.exists():
                shutil.rmtree(directory)
                messages.append(f"{name}: wiped {directory}")
        return messages

    # ------------------------------------------------------------------ status

    def status(self) -> list[ProcessStatus]:
        """One row per process of every service, health probed now (concurrently, one
        second each at most). A process that died without the lab stopping it shows as
        "crashed"; its stale pid file stays until ``up``, ``down`` or ``restart`` clears it, so
        the crash stays visible."""
        rows: list[tuple[Service | None, str, ProcessSpec | None, str]] = []
        versions: dict[str, str] = {}
        for name in SERVICE_PATHS:
            try:
                service = SERVICES[name]
                specs = service.processes(self.paths)
            except LabError as error:
                rows.append((None, name, None, f"unavailable: {error}"))
                continue
            versions[name] = service.version(self.paths)
            rows.extend((service, name, spec, "") for spec in specs)
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [
                pool.submit(self._status_row, service, name, spec, problem, versions.get(name, ""))
                for service, name, spec, problem in rows
            ]
            statuses = [future.result() for future in futures]
        return statuses

    def _status_row(
        self,
        service: Service | None,
        name: str,
        spec: ProcessSpec | None,
        problem: str,
        version: str,
    ) -> ProcessStatus:
        if service is None or spec is None:
            return ProcessStatus(name, name, "", None, "", problem, None)
        record = self.record(spec.name)
        if record is None:
            return self._row(service, spec, None, version, "stopped")
        state = proc.process_state(record)
        if state == "gone":
            health = "killed" if record.state == "killed" else "crashed"
            return self._row(service, spec, None, version, health)
        if state == "paused":
            return self._row(service, spec, record, version, "paused")
        failure = proc.probe(spec.health, timeout=STATUS_PROBE_TIMEOUT)
        health = "healthy" if failure is None else f"unhealthy: {failure}"
        return self._row(service, spec, record, version, health)

    @staticmethod
    def _row(
        service: Service,
        spec: ProcessSpec,
        record: ProcessRecord | None,
        version: str,
        health: str,
        action: str = "",
    ) -> ProcessStatus:
        upstream_to_public = {proxy.upstream_port: proxy.listen_port for proxy in service.proxies()}
        address = ""
        for port_number in spec.ports:
            if port_number in upstream_to_public:
                address = f"{HOST}:{upstream_to_public[port_number]}"
                break
        if not address and spec.ports:
            address = f"{HOST}:{spec.ports[0]}"
        return ProcessStatus(
            service=service.name,
            process=spec.name,
            address=address,
            pid=record.pid if record else None,
            version=version,
            health=health,
            uptime=time.time() - record.started_at if record else None,
            action=action,
        )

    # ------------------------------------------------------------------ logs

    def log_lines(self, service_or_process: str, lines: int = 50) -> dict[str, list[str]]:
        """The last ``lines`` of the log of a process, or of each process of a service.

        Raises:
            LabError: unknown name, or nothing has been logged yet.
        """
        name = service_or_process.strip().lower()
        if name in SERVICE_PATHS:
            processes = [spec.name for spec in SERVICES[name].processes(self.paths)]
        else:
            processes = [self.process_spec(name).name]
        result = {
            process: proc.tail(self.paths.log_file(process), lines)
            for process in processes
            if self.paths.log_file(process).exists()
        }
        if not result:
            raise LabError(f"{name} has no log yet (it has never been started in this lab)")
        return result

    # ------------------------------------------------------------------ restart

    def restart_process(self, process: str, lock_timeout: float | None = None) -> ProcessRecord:
        """Stop ``process`` if it runs (cleanly), start it again with the same data dir, wait
        until healthy. Restarting Toxiproxy re-creates the proxies of running services.

        Raises:
            LabError: unknown process or it does not come back healthy.
        """
        spec = self.process_spec(process)
        service = SERVICES[spec.service]
        purpose = f"fault restart {process}"
        with self.locked(purpose, timeout=lock_timeout):
            record = self.record(process)
            if record is not None:
                if proc.live_process(record) is not None:
                    log.info("%s: stopping (pid %d)", process, record.pid)
                proc.stop(record, spec.stop_signal, spec.stop_timeout)
                self._forget(process)
            service.prepare(self.paths)
            began = time.monotonic()
            new_record = self._launch(spec)
        # The wait for health holds no lock: it is the long part (a Kafka broker or RabbitMQ
        # takes seconds), and holding the lab meanwhile made every other fault wait, or give up
        # after its lock timeout, while a different process restarted. The pid record is
        # written, so another command already sees the process (a `down` meanwhile stops it,
        # and this wait then reports that it exited).
        self._wait_healthy(spec, new_record)
        log.info(
            "%s: healthy after %.1fs (pid %d)", process, time.monotonic() - began, new_record.pid
        )
        with self.locked(purpose, timeout=lock_timeout):
            service.on_healthy(self.paths)
            if spec.service == TOXIPROXY:
                self.sync_proxies()
        return new_record


@contextlib.contextmanager
def _interrupt_deferred(*, reraise: bool = True) -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise KeyboardInterrupt (or,
    with ``reraise=False``, drop it: for clean-up that is already answering a Ctrl-C).

    Only the main thread can install signal handlers; elsewhere this does nothing. Started
    servers do not inherit the handler (exec resets caught signals to their default).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and reraise:
        raise KeyboardInterrupt


def _named(specs: list[_Spec], name: str, kind: str, kinds: str) -> _Spec:
    """The spec called ``name``, or a "did you mean" error listing every ``kinds``."""
    for spec in specs:
        if spec.name == name:
            return spec
    known = [spec.name for spec in specs]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise LabError(f"unknown {kind} {name!r}{hint} ({kinds}: {', '.join(known)})")


def _parenthesised(text: str) -> str:
    return f"({text})" if text else ""
