"""OS-level helpers of the supervisor: start detached, pid records, identity, signals, ports.

The lab's promise is that it stops *exactly* the processes it started. Every start writes a pid
record with the pid, the kernel's start time of that pid and the command; a pid only counts as
ours while ``psutil`` reports the same start time for it. Nothing here ever looks a process up
by name.

Each process is started in its own session (``start_new_session``), so its pid is also its
process-group and session id. Signals that model a machine fault (kill -9, pause, resume) go to
the whole group: a RabbitMQ node is a shell wrapper plus the Erlang VM, PostgreSQL is a
postmaster plus backends, and a "crashed server" must mean all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import psutil

from mqlab.lab.endpoints import HOST
from mqlab.lab.errors import LabError
from mqlab.lab.spec import HealthCheck, ProcessSpec

# Popen objects of processes started by *this* Python process, so they can be reaped: a child
# that dies while we still run would otherwise stay a zombie (and look alive to a pid check).
_children: dict[int, subprocess.Popen[bytes]] = {}
# ... and how they ended, once reaped (for "exited during start-up with exit code N").
_exit_codes: dict[int, int] = {}

# A process is told apart from a later one that got its pid by its start: the kernel's count
# of clock ticks from boot to the process's start (field 22 of /proc/PID/stat), fixed for its
# life and read from no clock. psutil's create_time() adds to it the boot time, which the
# kernel derives afresh from the wall clock each time /proc/stat is read: a stepped clock (a
# VM's clock sync) moves every start time by as much as the step. With create_time and a
# 1.5 s tolerance, a CI run under load took a paused Kafka broker for gone, could not resume
# it, and every later Kafka test met a broker that never answered. The start in ticks is
# compared exactly; create_time stays in the record for reports and for the pid files of an
# older mqlab, compared with this tolerance only where the ticks cannot be read.
_CREATE_TIME_TOLERANCE = 1.5

# A log bigger than this is moved aside (to ``NAME.log.1``, replacing the one before) when its
# process starts again, so a lab that is brought up and broken day after day keeps at most two
# logs of bounded size per process instead of one that grows for ever.
LOG_ROTATE_BYTES = 2 * 1024 * 1024

ProcessState = Literal["running", "paused", "gone"]


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What a pid file holds: enough to recognise the process later and to report on it.

    Attributes:
        start_ticks: the process's start in clock ticks since boot (None where /proc cannot
            tell it, and in an older mqlab's pid files): what identifies it.
        state: "running" while the lab considers it up, "killed" after a ``kill`` fault (the
            record is kept so ``status`` can say so and ``up``/``restart`` bring it back).
    """

    name: str
    service: str
    pid: int
    create_time: float
    argv: tuple[str, ...]
    started_at: float
    log: str
    state: Literal["running", "killed"] = "running"
    start_ticks: int | None = None

    def to_json(self) -> str:
        """Serialise for the pid file."""
        data = asdict(self)
        data["argv"] = list(self.argv)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        """Parse a pid file; raises ``ValueError``/``KeyError``/``TypeError`` when malformed."""
        data = json.loads(text)
        return cls(
            name=str(data["name"]),
            service=str(data["service"]),
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            argv=tuple(str(part) for part in data["argv"]),
            started_at=float(data["started_at"]),
            log=str(data["log"]),
            state="killed" if data.get("state") == "killed" else "running",
            start_ticks=None if data.get("start_ticks") is None else int(data["start_ticks"]),
        )


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def read_record(pid_file: Path) -> ProcessRecord | None:
    """The record in ``pid_file``; None when there is none.

    Raises:
        LabError: the file exists but is not a pid record mqlab wrote.
    """
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        return None
    try:
        return ProcessRecord.from_json(text)
    except (ValueError, KeyError, TypeError) as error:
        raise LabError(
            f"{pid_file} is not a valid mqlab pid file ({error}); delete it and retry"
        ) from None


