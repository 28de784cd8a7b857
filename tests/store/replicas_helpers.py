"""Two `cp run` instances of one zone on one real PostgreSQL, for the replica fault tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from postgres_server import PostgresServer
from support.processes import CpProcess, wait_for


def dataplane(name: str, service: str, address: str = "127.0.9.1", port: int = 20080) -> dict:
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": name,
        "networking": {
            "address": address,
            "inbound": [
                {
                    "port": port,
                    "servicePort": 8080,
                    "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"},
                }
            ],
        },
    }


def is_leader(cp: CpProcess) -> bool:
    try:
        return bool(cp.api("GET", "/").json()["leader"])
    except Exception:
        return False


def vip_of(cp: CpProcess, service: str) -> str | None:
    response = cp.api("GET", f"/meshes/default/meshservices/{service}")
    if response.status_code != 200:
        return None
    vips = (response.json().get("status") or {}).get("vips") or []
    return vips[0]["ip"] if vips else None


def all_vips(cp: CpProcess) -> dict[str, str]:
    items = cp.api("GET", "/meshes/default/meshservices").json()["items"]
    return {
        i["name"]: i["status"]["vips"][0]["ip"]
        for i in items
        if (i.get("status") or {}).get("vips")
    }


@contextmanager
def two_instances(
    tmp_path: Path, server: PostgresServer, db: str, *args: str
) -> Iterator[tuple[CpProcess, CpProcess]]:
    """`a` starts first (and so leads), then `b`; both killed at the end."""
    env = server.env(db)
    a = CpProcess(tmp_path, *args, name="a", store="postgres", env=env)
    b = CpProcess(tmp_path, *args, name="b", store="postgres", env=env)
    try:
        a.start()
        wait_for(lambda: is_leader(a), timeout=10, message="a never led")
        b.start()
        yield a, b
    finally:
        b.kill()
        a.kill()


def measure_takeover(survivor: CpProcess, killed_at: float, bound_s: float) -> float:
    wait_for(lambda: is_leader(survivor), timeout=bound_s + 5, interval=0.02, message="no leader")
    return time.monotonic() - killed_at


def put(cp: CpProcess, path: str, doc: dict[str, Any]) -> int:
    try:
        return cp.api("PUT", path, json=doc).status_code
    except Exception:
        return 0
