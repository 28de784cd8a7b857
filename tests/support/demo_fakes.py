"""What the demo's verdict tests share: the stand-in meshes' process group, answering like
`zonemesh echo`, shortened phases, and running a scenario to its end with the mesh closed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from types import ModuleType
from typing import Any, Protocol, TypeVar

import pytest


class FakeGroup:
    """A process group with nothing in it: the stand-in meshes start no process."""

    procs: dict[str, Any] = {}

    def running(self) -> list[str]:
        return []


def answer_like_echo(
    handler: BaseHTTPRequestHandler,
    zone: str,
    instance: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """A 200 with the JSON body `zonemesh echo` answers with (its zone and instance)."""
    body = json.dumps({"zone": zone, "instance": instance}).encode()
    handler.send_response(200)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def shorten(monkeypatch: pytest.MonkeyPatch, module: ModuleType, **seconds: float) -> None:
    """The scenario `module`'s phase lengths, short enough for a unit test."""
    for name, value in seconds.items():
        monkeypatch.setattr(module, name, value)


class Closable(Protocol):
    def close(self) -> None: ...


class Runnable(Protocol):
    def run(self) -> bool: ...


S = TypeVar("S", bound=Runnable)


def run_to_end(mesh: Closable, scenario: S) -> Iterator[S]:
    """Runs `scenario` and yields it, closing `mesh` afterwards whatever happened."""
    try:
        scenario.run()
        yield scenario
    finally:
        mesh.close()