def _reap(pid: int) -> None:
    """Collect the exit status of our own child ``pid`` if it has exited (no-op otherwise)."""
    child = _children.get(pid)
    if child is not None:
        code = child.poll()
        if code is not None:
            _exit_codes[pid] = code
            del _children[pid]


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot: fixed for the process's life and
    independent of the wall clock. None where there is no /proc (not Linux) or it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ")": the
    # fields after it start after the last ")". The start is field 22, the 20th after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _started_as_recorded(process: psutil.Process, record: ProcessRecord) -> bool:
    """Whether ``process`` (holding ``record``'s pid) is the one the record describes, not a
    later process that got the pid (raises psutil.Error when it is gone)."""
    if record.start_ticks is not None:
        ticks = start_ticks(process.pid)
        if ticks is None:  # the record was written where /proc tells it: the process is gone
            raise psutil.NoSuchProcess(process.pid)
        return ticks == record.start_ticks
    return abs(process.create_time() - record.create_time) <= _CREATE_TIME_TOLERANCE


def _started_no_earlier(process: psutil.Process, record: ProcessRecord) -> bool:
    """Whether ``process`` started at or after ``record``'s process (raises psutil.Error when
    it is gone): what a server's leftovers did, unlike an older stranger in a reused session."""
    if record.start_ticks is not None:
        ticks = start_ticks(process.pid)
        if ticks is not None:
            return ticks >= record.start_ticks
    return process.create_time() + _CREATE_TIME_TOLERANCE >= record.create_time


def live_process(record: ProcessRecord) -> psutil.Process | None:
    """The process ``record`` describes if it still runs; None if it is gone or the pid now
    belongs to another process (pid reuse)."""
    _reap(record.pid)
    try:
        process = psutil.Process(record.pid)
        if not _started_as_recorded(process, record):
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return process


def process_state(record: ProcessRecord) -> ProcessState:
    """ "running", "paused" (SIGSTOP'ed) or "gone"."""
    process = live_process(record)
    if process is None:
        return "gone"
    try:
        status = process.status()
    except psutil.Error:
        return "gone"
    return "paused" if status == psutil.STATUS_STOPPED else "running"


def session_members(record: ProcessRecord) -> list[psutil.Process]:
    """Live processes in the session ``record``'s process leads, started no earlier than it.

    This finds what a server left behind after its leader died (an orphaned Erlang VM)
    without matching anything by name.
    """
    try:
        reused = not _started_as_recorded(psutil.Process(record.pid), record)
    except psutil.Error:
        reused = False
    if reused:
        # The pid, and with it the session id, now belong to another process (pids wrap at
        # 32,768 here): that session is a stranger's, never ours to kill.
        return []
    members: list[psutil.Process] = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) != record.pid:
                continue
            if not _started_no_earlier(process, record):
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        members.append(process)
    return members


def family(record: ProcessRecord) -> list[psutil.Process]:
    """The process, all its descendants and the rest of its session, without duplicates.

    Descendants matter because some servers move their helpers into sessions of their own
    (PostgreSQL's backends, Erlang's ``erl_child_setup``): a pause that froze only the leader
    would leave them answering.
    """
    found: dict[int, psutil.Process] = {}
    leader = live_process(record)
    if leader is not None:
        found[leader.pid] = leader
        with contextlib.suppress(psutil.Error):
            for child in leader.children(recursive=True):
                found.setdefault(child.pid, child)
    for member in session_members(record):
        found.setdefault(member.pid, member)
    return list(found.values())


def signal_group(record: ProcessRecord, signum: int) -> None:
    """Send ``signum`` to the process and its whole :func:`family`.

    Raises:
        LabError: the process is not running (any more).
    """
    if live_process(record) is None:
        raise LabError(f"{record.name} is not running (pid {record.pid} is gone)")
    members = family(record)
    # Freeze or kill the leader first, so it cannot start new children meanwhile.
    members.sort(key=lambda member: member.pid != record.pid)
    for member in members:
        with contextlib.suppress(psutil.Error):
            member.send_signal(signum)


