#!/usr/bin/env python
"""xDS fan-out benchmark: how fast the CP configures N proxies and pushes one endpoint change.

Three processes, so that neither side steals the other's CPU:
- the control plane: `zonemesh cp run --store memory` (or, with `--cp child`, an in-process
  `XdsServer` + `ComputedState` in a child Python process driven over stdin);
- the simulated proxies: `--role client` children, each holding many ADS streams (SotW or
  Delta, like Envoy: CDS/LDS wildcard, EDS for the clusters CDS names, every response ACKed);
- this orchestrator, which creates M services x E endpoints, connects the proxies, changes
  one endpoint, and reads the CP's CPU and RSS from /proc.

Timestamps are CLOCK_MONOTONIC, shared by all processes on the host. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
MESH = "default"
SERVICE_PORT = 8080  # every benchmark service's port (the MeshService port)
INBOUND_PORT = 18080  # every instance's sidecar inbound port
CLIENT_SERVICE = "bench-client"
OUTBOUND_PORT_BASE = 20000  # a proxy's outbound to service s listens on this + s

TARGETS = {
    "first_config_all_s": 10.0,
    "change_p99_ms": 500.0,
    "memory_per_proxy_kb": 200.0,
}


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback(first: int, n: int) -> str:
    """The n-th address of a loopback block starting at 127.<first>.0.1 (62500 per octet)."""
    return f"127.{first + n // 62500}.{(n // 250) % 250}.{n % 250 + 1}"


def instance_address(service: int, instance: int, per_service: int) -> str:
    """Every instance has a loopback address of its own: 127.1.x.y onwards."""
    return loopback(1, service * per_service + instance)


def proxy_address(index: int) -> str:
    return loopback(50, index)


def changed_address(rep: int) -> str:
    return loopback(100, rep)


def service_name(service: int) -> str:
    return f"svc-{service:04d}"


def instance_dataplane(
    service: int, instance: int, per_service: int, address: str | None = None
) -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": MESH,
        "name": f"{service_name(service)}-{instance:03d}",
        "networking": {
            "address": address or instance_address(service, instance, per_service),
            "inbound": [
                {
                    "port": INBOUND_PORT,
                    "servicePort": SERVICE_PORT,
                    "tags": {"kuma.io/service": service_name(service), "kuma.io/protocol": "http"},
                }
            ],
        },
    }


def proxy_dataplane(index: int, services: int, member: bool = False) -> dict[str, Any]:
    """A simulated proxy, registered from its node metadata as Envoy's would be.

    It has one outbound per benchmark service (a sidecar gets clusters only for the services
    its outbounds name). Its inbound is `Ignored` (a pure client, so the topology stays
    M x E) unless `member`: then all proxies form one `bench-client` service of N endpoints,
    as sidecars would, and every connect changes that service's endpoints for everyone.
    """
    inbound: dict[str, Any] = {
        "port": INBOUND_PORT,
        "servicePort": SERVICE_PORT,
        "tags": {"kuma.io/service": CLIENT_SERVICE, "kuma.io/protocol": "http"},
    }
    if not member:
        inbound["state"] = "Ignored"
    return {
        "type": "Dataplane",
        "mesh": MESH,
        "name": f"bench-proxy-{index:05d}",
        "networking": {
            "address": proxy_address(index),
            "inbound": [inbound],
            "outbound": [
                {
                    "port": OUTBOUND_PORT_BASE + s,
                    "address": "127.0.0.1",
                    "backendRef": {
                        "kind": "MeshService",
                        "name": service_name(s),
                        "port": SERVICE_PORT,
                    },
                }
                for s in range(services)
            ],
        },
    }


# --------------------------------------------------------------------------- client role


@dataclass
class Watch:
    """Wait until, in every proxy, the clusters that held an `absent` address hold none of
    them and hold all `present` ones (cluster names are the CP's business, not ours)."""

    ident: int
    present: frozenset[str]
    absent: frozenset[str]
    times: dict[int, float] = field(default_factory=dict)

    def matches(self, addresses: frozenset[str]) -> bool:
        return self.present <= addresses and not (self.absent & addresses)


class Fleet:
    """Many simulated ADS clients in one process, over a handful of gRPC channels."""

    def __init__(
        self,
        target: str,
        indices: list[int],
        channels: int,
        delta: bool,
        services: int,
        endpoints: int,
        member: bool = False,
    ) -> None:
        self.member = member
        self.target = target
        self.indices = indices
        self.channel_count = max(1, min(channels, len(indices)))
        self.delta = delta
        self.services = services
        self.endpoints = endpoints
        self.configured: dict[int, float] = {}
        self.cluster_addresses: dict[int, dict[str, frozenset[str]]] = {i: {} for i in indices}
        self.eds_names: dict[int, set[str]] = {i: set() for i in indices}
        self.watch: Watch | None = None
        self.watched: dict[int, set[str]] = {}
        self.responses = 0
        self.errors: list[str] = []  # simulator failures (not CP behaviour)
        self.resets = 0  # streams that ended and were reconnected, as Envoy would
        self.reset_reasons: dict[str, int] = {}
        self._received: dict[int, int] = {}
        self.all_configured = asyncio.Event()
        self.watch_done = asyncio.Event()
        self._channels: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc

        options = [
            ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per channel
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
        ]
        self._channels = [
            grpc.aio.insecure_channel(self.target, options=options)
            for _ in range(self.channel_count)
        ]
        stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in self._channels]
        for n, index in enumerate(self.indices):
            stub = stubs[n % len(stubs)]
            self._tasks.append(asyncio.create_task(self._proxy_loop(index, stub)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()

    async def _proxy_loop(self, index: int, stub: Any) -> None:
        """One proxy for the whole run: like Envoy, reconnect with jittered backoff on failure."""
        import grpc

        run = self._run_delta if self.delta else self._run_sotw
        attempt = 0
        while True:
            before = self._received.get(index, 0)
            try:
                await run(index, stub)
                reason = "stream ended by the CP"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                reason = f"{e.code().name}: {e.details()}"
            except Exception as e:  # a bug in the simulator: report it, do not retry
                self.errors.append(f"proxy {index}: {type(e).__name__}: {e}")
                return
            self.resets += 1
            self.reset_reasons[reason] = self.reset_reasons.get(reason, 0) + 1
            attempt = 0 if self._received.get(index, 0) > before else attempt + 1
            await asyncio.sleep(random.uniform(0, min(30.0, 0.5 * 2**attempt)))

    def _node(self, index: int) -> Any:
        from envoy.config.core.v3 import base_pb2
        from google.protobuf import json_format

        from zonemesh.dp.bootstrap import render_bootstrap

        bootstrap = render_bootstrap(
            proxy_dataplane(index, self.services, self.member),
            "dataplane",
            f"grpc://{self.target}",
            0,
            delta=self.delta,
        )
        return json_format.ParseDict(bootstrap["node"], base_pb2.Node())

    # Envoy's behaviour, reduced to what matters for the CP: subscribe, follow CDS, ACK all.

    async def _run_sotw(self, index: int, stub: Any) -> None:
        from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

        call = stub.StreamAggregatedResources()
        await call.write(DiscoveryRequest(node=self._node(index), type_url=CDS))
        await call.write(DiscoveryRequest(type_url=LDS))
        eds_names: list[str] = []
        eds_version = eds_nonce = ""
        while True:
            response = await call.read()
            if response is None or not hasattr(response, "type_url"):
                return
            self.responses += 1
            self._received[index] = self._received.get(index, 0) + 1
            now = time.monotonic()
            type_url = response.type_url
            if type_url == EDS:
                eds_version, eds_nonce = response.version_info, response.nonce
                for any_ in response.resources:
                    self._on_cla(index, any_.value, now)
                await call.write(
                    DiscoveryRequest(
                        type_url=EDS,
                        resource_names=eds_names,
                        version_info=eds_version,
                        response_nonce=eds_nonce,
                    )
                )
            elif type_url == CDS:
                names = sorted(self._eds_names(any_.value for any_ in response.resources))
                self.eds_names[index] = set(names)
                self._check_configured(index, now)
                await call.write(
                    DiscoveryRequest(
                        type_url=CDS,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
                if names != eds_names:
                    eds_names = names
                    await call.write(
                        DiscoveryRequest(
                            type_url=EDS,
                            resource_names=eds_names,
                            version_info=eds_version,
                            response_nonce=eds_nonce,
                        )
                    )
            else:
                await call.write(
                    DiscoveryRequest(
                        type_url=type_url,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )

    async def _run_delta(self, index: int, stub: Any) -> None:
        from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

        call = stub.DeltaAggregatedResources()
        await call.write(DeltaDiscoveryRequest(node=self._node(index), type_url=CDS))
        await call.write(DeltaDiscoveryRequest(type_url=LDS))
        clusters: dict[str, str] = {}  # cluster name -> EDS service name ("" if not EDS)
        eds_subscribed: set[str] = set()
        while True:
            response = await call.read()
            if response is None or not hasattr(response, "type_url"):
                return
            self.responses += 1
            self._received[index] = self._received.get(index, 0) + 1
            now = time.monotonic()
            type_url = response.type_url
            await call.write(
                DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
            )
            if type_url == EDS:
                for resource in response.resources:
                    self._on_cla(index, resource.resource.value, now)
                for name in response.removed_resources:
                    self.cluster_addresses[index].pop(name, None)
            elif type_url == CDS:
                for resource in response.resources:
                    eds = self._eds_names([resource.resource.value])
                    clusters[resource.name] = next(iter(eds), "")
                for name in response.removed_resources:
                    clusters.pop(name, None)
                wanted = {v for v in clusters.values() if v}
                self.eds_names[index] = wanted
                self._check_configured(index, now)
                if wanted != eds_subscribed:
                    await call.write(
                        DeltaDiscoveryRequest(
                            type_url=EDS,
                            resource_names_subscribe=sorted(wanted - eds_subscribed),
                            resource_names_unsubscribe=sorted(eds_subscribed - wanted),
                        )
                    )
                    eds_subscribed = wanted

    @staticmethod
    def _eds_names(values: Any) -> set[str]:
        from envoy.config.cluster.v3.cluster_pb2 import Cluster

        names = set()
        for value in values:
            cluster = Cluster.FromString(value)
            if cluster.type == Cluster.EDS:
                names.add(cluster.eds_cluster_config.service_name or cluster.name)
        return names

    def _on_cla(self, index: int, value: bytes, now: float) -> None:
        from envoy.config.core.v3.health_check_pb2 import HealthStatus
        from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

        cla = ClusterLoadAssignment.FromString(value)
        addresses = frozenset(
            lb.endpoint.address.socket_address.address
            for locality in cla.endpoints
            for lb in locality.lb_endpoints
            if lb.health_status in (HealthStatus.UNKNOWN, HealthStatus.HEALTHY)
        )
        views = self.cluster_addresses[index]
        views[cla.cluster_name] = addresses
        self._check_configured(index, now)
        watch = self.watch
        watched = self.watched.get(index, ())
        if (
            watch is not None
            and index not in watch.times
            and cla.cluster_name in watched
            and all(watch.matches(views.get(name, frozenset())) for name in watched)
        ):
            watch.times[index] = now
            if len(watch.times) == len(self.indices):
                self.watch_done.set()

    def _check_configured(self, index: int, now: float) -> None:
        """Full config: an EDS cluster per service, each with all of its endpoints."""
        if index in self.configured:
            return
        names = self.eds_names[index]
        views = self.cluster_addresses[index]
        if len(names) >= self.services and all(
            len(views.get(name, ())) >= self.endpoints for name in names
        ):
            self.configured[index] = now
            if len(self.configured) == len(self.indices):
                self.all_configured.set()

    def start_watch(self, watch: Watch) -> None:
        self.watch = watch
        self.watch_done.clear()
        self.watched = {
            index: {name for name, addrs in views.items() if addrs & watch.absent}
            for index, views in self.cluster_addresses.items()
        }


async def client_main(args: argparse.Namespace) -> None:
    """Read commands (JSON lines) from stdin; report events (JSON lines) on stdout."""
    fleet = Fleet(
        args.target,
        [int(i) for i in args.indices.split(",")] if args.indices else [],
        args.channels,
        args.mode == "delta",
        args.services,
        args.endpoints,
        args.proxy_inbound == "member",
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "hello", "pid": os.getpid()})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "connect":
                await fleet.connect()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.all_configured.wait(), cmd["timeout"])
                emit(
                    {
                        "event": "configured",
                        "times": fleet.configured,
                        "errors": fleet.errors[:5],
                        "resets": fleet.resets,
                        "reset_reasons": fleet.reset_reasons,
                        "responses": fleet.responses,
                    }
                )
            elif op == "watch":
                watch = Watch(cmd["id"], frozenset(cmd["present"]), frozenset(cmd["absent"]))
                fleet.start_watch(watch)
                emit({"event": "watching", "id": watch.ident})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.watch_done.wait(), cmd["timeout"])
                emit({"event": "watched", "id": watch.ident, "times": watch.times})
            elif op == "quit":
                break
    finally:
        await fleet.close()


# --------------------------------------------------------------------------- cp child role


async def cp_child_main(args: argparse.Namespace) -> None:
    """An in-process XdsServer (+ ComputedState) driven over stdin: the fallback CP."""
    from zonemesh.config import load_config
    from zonemesh.cp.runtime import Runtime
    from zonemesh.resources.base import ResourceKey
    from zonemesh.resources.codec import resource_from_wire
    from zonemesh.state.component import ComputedState
    from zonemesh.store.memory import MemoryStore
    from zonemesh.xds.component import XdsServer

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    # Fan-out is measured without dataplane tokens (one RS256 verification per stream start
    # is not what this benchmark is about): authentication explicitly off.
    config = load_config(
        env={"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none"},
        flags={"store": "memory", "xds_port": args.xds_port},
    )
    runtime = Runtime(config=config, store=MemoryStore())
    components = [ComputedState(runtime), XdsServer(runtime)]
    for component in components:
        await component.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    store = runtime.store
    emit({"event": "ready", "pid": os.getpid()})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "put":
                for wire in cmd["resources"]:
                    resource = resource_from_wire(wire)
                    current = await store.find(resource.key)
                    if current is None:
                        await store.create(resource)
                    else:
                        await store.update(resource.with_(version=current.version))
                emit({"event": "done"})
            elif op == "delete":
                await store.delete(ResourceKey("Dataplane", cmd["mesh"], cmd["name"]))
                emit({"event": "done"})
            elif op == "meshservices":
                services = await store.list("MeshService", MESH)
                available = [
                    s.name for s in services if getattr(s.spec, "state", "Available") == "Available"
                ]
                emit({"event": "meshservices", "names": available})
            elif op == "quit":
                break
    finally:
        for component in reversed(components):
            await component.stop()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


# --------------------------------------------------------------------------- orchestrator


class Child:
    """A subprocess speaking JSON lines on stdin/stdout; killed on close, whatever happens."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @classmethod
    async def spawn(cls, name: str, *argv: str, stderr: Any = None) -> Child:
        from zonemesh.dp.envoy import die_with_parent

        proc = await asyncio.create_subprocess_exec(
            *die_with_parent(argv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            limit=1 << 26,
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
            await asyncio.wait_for(self.proc.wait(), timeout / 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout / 2)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


class ControlPlane:
    """The CP under test, however it runs; exposes its pid and the writes the benchmark needs."""

    description = ""
    pid = 0
    xds_target = ""

    async def start(self) -> None: ...
    async def put(self, resources: list[dict[str, Any]]) -> None: ...
    async def delete(self, name: str) -> None: ...
    async def available_services(self) -> set[str]: ...
    async def stop(self) -> None: ...
    def log_tail(self) -> str:
        return ""


class CliControlPlane(ControlPlane):
    """`zonemesh cp run --store memory`, written to through its HTTP API."""

    def __init__(self) -> None:
        self.api_port, self.xds_port, self.kds_port = free_port(), free_port(), free_port()
        self.xds_target = f"127.0.0.1:{self.xds_port}"
        self.description = "`zonemesh cp run --store memory` subprocess"
        self._log = tempfile.NamedTemporaryFile(prefix="zonemesh-bench-cp-", suffix=".log")  # noqa: SIM115
        self._proc: asyncio.subprocess.Process | None = None
        self._http: Any = None

    async def start(self) -> None:
        import httpx

        from zonemesh.dp.envoy import die_with_parent

        argv = [
            sys.executable,
            "-m",
            "zonemesh",
            "cp",
            "run",
            "--store",
            "memory",
            "--address",
            "127.0.0.1",
            "--api-port",
            str(self.api_port),
            "--xds-port",
            str(self.xds_port),
            "--kds-port",
            str(self.kds_port),
            "--log-level",
            "warning",
            "--grpc-plaintext",  # the benchmark's clients measure xDS work, not TLS
        ]
        self._proc = await asyncio.create_subprocess_exec(
            *die_with_parent(argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env={
                **os.environ,
                "KUMA_MULTIZONE_ZONE_NAME": "bench",
                "KUMA_API_SERVER_HTTPS_ENABLED": "false",
                "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none",  # see `serve_child`
            },
        )
        self.pid = self._proc.pid
        self._http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}",
            timeout=30.0,
            limits=httpx.Limits(max_connections=16),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                raise RuntimeError("control plane exited during start" + self.log_tail())
            with contextlib.suppress(httpx.HTTPError):
                if (await self._http.get("/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError("control plane not ready within 30s" + self.log_tail())

    async def put(self, resources: list[dict[str, Any]]) -> None:
        semaphore = asyncio.Semaphore(16)

        async def one(wire: dict[str, Any]) -> None:
            async with semaphore:
                response = await self._http.put(
                    f"/meshes/{wire['mesh']}/dataplanes/{wire['name']}", json=wire
                )
                if response.status_code not in (200, 201):
                    raise RuntimeError(
                        f"PUT {wire['name']}: {response.status_code} {response.text}"
                    )

        await asyncio.gather(*(one(w) for w in resources))

    async def delete(self, name: str) -> None:
        response = await self._http.delete(f"/meshes/{MESH}/dataplanes/{name}")
        response.raise_for_status()

    async def available_services(self) -> set[str]:
        response = await self._http.get(f"/meshes/{MESH}/meshservices", params={"size": 1000})
        response.raise_for_status()
        return {
            item["name"]
            for item in response.json()["items"]
            if item.get("spec", {}).get("state", "Available") == "Available"
        }

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def log_tail(self) -> str:
        lines = Path(self._log.name).read_text(errors="replace").splitlines()[-15:]
        return ("\n" + "\n".join(lines)) if lines else ""


class ChildControlPlane(ControlPlane):
    """XdsServer + ComputedState in a child Python process, written to directly."""

    def __init__(self, profile: str = "") -> None:
        self.xds_port = free_port()
        self.xds_target = f"127.0.0.1:{self.xds_port}"
        self.description = "in-process XdsServer in a child process (no API)"
        self.profile = profile
        self._child: Child | None = None

    async def start(self) -> None:
        argv = [sys.executable, __file__, "--role", "cp", "--xds-port", str(self.xds_port)]
        if self.profile:
            argv += ["--profile", self.profile]
        self._child = await Child.spawn("cp", *argv)
        self.pid = (await self._child.expect("ready", 30))["pid"]

    async def _call(self, cmd: dict[str, Any], event: str = "done") -> dict[str, Any]:
        assert self._child is not None
        await self._child.send(cmd)
        return await self._child.expect(event, 60)

    async def put(self, resources: list[dict[str, Any]]) -> None:
        await self._call({"op": "put", "resources": resources})

    async def delete(self, name: str) -> None:
        await self._call({"op": "delete", "mesh": MESH, "name": name})

    async def available_services(self) -> set[str]:
        return set((await self._call({"op": "meshservices"}, "meshservices"))["names"])

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.close()


def cli_cp_runnable() -> bool:
    """`zonemesh cp run` needs every component it composes."""
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("zonemesh.api.server", "zonemesh.state.component", "zonemesh.xds.component")
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g}s")
        await asyncio.sleep(0.1)


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    use_cli = args.cp == "cli" or (args.cp == "auto" and cli_cp_runnable() and not args.profile)
    cp: ControlPlane = CliControlPlane() if use_cli else ChildControlPlane(args.profile)
    clients: list[Child] = []
    result: dict[str, Any] = {
        "proxies": args.proxies,
        "services": args.services,
        "endpoints": args.endpoints,
        "mode": args.mode,
        "proxy_inbound": args.proxy_inbound,
        "timeout_s": args.timeout,
        "cp": cp.description,
        "host": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
    }
    try:
        await cp.start()
        instances = [
            instance_dataplane(s, i, args.endpoints)
            for s in range(args.services)
            for i in range(args.endpoints)
        ]
        t = time.monotonic()
        await cp.put(instances)
        wanted = {service_name(s) for s in range(args.services)}

        async def services_ready() -> bool:
            return wanted <= await cp.available_services()

        await poll(services_ready, 120, "MeshServices not all Available")
        result["setup_s"] = time.monotonic() - t

        procs = max(1, min(args.client_procs, args.proxies))
        for p in range(procs):
            indices = list(range(p, args.proxies, procs))
            child = await Child.spawn(
                f"client{p}",
                sys.executable,
                __file__,
                "--role",
                "client",
                "--target",
                cp.xds_target,
                "--indices",
                ",".join(map(str, indices)),
                "--channels",
                str(max(1, args.channels // procs)),
                "--mode",
                args.mode,
                "--services",
                str(args.services),
                "--endpoints",
                str(args.endpoints),
                "--proxy-inbound",
                args.proxy_inbound,
            )
            clients.append(child)
            await child.expect("hello", 30)

        await asyncio.sleep(0.5)
        rss_before = rss_bytes(cp.pid)
        t_connect = time.monotonic()
        for child in clients:
            await child.send({"op": "connect", "timeout": args.timeout})
        reports = [await c.expect("configured", args.timeout + 30) for c in clients]
        times = [t - t_connect for r in reports for t in r["times"].values()]
        result["configured"] = len(times)
        result["client_errors"] = [e for r in reports for e in r["errors"]]
        result["stream_resets"] = sum(r["resets"] for r in reports)
        reasons: dict[str, int] = {}
        for r in reports:
            for reason, count in r["reset_reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        result["reset_reasons"] = reasons
        result["first_config_all_s"] = max(times) if times else float("nan")
        result["first_config_p50_s"] = percentile(times, 50)
        await asyncio.sleep(1.0)  # let ACKs and connect-time pushes settle
        rss_after = rss_bytes(cp.pid)
        result["cp_rss_before_mb"] = rss_before / 2**20
        result["cp_rss_after_mb"] = rss_after / 2**20
        # Every stream is connected by now, configured or not: divide by all of them.
        result["memory_per_proxy_kb"] = (rss_after - rss_before) / args.proxies / 1024
        if len(times) < args.proxies:
            return result

        changes = []
        for rep in range(args.reps):
            service, instance = rep % args.services, 0
            old = instance_address(service, instance, args.endpoints)
            if args.change == "remove":
                present, absent = [], [old]
            else:
                new = changed_address(rep)
                present, absent = [new], [old]
            for child in clients:
                await child.send(
                    {
                        "op": "watch",
                        "id": rep,
                        "present": present,
                        "absent": absent,
                        "timeout": args.timeout,
                    }
                )
            for child in clients:
                await child.expect("watching", 30)
            idle_start = cpu_seconds(cp.pid)
            await asyncio.sleep(1.0)
            idle_rate = cpu_seconds(cp.pid) - idle_start

            cpu_before = cpu_seconds(cp.pid)
            t0 = time.monotonic()
            if args.change == "remove":
                await cp.delete(instance_dataplane(service, instance, args.endpoints)["name"])
            else:
                await cp.put([instance_dataplane(service, instance, args.endpoints, present[0])])
            watched = [await c.expect("watched", args.timeout + 30) for c in clients]
            t_done = time.monotonic()
            await asyncio.sleep(0.5)  # ACK processing belongs to the change too
            cpu = cpu_seconds(cp.pid) - cpu_before - idle_rate * (time.monotonic() - t0)
            latencies = [(t - t0) * 1000 for w in watched for t in w["times"].values()]
            changes.append(
                {
                    "reached": len(latencies),
                    "p50_ms": percentile(latencies, 50),
                    "p99_ms": percentile(latencies, 99),
                    "max_ms": max(latencies) if latencies else float("nan"),
                    "cpu_s": max(0.0, cpu),
                    "wall_s": t_done - t0,
                }
            )
            # Put the instance back so the next repetition starts from the full set.
            await cp.put([instance_dataplane(service, instance, args.endpoints)])
            await asyncio.sleep(1.0)
        result["changes"] = changes
        return result
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}" + cp.log_tail()
        return result
    finally:
        for child in clients:
            await child.close()
        await cp.stop()


def check(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_table(r: dict[str, Any]) -> None:
    print(
        f"xDS fan-out: {r['proxies']} proxies ({r['mode']}), {r['services']} services x "
        f"{r['endpoints']} endpoints; CP: {r['cp']}"
    )
    print(f"  host: {r['host']}")
    if "setup_s" in r:
        print(f"  (setup: {r['services'] * r['endpoints']} Dataplanes in {r['setup_s']:.2f}s)")
    rows: list[tuple[str, str, str, str]] = []
    if "configured" in r:
        all_s = r["first_config_all_s"]
        if r["configured"] < r["proxies"]:
            all_s = float("inf")  # not all within the phase's timeout
        target = TARGETS["first_config_all_s"]
        rows.append(("proxies with full config", f"{r['configured']}/{r['proxies']}", "all", ""))
        rows.append(("first full config, p50", f"{r['first_config_p50_s']:.2f} s", "", ""))
        rows.append(
            (
                "first full config, all",
                f"{all_s:.2f} s" if all_s != float("inf") else f"> {r['timeout_s']:g} s",
                f"< {target:g} s",
                check(all_s < target),
            )
        )
        mem = r["memory_per_proxy_kb"]
        target = TARGETS["memory_per_proxy_kb"]
        rows.append(
            (
                "CP memory per connected proxy",
                f"{mem:.0f} KB",
                f"< {target:g} KB",
                check(mem < target),
            )
        )
        rows.append(
            (
                "CP RSS before / after connect",
                f"{r['cp_rss_before_mb']:.0f} / {r['cp_rss_after_mb']:.0f} MB",
                "",
                "",
            )
        )
    target = TARGETS["change_p99_ms"]
    for i, c in enumerate(r.get("changes", [])):
        rows.append((f"change {i + 1}: reached", f"{c['reached']}/{r['proxies']}", "all", ""))
        rows.append((f"change {i + 1}: p50", f"{c['p50_ms']:.0f} ms", "", ""))
        rows.append(
            (
                f"change {i + 1}: p99",
                f"{c['p99_ms']:.0f} ms",
                f"< {target:g} ms",
                check(c["p99_ms"] < target),
            )
        )
        rows.append((f"change {i + 1}: CP CPU", f"{c['cpu_s']:.2f} s", "", ""))
    width = max(len(row[0]) for row in rows) if rows else 10
    print(f"  {'metric':<{width}}  {'value':>16}  {'target':>10}")
    for name, value, target_text, verdict in rows:
        print(f"  {name:<{width}}  {value:>16}  {target_text:>10}  {verdict}")
    if r.get("stream_resets"):
        print(f"  streams reset by the CP and reconnected: {r['stream_resets']}")
        for reason, count in r["reset_reasons"].items():
            print(f"    {count} x {reason}")
    if r.get("client_errors"):
        print("  client errors:", *r["client_errors"], sep="\n    ")
    if r.get("error"):
        print(f"  ERROR: {r['error']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bench", "client", "cp"], default="bench")
    parser.add_argument("-n", "--proxies", type=int, default=1000)
    parser.add_argument("-m", "--services", type=int, default=100)
    parser.add_argument("-e", "--endpoints", type=int, default=10, help="per service")
    parser.add_argument("--mode", choices=["sotw", "delta"], default="delta")
    parser.add_argument("--reps", type=int, default=3, help="endpoint changes to measure")
    parser.add_argument("--change", choices=["address", "remove"], default="address")
    parser.add_argument("--channels", type=int, default=8, help="gRPC connections in total")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument(
        "--proxy-inbound",
        choices=["ignored", "member"],
        default="ignored",
        help="member: the proxies form one service of N endpoints (connect churn)",
    )
    parser.add_argument("--cp", choices=["auto", "cli", "child"], default="auto")
    parser.add_argument("--profile", default="", help="--cp child: write cProfile stats here")
    parser.add_argument("--timeout", type=float, default=60.0, help="per phase")
    parser.add_argument("--smoke", action="store_true", help="20 proxies, 5x2, 2 changes")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    # internal (client / cp roles)
    parser.add_argument("--target", default="")
    parser.add_argument("--indices", default="")
    parser.add_argument("--xds-port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.proxies, args.services, args.endpoints, args.reps = 20, 5, 2, 2
        args.channels = min(args.channels, 2)
        args.timeout = min(args.timeout, 30.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "client":
        asyncio.run(client_main(args))
        return 0
    if args.role == "cp":
        asyncio.run(cp_child_main(args))
        return 0
    result = asyncio.run(run_benchmark(args))
    print_table(result)
    if args.json:
        print(json.dumps(result))
    complete = (
        "error" not in result
        and result.get("configured") == args.proxies
        and all(c["reached"] == args.proxies for c in result.get("changes", []))
        and len(result.get("changes", [])) == args.reps
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
