"""Fault injection for the lab: what a learner (or a scenario) does to watch a system cope.

Process faults act on the lab's own processes by name (``kafka-broker-2``, ``rabbitmq``,
``nats``, ``sqs`` ...), always through their pid records, and signal the whole process group, as
a real crash or freeze would hit the server and its helpers together:

- :func:`kill`: SIGKILL (``kill -9``): no shutdown, no flush; the record is kept as "killed";
- :func:`pause` / :func:`resume`: SIGSTOP / SIGCONT: the process stops answering while its
  sockets stay open, which is what a long GC pause or a frozen VM looks like to a client;
- :func:`restart`: a clean stop and start with the same data, waiting until healthy.

Network faults go through Toxiproxy (:class:`Toxics`): latency, timeouts, connection resets,
bandwidth limits, or cutting a proxy entirely. Each call returns as soon as the fault is in
place and raises :class:`LabError` with a clear message for an unknown name.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any, Literal, get_args

from mqlab.lab import process as proc
from mqlab.lab.errors import LabError
from mqlab.lab.native.toxiproxy import ToxiproxyClient
from mqlab.lab.process import ProcessRecord
from mqlab.lab.supervisor import Lab

__all__ = ["ToxicKind", "Toxics", "kill", "pause", "restart", "resume"]

log = logging.getLogger("mqlab.lab")

# A fault must not hang behind a long `lab up`; after this many seconds it gives up with a
# clear message instead.
LOCK_TIMEOUT = 10.0

ToxicKind = Literal["latency", "timeout", "reset_peer", "bandwidth", "slow_close", "limit_data"]
Stream = Literal["downstream", "upstream"]

# Toxiproxy's attribute names per toxic kind (all integers: ms, KB/s or bytes).
TOXIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "limit_data": ("bytes",),
}


def _running_record(lab: Lab, process: str) -> ProcessRecord:
    spec = lab.process_spec(process)
    record = lab.record(spec.name)
    if record is None:
        raise LabError(f"{process} is not running; run: mqlab lab up {spec.service}")
    if proc.live_process(record) is None:
        how = "was killed by a fault" if record.state == "killed" else "is not running"
        raise LabError(
            f"{process} {how} (pid {record.pid} is gone); run: mqlab lab fault restart {process}"
        )
    return record


def kill(process: str, lab: Lab | None = None) -> None:
    """SIGKILL ``process`` and its children; its record stays, marked "killed".

    Raises:
        LabError: unknown or not running.
    """
    lab = lab or Lab()
    with lab.locked(f"fault kill {process}", timeout=LOCK_TIMEOUT):
        record = _running_record(lab, process)
        proc.signal_group(record, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while proc.live_process(record) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        lab.mark_killed(record)
    log.info("%s: killed (SIGKILL to pid %d and its group)", process, record.pid)


def pause(process: str, lab: Lab | None = None) -> None:
    """SIGSTOP ``process``: it keeps its connections but stops answering.

    Raises:
        LabError: unknown or not running.
    """
    record = _signal_running(lab or Lab(), process, signal.SIGSTOP, "pause")
    log.info("%s: paused (SIGSTOP to pid %d and its group)", process, record.pid)


def resume(process: str, lab: Lab | None = None) -> None:
    """SIGCONT ``process`` after :func:`pause` (harmless when it is not paused).

    Raises:
        LabError: unknown or not running.
    """
    record = _signal_running(lab or Lab(), process, signal.SIGCONT, "resume")
    log.info("%s: resumed (SIGCONT to pid %d and its group)", process, record.pid)


def _signal_running(lab: Lab, process: str, signum: signal.Signals, fault: str) -> ProcessRecord:
    """Send ``signum`` to ``process`` and its group under the lab's lock (held as
    ``fault <fault> <process>``); the record of the process it signalled."""
    with lab.locked(f"fault {fault} {process}", timeout=LOCK_TIMEOUT):
        record = _running_record(lab, process)
        proc.signal_group(record, signum)
    return record


def restart(process: str, lab: Lab | None = None) -> None:
    """Stop ``process`` cleanly if it runs (also after :func:`kill`), start it again with the
    same data dir and wait until healthy.

    Raises:
        LabError: unknown, or it does not come back healthy (its log tail in ``details``).
    """
    lab = lab or Lab()
    record = lab.restart_process(process, lock_timeout=LOCK_TIMEOUT)
    # debug: the restart already logged "healthy after ... (pid N)", and the CLI says
    # "restarted" itself (at info this printed "restarted" twice).
    log.debug("%s: restarted (pid %d)", process, record.pid)


class Toxics:
    """Network faults on the lab's Toxiproxy proxies (a thin client of its HTTP API).

    Proxy names are the services' proxy names: ``rabbitmq``, ``nats``, ``sqs``,
    ``kafka-broker-1`` .. ``kafka-broker-3``.

    Args:
        base_url: the Toxiproxy API; the local lab's by default.
        lab: used to check proxy names and suggest close ones.
    """

    def __init__(self, base_url: str | None = None, lab: Lab | None = None) -> None:
        self._client = ToxiproxyClient(base_url)
        self._lab = lab or Lab()

    def _call(self, proxy: str, method: str, path: str, body: object = None) -> Any:
        self._lab.proxy_spec(proxy)  # unknown name -> LabError with "did you mean"
        try:
            return self._client.request(method, path, body)
        except LookupError:
            service = self._lab.proxy_spec(proxy).service
            raise LabError(
                f"proxy {proxy!r} does not exist in toxiproxy; run: mqlab lab up {service}"
            ) from None

    def add(
        self,
        proxy: str,
        kind: ToxicKind,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        **attributes: int,
    ) -> str:
        """Add a toxic to ``proxy`` and return its name (needed to remove just this one).

        Args:
            kind: "latency" (``latency``, ``jitter`` ms), "timeout" (``timeout`` ms: hold data,
                then close; 0 = forever), "reset_peer" (``timeout`` ms, then TCP RST),
                "bandwidth" (``rate`` KB/s), "slow_close" (``delay`` ms), "limit_data"
                (``bytes``, then close).
            stream: "downstream" (server -> client) or "upstream" (client -> server).
            toxicity: probability (0..1) that a connection is affected.

        Raises:
            LabError: unknown proxy, kind or attribute; toxiproxy not running.
        """
        if kind not in TOXIC_ATTRIBUTES:
            raise LabError(f"unknown toxic kind {kind!r} (kinds: {', '.join(get_args(ToxicKind))})")
        if stream not in get_args(Stream):
            raise LabError(f"unknown stream {stream!r} (downstream or upstream)")
        if not 0.0 <= toxicity <= 1.0:
            raise LabError(f"toxicity must be between 0 and 1, not {toxicity}")
        allowed = TOXIC_ATTRIBUTES[kind]
        for key, value in attributes.items():
            if key not in allowed:
                raise LabError(
                    f"a {kind} toxic has no {key!r} setting (it takes: {', '.join(allowed)})"
                )
            if value < 0:
                raise LabError(f"{key} must not be negative")
        existing = {toxic["name"] for toxic in self.list(proxy)}
        name = f"{kind}_{stream}"
        suffix = 2
        while name in existing:
            name = f"{kind}_{stream}_{suffix}"
            suffix += 1
        self._call(
            proxy,
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": name,
                "type": kind,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": dict(attributes),
            },
        )
        log.info("%s: added toxic %s %s", proxy, name, attributes)
        return name

    def list(self, proxy: str) -> list[dict[str, Any]]:
        """The toxics on ``proxy`` as Toxiproxy reports them."""
        toxics = self._call(proxy, "GET", f"/proxies/{proxy}/toxics")
        return list(toxics) if isinstance(toxics, list) else []

    def remove(self, proxy: str, toxic: str) -> None:
        """Remove one toxic.

        Raises:
            LabError: unknown proxy or toxic (the message lists the toxics it has).
        """
        present = [entry["name"] for entry in self.list(proxy)]
        if toxic not in present:
            have = ", ".join(present) if present else "none"
            raise LabError(f"proxy {proxy!r} has no toxic {toxic!r} (toxics: {have})")
        self._call(proxy, "DELETE", f"/proxies/{proxy}/toxics/{toxic}")
        log.info("%s: removed toxic %s", proxy, toxic)

    def clear(self, proxy: str | None = None) -> None:
        """Remove every toxic and re-enable the proxy: ``proxy``, or all of them."""
        if proxy is None:
            self._client.request("POST", "/reset")
            log.info("toxiproxy: removed every toxic, enabled every proxy")
            return
        for toxic in self.list(proxy):
            self._call(proxy, "DELETE", f"/proxies/{proxy}/toxics/{toxic['name']}")
        self.enable(proxy)
        log.info("%s: removed every toxic", proxy)

    def disable(self, proxy: str) -> None:
        """Cut ``proxy``: open connections are closed and new ones refused."""
        self._call(proxy, "PATCH", f"/proxies/{proxy}", {"enabled": False})
        log.info("%s: proxy disabled", proxy)

    def enable(self, proxy: str) -> None:
        """Restore ``proxy`` after :meth:`disable`."""
        self._call(proxy, "PATCH", f"/proxies/{proxy}", {"enabled": True})

    def proxies(self) -> dict[str, dict[str, Any]]:
        """Every proxy Toxiproxy has, with its toxics and whether it is enabled."""
        return self._client.proxies()
