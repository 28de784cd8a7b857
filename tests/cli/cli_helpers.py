"""Shared by the CLI tests: an API server on a thread, and running the installed `zonemesh`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from zonemesh.api.server import ApiServer
from zonemesh.config import CpConfig
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore

ZONEMESH = str(Path(sys.executable).parent / "zonemesh")


class ThreadedCp:
    """A real API server in its own thread and loop, so that tests can block on subprocesses."""

    def __init__(self, views: dict[str, Any] | None = None) -> None:
        config = CpConfig.model_validate(
            {"store": {"type": "memory"}, "apiServer": {"http": {"port": 0}}}
        )
        self.runtime = Runtime(config=config, store=MemoryStore())
        self.runtime.views.update(views or {})
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="api-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the API server thread did not start")
        if self._error is not None:
            raise RuntimeError("the API server did not start") from self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to the starting test
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.runtime.store.create(resource_from_wire({"type": "Mesh", "name": "default"}))
        server = ApiServer(self.runtime)
        await server.start()
        self.port = server.port or 0
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop()


CLIENT_ENV_VARS = ("ZONEMESH_CP_URL", "ZONEMESH_CP_TOKEN", "ZONEMESH_CP_CA_CERT_FILE")


def zonemesh(
    *args: str,
    cp_url: str | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the console script the way a user does; the CP address comes from the env var,
    and nothing else of the caller's client settings (token, CA) leaks in unless given."""
    base = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_VARS}
    env = {**base, **(env or {})}
    if cp_url is not None:
        env["ZONEMESH_CP_URL"] = cp_url
    return subprocess.run(
        [ZONEMESH, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
