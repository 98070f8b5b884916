"""The lab's Python API where no process needs to run: names, the lock, the postgres data dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mqlab.lab.errors import LabError
from mqlab.lab.native import postgres
from mqlab.lab.paths import lab_paths
from mqlab.lab.services import SERVICE_PATHS, get_service
from mqlab.lab.spec import LabPaths
from mqlab.lab.supervisor import Lab

# Holds the lab's lock from another process, like a second `mqlab lab` command would.
HOLDER = """
import fcntl, os, sys, time
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, f"{os.getpid()} up".encode())
print("locked", flush=True)
time.sleep(30)
"""


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(LabPaths(state=tmp_path / "state", cache=tmp_path / "cache"))


def test_paths_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MQLAB_STATE_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("MQLAB_CACHE_DIR", str(tmp_path / "c"))
    paths = lab_paths()
    assert paths.state == tmp_path / "s"
    assert paths.cache == tmp_path / "c"
    assert paths.pid_file("nats") == tmp_path / "s" / "run" / "nats.json"


def test_service_names() -> None:
    assert next(iter(SERVICE_PATHS)) == "toxiproxy"  # started first: the proxies live in it
    assert get_service(" Redis ").name == "redis"
    with pytest.raises(LabError, match="unknown service 'postgress'; did you mean 'postgres'"):
        get_service("postgress")
    with pytest.raises(LabError, match="unknown service 'mongodb' \\(services: toxiproxy, "):
        get_service("mongodb")


def test_process_and_proxy_names(lab: Lab) -> None:
    assert lab.process_spec("kafka-broker-2").service == "kafka"
    assert lab.process_spec("rabbitmq-epmd").service == "rabbitmq"
    with pytest.raises(LabError, match="unknown process 'nat'; did you mean 'nats'"):
        lab.process_spec("nat")
    assert lab.proxy_spec("kafka-broker-1").service == "kafka"
    with pytest.raises(LabError, match="unknown proxy 'redis'"):
        lab.proxy_spec("redis")  # support services are reached directly, not proxied


def test_brokers_depend_on_toxiproxy_and_support_services_do_not() -> None:
    for broker in ("kafka", "rabbitmq", "nats", "sqs"):
        assert get_service(broker).depends_on == ("toxiproxy",)
        assert get_service(broker).proxies()
    for support in ("redis", "postgres"):
        assert get_service(support).depends_on == ()
        assert get_service(support).proxies() == []


def test_the_lock_is_reentrant_and_reports_who_holds_it(lab: Lab) -> None:
    with lab.locked("outer"), lab.locked("inner"):  # the same process may nest
        assert (lab.paths.state / "lab.lock").read_text().startswith(f"{os.getpid()} outer")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lab.paths.state / "lab.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        expected = f"holds the lab \\(pid/command: {holder.pid} up\\)"
        with pytest.raises(LabError, match=expected), lab.locked("fault kill", timeout=0.3):
            pass
    finally:
        holder.kill()
        holder.wait()
    with lab.locked("after"):  # released when its holder died
        pass


def test_postgres_data_dir_stays_in_a_reachable_state_dir() -> None:
    # pytest's tmp_path lives under a 0700 dir, so make one everybody may enter.
    reachable = Path(tempfile.mkdtemp(prefix="mqlab-test-", dir="/tmp"))
    try:
        reachable.chmod(0o755)
        paths = LabPaths(state=reachable / "state", cache=reachable / "cache")
        assert postgres.data_dir(paths) == paths.data_dir("postgres")
    finally:
        shutil.rmtree(reachable)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to the postgres user")
def test_postgres_data_dir_moves_out_of_an_unreachable_state_dir(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    paths = LabPaths(state=private / "state", cache=tmp_path / "cache")
    moved = postgres.data_dir(paths)
    assert moved.parent == Path("/var/lib/postgresql")
    assert moved.name.startswith("mqlab-")
    assert postgres.data_dir(paths) == moved  # stable for the same state dir
    other = LabPaths(state=private / "other", cache=tmp_path / "cache")
    assert postgres.data_dir(other) != moved  # one cluster per lab
