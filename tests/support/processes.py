"""Real zonemesh processes for tests: a control plane as users start it, on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ZONEMESH = str(Path(sys.executable).parent / "zonemesh")


class _PortPicker:
    """Free loopback ports, never the same one twice in this test process: a port closed
    right after it was picked may be handed out again by the kernel, and two listeners of
    one control plane then collide ("Address already in use")."""

    def __init__(self) -> None:
        self._given: set[int] = set()

    def __call__(self) -> int:
        for _ in range(100):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in self._given:
                self._given.add(port)
                return port
        raise RuntimeError("no free loopback port that was not handed out already")


free_port = _PortPicker()


class CpProcess:
    """`zonemesh cp run` in a subprocess; logs to `<workdir>/<name>.log`.

    Ports are chosen once, so a restart (`start()` again after `kill()`/`terminate()`)
    comes back on the same addresses with the same data directory. xDS and KDS serve TLS
    as `cp run` does by default: clients dial `xds_address` / `kds_address` (grpcs://) and
    trust `ca_file`, the CA the CP generated in its data directory (written once it started).
    """

    def __init__(
        self,
        workdir: Path,
        *args: str,
        name: str = "cp",
        store: str = "sqlite",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.api_port = free_port()
        self.xds_port = free_port()
        self.kds_port = free_port()
        self.https_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.https_url = f"https://127.0.0.1:{self.https_port}"
        self.data_dir = workdir / f"{name}-data"
        self.log = workdir / f"{name}.log"
        self.args = [
            "cp",
            "run",
            "--store",
            store,
            "--data-dir",
            str(self.data_dir),
            "--api-port",
            str(self.api_port),
            "--xds-port",
            str(self.xds_port),
            "--kds-port",
            str(self.kds_port),
            "--https-port",
            str(self.https_port),
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        """The CA that signed the generated server certificate (`<data-dir>/tls/ca.crt`)."""
        return self.data_dir / "tls" / "ca.crt"

    @property
    def xds_address(self) -> str:
        return f"grpcs://127.0.0.1:{self.xds_port}"

    @property
    def kds_address(self) -> str:
        return f"grpcs://127.0.0.1:{self.kds_port}"

    def start(self, wait: bool = True) -> CpProcess:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [ZONEMESH, *self.args], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log.read_text()}")

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=10, **kwargs)

    # --- tokens (API authentication) ---

    @property
    def admin_token(self) -> str:
        """The admin user token `cp run` writes to its data directory on first start."""
        return (self.data_dir / "admin-user-token").read_text().strip()

    def as_admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An API request with the admin token (works whether loopback is admin or not)."""
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self.admin_token}"}
        return self.api(method, path, headers=headers, **kwargs)

    def issue_token(self, kind: str, body: dict[str, Any]) -> str:
        """A token from `POST /tokens/<kind>` (dataplane, zone or user), asked as the admin."""
        response = self.as_admin("POST", f"/tokens/{kind}", json=body)
        assert response.status_code == 200, response.text
        return response.text.strip()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the exit code of a clean shutdown is 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: nothing gets to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.1, message: str = "") -> Any:
    """Poll until `predicate()` returns something truthy; return it (or fail with `message`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met in time")
        time.sleep(interval)