def rotate_log(log_file: Path, max_bytes: int = LOG_ROTATE_BYTES) -> bool:
    """Move ``log_file`` to ``<log_file>.1`` if it is bigger than ``max_bytes``; True if moved.

    Called before a process starts, so the process never writes to a file being moved.
    """
    try:
        if log_file.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    log_file.replace(log_file.with_name(log_file.name + ".1"))
    return True


LIFTED_LIMITS = {"RLIMIT_AS": "-v", "RLIMIT_CPU": "-t"}
"""Resource limits a lab process must not inherit from whoever starts it (with the shell's
``ulimit`` flag for each). The grader's child caps its own address space and CPU time (learner
code runs there), and a check that kills a broker also restarts it from there: a JVM under that
cap cannot even reserve its heap, and one under the CPU cap would be killed minutes later."""


def _without_inherited_limits(argv: tuple[str, ...]) -> list[str]:
    """``argv``, started so that it runs with the hard limits of :data:`LIFTED_LIMITS` where
    this process lowered the soft ones: ``/bin/sh`` raises them (any process may, up to the
    hard limit) and execs ``argv`` in its place, same pid. The shell, not this interpreter,
    because a server may run as another OS user (PostgreSQL), who can always run ``sh``."""
    flags = [
        flag
        for name, flag in LIFTED_LIMITS.items()
        if resource.getrlimit(getattr(resource, name))[0]
        != resource.getrlimit(getattr(resource, name))[1]
    ]
    if not flags:
        return list(argv)
    lift = " && ".join(f'ulimit -S {flag} "$(ulimit -H {flag})"' for flag in flags)
    return ["/bin/sh", "-c", f'{lift} && exec "$@"', "mqlab-lab", *argv]


def start_detached(spec: ProcessSpec, log_file: Path) -> ProcessRecord:
    """Start ``spec`` in its own session, output appended to ``log_file`` (rotated first when it
    has grown past :data:`LOG_ROTATE_BYTES`); return its record.

    The caller writes the record to the pid file straight away.

    Raises:
        LabError: the executable cannot be started (missing, not executable, unknown user).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(log_file)
    uid: int | None = None
    gid: int | None = None
    if spec.user is not None:
        import pwd  # POSIX only, and only needed here

        try:
            entry = pwd.getpwnam(spec.user)
        except KeyError:
            raise LabError(
                f"{spec.name} must run as OS user {spec.user!r}, which does not exist"
            ) from None
        uid, gid = entry.pw_uid, entry.pw_gid
    with log_file.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- mqlab {stamp}: starting {' '.join(spec.argv)}\n".encode())
        log.flush()
        try:
            child = subprocess.Popen(
                _without_inherited_limits(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env={**os.environ, **spec.env},
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None else None,
            )
        except OSError as error:
            raise LabError(f"cannot start {spec.name}: {spec.argv[0]}: {error.strerror}") from None
    _children[child.pid] = child
    _exit_codes.pop(child.pid, None)
    try:
        create_time = psutil.Process(child.pid).create_time()
    except psutil.Error:
        # It died within microseconds; record it anyway so the health wait reports its log.
        create_time = 0.0
    ticks = start_ticks(child.pid)
    return ProcessRecord(
        name=spec.name,
        service=spec.service,
        pid=child.pid,
        create_time=create_time,
        argv=spec.argv,
        started_at=time.time(),
        log=str(log_file),
        start_ticks=ticks,
    )


def exit_code(record: ProcessRecord) -> int | None:
    """The exit code of a process this Python process started, once it has exited."""
    _reap(record.pid)
    return _exit_codes.get(record.pid)


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live_process(record) is None:
            return True
        time.sleep(0.05)
    return live_process(record) is None


def stop(record: ProcessRecord, stop_signal: int, timeout: float) -> str:
    """Stop ``record``'s process: ``stop_signal``, then SIGKILL after ``timeout``.

    Whatever is left of its family afterwards (descendants, session members) is killed too.
    Returns how it went ("stopped", "killed after Ns ...", "was not running").
    """
    outcome = "was not running"
    members = family(record)
    if live_process(record) is not None:
        if process_state(record) == "paused":
            # A stopped process cannot act on SIGTERM; let the family run so it can shut down.
            with contextlib.suppress(LabError):
                signal_group(record, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, stop_signal)
        if _wait_gone(record, timeout):
            outcome = "stopped"
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
            _wait_gone(record, 5.0)
            name = signal.Signals(stop_signal).name
            outcome = f"killed after {timeout:g}s (did not stop on {name})"
    leftovers = [member for member in members if _alive(member)]
    leftovers += [member for member in session_members(record) if member not in leftovers]
    for member in leftovers:
        with contextlib.suppress(psutil.Error):
            member.kill()
    if leftovers:
        psutil.wait_procs(leftovers, timeout=5.0)
    _reap(record.pid)
    return outcome


def _alive(process: psutil.Process) -> bool:
    """``is_running`` also guards against pid reuse (it compares start times)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def port_owner(port: int) -> str | None:
    """Who holds ``port``, e.g. ``pid 4242 (nats-server)``; None if nobody does.

    A listener is preferred; otherwise the port may be the local end of someone's outgoing
    connection (ports in the OS's ephemeral range are handed out for those), which is said so.
    "an unknown process" when the owner is not visible to us.
    """
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.Error:
        connections = []
    holders = [c for c in connections if c.laddr and c.laddr.port == port]
    holders.sort(key=lambda connection: connection.status != psutil.CONN_LISTEN)
    for connection in holders:
        if connection.status == psutil.CONN_TIME_WAIT:
            continue  # owned by nobody any more, and SO_REUSEADDR binds over it
        how = "" if connection.status == psutil.CONN_LISTEN else " as an outgoing connection"
        if connection.pid is None:
            return f"an unknown process{how}"
        try:
            name = psutil.Process(connection.pid).name()
        except psutil.Error:
            name = "?"
        return f"pid {connection.pid} ({name}){how}"
    return None


