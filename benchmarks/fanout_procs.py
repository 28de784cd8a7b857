"""The fan-out benchmark's processes: JSON-line children, the zonemesh mesh, the replay floor.

Every process is started by PID with `die_with_parent` (Linux: killed if this one dies) and
stopped by its owner in a `finally`; only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import fanout_topology as topo

HERE = Path(__file__).resolve().parent


def free_port(taken: set[int] = set()) -> int:  # noqa: B006 - one picker for the whole run
    """A free loopback port not handed out before in this run (two CPs must not collide)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free loopback port")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def spawn(*argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
    from zonemesh.dp.envoy import die_with_parent

    return await asyncio.create_subprocess_exec(*die_with_parent(argv), **kwargs)


async def stop_process(proc: asyncio.subprocess.Process | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`: this PID only."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class Child:
    """A subprocess speaking JSON lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @classmethod
    async def start(cls, name: str, *argv: str) -> Child:
        proc = await spawn(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26
        )
        return cls(proc, name)

    async def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {event!r} within {timeout:g}s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            if not line:
                raise RuntimeError(f"{self.name} exited (code {await self.proc.wait()})")
            message = json.loads(line)
            if message.get("event") == event:
                return message

    async def close(self, timeout: float = 5.0) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.send({"op": "quit"})
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await stop_process(self.proc, timeout)


class CpProcess:
    """`zonemesh cp run` on loopback, plaintext gRPC, no dataplane or zone tokens (the
    benchmark measures xDS work, not authentication); restartable on the same ports/data."""

    def __init__(self, name: str, workdir: Path, *args: str, env: dict[str, str]) -> None:
        self.name = name
        self.api_port, self.xds_port = free_port(), free_port()
        self.xds_target = f"127.0.0.1:{self.xds_port}"
        self.data_dir = workdir / f"{name}-data"
        self.log_path = workdir / f"{name}.log"
        self.args = [
            *("cp", "run", "--address", "127.0.0.1", "--data-dir", str(self.data_dir)),
            *("--api-port", str(self.api_port), "--xds-port", str(self.xds_port)),
            *("--log-level", "warning", "--grpc-plaintext", *args),
        ]
        self.env = {
            **os.environ,
            "KUMA_API_SERVER_HTTPS_ENABLED": "false",
            "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none",
            **env,
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.http: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await spawn(
                sys.executable,
                "-m",
                "zonemesh",
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
            )
        if self.http is None:
            self.http = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{self.api_port}",
                timeout=30.0,
                limits=httpx.Limits(max_connections=16),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.name} exited during start{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get("/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout:g}s{self.log_tail()}")

    async def stop(self) -> None:
        await stop_process(self.proc)

    async def close(self) -> None:
        await self.stop()
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    async def write(self, write: topo.Write) -> None:
        if write.method == "put":
            response = await self.http.put(write.path, json=write.doc)
        else:
            response = await self.http.delete(write.path)
        if response.status_code not in (200, 201):
            raise RuntimeError(
                f"{self.name}: {write.method.upper()} {write.path}: "
                f"{response.status_code} {response.text}"
            )

    async def items(self, path: str) -> list[dict[str, Any]]:
        response = await self.http.get(path, params={"size": 1000})
        response.raise_for_status()
        return list(response.json()["items"])

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()[-15:]
        return ("\n" + "\n".join(lines)) if lines else ""


class Mesh:
    """global, the zone under test (`bench`, SQLite so that it can restart with its state),
    and `zone2`; zones federate to global over plaintext KDS without zone tokens."""

    def __init__(self, workdir: Path) -> None:
        kds = free_port()
        no_auth = {"KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE": "none"}
        zone_auth = {"KUMA_MULTIZONE_ZONE_KDS_AUTH_TYPE": "none"}
        address = f"grpc://127.0.0.1:{kds}"
        self.cps = {
            "global": CpProcess(
                "global",
                workdir,
                *("--mode", "global", "--kds-port", str(kds), "--store", "memory"),
                env=no_auth,
            ),
            "zone2": CpProcess(
                "zone2",
                workdir,
                *("--mode", "zone", "--zone", "zone2", "--global-address", address),
                *("--store", "memory"),
                env=zone_auth,
            ),
            "bench": CpProcess(
                "bench",
                workdir,
                *("--mode", "zone", "--zone", "bench", "--global-address", address),
                *("--store", "sqlite"),
                env=zone_auth,
            ),
        }
        self.bench = self.cps["bench"]

    async def start(self) -> None:
        await self.cps["global"].start()
        await asyncio.gather(self.cps["zone2"].start(), self.bench.start())

    async def close(self) -> None:
        for cp in reversed(list(self.cps.values())):
            await cp.close()

    async def apply(self, writes: list[topo.Write] | tuple[topo.Write, ...]) -> None:
        """In order per control plane, 16 at a time (as a deployment tool would)."""
        semaphore = asyncio.Semaphore(16)

        async def one(write: topo.Write) -> None:
            async with semaphore:
                await self.cps[write.cp].write(write)

        mmzs = [w for w in writes if w.cp == "global"]
        for write in mmzs:
            await self.cps["global"].write(write)
        await asyncio.gather(*(one(w) for w in writes if w.cp != "global"))

    async def wait_ready(self, services: int, timeout: float) -> None:
        """Until the bench zone sees every service Available, both MMZS and zone2's ingress."""
        wanted = {topo.service_name(s) for s in range(services)} | set(topo.MZ_SERVICES)
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            items = await self.bench.items(f"/meshes/{topo.MESH}/meshservices")
            available = {
                (
                    i.get("labels", {}).get("kuma.io/display-name", i["name"]),
                    i.get("labels", {}).get("kuma.io/zone"),
                )
                for i in items
                if i.get("spec", {}).get("state", "Available") == "Available"
            }
            names = {name for name, _ in available}
            mmzs = await self.bench.items(f"/meshes/{topo.MESH}/meshmultizoneservices")
            ingresses = await self.bench.items("/zoneingresses")
            missing = sorted(wanted - names)
            if (topo.REMOTE_SERVICE, "zone2") not in available:
                missing.append(f"{topo.REMOTE_SERVICE} from zone2")
            if len(mmzs) < 2:
                missing.append("both MeshMultiZoneServices")
            if not ingresses:
                missing.append("zone2's ZoneIngress")
            if not missing:
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(f"bench zone not ready within {timeout:g}s: missing {missing[:5]}")


class FloorProcess:
    """floor_ads.py serving the captured resources; `step` pushes a captured change."""

    def __init__(self, captures: list[Path]) -> None:
        self.port = free_port()
        self.xds_target = f"127.0.0.1:{self.port}"
        self.captures = ",".join(str(p) for p in captures)
        self.child: Child | None = None

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.proc.pid

    async def start(self, at_step: int = 0) -> None:
        self.child = await Child.start(
            "floor",
            sys.executable,
            str(HERE / "floor_ads.py"),
            *("--port", str(self.port), "--capture", self.captures, "--at-step", str(at_step)),
        )
        await self.child.expect("ready", 120)

    async def step(self, step: int) -> None:
        assert self.child is not None
        await self.child.send({"op": "step", "step": step})
        await self.child.expect("pushed", 60)

    async def stop(self) -> None:
        if self.child is not None:
            await stop_process(self.child.proc)

    async def close(self) -> None:
        if self.child is not None:
            await self.child.close()
