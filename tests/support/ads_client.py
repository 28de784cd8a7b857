"""Simulated Envoys: real gRPC ADS clients, many to a process, for tests and benchmarks that
need more proxies than real Envoys fit on a small machine.

Each proxy does what Envoy does with the bootstrap `dp run` writes, reduced to what a control
plane can tell apart: one ADS stream (SotW) with the node id and metadata of the bootstrap and
its dataplane token (`authorization`), CDS and LDS wildcard, EDS for the clusters CDS names,
every response ACKed. Given several control-plane addresses (`dp run --cp-address a,b`), it
dials the first and moves on to the next when its stream fails, with a jittered backoff that
resets once a new stream answers. It records every EDS update it applies (`eds_updates`), so a
test can check that an endpoint never dropped out.

`ProxyFleet` runs a set of them on an event loop of its own in a thread, so synchronous tests
(driving `cp run` processes over HTTP) can start, inspect and stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3 import base_pb2
from envoy.config.core.v3.health_check_pb2 import HealthStatus
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from google.protobuf import json_format

from zonemesh.dp.bootstrap import render_bootstrap
from zonemesh.dp.cp_address import parse_cp_address

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
MAX_STREAMS = 500  # a proxy that needed more streams than this gives up (a bound, not a goal)
_HEALTHY = (HealthStatus.UNKNOWN, HealthStatus.HEALTHY)


@dataclass(frozen=True)
class EdsUpdate:
    at: float  # time.monotonic()
    cluster: str
    endpoints: frozenset[str]  # "address:port" of the endpoints Envoy would send traffic to


@dataclass
class SimulatedProxy:
    """One simulated Envoy. `dataplane` is the Dataplane wire form `dp run` would be given."""

    dataplane: dict[str, Any]
    token: str
    cp_address: str  # as for `dp run --cp-address`: grpcs://host:port[,host:port...]
    ca_file: Path
    # What it has applied (read from other threads: replaced, never mutated in place).
    clusters: dict[str, frozenset[str]] = field(default_factory=dict)
    eds_updates: list[EdsUpdate] = field(default_factory=list)
    connected_to: str | None = None  # host:port of the instance holding its stream
    streams: int = 0  # streams opened (1 + reconnections)
    responses: int = 0
    failures: list[str] = field(default_factory=list)  # why each stream ended
    error: str | None = None  # a bug in the simulator, or MAX_STREAMS reached

    @property
    def name(self) -> str:
        return str(self.dataplane["name"])

    def node(self) -> base_pb2.Node:
        bootstrap = render_bootstrap(
            self.dataplane,
            "dataplane",
            self.cp_address,
            0,
            delta=False,
            ca_file=self.ca_file,
            token=self.token,
        )
        return json_format.ParseDict(bootstrap["node"], base_pb2.Node())

    async def run(self) -> None:
        """Until cancelled: hold a stream to one of the addresses, moving on when it fails."""
        address = parse_cp_address(self.cp_address)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_file.read_bytes())
        targets = [e.target for e in address.endpoints]
        node = self.node()
        attempt = 0
        for stream in range(MAX_STREAMS):
            target = targets[stream % len(targets)]  # after a failure, the next address
            before = self.responses
            try:
                async with grpc.aio.secure_channel(
                    target, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
                ) as channel:
                    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
                    await self._stream(stub, node, target)
                self.failures.append(f"{target}: the stream ended")
            except grpc.aio.AioRpcError as e:
                self.failures.append(f"{target}: {e.code().name}: {e.details()}")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the simulator's bug: say so, do not hide it in retries
                self.error = f"{type(e).__name__}: {e}"
                return
            finally:
                self.connected_to = None
            attempt = 0 if self.responses > before else attempt + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**attempt)
            await asyncio.sleep(random.uniform(delay / 2, delay))
        self.error = f"gave up after {MAX_STREAMS} streams"

    async def _stream(
        self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, node: Any, target: str
    ) -> None:
        call = stub.StreamAggregatedResources(metadata=(("authorization", self.token),))
        self.streams += 1
        await call.write(DiscoveryRequest(node=node, type_url=CDS))
        await call.write(DiscoveryRequest(type_url=LDS))
        eds_names: list[str] = []
        eds_version = eds_nonce = ""
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            self.responses += 1
            self.connected_to = target
            if response.type_url == EDS:
                eds_version, eds_nonce = response.version_info, response.nonce
                self._apply_eds(any_.value for any_ in response.resources)
                ack = DiscoveryRequest(
                    type_url=EDS,
                    resource_names=eds_names,
                    version_info=eds_version,
                    response_nonce=eds_nonce,
                )
                await call.write(ack)
            elif response.type_url == CDS:
                names = sorted(_eds_service_names(any_.value for any_ in response.resources))
                await call.write(
                    DiscoveryRequest(
                        type_url=CDS,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
                if names != eds_names:
                    eds_names = names
                    kept = {n: v for n, v in self.clusters.items() if n in set(names)}
                    self.clusters = kept
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
                        type_url=response.type_url,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )

    def _apply_eds(self, values: Iterable[bytes]) -> None:
        now = time.monotonic()
        clusters = dict(self.clusters)
        for value in values:
            cla = ClusterLoadAssignment.FromString(value)
            endpoints = frozenset(
                f"{lb.endpoint.address.socket_address.address}:"
                f"{lb.endpoint.address.socket_address.port_value}"
                for locality in cla.endpoints
                for lb in locality.lb_endpoints
                if lb.health_status in _HEALTHY
            )
            clusters[cla.cluster_name] = endpoints
            self.eds_updates.append(EdsUpdate(now, cla.cluster_name, endpoints))
        self.clusters = clusters


def _eds_service_names(values: Iterable[bytes]) -> set[str]:
    names = set()
    for value in values:
        cluster = Cluster.FromString(value)
        if cluster.type == Cluster.EDS:
            names.add(cluster.eds_cluster_config.service_name or cluster.name)
    return names


class ProxyFleet:
    """Simulated proxies on an event loop in a thread of their own (use as a context manager)."""

    def __init__(self, proxies: Sequence[SimulatedProxy]) -> None:
        self.proxies = list(proxies)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Task[None]] = []

    def __enter__(self) -> ProxyFleet:
        self._thread.start()
        self.add(self.proxies, started=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, proxies: Iterable[SimulatedProxy], *, started: bool = True) -> None:
        """Start more proxies (or, from `__enter__`, the ones given at construction)."""
        new = list(proxies)
        if started:
            self.proxies.extend(new)

        async def spawn() -> None:
            for proxy in new:
                self._tasks.append(asyncio.create_task(proxy.run(), name=proxy.name))

        asyncio.run_coroutine_threadsafe(spawn(), self._loop).result(timeout=10)

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def cancel() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        # Stopped, not closed: gRPC's poller may still hand the loop a callback of a channel
        # it just shut down, and a closed loop turns each into a logged RuntimeError.

    def errors(self) -> list[str]:
        return [f"{p.name}: {p.error}" for p in self.proxies if p.error]

    def connected_to(self) -> dict[str, str | None]:
        return {p.name: p.connected_to for p in self.proxies}
