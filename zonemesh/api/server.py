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
from zonemesh.runtime.kernel import Runtime

log = logging.getLogger("zonemesh.api")

_START_TIMEOUT_S = 10.0
_GRACEFUL_STOP_S = 5.0


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT to the control plane."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Listener:
    """One uvicorn server of the app on one bound socket (plain HTTP or HTTPS)."""

    def __init__(self, name: str, server: _QuietServer, sock: socket.socket) -> None:
        self.name = name
        self.server = server
        self.port: int = sock.getsockname()[1]
        self.task = asyncio.create_task(server.serve(sockets=[sock]), name=name)

    async def wait_started(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while not self.server.started:
            if self.task.done():
                # serve() returned or raised before listening; surface why.
                error = self.task.exception()
                raise RuntimeError(f"the {self.name} did not start: {error!r}")
            if loop.time() > deadline:
                self.server.should_exit = True
                raise RuntimeError(f"the {self.name} did not start in time")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), _GRACEFUL_STOP_S + 2)
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class ApiServer:
    """HTTP on `apiServer.http.port`, and HTTPS on `apiServer.https.port` with the runtime's
    `api_tls` (the certificate xDS and KDS serve) when that is set and HTTPS is enabled."""

    name = "api-server"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime)
        self.port: int | None = None  # the bound port (differs from the config when that is 0)
        self.https_port: int | None = None  # None: no HTTPS listener
        self._listeners: list[_Listener] = []

    def _server(self, **ssl: str) -> _QuietServer:
        return _QuietServer(
            uvicorn.Config(
                self.app,
                lifespan="off",
                log_config=None,  # the control plane configured logging already
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=_GRACEFUL_STOP_S,
                **ssl,  # type: ignore[arg-type]
            )
        )

    async def start(self) -> None:
        config = self.runtime.config
        tls = self.runtime.api_tls if config.api_server.https.enabled else None
        # Both sockets first: a busy port fails the start before anything serves.
        http_sock = _bind(config.address, config.api_server.http.port)
        try:
            https_sock = _bind(config.address, config.api_server.https.port) if tls else None
        except OSError:
            http_sock.close()
            raise
        try:
            http = _Listener("API server", self._server(), http_sock)
            self._listeners.append(http)
            await http.wait_started()
            self.port = http.port
            if tls is not None and https_sock is not None:
                https = _Listener(
                    "HTTPS API server",
                    self._server(ssl_certfile=str(tls.cert_file), ssl_keyfile=str(tls.key_file)),
                    https_sock,
                )
                self._listeners.append(https)
                await https.wait_started()
                self.https_port = https.port
        except BaseException:
            await self._stop_listeners()
            raise
        self.app.state.serving = True
        log.info("API server listening on http://%s:%d", config.address, self.port)
        if self.https_port is not None:
            log.info("API server listening on https://%s:%d", config.address, self.https_port)

    async def stop(self) -> None:
        """Stop accepting, let running requests finish (up to a few seconds), then return."""
        self.app.state.serving = False
        if not self._listeners:
            return
        await self._stop_listeners()
        log.info("API server stopped")

    async def _stop_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        await asyncio.gather(*(listener.stop() for listener in listeners))


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
