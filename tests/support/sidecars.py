"""Sidecars run as users run them (`zonemesh echo` behind `zonemesh dp run`), for tests that
start several: their ports, the Dataplane each registers, and starting and stopping them."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.processes import ZONEMESH


@dataclass
class Sidecar:
    name: str
    address: str
    inbound: int
    admin: int
    outbound: int | None = None  # a listener to MeshService `echo`, for a client

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


def dataplane(sidecar: Sidecar, service: str, app_port: int, *, echo_port: int) -> dict[str, Any]:
    """Its Dataplane: one HTTP inbound of `service`; for a client, an outbound to `echo`."""
    doc: dict[str, Any] = {
        "type": "Dataplane",
        "mesh": "default",
        "name": sidecar.name,
        "networking": {
            "address": sidecar.address,
            "inbound": [
                {
                    "port": sidecar.inbound,
                    "servicePort": app_port,
                    "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"},
                }
            ],
        },
    }
    if sidecar.outbound is not None:
        doc["networking"]["outbound"] = [
            {
                "address": sidecar.address,
                "port": sidecar.outbound,
                "backendRef": {"kind": "MeshService", "name": "echo", "port": echo_port},
            }
        ]
    return doc


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen([ZONEMESH, *args], stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (dp run drains), then SIGKILL if it has not exited within 20 s; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
