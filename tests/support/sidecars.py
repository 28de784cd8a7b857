"""Sidecars run as users run them (`zonemesh echo` behind `zonemesh dp run`), for tests that
start several: their ports, the Dataplane each registers, and starting and stopping them."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from support.processes import ZONEMESH, CpProcess


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


def dataplane(
    sidecar: Sidecar, service: str, app_port: int, *, echo_port: int, to: str = "echo"
) -> dict[str, Any]:
    """Its Dataplane: one HTTP inbound of `service`; for a client, an outbound to MeshService
    `to` (on its port `echo_port`)."""
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
                "backendRef": {"kind": "MeshService", "name": to, "port": echo_port},
            }
        ]
    return doc


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen([ZONEMESH, *args], stdout=out, stderr=subprocess.STDOUT)


def start_sidecar(
    sidecar: Sidecar,
    doc: dict[str, Any],
    app_port: int,
    token: Path,
    tmp: Path,
    *,
    cp: CpProcess,
    cp_address: str | None = None,
    dp_args: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Its app (`zonemesh echo` answering with the sidecar's name) and `zonemesh dp run` with
    the Dataplane `doc`, connecting to `cp_address` (default: `cp`'s xDS address) and trusting
    `cp`'s CA; logs in `<tmp>/<name>-app.log` and `-dp.log`. Stop them in reverse order."""
    app = start(
        [
            *("echo", "--address", sidecar.address, "--port", str(app_port)),
            *("--instance", sidecar.name),
        ],
        tmp / f"{sidecar.name}-app.log",
    )
    file = tmp / f"{sidecar.name}.yaml"
    file.write_text(yaml.safe_dump(doc))
    try:
        dp = start(
            [
                *("dp", "run", "--cp-address", cp_address or cp.xds_address),
                *("--ca-cert-file", str(cp.ca_file)),
                *("--dataplane-file", str(file), "--admin-port", str(sidecar.admin)),
                *("--dataplane-token-file", str(token), *dp_args),
            ],
            tmp / f"{sidecar.name}-dp.log",
        )
    except BaseException:
        stop(app)  # the caller never saw it
        raise
    return app, dp


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (dp run drains), then SIGKILL if it has not exited within 20 s; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
