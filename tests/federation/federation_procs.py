"""Real control-plane processes (`zonemesh cp run`) for federation tests: start, wait until
ready, kill, restart on the same data directory; every process is terminated at teardown.

Zone CPs authenticate to global with zone tokens, issued by global (`POST /tokens/zone`) once
it is up and passed as `KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE`, as an operator would."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from federation_helpers import free_port

GRACE_S = 2
TOKEN_INLINE_ENV = "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE"


@dataclass
class CpProcess:
    name: str
    args: list[str]
    log_path: Path
    api_port: int
    kds_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)  # KUMA_* settings of this CP
    zone: str = ""  # set on a zone CP: it needs a zone token from global before it starts

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUMA_", "ZONEMESH_"))}
        env["ZONEMESH_ZONE_OFFLINE_GRACE"] = str(GRACE_S)
        env.update(self.env)
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"----- start {self.starts} -----\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zonemesh", "cp", "run", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the API answers and (on a zone) the default Mesh has arrived from global:
        a federated zone gets its meshes through sync, and a Dataplane needs its mesh."""
        deadline = time.monotonic() + timeout
        path = "/ready" if self.kds_port else "/meshes/default"
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited: {self.proc.returncode}\n{self.log()}"
                    )
                try:
                    if (await client.get(f"{self.url}{path}")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready in {timeout}s\n{self.log()}")
                await asyncio.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        if not self.log_path.exists():
            return "(never started)"
        return self.log_path.read_text(errors="replace")[-6000:]


@dataclass
class Cluster:
    """global, zone1 and zone2, each with its own SQLite data directory."""

    tmp: Path
    procs: dict[str, CpProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """KDS over TLS, as `cp run` serves it: zones trust global's generated CA."""
        kds = free_port()
        self.procs["global"] = self._cp("global", "--mode", "global", "--kds-port", str(kds))
        self.procs["global"].kds_port = kds
        for zone in ("zone1", "zone2"):
            self.add_zone(zone)

    def add_zone(self, zone: str) -> CpProcess:
        """A zone CP of this cluster (not started); `start` gives it a zone token first."""
        kds = self.procs["global"].kds_port
        self.procs[zone] = self._cp(
            zone,
            *("--mode", "zone", "--zone", zone),
            *("--global-address", f"grpcs://127.0.0.1:{kds}"),
            *("--xds-port", str(free_port())),
        )
        self.procs[zone].zone = zone
        self.procs[zone].env["KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE"] = str(
            self.tmp / "global" / "tls" / "ca.crt"
        )
        return self.procs[zone]

    def _cp(self, name: str, *extra: str) -> CpProcess:
        api_port = free_port()
        args = [
            *extra,
            *("--api-port", str(api_port), "--https-port", str(free_port())),
            *("--store", "sqlite", "--data-dir", str(self.tmp / name)),
        ]
        return CpProcess(name, args, self.tmp / f"{name}.log", api_port)

    def __getitem__(self, name: str) -> CpProcess:
        return self.procs[name]

    async def zone_token(self, zone: str, valid_for: str = "24h") -> str:
        """A zone token from the running global (its API is open from loopback)."""
        async with httpx.AsyncClient(base_url=self.procs["global"].url, timeout=10) as client:
            response = await client.post("/tokens/zone", json={"zone": zone, "validFor": valid_for})
        assert response.status_code == 200, f"POST /tokens/zone: {response.text}"
        return response.text

    async def start(self, *names: str) -> None:
        """Start these (default: all), global first; zone CPs without a token get one."""
        wanted = names or tuple(self.procs)
        if "global" in wanted:
            self.procs["global"].start()
            await self.procs["global"].wait_ready()
        zones = [self.procs[n] for n in wanted if n != "global"]
        for proc in zones:
            settings = (TOKEN_INLINE_ENV, "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH")
            if proc.zone and not any(k in proc.env for k in settings):
                proc.env[TOKEN_INLINE_ENV] = await self.zone_token(proc.zone)
            proc.start()
        await asyncio.gather(*(p.wait_ready() for p in zones))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill(signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.log()}" for p in self.procs.values())


class Api:
    """A thin HTTP client for one control plane's API."""

    def __init__(self, cp: CpProcess) -> None:
        self.cp = cp
        self.client = httpx.AsyncClient(base_url=cp.url, timeout=10)

    async def put(self, path: str, doc: dict[str, Any]) -> httpx.Response:
        return await self.client.put(path, json=doc)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path)

    async def json(self, path: str, **params: Any) -> Any:
        response = await self.get(path, **params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    async def close(self) -> None:
        await self.client.aclose()
