"""Apache Kafka in the local lab: a KRaft controller and three brokers as local JVMs.

Why this shape: the course kills, pauses and restarts brokers and watches partitions lose and
regain replicas. That needs real replication (three brokers, topics with replication factor 3
and ``min.insync.replicas=2``) and a controller that survives any broker fault, so the controller
runs on its own (node 0, ``process.roles=controller``) and the brokers (nodes 1..3) only store
data. Clients reach each broker through its Toxiproxy proxy (the address the broker advertises);
the brokers replicate over an INTERNAL listener that is never proxied, so a network toxic hits
one broker's clients and not the replication between brokers.

Why Kafka 3.9.1 (details and measurements in docs/kafka-lab.md): the lab's tests verify it with
aiokafka 0.14, the asyncio client mqlab uses, including its idempotent and transactional
producer (which sends the old ``InitProducerId`` v0). Kafka 4.x removed the client protocol
versions older than Kafka 2.1's; 3.9 is the last line that still accepts every client while
running KRaft alone.

Where it comes from: no Debian or PyPI package ships the broker, but its jars are on Maven
Central. ``install()`` resolves ``kafka-pom.xml`` (next to this module) with
``mvn dependency:copy-dependencies`` into ``<cache>/kafka-3.9.1/lib`` and the lab starts
``java -cp '<lib>/*' kafka.Kafka server.properties``.

``python -m mqlab.lab.kafka registered PORT NODE_ID`` is the brokers' health check: it exits 0
once the broker on PORT answers a metadata request that lists NODE_ID, that is once it has
registered with the controller and been unfenced, which is what clients need.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mqlab.lab.endpoints import HOST, KAFKA_BROKER_IDS, KAFKA_CONTROLLER_ID, port
from mqlab.lab.errors import LabError
from mqlab.lab.install import MAVEN_MANIFEST, apt_command, apt_install, maven_download
from mqlab.lab.process import write_atomically
from mqlab.lab.spec import HealthCheck, LabPaths, Missing, ProcessSpec, ProxySpec, Service

KAFKA_VERSION = "3.9.1"
"""The Kafka release the lab runs (pinned: see the module docstring)."""

MIN_JAVA_MAJOR = 17
"""Kafka 3.9 runs on Java 11+, but 17 is what Debian 12 ships and what the lab is tested on."""

JAVA_PACKAGE = "openjdk-17-jre-headless"
"""The Debian package that provides Java 17 (Debian 12's default JDK)."""
MAVEN_PACKAGE = "maven"

CONTROLLER_PROCESS = "kafka-controller"

# JVM sizing for a 2-core laptop that runs four JVMs next to other brokers (measured numbers in
# docs/kafka-lab.md). The heaps are capped (-Xmx) and start small (-Xms): the serial collector
# sizes its young generation from the initial heap, and with the JVM's default (1/64 of RAM)
# every broker would touch ~50 MiB more memory (on a 24 GiB machine) than the lab needs.
BROKER_HEAP = ("-Xms64m", "-Xmx512m")
CONTROLLER_HEAP = ("-Xms32m", "-Xmx256m")
JVM_FLAGS = (
    # One GC thread, no concurrent GC threads: nothing to share two cores with.
    "-XX:+UseSerialGC",
    # Client compiler only: the four JVMs need half the CPU time to start (and less memory);
    # the lab's message rates are far below what a C1-compiled broker handles.
    "-XX:TieredStopAtLevel=1",
    # Die instead of limping on with a broken heap; the lab reports the process as down.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

LOG4J_PROPERTIES = """\
# Written by mqlab (mqlab/lab/kafka.py). The lab sends each JVM's stdout to its log file
# (see `mqlab lab logs`), so everything is logged to the console appender.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n

# Per-request and per-state-change logs are too chatty to read; raise them when debugging.
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.clients.NetworkClient=WARN
"""


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """One JVM of the cluster: the controller (node 0) or a broker (nodes 1..3)."""

    process: str
    node_id: int

    @property
    def is_controller(self) -> bool:
        return self.node_id == KAFKA_CONTROLLER_ID


def broker_process(broker_id: int) -> str:
    """The process (and proxy) name of broker ``broker_id``: ``kafka-broker-2``."""
    return f"kafka-broker-{broker_id}"


NODES = (
    KafkaNode(CONTROLLER_PROCESS, KAFKA_CONTROLLER_ID),
    *(KafkaNode(broker_process(i), i) for i in KAFKA_BROKER_IDS),
)


def find_java() -> str | None:
    """The ``java`` launcher: ``$JAVA_HOME/bin/java`` when set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def java_major_version(java: str) -> int | None:
    """The feature release of ``java`` (17 for "17.0.15", 8 for "1.8.0_402"), None if unknown."""
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # Java 8 and older report "1.8.0"
        major = int(match.group(2))
    return major


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).

    Same format as ``kafka-storage random-uuid`` prints, made here to save a JVM start. Like
    Kafka, never return an id starting with "-" (command-line tools would read it as an option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def _read_properties(path: Path) -> dict[str, str]:
    """Parse the simple ``key=value`` files Kafka writes (meta.properties)."""
    values: dict[str, str] = {}
    for raw_line in path.read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _render_properties(settings: list[tuple[str, object, str]], header: str) -> str:
    """``key=value`` lines, each preceded by the comment that says why it is set."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, value, why in settings:
        lines.append("")
        lines.extend(f"# {line}" for line in why.splitlines())
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


class KafkaService(Service):
    """The lab's Kafka: one KRaft controller and three brokers behind Toxiproxy.

    See the module docstring for why it is shaped this way and docs/kafka-lab.md for the
    settings and measured costs.
    """

    name = "kafka"
    depends_on = ("toxiproxy",)

    # -- where things live -------------------------------------------------------------------

    @staticmethod
    def install_dir(paths: LabPaths) -> Path:
        """``<cache>/kafka-3.9.1``: one directory per version, so upgrades never mix jars."""
        return paths.cache / f"kafka-{KAFKA_VERSION}"

    def lib_dir(self, paths: LabPaths) -> Path:
        """The jars (``java -cp '<lib>/*'``); exists only once complete (renamed into place)."""
        return self.install_dir(paths) / "lib"

    @staticmethod
    def config_dir(paths: LabPaths) -> Path:
        """Generated configuration and the cluster id (under the state dir)."""
        return paths.state / "kafka"

    def cluster_id_file(self, paths: LabPaths) -> Path:
        return self.config_dir(paths) / "cluster.id"

    def server_properties(self, paths: LabPaths, process: str) -> Path:
        return self.config_dir(paths) / process / "server.properties"

    def log4j_properties(self, paths: LabPaths) -> Path:
        return self.config_dir(paths) / "log4j.properties"

    # -- install -----------------------------------------------------------------------------

    def lib_complete(self, paths: LabPaths) -> bool:
        """True when the lib dir holds every jar its manifest lists (written after mvn)."""
        manifest = self.lib_dir(paths) / MAVEN_MANIFEST
        if not manifest.is_file():
            return False
        jars = manifest.read_text(encoding="utf-8").split()
        if f"kafka_2.13-{KAFKA_VERSION}.jar" not in jars:
            return False
        return all((self.lib_dir(paths) / jar).is_file() for jar in jars)

    def _missing_packages(self, paths: LabPaths) -> tuple[list[str], list[str]]:
        """(what is missing, Debian packages that provide it) among Java and Maven."""
        what: list[str] = []
        packages: list[str] = []
        java = find_java()
        major = java_major_version(java) if java else None
        if java is None:
            what.append(f"Java {MIN_JAVA_MAJOR}+ (no java on PATH or in JAVA_HOME)")
            packages.append(JAVA_PACKAGE)
        elif major is None or major < MIN_JAVA_MAJOR:
            found = "of unknown version" if major is None else f"Java {major}"
            source = (
                ", from JAVA_HOME: point it at Java 17+ or unset it"
                if (os.environ.get("JAVA_HOME") and java.startswith(os.environ["JAVA_HOME"]))
                else ""
            )
            what.append(f"Java {MIN_JAVA_MAJOR}+ ({java} is {found}{source})")
            packages.append(JAVA_PACKAGE)
        # Maven only downloads the jars: once they are in the cache it is not needed.
        if not self.lib_complete(paths) and shutil.which("mvn") is None:
            what.append("Maven (mvn, downloads the Kafka jars)")
            packages.append(MAVEN_PACKAGE)
        return what, packages

    def missing(self, paths: LabPaths) -> list[Missing]:
        """Java 17+ to run the cluster; Maven and the jars while they are not downloaded."""
        what, packages = self._missing_packages(paths)
        missing = [
            Missing(item, apt_command([package]))
            for item, package in zip(what, packages, strict=True)
        ]
        if not self.lib_complete(paths):
            missing.append(
                Missing(
                    f"Kafka {KAFKA_VERSION} jars in {self.lib_dir(paths)}",
                    "mqlab lab install kafka",
                )
            )
        return missing

    def install(self, paths: LabPaths) -> None:
        """Install Java and Maven from Debian if missing, then download the Kafka jars.

        mvn copies the jars into a fresh temporary directory next to the final one; only
        after it succeeded is the manifest written and the directory renamed to ``lib``
        (:func:`~mqlab.lab.install.maven_download`), so an interrupted or failed download never
        looks complete and is simply retried.

        Raises:
            LabError: Java or Maven is missing and cannot be installed here (not root: the
                message names the apt command), or mvn failed (its last lines as details).
        """
        what, packages = self._missing_packages(paths)
        if packages:
            apt_install(packages)  # as root; otherwise raises naming the sudo command
            what, packages = self._missing_packages(paths)
            if what:
                raise LabError(f"still missing after installing: {', '.join(what)}")
        if self.lib_complete(paths):
            return
        mvn = shutil.which("mvn")
        if mvn is None:  # checked above; keeps the type checker honest
            raise LabError(f"Maven is needed; run: {apt_command([MAVEN_PACKAGE])}")
        pom = resources.files("mqlab.lab").joinpath("kafka-pom.xml").read_text(encoding="utf-8")
        maven_download(
            mvn,
            pom,
            self.lib_dir(paths),
            f"kafka_2.13-{KAFKA_VERSION}.jar",
            [f"-Dkafka.version={KAFKA_VERSION}"],
        )

    # -- prepare -----------------------------------------------------------------------------

    def cluster_id(self, paths: LabPaths) -> str:
        """The lab cluster's id, created once and kept in the state dir.

        If the file is gone but a node was formatted before, its id is reused, so the nodes
        never end up formatted for different clusters.
        """
        stored = self.cluster_id_file(paths)
        if stored.is_file():
            text = stored.read_text(encoding="utf-8").strip()
            if text:
                return text
        existing = [
            _read_properties(meta).get("cluster.id", "")
            for node in NODES
            if (meta := paths.data_dir(node.process) / "meta.properties").is_file()
        ]
        cluster_id = next((found for found in existing if found), new_cluster_id())
        write_atomically(stored, cluster_id + "\n")
        return cluster_id

    def prepare(self, paths: LabPaths) -> None:
        """Write every node's configuration and format the nodes not formatted yet.

        Configuration is rewritten on every call (it follows the current port table);
        formatting happens once per data dir (``meta.properties`` marks it), with the nodes
        formatted in parallel to save JVM start-up time.

        Raises:
            LabError: a data dir belongs to another cluster, or formatting failed.
        """
        cluster_id = self.cluster_id(paths)
        write_atomically(self.log4j_properties(paths), LOG4J_PROPERTIES)
        for node in NODES:
            write_atomically(
                self.server_properties(paths, node.process), self.render_config(paths, node)
            )
        to_format: list[KafkaNode] = []
        for node in NODES:
            meta = paths.data_dir(node.process) / "meta.properties"
            if not meta.is_file():
                to_format.append(node)
                continue
            found = _read_properties(meta).get("cluster.id")
            if found != cluster_id:
                raise LabError(
                    f"{paths.data_dir(node.process)} was formatted for Kafka cluster {found}, "
                    f"not this lab's {cluster_id}; wipe it: mqlab lab down --wipe kafka"
                )
        self._format(paths, cluster_id, to_format)

    def _format(self, paths: LabPaths, cluster_id: str, nodes: list[KafkaNode]) -> None:
        """Run ``kafka.tools.StorageTool format`` for ``nodes``, all at once."""
        if not nodes:
            return
        java = find_java() or "java"
        running: list[tuple[KafkaNode, subprocess.Popen[str]]] = []
        try:
            for node in nodes:
                paths.data_dir(node.process).mkdir(parents=True, exist_ok=True)
                argv = [
                    java,
                    "-Xmx128m",
                    *JVM_FLAGS,
                    f"-Dlog4j.configuration=file:{self.log4j_properties(paths)}",
                    "-cp",
                    f"{self.lib_dir(paths)}/*",
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    cluster_id,
                    "--config",
                    str(self.server_properties(paths, node.process)),
                    "--ignore-formatted",
                ]
                try:
                    process = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                except OSError as error:
                    raise LabError(
                        f"cannot run {java} to format Kafka storage: {error.strerror}; "
                        "run: mqlab lab install kafka"
                    ) from None
                running.append((node, process))
            failures = []
            for node, process in running:
                output, _ = process.communicate()
                if process.returncode != 0:
                    failures.append(f"{node.process}: {_last_error_line(output)}")
            if failures:
                raise LabError("formatting Kafka storage failed: " + "; ".join(failures))
        finally:
            for _, process in running:  # Ctrl-C while formatting: leave no JVM behind
                if process.poll() is None:
                    process.kill()
                    process.wait()

    def render_config(self, paths: LabPaths, node: KafkaNode) -> str:
        """The ``server.properties`` of ``node``, with a comment on every setting."""
        controller_port = port("kafka_controller")
        header = (
            f"{node.process} (node.id {node.node_id}) of the mqlab lab's Kafka {KAFKA_VERSION}"
            " cluster.\nWritten by mqlab (mqlab/lab/kafka.py) on every `mqlab lab up`;"
            " edits here are overwritten."
        )
        identity: list[tuple[str, object, str]] = [
            ("node.id", node.node_id, "Node 0 is the controller, nodes 1..3 are the brokers."),
        ]
        common: list[tuple[str, object, str]] = [
            (
                "controller.quorum.voters",
                f"{KAFKA_CONTROLLER_ID}@{HOST}:{controller_port}",
                "A single controller: the brokers can be killed without losing the quorum.",
            ),
            ("controller.listener.names", "CONTROLLER", "The listener the controller serves."),
            ("log.dirs", paths.data_dir(node.process), "Data (and the metadata log) of this node."),
            (
                "broker.heartbeat.interval.ms",
                500,
                "Brokers heartbeat to the controller every 0.5 s (default 2 s) ...",
            ),
            (
                "broker.session.timeout.ms",
                3000,
                "... and the controller fences a broker silent for 3 s (default 9 s), so a\n"
                "killed or paused broker leaves the ISR and loses leadership within seconds.",
            ),
        ]
        if node.is_controller:
            role: list[tuple[str, object, str]] = [
                ("process.roles", "controller", "KRaft controller only: it stores no topics."),
                ("listeners", f"CONTROLLER://{HOST}:{controller_port}", "Loopback only."),
                ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT", "No TLS in the lab."),
                ("num.io.threads", 2, "Two cores shared by four JVMs: few threads."),
                ("num.network.threads", 1, "Two cores shared by four JVMs: few threads."),
            ]
            return _render_properties(identity + role + common, header)
        public = port(f"kafka_broker_{node.node_id}")
        upstream = port(f"kafka_broker_{node.node_id}_upstream")
        internal = port(f"kafka_broker_{node.node_id}_internal")
        broker: list[tuple[str, object, str]] = [
            ("process.roles", "broker", "Stores partitions; metadata comes from the controller."),
            (
                "listeners",
                f"CLIENT://{HOST}:{upstream},INTERNAL://{HOST}:{internal}",
                "CLIENT sits behind Toxiproxy; INTERNAL carries replication, never proxied.",
            ),
            (
                "advertised.listeners",
                f"CLIENT://{HOST}:{public},INTERNAL://{HOST}:{internal}",
                "Clients are sent to the Toxiproxy port, so network toxics reach them.",
            ),
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT",
                "No TLS in the lab.",
            ),
            ("inter.broker.listener.name", "INTERNAL", "Replication between brokers."),
            (
                "num.partitions",
                1,
                "Default for topics created without a partition count (lessons give one).",
            ),
            (
                "auto.create.topics.enable",
                "false",
                "Topics are created explicitly: a typo fails loudly instead of creating a\n"
                "new topic, and the lessons show partitions and replication being chosen.",
            ),
            ("default.replication.factor", 3, "Every partition on all three brokers."),
            (
                "min.insync.replicas",
                2,
                "acks=all needs 2 of 3 replicas in sync: one broker may fail, not two.",
            ),
            (
                "unclean.leader.election.enable",
                "false",
                "Kafka's default, stated because lessons rely on it: never elect a replica\n"
                "that missed acknowledged writes.",
            ),
            ("offsets.topic.replication.factor", 3, "Committed offsets survive a broker loss."),
            (
                "offsets.topic.num.partitions",
                10,
                "Default 50; 10 creates __consumer_offsets faster on a small machine.",
            ),
            (
                "transaction.state.log.replication.factor",
                3,
                "Transaction state survives a broker loss ...",
            ),
            ("transaction.state.log.min.isr", 2, "... with the same 2-of-3 rule as the data."),
            ("transaction.state.log.num.partitions", 10, "Default 50; see offsets above."),
            (
                "group.initial.rebalance.delay.ms",
                0,
                "Default 3 s: the first rebalance of a group starts at once, lessons stay snappy.",
            ),
            (
                "group.min.session.timeout.ms",
                1000,
                "Default 6 s; lets lessons and tests use short consumer session timeouts so a\n"
                "dead consumer's partitions move within seconds.",
            ),
            (
                "replica.lag.time.max.ms",
                10000,
                "Default 30 s: a follower that stops fetching leaves the ISR after 10 s.\n"
                "Not lower: on two busy cores a healthy follower may lag a few seconds.",
            ),
            (
                "leader.imbalance.check.interval.seconds",
                30,
                "Default 300 s: a restarted broker gets its preferred leaderships back\n"
                "within half a minute, so the cluster visibly returns to balance.",
            ),
            ("num.network.threads", 2, "Two cores shared by four JVMs: few threads."),
            ("num.io.threads", 2, "Two cores shared by four JVMs: few threads."),
            ("num.replica.fetchers", 1, "One fetcher thread per source broker is plenty here."),
            ("background.threads", 2, "Default 10."),
            ("log.cleaner.threads", 1, "Compaction (of __consumer_offsets) needs one thread."),
            (
                "log.cleaner.dedupe.buffer.size",
                8 * 1024 * 1024,
                "Default 128 MiB of heap; 8 MiB compacts the lab's small topics fine.",
            ),
        ]
        return _render_properties(identity + broker + common, header)

    # -- processes and proxies ---------------------------------------------------------------

    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        """The controller first (the brokers register with it), then brokers 1, 2, 3."""
        java = find_java() or "java"
        specs: list[ProcessSpec] = []
        for node in NODES:
            argv = (
                java,
                *(CONTROLLER_HEAP if node.is_controller else BROKER_HEAP),
                *JVM_FLAGS,
                f"-Dlog4j.configuration=file:{self.log4j_properties(paths)}",
                "-cp",
                f"{self.lib_dir(paths)}/*",
                "kafka.Kafka",
                str(self.server_properties(paths, node.process)),
            )
            if node.is_controller:
                controller_port = port("kafka_controller")
                specs.append(
                    ProcessSpec(
                        name=node.process,
                        service=self.name,
                        argv=argv,
                        health=HealthCheck(kind="tcp", port=controller_port, timeout=90.0),
                        ports=(controller_port,),
                        cwd=paths.data_dir(node.process),
                        stop_timeout=30.0,
                    )
                )
                continue
            upstream = port(f"kafka_broker_{node.node_id}_upstream")
            internal = port(f"kafka_broker_{node.node_id}_internal")
            specs.append(
                ProcessSpec(
                    name=node.process,
                    service=self.name,
                    argv=argv,
                    health=HealthCheck(
                        kind="command",
                        argv=(
                            sys.executable,
                            "-m",
                            "mqlab.lab.kafka",
                            "registered",
                            str(upstream),
                            str(node.node_id),
                        ),
                        # A cold first start on two cores (four JVMs, formatting, JIT) can
                        # take half a minute; warm starts take a few seconds.
                        timeout=120.0,
                    ),
                    ports=(upstream, internal),
                    cwd=paths.data_dir(node.process),
                    # A broker's clean shutdown hands its leaderships over first.
                    stop_timeout=30.0,
                )
            )
        return specs

    def proxies(self) -> list[ProxySpec]:
        """One proxy per broker, on the port the broker advertises to clients."""
        return [
            ProxySpec(
                name=broker_process(i),
                service=self.name,
                listen_port=port(f"kafka_broker_{i}"),
                upstream_port=port(f"kafka_broker_{i}_upstream"),
            )
            for i in KAFKA_BROKER_IDS
        ]

    def data_dirs(self, paths: LabPaths) -> list[Path]:
        """Every node's data dir plus the cluster id: a wiped lab is a brand-new cluster."""
        return [paths.data_dir(node.process) for node in NODES] + [self.config_dir(paths)]

    def version(self, paths: LabPaths) -> str:
        return KAFKA_VERSION


def _last_error_line(output: str) -> str:
    """The most telling line of a tool's output: the last one mentioning an error."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR" in line or "Exception" in line or "error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


# -- broker health check ---------------------------------------------------------------------

_METADATA_API_KEY = 3
# Metadata v4: the oldest version Kafka 4.x still accepts, and not yet "flexible" (no tagged
# fields), so the request and response stay a few fixed fields.
_METADATA_VERSION = 4


def _metadata_request(correlation_id: int) -> bytes:
    client_id = b"mqlab-health"
    body = struct.pack(
        ">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id)
    )
    body += client_id
    body += struct.pack(">i", 0)  # topics: an empty array, i.e. brokers only
    body += struct.pack(">?", False)  # allow_auto_topic_creation
    return struct.pack(">i", len(body)) + body


def _recv_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def registered_brokers(broker_port: int, timeout: float = 2.0) -> set[int]:
    """Node ids of the live brokers, as the broker on ``broker_port`` reports them.

    A KRaft broker lists only brokers that registered with the controller and are not
    fenced, itself included once it is ready to serve.

    Raises:
        OSError: the broker is not reachable or closed the connection.
    """
    correlation_id = 1
    with socket.create_connection((HOST, broker_port), timeout=timeout) as connection:
        connection.sendall(_metadata_request(correlation_id))
        (size,) = struct.unpack(">i", _recv_exactly(connection, 4))
        response = _recv_exactly(connection, size)
    got_id, _throttle_ms, broker_count = struct.unpack_from(">iii", response, 0)
    if got_id != correlation_id:
        raise ConnectionError("unexpected response")
    offset = 12
    brokers: set[int] = set()
    for _ in range(broker_count):
        (node_id, host_length) = struct.unpack_from(">ih", response, offset)
        offset += 6 + host_length + 4  # node_id, host, port
        (rack_length,) = struct.unpack_from(">h", response, offset)
        offset += 2 + max(rack_length, 0)
        brokers.add(node_id)
    return brokers


def _main(argv: list[str]) -> int:
    """``registered PORT NODE_ID``: exit 0 when the broker lists itself, 1 otherwise."""
    if len(argv) != 3 or argv[0] != "registered":
        print("usage: python -m mqlab.lab.kafka registered PORT NODE_ID", file=sys.stderr)
        return 2
    broker_port, node_id = int(argv[1]), int(argv[2])
    with contextlib.suppress(OSError, struct.error):
        if node_id in registered_brokers(broker_port):
            return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
