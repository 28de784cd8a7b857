#!/usr/bin/env python
"""Simulated Envoys for the fan-out benchmark: many ADS streams in one process.

Each stream behaves like Envoy as far as a control plane can tell: CDS and LDS wildcard, EDS
for the clusters CDS names, every response ACKed, reconnect with jittered backoff. The process
is driven by JSON lines on stdin and answers with JSON lines on stdout (see `main`).

It also records what every proxy holds (per type, per name, a hash of the resource's bytes).
With `--capture FILE` it writes, at every `snapshot`, what changed since the last one, with the
bytes of every resource not written before: the replay floor (floor_ads.py) serves exactly
those bytes. Timestamps are CLOCK_MONOTONIC, shared by every process on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fanout_topology as topo

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
MAX_BACKOFF_S = 30.0  # Envoy's default retry back-off: base 0.5 s, max 30 s
MAX_STREAMS_PER_PROXY = 500  # a bound: a proxy reset this often is reported, not retried


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def digest(value: bytes) -> str:
    return hashlib.blake2b(value, digest_size=12).hexdigest()


@dataclass
class Watch:
    """Per proxy: the clusters that held `select` when the watch began (or, without `select`,
    any cluster) hold every `present` address and none of the `absent` ones."""

    ident: str
    select: str
    present: frozenset[str]
    absent: frozenset[str]
    watched: dict[int, frozenset[str]] = field(default_factory=dict)
    times: dict[int, float] = field(default_factory=dict)

    def matches(self, addresses: frozenset[str]) -> bool:
        return self.present <= addresses and not (self.absent & addresses)

    def held_by(self, views: dict[str, frozenset[str]], index: int) -> bool:
        if not self.select:
            return any(self.matches(a) for a in views.values())
        names = self.watched.get(index, frozenset())
        return bool(names) and all(self.matches(views.get(n, frozenset())) for n in names)


class Recorder:
    """What each proxy holds, and the capture file the replay floor reads. It tracks in every
    run (zonemesh's and the floor's), so that the simulated proxies do the same work in both."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.held: dict[int, dict[str, dict[str, str]]] = {}
        self.snapshot: dict[int, dict[str, dict[str, str]]] = {}
        self.dirty: dict[int, set[str]] = {}
        self.pending: dict[str, bytes] = {}
        self.written: set[str] = set()

    def reset(self, index: int) -> None:
        self.held[index] = {}
        self.dirty.setdefault(index, set()).update(self.snapshot.get(index, {}))

    def put(self, index: int, type_url: str, name: str, h: str, value: bytes) -> None:
        if self.out is not None and h not in self.written:
            self.pending[h] = value
        self.held[index].setdefault(type_url, {})[name] = h
        self.dirty.setdefault(index, set()).add(type_url)

    def replace(self, index: int, type_url: str, keep: set[str]) -> None:
        """SotW for wildcard types: a response is the whole set."""
        current = self.held[index].setdefault(type_url, {})
        for name in [n for n in current if n not in keep]:
            del current[name]
        self.dirty.setdefault(index, set()).add(type_url)

    def remove(self, index: int, type_url: str, name: str) -> None:
        self.held[index].get(type_url, {}).pop(name, None)
        self.dirty.setdefault(index, set()).add(type_url)

    def write_snapshot(self, step: int, node_ids: dict[int, str]) -> int:
        """Write what changed since the previous snapshot; returns the proxies that changed."""
        if self.out is None:
            return 0
        for h, value in self.pending.items():
            self.out.write(json.dumps({"blob": h, "b64": base64.b64encode(value).decode()}) + "\n")
            self.written.add(h)
        self.pending.clear()
        changed = 0
        for index, types in self.dirty.items():
            before = self.snapshot.setdefault(index, {})
            after = self.held.get(index, {})
            touched = False
            for type_url in types:
                old, new = before.get(type_url, {}), after.get(type_url, {})
                set_ = {n: h for n, h in new.items() if old.get(n) != h}
                removed = [n for n in old if n not in new]
                if set_ or removed:
                    touched = True
                    line = {"step": step, "node": node_ids[index], "type": type_url}
                    line |= {"set": set_, "removed": removed}
                    self.out.write(json.dumps(line) + "\n")
                before[type_url] = dict(new)
            changed += touched
        self.dirty.clear()
        self.out.flush()
        return changed


