#!/usr/bin/env python
"""KDS sync benchmark: N MeshServices created in zone1, time until all N are in zone2.

The path measured is the whole federation: zone1's store -> KDS stream -> global (renamed
copies written to its store) -> KDS stream -> zone2's store.

    .venv/bin/python benchmarks/kds_sync.py                     # 1000, three `cp run`, SQLite
    .venv/bin/python benchmarks/kds_sync.py --store memory
    .venv/bin/python benchmarks/kds_sync.py --in-process        # sync engine alone, no HTTP
    .venv/bin/python benchmarks/kds_sync.py -n 5000

Processes mode (default): global, zone1 and zone2 are real `zonemesh cp run` processes on
free loopback ports; the MeshServices are PUT to zone1's API (`--concurrency` requests in
flight) and zone2's API is polled every 10 ms. Figures: how long the writes took, when the
last one was on global and in zone2 (from the first write), the lag after the last write,
the latency of one update once the bulk is in, and how long a new zone3 takes to receive
all N through global's snapshot (the catch-up path, no API writes in the way). In-process mode writes straight into
zone1's MemoryStore and polls zone2's, so it shows the engine's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

MS_PATH = "/meshes/default/meshservices"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mesh_service(i: int, state: str = "Available") -> dict[str, Any]:
    name = f"svc-{i:05d}"
    return {
        "type": "MeshService",
        "mesh": "default",
        "name": name,
        "labels": {"kuma.io/display-name": name},
        "spec": {
            "selector": {"dataplaneTags": {"kuma.io/service": name}},
            "ports": [{"port": 8080, "targetPort": 18080, "appProtocol": "http"}],
            "state": state,
        },
    }


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll until `check` is true; returns the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout}s")
        await asyncio.sleep(0.01)


def report(count: int, t0: float, written: float, on_global: float, in_zone2: float) -> None:
    print(f"  {count} MeshServices written in zone1 in {written - t0:7.3f} s")
    print(f"  all {count} on global after           {on_global - t0:7.3f} s")
    print(f"  all {count} in zone2 after            {in_zone2 - t0:7.3f} s   <- the figure")
    print(f"  lag after the last write            {in_zone2 - written:7.3f} s")
    print(f"  throughput zone1 -> zone2           {count / (in_zone2 - t0):7.0f} resources/s")


# --- three real control planes ------------------------------------------------------------


class Cp:
    def __init__(self, name: str, args: list[str], tmp: Path, store: str) -> None:
        self.name = name
        self.api_port = free_port()
        self.args = [
            *args,
            *("--api-port", str(self.api_port), "--store", store),
            *("--data-dir", str(tmp / name)),
            "--grpc-plaintext",  # sync itself is measured, not TLS; loopback only
        ]
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUMA_", "ZONEMESH_"))}
        env["KUMA_API_SERVER_HTTPS_ENABLED"] = "false"  # one HTTPS port would not do for all
        # Sync throughput, not the (once per connection) zone token check: KDS auth off.
        env["KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE"] = "none"
        env["KUMA_MULTIZONE_ZONE_KDS_AUTH_TYPE"] = "none"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zonemesh",
                    "cp",
                    "run",
                    "--log-level",
                    "warning",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def ready(self, client: httpx.AsyncClient) -> None:
        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return (await client.get(f"{self.url}/ready")).status_code == 200
            return False

        await wait_until(up, 30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def run_processes(count: int, store: str, concurrency: int, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="kds-bench-") as tmp_name:
        tmp = Path(tmp_name)
        kds = free_port()
        address = f"grpc://127.0.0.1:{kds}"
        cps = [
            Cp("global", ["--mode", "global", "--kds-port", str(kds)], tmp, store),
            *(
                Cp(
                    z,
                    [
                        "--mode",
                        "zone",
                        "--zone",
                        z,
                        "--global-address",
                        address,
                        "--xds-port",
                        str(free_port()),
                    ],
                    tmp,
                    store,
                )
                for z in ("zone1", "zone2")
            ),
        ]
        g, z1, z2 = cps
        limits = httpx.Limits(max_connections=concurrency + 4)
        try:
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                for cp in cps:
                    cp.start()
                await asyncio.gather(*(cp.ready(client) for cp in cps))

                async def connected() -> bool:
                    zones = (await client.get(f"{g.url}/zones/_overview")).json()["items"]
                    return sum(z["status"] == "Online" for z in zones) == 2

                await wait_until(connected, 30)
                print(f"kds_sync: {count} MeshServices, three `zonemesh cp run`, store={store}")

                async def total(cp: Cp) -> int:
                    r = await client.get(
                        f"{cp.url}{MS_PATH}",
                        params={"filter[labels.kuma.io/zone]": "zone1", "size": 1},
                    )
                    return int(r.json()["total"])

                done: dict[str, float] = {}

                async def watch(cp: Cp) -> None:
                    async def all_there() -> bool:
                        return await total(cp) >= count

                    done[cp.name] = await wait_until(all_there, timeout)

                gate = asyncio.Semaphore(concurrency)

                async def put(i: int) -> None:
                    async with gate:
                        doc = mesh_service(i)
                        r = await client.put(f"{z1.url}{MS_PATH}/{doc['name']}", json=doc)
                        if r.status_code not in (200, 201):
                            raise RuntimeError(f"PUT {doc['name']}: {r.status_code} {r.text}")

                watchers = [asyncio.create_task(watch(cp)) for cp in (g, z2)]
                t0 = time.monotonic()
                await asyncio.gather(*(put(i) for i in range(count)))
                written = time.monotonic()
                await asyncio.gather(*watchers)
                report(count, t0, written, done["global"], done["zone2"])

                # One change once everything is in: how long until zone2 sees it.
                doc = mesh_service(0, state="Unavailable")
                name = doc["name"]
                synced_name = next(
                    item["name"]
                    for item in (
                        await client.get(
                            f"{z2.url}{MS_PATH}",
                            params={"filter[labels.kuma.io/display-name]": name},
                        )
                    ).json()["items"]
                )
                t1 = time.monotonic()
                await client.put(f"{z1.url}{MS_PATH}/{name}", json=doc)

                async def changed() -> bool:
                    r = await client.get(f"{z2.url}{MS_PATH}/{synced_name}")
                    return r.json()["spec"]["state"] == "Unavailable"

                t2 = await wait_until(changed, timeout)
                print(f"  one update zone1 -> zone2 (API to API) {1000 * (t2 - t1):7.1f} ms")

                # Catch-up: a new zone joins and receives the 1000 in global's snapshot.
                z3 = Cp(
                    "zone3",
                    [
                        "--mode",
                        "zone",
                        "--zone",
                        "zone3",
                        "--global-address",
                        address,
                        "--xds-port",
                        str(free_port()),
                    ],
                    tmp,
                    store,
                )
                cps.append(z3)
                t3 = time.monotonic()
                z3.start()
                await z3.ready(client)
                t_ready = time.monotonic()

                async def caught_up() -> bool:
                    return await total(z3) >= count

                t4 = await wait_until(caught_up, timeout)
                print(
                    f"  a new zone3 holds all {count}: {t4 - t_ready:7.3f} s after its API "
                    f"is ready ({t4 - t3:.3f} s after process start)"
                )
        finally:
            for cp in cps:
                cp.stop()


# --- the engine alone, in one process -------------------------------------------------------


async def run_in_process(count: int, timeout: float) -> None:
    from zonemesh.config import CpConfig
    from zonemesh.federation.client import KdsClient
    from zonemesh.federation.server import KdsServer
    from zonemesh.resources.codec import resource_from_wire
    from zonemesh.resources.origin import stamp_origin
    from zonemesh.runtime.kernel import Runtime
    from zonemesh.store.memory import MemoryStore

    kds = free_port()
    g = Runtime(
        config=CpConfig.model_validate(
            {
                "mode": "global",
                "store": {"type": "memory"},
                "multizone": {"global": {"kdsPort": kds, "kdsAuth": {"type": "none"}}},
            }
        ),
        store=MemoryStore(),
    )

    def zone(name: str) -> Runtime:
        config = CpConfig.model_validate(
            {
                "mode": "zone",
                "store": {"type": "memory"},
                "multizone": {
                    "zone": {
                        "name": name,
                        "globalAddress": f"grpc://127.0.0.1:{kds}",
                        "kdsAuth": {"type": "none"},
                    }
                },
            }
        )
        return Runtime(config=config, store=MemoryStore())

    z1, z2 = zone("zone1"), zone("zone2")
    server = KdsServer(g)
    clients = [KdsClient(z1), KdsClient(z2)]
    await server.start()
    try:
        for c in clients:
            await c.start()
        for c in clients:
            await asyncio.wait_for(c.connected.wait(), 10)
        print(f"kds_sync: {count} MeshServices, in-process engine over gRPC, MemoryStores")
        resources = [
            stamp_origin(resource_from_wire(mesh_service(i)), is_global=False, zone="zone1")
            for i in range(count)
        ]

        async def there(rt: Runtime) -> bool:
            return len(await rt.store.list("MeshService")) >= count

        done: dict[str, float] = {}

        async def watch(name: str, rt: Runtime) -> None:
            done[name] = await wait_until(lambda: there(rt), timeout)

        watchers = [
            asyncio.create_task(watch("global", g)),
            asyncio.create_task(watch("zone2", z2)),
        ]
        t0 = time.monotonic()
        for r in resources:
            await z1.store.create(r)
        written = time.monotonic()
        await asyncio.gather(*watchers)
        report(count, t0, written, done["global"], done["zone2"])
    finally:
        for c in clients:
            await c.stop()
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=1000)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=16, help="PUTs in flight")
    parser.add_argument("--in-process", action="store_true", help="the engine alone")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    if args.in_process:
        asyncio.run(run_in_process(args.count, args.timeout))
    else:
        asyncio.run(run_processes(args.count, args.store, args.concurrency, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
