"""ASGI middleware: the request body limit and request counting (and their shared helpers).

The body limit is checked twice: on `Content-Length` before the handler runs (a client that
announces a large body is refused without reading it), and on the bytes actually received
(a chunked body has no length to announce).

A refused body is still read and thrown away, up to a few times the limit: a client that
sends its whole body before reading the answer (most do, unless they send
`Expect: 100-continue`) would otherwise see a connection reset instead of the 413.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zonemesh.api.errors import ApiError


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than the limit of {limit} bytes",
        title="Content Too Large",
    )


class BodyLimitMiddleware:
    DRAIN_FACTOR = 8  # bodies up to this many times the limit are drained before the 413

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.drain_cap = max_body_bytes * self.DRAIN_FACTOR

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            if declared <= self.drain_cap and not _expects_continue(scope):
                await self._drain(receive, 0)
            await send_error(send, too_large(self.limit))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    if message.get("more_body", False):
                        await self._drain(receive, received)
                    # Raised inside the handler's body read; the API error handler answers.
                    raise too_large(self.limit)
            return message

        await self.app(scope, limited_receive, send)

    async def _drain(self, receive: Receive, received: int) -> None:
        await _drain(receive, received, self.drain_cap)


async def _drain(receive: Receive, received: int, cap: int) -> bool:
    """Read and drop the rest of the body, up to `cap` bytes; True if it was all read."""
    while received <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return False
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


async def discard_body(scope: Scope, receive: Receive, cap: int) -> bool:
    """Before answering without reading the body: read and drop it (see the module docstring),
    unless it is announced larger than `cap` or the client waits for `100 Continue` (it then
    sends nothing unless asked). True if the connection can be kept: the body is all read."""
    declared = _content_length(scope)
    if declared == 0 or (declared is None and not _has_body(scope)):
        return True
    if _expects_continue(scope) or (declared is not None and declared > cap):
        return False
    return await _drain(receive, 0, cap)


class RequestCounterMiddleware:
    """`api_server_requests_total{method,code}` in the runtime's registry."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.counter.labels(method=scope["method"], code=str(status)).inc()


def request_counter(registry: CollectorRegistry) -> Counter:
    """The request counter, registered once per registry (an app may be built twice in tests)."""
    existing: Any = getattr(registry, "_names_to_collectors", {}).get("api_server_requests")
    if isinstance(existing, Counter):
        return existing
    return Counter(
        "api_server_requests",
        "HTTP API requests by method and status code",
        ["method", "code"],
        registry=registry,
    )


def _expects_continue(scope: Scope) -> bool:
    return any(
        name == b"expect" and value.lower() == b"100-continue"
        for name, value in scope.get("headers", ())
    )


def _has_body(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_error(send: Send, error: ApiError, *, close: bool = True) -> None:
    """Answer `error` from a middleware (outside the app's error handlers)."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