def ephemeral_port_range() -> tuple[int, int] | None:
    """The range the OS picks local ports of outgoing connections from (Linux), if known."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return None
    return int(low), int(high)


def port_is_free(port: int) -> bool:
    """True when a server could bind 127.0.0.1:``port`` now (SO_REUSEADDR, like servers do, so
    connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def probe(check: HealthCheck, timeout: float = 1.0) -> str | None:
    """Run ``check`` once. None when healthy, else a short reason."""
    if check.kind == "tcp":
        if check.port is None:
            return "health check has no port"
        try:
            with socket.create_connection((HOST, check.port), timeout=timeout):
                return None
        except OSError as error:
            return f"{HOST}:{check.port}: {error.strerror or error}"
    if check.kind == "http":
        import httpx

        if check.url is None:
            return "health check has no url"
        try:
            response = httpx.get(check.url, timeout=timeout)
        except httpx.HTTPError as error:
            return f"{_without_password(check.url)}: {type(error).__name__}"
        if response.is_success:
            return None
        return f"{_without_password(check.url)}: HTTP {response.status_code}"
    try:
        completed = subprocess.run(
            check.argv, capture_output=True, timeout=max(timeout, 5.0), check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{check.argv[0]}: {error}"
    if completed.returncode == 0:
        return None
    return f"{' '.join(check.argv)} exited {completed.returncode}"


def _without_password(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{separator}{rest}"


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of ``path`` (reads only the end of big files)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            block = min(size, max(4096, lines * 400))
            while True:
                file.seek(size - block)
                data = file.read(block)
                if data.count(b"\n") > lines or block == size:
                    break
                block = min(size, block * 4)
    except FileNotFoundError:
        return []
    text = data.decode(errors="replace").splitlines()
    return text[-lines:] if lines > 0 else []


def rss_bytes(record: ProcessRecord) -> int:
    """Resident memory of the process and its :func:`family` (the Erlang VM behind
    RabbitMQ's wrapper script, PostgreSQL's backends)."""
    total = 0
    for member in family(record):
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total
