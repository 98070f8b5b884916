"""RabbitMQ from the Debian package, run as a private node of the lab.

Everything a system-wide RabbitMQ would share is made private: the node name, the Erlang cookie
(``HOME``), the mnesia dir, the config and enabled-plugins files, and the Erlang port mapper
(epmd), which the lab starts itself on its own port so that ``down`` stops exactly that epmd and
never one another Erlang application uses. The node is told not to start an epmd of its own
(``-start_epmd false``).

The node runs in the foreground (not ``-detached``) so the supervisor owns its pid. The Debian
start script stays in front of the Erlang VM and turns SIGTERM into a clean shutdown; the VM is
in the same session, which is what kill/pause faults signal.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from mqlab.lab.endpoints import HOST, port
from mqlab.lab.install import apt_command, apt_install
from mqlab.lab.spec import HealthCheck, LabPaths, Missing, ProcessSpec, ProxySpec, Service

SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
# The real control script. Debian's /usr/sbin/rabbitmqctl is a wrapper that, run as root,
# switches to the `rabbitmq` user, whose HOME holds a different Erlang cookie: it cannot talk
# to the lab's private node.
CTL_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
RABBITMQ_LIB = Path("/usr/lib/rabbitmq/lib")
NODE_NAME = "mqlab@localhost"
# Queue depths in the management API refresh at this interval (ms); the default 5 s makes a
# live view lag behind what a learner just did.
STATISTICS_INTERVAL_MS = 500


def _epmd() -> Path | None:
    found = shutil.which("epmd")
    if found:
        return Path(found)
    candidate = Path("/usr/lib/erlang/bin/epmd")
    return candidate if candidate.is_file() else None


class RabbitMQService(Service):
    """A RabbitMQ node with the management plugin, behind the ``rabbitmq`` proxy."""

    name = "rabbitmq"
    depends_on = ("toxiproxy",)

    def missing(self, paths: LabPaths) -> list[Missing]:
        if SERVER_SCRIPT.is_file() and _epmd() is not None:
            return []
        return [Missing("rabbitmq-server (Debian package)", apt_command(["rabbitmq-server"]))]

    def install(self, paths: LabPaths) -> None:
        apt_install(["rabbitmq-server"])

    def _dir(self, paths: LabPaths) -> Path:
        return paths.data_dir("rabbitmq")

    def prepare(self, paths: LabPaths) -> None:
        base = self._dir(paths)
        (base / "home").mkdir(parents=True, exist_ok=True)
        (base / "home").chmod(0o700)  # the Erlang cookie lives here
        (base / "mnesia").mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            "# Written by mqlab on every start; edit mqlab/lab/native/rabbitmq.py instead.\n"
            f"listeners.tcp.default = {HOST}:{port('rabbitmq_upstream')}\n"
            f"management.tcp.ip = {HOST}\n"
            f"management.tcp.port = {port('rabbitmq_management')}\n"
            f"collect_statistics_interval = {STATISTICS_INTERVAL_MS}\n"
            "log.console = true\n"
            "log.console.level = info\n"
            "log.file = false\n"
        )
        (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        # An empty env file stops the start script from reading /etc/rabbitmq/rabbitmq-env.conf.
        (base / "rabbitmq-env.conf").write_text("")

    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        base = self._dir(paths)
        epmd_port = port("rabbitmq_epmd")
        amqp_port = port("rabbitmq_upstream")
        management_port = port("rabbitmq_management")
        dist_port = port("rabbitmq_dist")
        epmd = _epmd()
        erlang_env = {"ERL_EPMD_ADDRESS": HOST, "ERL_EPMD_PORT": str(epmd_port)}
        return [
            ProcessSpec(
                name="rabbitmq-epmd",
                service=self.name,
                argv=(str(epmd or "epmd"), "-address", HOST, "-port", str(epmd_port)),
                health=HealthCheck(kind="tcp", port=epmd_port, timeout=10),
                ports=(epmd_port,),
                env=erlang_env,
                stop_timeout=5,
            ),
            ProcessSpec(
                name="rabbitmq",
                service=self.name,
                argv=(str(SERVER_SCRIPT),),
                health=HealthCheck(
                    kind="http",
                    # Answers 200 only once the AMQP listener is up, which comes after the
                    # management plugin: one check covers both.
                    url=f"http://guest:guest@{HOST}:{management_port}"
                    f"/api/health/checks/port-listener/{amqp_port}",
                    timeout=90,
                ),
                ports=(amqp_port, management_port, dist_port),
                env={
                    **erlang_env,
                    "HOME": str(base / "home"),
                    "RABBITMQ_NODENAME": NODE_NAME,
                    "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                    "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
                    "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                    "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(base / "log"),
                    "RABBITMQ_LOGS": "-",  # to stdout, i.e. the lab's log file
                    "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
                    "RABBITMQ_DIST_PORT": str(dist_port),
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                        "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
                    ),
                },
                cwd=base,
                stop_timeout=30,
            ),
        ]

    def proxies(self) -> list[ProxySpec]:
        return [ProxySpec("rabbitmq", self.name, port("rabbitmq"), port("rabbitmq_upstream"))]

    def ctl_environment(self, paths: LabPaths) -> dict[str, str]:
        """What ``rabbitmqctl`` needs to reach the lab's node: its HOME (the Erlang cookie)
        and the lab's epmd port; the same values the node itself was started with."""
        node = next(spec for spec in self.processes(paths) if spec.name == "rabbitmq")
        return {name: node.env[name] for name in ("HOME", "ERL_EPMD_PORT", "ERL_EPMD_ADDRESS")}

    def ctl_command(self, paths: LabPaths, arguments: Sequence[str] = ()) -> list[str]:
        """``rabbitmqctl -n NODE ARGUMENTS`` for the lab's node (run with
        :meth:`ctl_environment`)."""
        return [str(CTL_SCRIPT), "-n", NODE_NAME, *arguments]

    def ctl_shell_command(self, paths: LabPaths, arguments: Sequence[str] = ()) -> str:
        """The same as one line to paste into a shell."""
        environment = " ".join(
            f"{name}={shlex.quote(value)}" for name, value in self.ctl_environment(paths).items()
        )
        return f"{environment} {shlex.join(self.ctl_command(paths, arguments))}"

    def data_dirs(self, paths: LabPaths) -> list[Path]:
        return [self._dir(paths)]

    def version(self, paths: LabPaths) -> str:
        versions = sorted(entry.name for entry in RABBITMQ_LIB.glob("rabbitmq_server-*"))
        return versions[-1].removeprefix("rabbitmq_server-") if versions else ""