class Decoded:
    """What the simulator needs from a resource, parsed once per distinct bytes for the whole
    fleet (every proxy gets the same CLA bytes): each response costs a hash per resource."""

    LIMIT = 200_000  # distinct resources remembered; then start over

    def __init__(self) -> None:
        self._clusters: dict[str, tuple[str, str]] = {}
        self._clas: dict[str, tuple[str, frozenset[str]]] = {}

    def cluster(self, h: str, value: bytes) -> tuple[str, str]:
        """(cluster name, EDS service name or "" when the cluster is not EDS)."""
        hit = self._clusters.get(h)
        if hit is None:
            from envoy.config.cluster.v3.cluster_pb2 import Cluster

            c = Cluster.FromString(value)
            eds = (c.eds_cluster_config.service_name or c.name) if c.type == Cluster.EDS else ""
            hit = self._remember(self._clusters, h, (c.name, eds))
        return hit

    def cla(self, h: str, value: bytes) -> tuple[str, frozenset[str]]:
        """(cluster name, the addresses of its healthy or unknown-health endpoints)."""
        hit = self._clas.get(h)
        if hit is None:
            from envoy.config.core.v3.health_check_pb2 import HealthStatus
            from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

            cla = ClusterLoadAssignment.FromString(value)
            addresses = frozenset(
                lb.endpoint.address.socket_address.address
                for locality in cla.endpoints
                for lb in locality.lb_endpoints
                if lb.health_status in (HealthStatus.UNKNOWN, HealthStatus.HEALTHY)
            )
            hit = self._remember(self._clas, h, (cla.cluster_name, addresses))
        return hit

    def _remember(self, cache: dict[str, Any], h: str, value: Any) -> Any:
        if len(cache) >= self.LIMIT:
            cache.clear()
        cache[h] = value
        return value


