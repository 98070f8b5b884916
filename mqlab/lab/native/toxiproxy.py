"""Toxiproxy: the TCP proxy in front of every broker, where network faults are injected.

Not packaged by Debian or PyPI, so ``mqlab lab install`` builds it from its Go module into the
cache dir. Its HTTP API (:class:`ToxiproxyClient`) is how the supervisor creates the proxies of
each service and how :mod:`mqlab.lab.faults` adds toxics.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

from mqlab.lab.endpoints import HOST, Endpoints, port
from mqlab.lab.errors import LabError
from mqlab.lab.install import go_install
from mqlab.lab.spec import HealthCheck, LabPaths, Missing, ProcessSpec, ProxySpec, Service

MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
VERSION = "v2.12.0"


def binary_path(paths: LabPaths) -> Path:
    """Where ``mqlab lab install toxiproxy`` puts the server binary."""
    return paths.cache / "bin" / "toxiproxy-server"


def _version_file(paths: LabPaths) -> Path:
    return binary_path(paths).with_name("toxiproxy-server.version")


class ToxiproxyService(Service):
    """The Toxiproxy server, API on 127.0.0.1:``toxiproxy_api``."""

    name = "toxiproxy"

    def missing(self, paths: LabPaths) -> list[Missing]:
        if binary_path(paths).is_file():
            return []
        return [
            Missing(
                f"toxiproxy-server {VERSION} (built from Go into {binary_path(paths).parent})",
                "mqlab lab install toxiproxy",
            )
        ]

    def install(self, paths: LabPaths) -> None:
        go_install(f"{MODULE}@{VERSION}", "server", binary_path(paths))
        # A `go install` build reports its version as "git"; remember what was built.
        _version_file(paths).write_text(VERSION + "\n")

    def prepare(self, paths: LabPaths) -> None:
        """Nothing to prepare: proxies are created through the API once it runs."""

    def processes(self, paths: LabPaths) -> list[ProcessSpec]:
        api_port = port("toxiproxy_api")
        return [
            ProcessSpec(
                name="toxiproxy",
                service=self.name,
                argv=(str(binary_path(paths)), "-host", HOST, "-port", str(api_port)),
                health=HealthCheck(
                    kind="http", url=f"http://{HOST}:{api_port}/version", timeout=15
                ),
                ports=(api_port,),
                # Without LOG_LEVEL the server logs at trace level: every API request and every
                # client connection, megabytes per test run. Warnings keep what explains a
                # fault (an upstream that does not answer, a link cut).
                env={"LOG_LEVEL": "warn"},
                stop_timeout=5,
            )
        ]

    def version(self, paths: LabPaths) -> str:
        try:
            return _version_file(paths).read_text().strip()
        except FileNotFoundError:
            pass
        try:
            output = subprocess.run(
                [str(binary_path(paths)), "-version"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return output.strip().rsplit(" ", 1)[-1]


class ToxiproxyClient:
    """The parts of Toxiproxy's HTTP API the lab uses; every failure is a one-line LabError.

    Args:
        base_url: the API; the local lab's by default.
        timeout: seconds per request (the API answers in milliseconds when it runs).
    """

    def __init__(self, base_url: str | None = None, timeout: float = 3.0) -> None:
        self.base_url = (base_url or Endpoints.local().toxiproxy_api).rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: object = None) -> Any:
        import httpx

        try:
            response = httpx.request(
                method, f"{self.base_url}{path}", json=body, timeout=self.timeout
            )
        except httpx.HTTPError as error:
            raise LabError(
                f"toxiproxy is not reachable at {self.base_url} ({type(error).__name__}); "
                "run: mqlab lab up toxiproxy"
            ) from None
        if response.status_code == 404:
            raise LookupError(path)
        if not response.is_success:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise LabError(f"toxiproxy refused {method} {path}: {str(detail).strip()}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def proxies(self) -> dict[str, Any]:
        """Every proxy by name, with its ``toxics`` and ``enabled`` flag."""
        result = self._request("GET", "/proxies")
        return dict(result) if isinstance(result, dict) else {}

    def populate(self, proxies: list[ProxySpec]) -> None:
        """Create the proxies that do not exist yet. Existing identical ones are kept as they
        are, toxics included (the API only replaces a proxy whose addresses changed)."""
        if not proxies:
            return
        body = [
            {
                "name": proxy.name,
                "listen": f"{HOST}:{proxy.listen_port}",
                "upstream": f"{HOST}:{proxy.upstream_port}",
            }
            for proxy in proxies
        ]
        self._request("POST", "/populate", body)

    def delete(self, proxy: str) -> None:
        """Remove ``proxy`` (no error if it does not exist)."""
        with contextlib.suppress(LookupError):
            self._request("DELETE", f"/proxies/{proxy}")

    def request(self, method: str, path: str, body: object = None) -> Any:
        """Any API call; raises ``LookupError`` on 404 so callers can name what is unknown."""
        return self._request(method, path, body)
