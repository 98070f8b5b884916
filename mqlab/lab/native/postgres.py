"""PostgreSQL from the Debian package: the course's transactional idempotency store
(``INSERT ... ON CONFLICT DO NOTHING`` in the same transaction as the business write).

PostgreSQL refuses to run as root, so when mqlab runs as root the server (and ``initdb``) run
as the ``postgres`` OS user that the Debian package creates. That user must be able to reach
the data dir. The lab's state dir usually lives under root's home (``/root`` is mode 0700), which
``postgres`` cannot enter, so in that case the data dir moves to its own directory under
``/var/lib/postgresql`` (the ``postgres`` user's home, created by the package), named after a
hash of the state dir so that several labs never share one. When the state dir is reachable
(``/tmp/...`` for example) the data dir stays inside it. Either way ``down --wipe`` removes it.

The server listens on 127.0.0.1 only, with trust authentication for local connections (a lab,
not a production database), its unix socket inside the data dir (never ``/var/run/postgresql``,
which belongs to a system cluster), and role + database ``mqlab``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from mqlab.lab.endpoints import HOST, port
from mqlab.lab.errors import LabError
from mqlab.lab.install import apt_command, apt_install, is_root, run
from mqlab.lab.spec import HealthCheck, LabPaths, Missing, ProcessSpec, Service

POSTGRES_LIB = Path("/usr/lib/postgresql")
OS_USER = "postgres"
ROLE = "mqlab"
DATABASE = "mqlab"


def bin_dir() -> Path | None:
    """The newest installed server's bin dir (Debian: /usr/lib/postgresql/<major>/bin)."""
    candidates = [
        entry / "bin"
        for entry in POSTGRES_LIB.glob("*")
        if entry.name.isdigit() and (entry / "bin" / "postgres").is_file()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda path: int(path.parent.name))


def _run_as_user() -> str | None:
    """The OS user the server runs as: ``postgres`` when we are root, else ourselves."""
    return OS_USER if is_root() else None


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """True when user ``uid`` can enter every existing directory on the way to ``path``."""
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except FileNotFoundError:
            return True  # created by us below, with the right owner
        if info.st_uid == uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == gid:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            return False
    return True


def data_dir(paths: LabPaths) -> Path:
    """Where this lab's cluster lives (see the module docstring for why it may move)."""
    inside_state = paths.data_dir("postgres")
    user = _run_as_user()
    if user is None:
        return inside_state
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return inside_state  # reported as missing by PostgresService.missing()
    if _reachable_by(inside_state, entry.pw_uid, entry.pw_gid):
        return inside_state
    digest = hashlib.sha256(str(paths.state).encode()).hexdigest()[:12]
    return Path(entry.pw_dir) / f"mqlab-{digest}"


class PostgresService(Service):
    """A private PostgreSQL cluster on 127.0.0.1:``postgres`` with role/database ``mqlab``."""

    name = "postgres"

    def missing(self, paths: LabPaths) -> list[Missing]:
        found = bin_dir()
        if found is None:
            return [Missing("PostgreSQL server (Debian package)", apt_command(["postgresql"]))]
        if is_root():
            import pwd

            try:
                pwd.getpwnam(OS_USER)
            except KeyError:
                return [Missing(f"OS user {OS_USER!r}", apt_command(["postgresql"]))]
        return []

    def install(self, paths: LabPaths) -> None:
        apt_install(["postgresql"])

    def prepare(self, paths: LabPaths) -> None:
        binaries = bin_dir()
        if binaries is None:
            raise LabError(f"PostgreSQL is not installed; run: {apt_command(['postgresql'])}")
        directory = data_dir(paths)
        version_file = directory / "PG_VERSION"
        if version_file.is_file():
            initialised = version_file.read_text().strip()
            if initialised != binaries.parent.name:
                raise LabError(
                    f"{directory} was initialised by PostgreSQL {initialised}, but "
                    f"{binaries.parent.name} is installed; run: mqlab lab down postgres --wipe"
                )
            return
        directory.mkdir(parents=True, exist_ok=True)
        user = _run_as_user()
        if user is not None:
            shutil.chown(directory, user, user)
        directory.chmod(0o700)
        initdb = [
            str(binaries / "initdb"),
            "-D",
            str(directory),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # a lab cluster: no need to wait for the disk here
        ]
        if user is not None:
            initdb = ["runuser", "-u", user, "--", *initdb]
        run(initdb, cwd=directory)
        hba = directory / "pg_hba.conf"
        hba.write_text(
            "# Written by mqlab: local connections only, no passwords (a lab cluster).\n"
            "local all all trust\n"
            f"host  all all {HOST}/32 trust\n"
        )
        if user is not None:
            shutil.chown(hba, user, user)

    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        binaries = bin_dir() or Path("/usr/lib/postgresql/15/bin")
        directory = data_dir(paths)
        pg_port = port("postgres")
        return [
            ProcessSpec(
                name="postgres",
                service=self.name,
                argv=(
                    str(binaries / "postgres"),
                    "-D",
                    str(directory),
                    "-c",
                    f"listen_addresses={HOST}",
                    "-c",
                    f"port={pg_port}",
                    "-c",
                    f"unix_socket_directories={directory}",
                    "-c",
                    "logging_collector=off",
                ),
                health=HealthCheck(
                    kind="command",
                    argv=(
                        str(binaries / "pg_isready"),
                        "-q",
                        "-h",
                        HOST,
                        "-p",
                        str(pg_port),
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                    ),
                    timeout=30,
                ),
                ports=(pg_port,),
                cwd=directory,
                user=_run_as_user(),
                stop_timeout=15,
                stop_signal=signal.SIGINT,  # a "fast" shutdown: does not wait for clients
            )
        ]

    def on_healthy(self, paths: LabPaths) -> None:
        import psycopg

        try:
            with psycopg.connect(
                host=HOST,
                port=port("postgres"),
                user="postgres",
                dbname="postgres",
                autocommit=True,
                connect_timeout=5,
            ) as connection:
                if (
                    connection.execute(
                        "SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)
                    ).fetchone()
                    is None
                ):
                    connection.execute(f"CREATE ROLE {ROLE} LOGIN")
                if (
                    connection.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    is None
                ):
                    connection.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        except psycopg.Error as error:
            raise LabError(f"postgres: cannot create role/database {ROLE}: {error}") from None

    def data_dirs(self, paths: LabPaths) -> list[Path]:
        return [data_dir(paths)]

    def version(self, paths: LabPaths) -> str:
        binaries = bin_dir()
        if binaries is None:
            return ""
        try:
            output = subprocess.run(
                [str(binaries / "postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        match = re.search(r"\) (\S+)", output)
        return match.group(1) if match else output.strip()
