"""Helpers for tests that run a real Envoy: a tiny upstream, polling, and port picking.

Imported directly by the test modules in this directory (no conftest).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


class Upstream:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request with `body` and closes."""

    def __init__(self, body: str, host: str = "127.0.0.1") -> None:
        self.body = body.encode()
        self.host = host
        self.port = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    + f"content-length: {len(self.body)}\r\n\r\n".encode()
                    + self.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except Exception as e:  # e.g. connection refused while a listener warms
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what or check}; last: {last!r}")
        await asyncio.sleep(interval)


async def get_body(port: int, host: str = "127.0.0.1", path: str = "/") -> str | None:
    """The body of a GET through Envoy, or None if it did not answer 200."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        try:
            response = await client.get(f"http://{host}:{port}{path}")
        except httpx.HTTPError:
            return None
    return response.text if response.status_code == 200 else None


def dynamic_configs(config_dump: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """`dynamic_active_clusters` / `dynamic_listeners` entries of an admin `/config_dump`."""
    for section in config_dump.get("configs", []):
        if kind in section:
            return list(section[kind])
    return []
