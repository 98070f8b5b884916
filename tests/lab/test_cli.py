"""The ``mqlab`` CLI's promises that need no running broker: a light ``--help``, and every
user error as one line on stderr with a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.cli.app import main
from tests.conftest import computed_once
from tests.lab.conftest import require_installed

HEAVY_MODULES = ("textual", "aiokafka", "boto3", "botocore", "aio_pika", "nats", "psycopg")

HELP_COMMANDS = [
    ("--help",),
    ("lab", "--help"),
    ("lab", "fault", "toxic", "add", "--help"),
    ("doctor", "--help"),
]

# Imports the CLI in a fresh interpreter, then runs the real entry point with each command in
# turn, and reports the heavy modules loaded by the import and, after each command, those loaded
# since the import. Modules only accumulate: when every report is empty, each command run alone
# loads nothing heavy either (and a heavy module shows first under the command that loaded it).
# One interpreter instead of five, each of which spent a second or two importing before it
# could look.
PROBE = """
import json, sys
commands = json.loads(sys.argv[1])
def heavy():
    return sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
import mqlab.cli
loaded = {"import": heavy()}
for arguments in commands:
    sys.argv = ["mqlab", *arguments]
    try:
        mqlab.cli.main()
    except SystemExit:
        pass
    loaded[" ".join(arguments)] = [m for m in heavy() if m not in loaded["import"]]
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def heavy_modules_loaded() -> dict[str, list[str]]:
    """Heavy modules the CLI loaded: on import, and on each of :data:`HELP_COMMANDS`."""

    def probe() -> dict[str, list[str]]:
        script = f"HEAVY = {HEAVY_MODULES!r}\n{PROBE}"
        completed = subprocess.run(
            [sys.executable, "-c", script, json.dumps(HELP_COMMANDS)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        result: dict[str, list[str]] = json.loads(completed.stdout.strip().splitlines()[-1])
        return result

    return computed_once("cli-heavy-modules", probe)


@pytest.mark.parametrize("args", HELP_COMMANDS)
def test_help_imports_no_heavy_client_library(
    args: tuple[str, ...], heavy_modules_loaded: dict[str, list[str]]
) -> None:
    assert heavy_modules_loaded[" ".join(args)] == []


def test_importing_the_cli_imports_no_heavy_client_library(
    heavy_modules_loaded: dict[str, list[str]],
) -> None:
    assert heavy_modules_loaded["import"] == []


def private_lab_env(tmp_path: Path) -> dict[str, str]:
    """An empty private lab (nothing running): its own state dir, ports where nothing listens."""
    return {
        "MQLAB_STATE_DIR": str(tmp_path / "state"),
        # An offset where nothing listens: these tests never reach a server.
        "MQLAB_PORT_OFFSET": "20",
    }


def run_mqlab(
    *args: str, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``mqlab`` command in a fresh interpreter against an empty private lab."""
    return subprocess.run(
        [sys.executable, "-m", "mqlab.cli", *args],
        env={**os.environ, **private_lab_env(tmp_path), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Completed:
    """What a run of the CLI left: its exit code and what it wrote."""

    returncode: int
    stdout: str
    stderr: str


class InProcessCli:
    """``mqlab ARGS`` through the console script's own ``main()``, in this process.

    ``main()`` is where an error becomes one line and an exit code, and the settings it reads
    (state dir, ports, PATH) are read at call time, so these tests need no interpreter of
    their own: a fresh interpreter per case cost one to two seconds each in imports. An
    exception that escaped ``main()`` would escape here too and fail the test, as its
    traceback would in a terminal; :func:`test_a_user_error_is_one_line_from_the_real_command`
    keeps one run through a real interpreter.
    """

    def __init__(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def __call__(self, *args: str, extra_env: dict[str, str] | None = None) -> Completed:
        self.capsys.readouterr()  # what the test printed before is not the command's
        with self.monkeypatch.context() as patch:
            for name, value in {**private_lab_env(self.tmp_path), **(extra_env or {})}.items():
                patch.setenv(name, value)
            patch.setattr(sys, "argv", ["mqlab", *args])
            try:
                main()
                code: object = 0
            except SystemExit as exit_:
                code = exit_.code
        written = self.capsys.readouterr()
        if code is None:
            code = 0
        if not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
            return Completed(1, written.out, written.err + f"{code}\n")
        return Completed(code, written.out, written.err)


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> InProcessCli:
    return InProcessCli(tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("lab", "up", "natz"), "unknown service 'natz'; did you mean 'nats'?"),
        (("lab", "down", "rabit"), "unknown service 'rabit'; did you mean 'rabbitmq'?"),
        (("lab", "fault", "kill", "kafka-broker-9"), "unknown process 'kafka-broker-9'"),
        (("lab", "fault", "pause", "redis"), "redis is not running; run: mqlab lab up redis"),
        (("lab", "logs", "nats"), "nats has no log yet"),
        (
            ("lab", "fault", "toxic", "add", "nats", "latency", "--rate", "5"),
            "a latency toxic takes --latency, --jitter, not --rate",
        ),
        (("lab", "fault", "toxic", "add", "nats", "lag"), "unknown toxic kind 'lag'"),
        (("lab", "fault", "toxic", "add", "natz", "latency"), "did you mean 'nats'?"),
        (
            ("lab", "fault", "toxic", "add", "nats", "latency", "--latency", "100"),
            "toxiproxy is not reachable",
        ),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    args: tuple[str, ...], expected: str, cli: InProcessCli
) -> None:
    completed = cli(*args)
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_a_user_error_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    """The cases above run ``main()`` in this process; this one runs ``python -m mqlab.cli`` as
    a learner's shell does, so what the interpreter itself prints and returns is checked too."""
    completed = run_mqlab("lab", "fault", "kill", "kafka-broker-9", tmp_path=tmp_path)
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: unknown process 'kafka-broker-9'"), completed.stderr


def test_compose_without_docker_says_what_to_do(tmp_path: Path, cli: InProcessCli) -> None:
    # A PATH without docker, whatever the machine has.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    completed = cli("lab", "up", "--compose", "nats", extra_env={"PATH": str(bin_dir)})
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert "--compose needs Docker" in completed.stderr
    assert "without --compose" in completed.stderr


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        ("compose", "the docker compose plugin is not installed"),
        ("info", "no Docker engine is running"),
    ],
)
def test_compose_with_an_unusable_docker_says_why(
    failing: str, expected: str, tmp_path: Path, cli: InProcessCli
) -> None:
    # A docker CLI whose `compose` plugin or engine is missing, as on machines with the CLI only.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\n[ "$1" = "{failing}" ] && exit 1\nexit 0\n')
    docker.chmod(0o755)
    completed = cli("lab", "down", "--compose", extra_env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        f"error: --compose needs Docker, but {expected}; "
        "run `mqlab lab up` without --compose to use local processes"
    )


def test_status_of_an_empty_lab_lists_every_service_as_stopped(cli: InProcessCli) -> None:
    completed = cli("lab", "status", "--json")
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(completed.stdout)
    services = {row["service"] for row in rows}
    assert {"toxiproxy", "rabbitmq", "nats", "sqs", "redis", "postgres"} <= services
    for row in rows:
        if row["service"] != "kafka" or row["health"] == "stopped":
            assert row["health"] == "stopped", row
            assert row["pid"] is None


def test_no_arguments_opens_the_course() -> None:
    # Without a terminal the course lists the scenarios and says how to run one.
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 0, result.output
    assert "mqlab run <id> --broker sim" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("mqlab ")


# --- mqlab doctor ------------------------------------------------------------------------------


def test_doctor_on_a_simulator_only_machine_says_the_simulator_is_ready(
    tmp_path: Path, cli: InProcessCli
) -> None:
    # An empty cache: no Toxiproxy, no Kafka jars, as on a machine that never ran `lab install`.
    completed = cli("doctor", extra_env={"MQLAB_CACHE_DIR": str(tmp_path / "cache")})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    simulator = [line.split() for line in lines if line.startswith("simulator")]
    assert simulator
    assert simulator[0][:2] == ["simulator", "ok"]
    assert "ready: every scenario runs on it (--broker sim)" in completed.stdout
    assert any(line.split()[:3] == ["kafka", "installed", "missing"] for line in lines)
    assert lines[-1] == "ready: the simulator"


def test_doctor_fails_for_a_service_asked_for_that_is_missing_or_stopped(
    tmp_path: Path, cli: InProcessCli
) -> None:
    missing = cli("doctor", "kafka", extra_env={"MQLAB_CACHE_DIR": str(tmp_path / "c")})
    assert missing.returncode == 1
    # Kafka needs Toxiproxy in front of it: both are named.
    assert missing.stderr.strip() == "not ready: toxiproxy, kafka (the fix column says how)"
    assert "mqlab lab install kafka" in missing.stdout
    # Installed (the real cache) but not running in this empty private lab.
    require_installed("nats")
    stopped = cli("doctor", "nats")
    assert stopped.returncode == 1
    assert stopped.stderr.strip() == "not ready: toxiproxy, nats (the fix column says how)"
    assert "mqlab lab up nats" in stopped.stdout
    unknown = cli("doctor", "natz")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: unknown service 'natz'; did you mean 'nats'?")


def test_doctor_verdict_counts_only_what_was_asked_for_and_what_broke() -> None:
    from mqlab.lab.doctor import Finding, problems

    report = [
        Finding("simulator", "ok", "ready"),
        Finding("kafka installed", "missing", "jars", "mqlab lab install kafka", service="kafka"),
        Finding("nats running", "down", "nats: stopped", "mqlab lab up nats", service="nats"),
        Finding("toxiproxy running", "ok", "127.0.0.1:18474", service="toxiproxy"),
    ]
    assert problems(report) == []  # nothing asked for: the simulator is enough
    assert [f.check for f in problems(report, ["nats"])] == ["nats running"]
    assert [f.check for f in problems(report, ["kafka"])] == ["kafka installed"]
    crashed = Finding("redis running", "broken", "redis: crashed", "mqlab lab up redis", "redis")
    assert problems([*report, crashed]) == [crashed]  # the lab started it and it broke
