"""SQS and SNS through moto's server mode (``moto[server]``), behind the ``sqs`` proxy.

moto builds queue URLs from the request's Host header, so clients that connect through the proxy
get URLs with the proxy's port and keep going through it. SNS delivers to SQS subscriptions
inside the moto process (by queue ARN), so fan-out does not depend on those URLs.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path

from mqlab.lab.endpoints import HOST, port
from mqlab.lab.install import pip_command, pip_install
from mqlab.lab.spec import HealthCheck, LabPaths, Missing, ProcessSpec, ProxySpec, Service

REQUIREMENT = "moto[server]>=5.0"
# moto's server mode needs these besides moto itself (its "server" extra).
_SERVER_MODULES = ("moto", "flask", "flask_cors")


class SqsService(Service):
    """A moto server for SQS (standard + FIFO) and SNS."""

    name = "sqs"
    depends_on = ("toxiproxy",)

    def missing(self, paths: LabPaths) -> list[Missing]:
        absent = [module for module in _SERVER_MODULES if importlib.util.find_spec(module) is None]
        if not absent:
            return []
        return [
            Missing(f"moto server ({', '.join(absent)} not importable)", pip_command([REQUIREMENT]))
        ]

    def install(self, paths: LabPaths) -> None:
        pip_install([REQUIREMENT])

    def prepare(self, paths: LabPaths) -> None:
        """moto keeps everything in memory: nothing to prepare."""

    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        upstream = port("sqs_upstream")
        return [
            ProcessSpec(
                name="sqs",
                service=self.name,
                # This interpreter's moto, not a `moto_server` script from somewhere on PATH,
                # with its queue operations serialised (see mqlab/lab/native/sqs_server.py).
                argv=(
                    sys.executable,
                    *("-m", "mqlab.lab.native.sqs_server"),
                    *("-H", HOST, "-p", str(upstream)),
                ),
                health=HealthCheck(
                    kind="http", url=f"http://{HOST}:{upstream}/moto-api/config", timeout=30
                ),
                ports=(upstream,),
                env={"PYTHONUNBUFFERED": "1"},
                stop_timeout=5,
            )
        ]

    def proxies(self) -> list[ProxySpec]:
        return [ProxySpec("sqs", self.name, port("sqs"), port("sqs_upstream"))]

    def data_dirs(self, paths: LabPaths) -> list[Path]:
        return []

    def version(self, paths: LabPaths) -> str:
        try:
            return metadata.version("moto")
        except metadata.PackageNotFoundError:
            return ""
