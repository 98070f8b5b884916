"""How the lab installs what its services need, from package sources that work everywhere the
project runs: Debian packages (apt), Python packages (pip, into this interpreter), and Go modules
(``go install``, built into the cache dir).

Every command is logged before it runs (logger ``mqlab.lab``; the CLI prints it), so
``mqlab lab install`` shows exactly what it does. When mqlab cannot do a step itself (apt as a
normal user) it raises :class:`LabError` naming the command to run instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from mqlab.lab.errors import LabError

log = logging.getLogger("mqlab.lab")

# ``go install`` of a module whose go.mod asks for a newer Go than the installed one: Go >= 1.21
# downloads the right toolchain by itself (GOTOOLCHAIN=auto). Older Go (Debian 12 ships 1.19)
# cannot, so mqlab fetches this toolchain -- itself a module on the Go module proxy -- first.
FALLBACK_GO_TOOLCHAIN = "go1.23.4"
_SELF_SWITCHING_GO = (1, 21)

_apt_updated = False


def is_root() -> bool:
    """True when running as root (apt and the PostgreSQL user switch need it)."""
    return os.geteuid() == 0


def apt_command(packages: Sequence[str]) -> str:
    """The exact command that installs ``packages`` from Debian (with sudo when not root)."""
    prefix = "" if is_root() else "sudo "
    return f"{prefix}apt-get install -y {' '.join(packages)}"


def pip_command(requirements: Sequence[str]) -> str:
    """The exact command that installs ``requirements`` into the interpreter running mqlab."""
    return shlex.join([sys.executable, "-m", "pip", "install", *requirements])


def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run an install step, logging it first; return its output.

    Raises:
        LabError: the command is missing or fails (its last output lines are the details).
    """
    log.info("$ %s", shlex.join(argv))
    try:
        completed = subprocess.run(
            list(argv),
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as error:
        raise LabError(f"cannot run {argv[0]}: {error.strerror}") from None
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        last_lines = "\n".join(output.strip().splitlines()[-15:])
        raise LabError(
            f"`{shlex.join(argv)}` failed with exit code {completed.returncode}", last_lines
        )
    return output


MAVEN_MANIFEST = "mqlab-manifest.txt"
"""The file :func:`maven_download` writes last into a jar directory: one jar name a line.
A directory without it is an interrupted download."""


def maven_download(
    mvn: str, pom: str, target: Path, expected_jar: str, properties: Sequence[str] = ()
) -> None:
    """Copy the runtime dependencies of ``pom`` (a throwaway pom.xml's text) into ``target``.

    The jars are staged in a temporary directory beside ``target`` and renamed into place only
    when ``expected_jar`` is among them, with :data:`MAVEN_MANIFEST` written, so a download cut
    short never looks complete; an older, incomplete ``target`` is replaced.

    Args:
        properties: more ``-Dname=value`` arguments for mvn (the pom's version properties).

    Raises:
        LabError: mvn failed (its last lines are the details) or did not fetch ``expected_jar``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".lib-download-", dir=target.parent))
    try:
        pom_file = work / "pom.xml"
        pom_file.write_text(pom, encoding="utf-8")
        staged = work / "lib"
        run(
            [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(pom_file),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staged}",
                *properties,
            ]
        )
        jars = sorted(p.name for p in staged.glob("*.jar")) if staged.is_dir() else []
        if expected_jar not in jars:
            raise LabError(f"mvn finished but did not download {expected_jar}")
        (staged / MAVEN_MANIFEST).write_text("\n".join(jars) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.rename(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian ``packages`` (``apt-get update`` first, once per mqlab process).

    Raises:
        LabError: not root (names the sudo command), or apt fails.
    """
    global _apt_updated  # noqa: PLW0603  (one update per process is the point)
    if not is_root():
        raise LabError(f"installing {', '.join(packages)} needs root; run: {apt_command(packages)}")
    noninteractive = {"DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        run(["apt-get", "update"], env=noninteractive)
        _apt_updated = True
    run(["apt-get", "install", "-y", *packages], env=noninteractive)


def pip_install(requirements: Sequence[str]) -> None:
    """Install Python ``requirements`` into the interpreter that runs mqlab."""
    run([sys.executable, "-m", "pip", "install", *requirements])
    # This process looks for the new packages right away (missing() after install).
    importlib.invalidate_caches()


def find_go() -> Path | None:
    """The ``go`` command: on PATH, or where the official and Debian packages put it."""
    found = shutil.which("go")
    if found:
        return Path(found)
    for candidate in (Path("/usr/local/go/bin/go"), Path("/usr/lib/go/bin/go")):
        if candidate.is_file():
            return candidate
    return None


def go_version(go: Path) -> tuple[int, int]:
    """(major, minor) of ``go``; (0, 0) when it cannot be told."""
    try:
        output = subprocess.run(
            [str(go), "version"], capture_output=True, text=True, check=False, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    match = re.search(r"go(\d+)\.(\d+)", output)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _fetched_toolchain(go: Path) -> Path:
    """Download a recent Go toolchain as a module with an old ``go`` and return its ``go``."""
    module = f"golang.org/toolchain@v0.0.1-{FALLBACK_GO_TOOLCHAIN}.linux-{_go_arch()}"
    output = run([str(go), "mod", "download", "-json", module], env={"GOFLAGS": "-mod=mod"})
    match = re.search(r'"Dir":\s*"([^"]+)"', output)
    if not match:
        raise LabError(f"`go mod download {module}` did not report where it put the toolchain")
    toolchain = Path(match.group(1))
    # Module zips carry no file modes; make the toolchain's programs executable again (Go
    # does the same when it switches toolchains by itself).
    for programs in (toolchain / "bin", toolchain / "pkg" / "tool"):
        for program in programs.rglob("*"):
            if program.is_file():
                program.chmod(program.stat().st_mode | 0o111)
    return toolchain / "bin" / "go"


def go_install(package: str, binary: str, destination: Path) -> Path:
    """``go install package`` (``path@version``) and place the binary at ``destination``.

    The build goes to a private GOBIN first and is moved into place with one rename, so two
    installs at once (or an interrupted one) never leave half a binary.

    Raises:
        LabError: Go is missing or the build fails.
    """
    go = find_go()
    if go is None:
        raise LabError(
            f"Go is needed to build {destination.name}; run: {apt_command(['golang-go'])}"
        )
    env = {"GOTOOLCHAIN": "auto", "GOFLAGS": "-modcacherw"}
    if go_version(go) < _SELF_SWITCHING_GO:
        go = _fetched_toolchain(go)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".gobin-{os.getpid()}"
    try:
        run([str(go), "install", package], env={**env, "GOBIN": str(staging)})
        built = staging / binary
        if not built.is_file():
            raise LabError(f"go install {package} did not produce {binary}")
        built.replace(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination
