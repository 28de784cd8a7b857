"""`zonemesh echo`: an HTTP service that says which zone and instance answered.

Every request gets 200 with JSON `{zone, instance, path, method, headers}`; a client that
prefers `text/plain` (curl users) gets a short greeting instead. HTTP/1.1 and h2c (both
prior knowledge and Upgrade) come from Hypercorn, so proxy-to-proxy HTTP/2 hops work.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def make_app(zone: str, instance: str, address: str, port: int) -> Callable[..., Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):  # drain the request body
            pass
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if _prefers_text(headers.get("accept", "")):
            body = (
                f"Hello from zonemesh echo: zone {zone}, instance {instance}, "
                f"listening on {address}:{port}, you asked for {scope['path']}\n"
            ).encode()
            content_type = b"text/plain; charset=utf-8"
        else:
            body = json.dumps(
                {
                    "zone": zone,
                    "instance": instance,
                    "path": scope["path"],
                    "method": scope["method"],
                    "headers": headers,
                }
            ).encode()
            content_type = b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-zonemesh-zone", zone.encode()),
                    (b"x-zonemesh-instance", instance.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _prefers_text(accept: str) -> bool:
    """text/plain listed before (or instead of) application/json."""
    kinds = [part.split(";")[0].strip() for part in accept.split(",")]
    if "text/plain" not in kinds:
        return False
    return "application/json" not in kinds or kinds.index("text/plain") < kinds.index(
        "application/json"
    )


async def run_echo(address: str, port: int, zone: str, instance: str) -> None:
    config = Config()
    config.bind = [f"[{address}]:{port}" if ":" in address else f"{address}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = make_app(zone, instance, address, port)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