class Fleet:
    """Many simulated ADS clients in one process, over a handful of gRPC channels."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder) -> None:
        self.target = args.target
        self.indices = [int(i) for i in args.indices.split(",")] if args.indices else []
        self.channel_count = max(1, min(args.channels, len(self.indices)))
        self.delta = args.mode == "delta"
        self.services = args.services
        self.expect = topo.first_config(args.services, args.endpoints)
        self.recorder = recorder
        self.node_ids = {i: f"{topo.MESH}.{topo.proxy_name(i)}" for i in self.indices}
        self.configured: dict[int, float] = {}
        self.views: dict[int, dict[str, frozenset[str]]] = {i: {} for i in self.indices}
        self.eds_names: dict[int, set[str]] = {i: set() for i in self.indices}
        self.stream_started: dict[int, float] = {}
        self.watch: Watch | None = None
        self.watch_done = asyncio.Event()
        self.all_configured = asyncio.Event()
        self.hold: asyncio.Event | None = None  # set: the storm's proxies reconnect
        self.storm_since: float | None = None
        self.storm_times: dict[int, float] = {}
        self.storm_done = asyncio.Event()
        self.errors: list[str] = []  # simulator failures (not CP behaviour)
        self.resets = 0  # streams that ended and were reconnected, as Envoy would
        self.reset_reasons: dict[str, int] = {}
        self._received: dict[int, int] = {}
        self.decoded = Decoded()
        self._nodes: dict[int, Any] = {}
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
            self._tasks.append(asyncio.create_task(self._proxy_loop(index, stubs[n % len(stubs)])))

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
        for _ in range(MAX_STREAMS_PER_PROXY):
            before = self._received.get(index, 0)
            self.stream_started[index] = time.monotonic()
            self.views[index] = {}
            self.eds_names[index] = set()
            self.recorder.reset(index)
            try:
                await run(index, stub)
                reason = "stream ended by the CP"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                reason = f"{e.code().name}: {e.details()}"
            except asyncio.InvalidStateError:  # grpc.aio: a write after the call finished
                reason = "stream ended by the CP (seen on write)"
            except Exception as e:  # a bug in the simulator: report it, do not retry
                self.errors.append(f"proxy {index}: {type(e).__name__}: {e}")
                return
            self.resets += 1
            self.reset_reasons[reason] = self.reset_reasons.get(reason, 0) + 1
            if self.hold is not None:  # a storm: everyone reconnects at once when released
                await self.hold.wait()
                attempt = 0
                continue
            attempt = 0 if self._received.get(index, 0) > before else attempt + 1
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.5 * 2**attempt)))
        self.errors.append(f"proxy {index}: gave up after {MAX_STREAMS_PER_PROXY} streams")

    def build_nodes(self) -> None:
        """Every proxy's node, before the clock starts (Envoy has its bootstrap at hand too)."""
        self._nodes = {index: self._build_node(index) for index in self.indices}

    def _node(self, index: int) -> Any:
        return self._nodes[index]

    def _build_node(self, index: int) -> Any:
        from envoy.config.core.v3 import base_pb2
        from google.protobuf import json_format

        from zonemesh.dp.bootstrap import render_bootstrap

        bootstrap = render_bootstrap(
            topo.proxy_dataplane(index, self.services),
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
            self._received[index] = self._received.get(index, 0) + 1
            now = time.monotonic()
            type_url = response.type_url
            if type_url == EDS:
                eds_version, eds_nonce = response.version_info, response.nonce
                for any_ in response.resources:
                    value = any_.value
                    self._on_cla(index, digest(value), value)
                await call.write(
                    DiscoveryRequest(
                        type_url=EDS,
                        resource_names=eds_names,
                        version_info=eds_version,
                        response_nonce=eds_nonce,
                    )
                )
            else:
                # SotW: a wildcard response is the whole set. Listeners (and types this
                # simulator does not know) are held by their bytes; the floor needs no names.
                names = set()
                eds = set()
                for any_ in response.resources:
                    value = any_.value
                    h = digest(value)
                    name = h
                    if type_url == CDS:
                        name, eds_name = self.decoded.cluster(h, value)
                        if eds_name:
                            eds.add(eds_name)
                    names.add(name)
                    self.recorder.put(index, type_url, name, h, value)
                self.recorder.replace(index, type_url, names)
                if type_url == CDS:
                    self._on_clusters(index, eds)
                await call.write(
                    DiscoveryRequest(
                        type_url=type_url,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
                wanted = sorted(self.eds_names[index])
                if type_url == CDS and wanted != eds_names:
                    eds_names = wanted
                    await call.write(
                        DiscoveryRequest(
                            type_url=EDS,
                            resource_names=eds_names,
                            version_info=eds_version,
                            response_nonce=eds_nonce,
                        )
                    )
            self._after_update(index, now)

    async def _run_delta(self, index: int, stub: Any) -> None:
        from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

        call = stub.DeltaAggregatedResources()
        await call.write(DeltaDiscoveryRequest(node=self._node(index), type_url=CDS))
        await call.write(DeltaDiscoveryRequest(type_url=LDS))
        clusters: dict[str, str] = {}  # cluster name -> EDS service name ("" if not EDS)
        subscribed: set[str] = set()
        while True:
            response = await call.read()
            if response is None or not hasattr(response, "type_url"):
                return
            self._received[index] = self._received.get(index, 0) + 1
            now = time.monotonic()
            type_url = response.type_url
            await call.write(
                DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
            )
            for resource in response.resources:
                value = resource.resource.value
                h = digest(value)
                self.recorder.put(index, type_url, resource.name, h, value)
                if type_url == EDS:
                    self._on_cla(index, h, value)
                elif type_url == CDS:
                    clusters[resource.name] = self.decoded.cluster(h, value)[1]
            for name in response.removed_resources:
                self.recorder.remove(index, type_url, name)
                if type_url == EDS:
                    self.views[index].pop(name, None)
                elif type_url == CDS:
                    clusters.pop(name, None)
            if type_url == CDS:
                self._on_clusters(index, {eds for eds in clusters.values() if eds})
                wanted = self.eds_names[index]
                if wanted != subscribed:
                    await call.write(
                        DeltaDiscoveryRequest(
                            type_url=EDS,
                            resource_names_subscribe=sorted(wanted - subscribed),
                            resource_names_unsubscribe=sorted(subscribed - wanted),
                        )
                    )
                    subscribed = set(wanted)
            self._after_update(index, now)

    def _on_clusters(self, index: int, eds_names: set[str]) -> None:
        """CDS named the EDS clusters to follow; views of clusters gone are dropped."""
        self.eds_names[index] = eds_names
        views = self.views[index]
        for name in [n for n in views if n not in eds_names]:
            del views[name]
            self.recorder.remove(index, EDS, name)

    def _on_cla(self, index: int, h: str, value: bytes) -> None:
        name, addresses = self.decoded.cla(h, value)
        if not self.delta:  # Delta recorded it by its resource name already
            self.recorder.put(index, EDS, name, h, value)
        self.views[index][name] = addresses

    def _is_configured(self, index: int) -> bool:
        names = self.eds_names[index]
        views = self.views[index]
        return (
            len(names) >= self.expect.clusters
            and all(name in views for name in names)
            and sum(len(v) for v in views.values()) >= self.expect.endpoints
        )

    def _after_update(self, index: int, now: float) -> None:
        storm = self.storm_since is not None and index not in self.storm_times
        if (index not in self.configured or storm) and self._is_configured(index):
            if index not in self.configured:
                self.configured[index] = now
                if len(self.configured) == len(self.indices):
                    self.all_configured.set()
            if storm and self.stream_started[index] > (self.storm_since or 0):
                self.storm_times[index] = now
                if len(self.storm_times) == len(self.indices):
                    self.storm_done.set()
        watch = self.watch
        if (
            watch is not None
            and index not in watch.times
            and watch.held_by(self.views[index], index)
        ):
            watch.times[index] = now
            if len(watch.times) == len(self.indices):
                self.watch_done.set()

    def start_watch(self, watch: Watch) -> None:
        if watch.select:
            watch.watched = {
                index: frozenset(n for n, addrs in views.items() if watch.select in addrs)
                for index, views in self.views.items()
            }
        self.watch = watch
        self.watch_done.clear()

    def report(self) -> dict[str, Any]:
        return {
            "errors": self.errors[:5],
            "resets": self.resets,
            "reset_reasons": self.reset_reasons,
        }


async def serve(args: argparse.Namespace) -> None:
    """Commands on stdin: connect, watch, snapshot, storm, release, storm-wait, quit."""
    capture = open(args.capture, "w") if args.capture else None  # noqa: SIM115
    fleet = Fleet(args, Recorder(capture))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet.build_nodes()
    emit({"event": "hello", "pid": os.getpid()})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "connect":
                await fleet.connect()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.all_configured.wait(), cmd["timeout"])
                emit({"event": "configured", "times": fleet.configured, **fleet.report()})
            elif op == "watch":
                watch = Watch(
                    cmd["id"], cmd["select"], frozenset(cmd["present"]), frozenset(cmd["absent"])
                )
                fleet.start_watch(watch)
                # A proxy that already holds it (a change it is not affected by) counts at once.
                now = time.monotonic()
                for index in fleet.indices:
                    if watch.held_by(fleet.views[index], index):
                        watch.times[index] = now
                if len(watch.times) == len(fleet.indices):
                    fleet.watch_done.set()
                emit({"event": "watching", "id": watch.ident, "already": len(watch.times)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.watch_done.wait(), cmd["timeout"])
                fleet.watch = None
                emit({"event": "watched", "id": watch.ident, "times": watch.times})
            elif op == "snapshot":
                changed = fleet.recorder.write_snapshot(cmd["step"], fleet.node_ids)
                emit({"event": "snapshot", "step": cmd["step"], "changed": changed})
            elif op == "storm":  # streams that end from now on wait for "release"
                fleet.hold = asyncio.Event()
                fleet.storm_times = {}
                fleet.storm_done.clear()
                emit({"event": "storming", "resets": fleet.resets})
            elif op == "release":
                assert fleet.hold is not None
                fleet.storm_since = time.monotonic()
                fleet.hold.set()
                fleet.hold = None
                emit({"event": "released", "resets": fleet.resets})
            elif op == "storm-wait":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.storm_done.wait(), cmd["timeout"])
                emit({"event": "stormed", "times": fleet.storm_times, **fleet.report()})
            elif op == "quit":
                break
    finally:
        await fleet.close()
        if capture is not None:
            capture.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--indices", required=True)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--mode", choices=["sotw", "delta"], default="delta")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--capture", default="", help="write what the proxies hold here")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
