"""The ``mqlab`` CLI's promises that need no running broker: a light ``--help``, and every
user error as one line on stderr with a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from tests.lab.conftest import require_installed

HEAVY_MODULES = ("textual", "aiokafka", "boto3", "botocore", "aio_pika", "nats", "psycopg")

# Runs the real entry point in a fresh interpreter and reports which heavy modules it loaded.
PROBE = """
import json, sys
arguments = json.loads(sys.argv[1])
sys.argv = ["mqlab", *arguments]
from mqlab.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)))
"""


def loaded_heavy_modules(*args: str) -> list[str]:
    script = f"HEAVY = {HEAVY_MODULES!r}\n{PROBE}"
    completed = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("lab", "--help"),
        ("lab", "fault", "toxic", "add", "--help"),
        ("doctor", "--help"),
    ],
)
def test_help_imports_no_heavy_client_library(args: tuple[str, ...]) -> None:
    assert loaded_heavy_modules(*args) == []


def test_importing_the_cli_imports_no_heavy_client_library() -> None:
    script = (
        "import sys, json; import mqlab.cli; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r})))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(completed.stdout) == []


def run_mqlab(
    *args: str, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``mqlab`` entry point against an empty private lab (nothing running)."""
    env = {
        **os.environ,
        "MQLAB_STATE_DIR": str(tmp_path / "state"),
        # An offset where nothing listens: these tests never reach a server.
        "MQLAB_PORT_OFFSET": "20",
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "mqlab.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
    args: tuple[str, ...], expected: str, tmp_path: Path
) -> None:
    completed = run_mqlab(*args, tmp_path=tmp_path)
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_compose_without_docker_says_what_to_do(tmp_path: Path) -> None:
    # A PATH without docker, whatever the machine has.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    completed = run_mqlab(
        "lab", "up", "--compose", "nats", tmp_path=tmp_path, extra_env={"PATH": str(bin_dir)}
    )
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
    failing: str, expected: str, tmp_path: Path
) -> None:
    # A docker CLI whose `compose` plugin or engine is missing, as on machines with the CLI only.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\n[ "$1" = "{failing}" ] && exit 1\nexit 0\n')
    docker.chmod(0o755)
    completed = run_mqlab(
        "lab",
        "down",
        "--compose",
        tmp_path=tmp_path,
        extra_env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        f"error: --compose needs Docker, but {expected}; "
        "run `mqlab lab up` without --compose to use local processes"
    )


def test_status_of_an_empty_lab_lists_every_service_as_stopped(tmp_path: Path) -> None:
    completed = run_mqlab("lab", "status", "--json", tmp_path=tmp_path)
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


def test_doctor_on_a_simulator_only_machine_says_the_simulator_is_ready(tmp_path: Path) -> None:
    # An empty cache: no Toxiproxy, no Kafka jars, as on a machine that never ran `lab install`.
    completed = run_mqlab(
        "doctor", tmp_path=tmp_path, extra_env={"MQLAB_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    simulator = [line.split() for line in lines if line.startswith("simulator")]
    assert simulator
    assert simulator[0][:2] == ["simulator", "ok"]
    assert "ready: every scenario runs on it (--broker sim)" in completed.stdout
    assert any(line.split()[:3] == ["kafka", "installed", "missing"] for line in lines)
    assert lines[-1] == "ready: the simulator"


def test_doctor_fails_for_a_service_asked_for_that_is_missing_or_stopped(tmp_path: Path) -> None:
    missing = run_mqlab(
        "doctor", "kafka", tmp_path=tmp_path, extra_env={"MQLAB_CACHE_DIR": str(tmp_path / "c")}
    )
    assert missing.returncode == 1
    # Kafka needs Toxiproxy in front of it: both are named.
    assert missing.stderr.strip() == "not ready: toxiproxy, kafka (the fix column says how)"
    assert "mqlab lab install kafka" in missing.stdout
    # Installed (the real cache) but not running in this empty private lab.
    require_installed("nats")
    stopped = run_mqlab("doctor", "nats", tmp_path=tmp_path)
    assert stopped.returncode == 1
    assert stopped.stderr.strip() == "not ready: toxiproxy, nats (the fix column says how)"
    assert "mqlab lab up nats" in stopped.stdout
    unknown = run_mqlab("doctor", "natz", tmp_path=tmp_path)
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
