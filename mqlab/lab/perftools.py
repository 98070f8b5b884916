"""The brokers' own perf tools, installed beside the lab so ``mqlab bench`` can run them.

A number from mqlab's Python harness means little alone: is it the broker, or the client? The
brokers' own tools, run on the same broker in the same run, answer that. They come from the
same package sources as the lab itself:

- Kafka's ProducerPerformance / ConsumerPerformance are in the ``kafka-tools`` jar the lab
  already downloads with the broker (:mod:`mqlab.lab.kafka`); nothing more to install.
- RabbitMQ's PerfTest is a Java program on Maven Central (``com.rabbitmq:perf-test``): a
  throwaway pom written here and ``mvn dependency:copy-dependencies`` put it and its runtime
  dependencies into ``<cache>/perf-test-<version>/lib``, the way the lab installs Kafka's jars
  (staged in a temporary directory and renamed into place, so a failed download never looks
  complete).
- ``nats bench`` is a subcommand of the NATS CLI, a Go program: ``go install`` builds it into
  ``<cache>/bin/nats``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from mqlab.lab.errors import LabError
from mqlab.lab.install import MAVEN_MANIFEST, apt_command, go_install, maven_download
from mqlab.lab.kafka import KafkaService, find_java
from mqlab.lab.spec import LabPaths

PerfTool = Literal["kafka", "rabbitmq", "nats"]
"""The systems whose own perf tool mqlab runs (SQS has none: it is a service, not a program)."""
PERF_TOOLS: tuple[PerfTool, ...] = get_args(PerfTool)

PERFTEST_VERSION = "2.22.1"
"""RabbitMQ PerfTest (Java 11+; the lab has Java 17)."""
PERFTEST_MAIN = "com.rabbitmq.perf.PerfTest"
NATSCLI_MODULE = "github.com/nats-io/natscli/nats"
NATSCLI_VERSION = "v0.5.0"
"""The NATS CLI release that builds with the Go the lab uses (its ``bench js`` subcommands)."""
KAFKA_PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"
KAFKA_CONSUMER_PERFORMANCE = "org.apache.kafka.tools.ConsumerPerformance"


_PERFTEST_POM = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by mqlab (mqlab/lab/perftools.py): only lists what to download; nothing is built. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.mqlab</groupId>
  <artifactId>mqlab-perf-test</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>com.rabbitmq</groupId>
      <artifactId>perf-test</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>3.8.1</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""


@dataclass(frozen=True, slots=True)
class ToolStatus:
    """Whether one perf tool can run here, and what fixes it when not."""

    system: PerfTool
    tool: str
    """How the tool is called (``ProducerPerformance``, ``PerfTest``, ``nats bench``)."""
    ready: bool
    fix: str = ""
    """The command that installs what is missing (empty when ready)."""


def perftest_dir(paths: LabPaths) -> Path:
    """``<cache>/perf-test-<version>/lib``: PerfTest and its dependencies."""
    return paths.cache / f"perf-test-{PERFTEST_VERSION}" / "lib"


def nats_cli_path(paths: LabPaths) -> Path:
    """Where ``go install`` puts the NATS CLI."""
    return paths.cache / "bin" / "nats"


def _nats_version_file(paths: LabPaths) -> Path:
    return nats_cli_path(paths).with_name("nats.version")


def kafka_tools_dir(paths: LabPaths) -> Path:
    """The Kafka jars (with ``kafka-tools``) the lab runs the broker from."""
    return KafkaService().lib_dir(paths)


def perftest_ready(paths: LabPaths) -> bool:
    """PerfTest's jars are complete (the manifest is written after the download)."""
    manifest = perftest_dir(paths) / MAVEN_MANIFEST
    if not manifest.is_file():
        return False
    jars = manifest.read_text(encoding="utf-8").split()
    return f"perf-test-{PERFTEST_VERSION}.jar" in jars and all(
        (perftest_dir(paths) / jar).is_file() for jar in jars
    )


def nats_cli_ready(paths: LabPaths) -> bool:
    """The NATS CLI of :data:`NATSCLI_VERSION` is built."""
    version = _nats_version_file(paths)
    return (
        nats_cli_path(paths).is_file()
        and version.is_file()
        and version.read_text(encoding="utf-8").strip() == NATSCLI_VERSION
    )


def status(paths: LabPaths) -> list[ToolStatus]:
    """Every perf tool, ready or with the command that installs it."""
    java = find_java() is not None
    kafka_ready = java and KafkaService().lib_complete(paths)
    return [
        ToolStatus(
            "kafka",
            "ProducerPerformance",
            kafka_ready,
            "" if kafka_ready else "mqlab lab install kafka",
        ),
        ToolStatus(
            "rabbitmq",
            "PerfTest",
            java and perftest_ready(paths),
            "" if java and perftest_ready(paths) else "mqlab bench --install",
        ),
        ToolStatus(
            "nats",
            "nats bench",
            nats_cli_ready(paths),
            "" if nats_cli_ready(paths) else "mqlab bench --install",
        ),
    ]


def install_perftest(paths: LabPaths) -> None:
    """Download PerfTest and its runtime dependencies from Maven Central into the cache.

    Raises:
        LabError: no Maven (the message names the apt command), or mvn failed.
    """
    if perftest_ready(paths):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LabError(f"Maven is needed to download PerfTest; run: {apt_command(['maven'])}")
    maven_download(
        mvn,
        _PERFTEST_POM.format(version=PERFTEST_VERSION),
        perftest_dir(paths),
        f"perf-test-{PERFTEST_VERSION}.jar",
    )


def install_nats_cli(paths: LabPaths) -> None:
    """Build the NATS CLI (``nats bench``) from its Go module into the cache.

    Raises:
        LabError: no Go, or the build failed.
    """
    if nats_cli_ready(paths):
        return
    go_install(f"{NATSCLI_MODULE}@{NATSCLI_VERSION}", "nats", nats_cli_path(paths))
    _nats_version_file(paths).write_text(NATSCLI_VERSION + "\n", encoding="utf-8")


def install(paths: LabPaths, systems: tuple[PerfTool, ...] = PERF_TOOLS) -> None:
    """Install the perf tools of ``systems`` that are missing.

    Kafka's come with the broker's jars (``mqlab lab install kafka``); this checks they are
    there and says so when not.

    Raises:
        LabError: a tool could not be installed (what failed, and the command's output).
    """
    if "kafka" in systems and not KafkaService().lib_complete(paths):
        raise LabError(
            "Kafka's ProducerPerformance comes with the lab's Kafka jars; run: "
            "mqlab lab install kafka"
        )
    if "rabbitmq" in systems:
        install_perftest(paths)
    if "nats" in systems:
        install_nats_cli(paths)
