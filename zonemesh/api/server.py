"""The API as a control-plane component: uvicorn serving in the control plane's own loop.

The socket is bound in `start()` so that a busy port fails the start with an `OSError`
(uvicorn itself would `sys.exit`). Signals stay with the control plane: it stops us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from zonemesh.api.app import create_app
from zonemesh.cp.runtime import Runtime

log = logging.getLogger("zonemesh.api")

_START_TIMEOUT_S = 10.0
_GRACEFUL_STOP_S = 5.0


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT to the control plane."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    name = "api-server"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime)
        self.port: int | None = None  # the bound port (differs from the config when that is 0)
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.runtime.config
        sock = _bind(config.address, config.api_server.http.port)
        self.port = sock.getsockname()[1]
        self._server = _QuietServer(
            uvicorn.Config(
                self.app,
                lifespan="off",
                log_config=None,  # the control plane configured logging already
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=_GRACEFUL_STOP_S,
            )
        )
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=self.name)
        await self._wait_started()
        self.app.state.serving = True
        log.info("API server listening on http://%s:%d", config.address, self.port)

    async def _wait_started(self) -> None:
        assert self._server is not None and self._task is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while not self._server.started:
            if self._task.done():
                # serve() returned or raised before listening; surface why.
                error = self._task.exception()
                raise RuntimeError(f"the API server did not start: {error!r}")
            if loop.time() > deadline:
                self._server.should_exit = True
                raise RuntimeError("the API server did not start in time")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let running requests finish (up to a few seconds), then return."""
        self.app.state.serving = False
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), _GRACEFUL_STOP_S + 2)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = None
        self._task = None
        log.info("API server stopped")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive response waits for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"API server cannot listen on {host}:{port}: {e.strerror}") from None
    return sock
