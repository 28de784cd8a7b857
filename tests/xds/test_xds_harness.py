"""Shared harness for the xDS tests: an in-process server and a scripted ADS client.

Imported by the other `test_xds_*` modules (`from test_xds_harness import ...`); it holds no
tests itself. Authentication is on, as in production: every client presents a dataplane
token issued by the in-process Runtime's TokenService (by default one for any dataplane of
mesh `default`; `Harness.tokens` has one per proxy type; `issue_token` makes others). `Harness.barrier()` is how tests prove that something was NOT sent: it makes a
change that pushes a cluster, and since a stream sends in order, anything wrongly sent before
it shows up first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2
from support.simple_generator import SimpleGenerator

from zonemesh.config import load_config
from zonemesh.envoy_types import CLUSTER, ENDPOINT
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore
from zonemesh.translate.generator import Generator
from zonemesh.xds.component import XdsServer

DEADLINE_S = 10.0


async def eventually(check: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll `check` until it returns something truthy (no timing is asserted)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


def dataplane_doc(
    name: str,
    *,
    mesh: str = "default",
    address: str = "127.0.1.1",
    inbounds: list[tuple[int, int, str, str]] | None = None,
) -> dict[str, Any]:
    """A Dataplane in wire form; inbounds are (port, servicePort, service, protocol)."""
    inbounds = inbounds if inbounds is not None else [(20080, 8080, "a", "http")]
    return {
        "type": "Dataplane",
        "mesh": mesh,
        "name": name,
        "networking": {
            "address": address,
            "inbound": [
                {
                    "port": port,
                    "servicePort": service_port,
                    "tags": {"kuma.io/service": service, "kuma.io/protocol": protocol},
                }
                for port, service_port, service, protocol in inbounds
            ],
        },
    }


def mesh_service_doc(name: str, *, mesh: str = "default", port: int = 8080) -> dict[str, Any]:
    return {
        "type": "MeshService",
        "mesh": mesh,
        "name": name,
        "labels": {"kuma.io/display-name": name},
        "spec": {
            "selector": {"dataplaneTags": {"kuma.io/service": name}},
            "ports": [{"port": port, "appProtocol": "http"}],
        },
    }


def node(
    node_id: str,
    *,
    proxy_type: str | None = None,
    resource: dict[str, Any] | str | None = None,
) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    if proxy_type is not None:
        metadata.update({"dataplane.proxyType": proxy_type})
    if resource is not None:
        raw = resource if isinstance(resource, str) else json.dumps(resource)
        metadata.update({"dataplane.resource": raw})
    return base_pb2.Node(id=node_id, metadata=metadata)


def sotw(
    type_url: str,
    names: list[str] | None = None,
    *,
    nonce: str = "",
    version: str = "",
    node_: base_pb2.Node | None = None,
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        resource_names=names or [],
        response_nonce=nonce,
        version_info=version,
    )
    if node_ is not None:
        req.node.CopyFrom(node_)
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def delta(
    type_url: str,
    subscribe: list[str] | None = None,
    *,
    unsubscribe: list[str] | None = None,
    nonce: str = "",
    initial: dict[str, str] | None = None,
    node_: base_pb2.Node | None = None,
    error: str | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=subscribe or [],
        resource_names_unsubscribe=unsubscribe or [],
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if node_ is not None:
        req.node.CopyFrom(node_)
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def names_of(response: Any) -> list[str]:
    """Resource names in a SotW or Delta response, in order."""
    from zonemesh.envoy_types import name_of
    from zonemesh.xds.types import MESSAGE_CLASSES

    out = []
    for item in response.resources:
        packed = item.resource if hasattr(item, "resource") else item
        message = MESSAGE_CLASSES[packed.type_url]()
        packed.Unpack(message)
        out.append(name_of(message))
    return out


def unpack(response: Any) -> list[Any]:
    from zonemesh.xds.types import MESSAGE_CLASSES

    out = []
    for item in response.resources:
        packed = item.resource if hasattr(item, "resource") else item
        message = MESSAGE_CLASSES[packed.type_url]()
        packed.Unpack(message)
        out.append(message)
    return out


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The gRPC metadata a data plane presents its token in (None: no token)."""
    return (("authorization", token),) if token is not None else None


class AdsClient:
    """A scripted ADS stream: `send` requests, `recv` responses, `status` at the end."""

    def __init__(self, port: int, *, delta_mode: bool = False, token: str | None = None) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        method = stub.DeltaAggregatedResources if delta_mode else stub.StreamAggregatedResources
        self.call = method(self._request_stream(), metadata=token_metadata(token))
        self._reader = asyncio.create_task(self._read())

    async def _request_stream(self) -> AsyncIterator[Any]:
        while True:
            req = await self._requests.get()
            if req is None:
                return
            yield req

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for response in self.call:
                await self.responses.put(response)
        await self.responses.put(None)

    def send(self, req: Any) -> None:
        self._requests.put_nowait(req)

    async def recv(self, deadline_s: float = DEADLINE_S) -> Any:
        response = await asyncio.wait_for(self.responses.get(), deadline_s)
        if response is None:
            raise AssertionError(f"stream ended: {await self.status()}")
        return response

    async def recv_type(self, type_url: str) -> Any:
        response = await self.recv()
        assert response.type_url == type_url, (response.type_url, names_of(response))
        return response

    async def status(self) -> tuple[grpc.StatusCode, str]:
        code = await asyncio.wait_for(self.call.code(), DEADLINE_S)
        details = await self.call.details()
        return code, details

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.channel.close()


_DEFAULT = "default"  # `Harness.client(token=...)`: the mesh-wide dataplane token


async def issue_token(
    runtime: Runtime,
    *,
    mesh: str = "default",
    name: str | None = None,
    tags: dict[str, list[str]] | None = None,
    proxy_type: str = "dataplane",
    valid_for: timedelta = timedelta(hours=1),
) -> str:
    """A dataplane token from the in-process Runtime's TokenService (started)."""
    return await runtime.tokens.issue_dataplane(
        mesh=mesh, name=name, tags=tags, proxy_type=proxy_type, valid_for=valid_for
    )


@dataclass
class Harness:
    runtime: Runtime
    server: XdsServer
    clients: list[AdsClient] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # proxy type -> mesh-wide token
    _markers: int = 0

    @property
    def store(self) -> MemoryStore:
        store = self.runtime.store
        assert isinstance(store, MemoryStore)
        return store

    async def apply(self, doc: dict[str, Any]) -> Resource:
        resource = resource_from_wire(doc)
        existing = await self.store.find(resource.key)
        if existing is None:
            return await self.store.create(resource)
        return await self.store.update(resource.with_(version=existing.version))

    async def delete(self, type_name: str, name: str, mesh: str = "default") -> None:
        await self.store.delete(ResourceKey(type_name, mesh, name))

    def client(self, *, delta_mode: bool = False, token: str | None = _DEFAULT) -> AdsClient:
        """A stream presenting `token` (default: any dataplane of mesh default; None: none)."""
        if token is _DEFAULT:
            token = self.tokens["dataplane"]
        c = AdsClient(self.server.port, delta_mode=delta_mode, token=token)
        self.clients.append(c)
        return c

    async def mesh_token(self, mesh: str) -> str:
        """A token for any dataplane of `mesh` (issued once per mesh)."""
        key = "dataplane" if mesh == "default" else f"dataplane/{mesh}"
        if key not in self.tokens:
            self.tokens[key] = await issue_token(self.runtime, mesh=mesh)
        return self.tokens[key]

    async def connect_sotw(
        self, name: str, doc: dict[str, Any] | None = None, mesh: str = "default"
    ) -> tuple[AdsClient, discovery_pb2.DiscoveryResponse]:
        """A dataplane with CDS subscribed (wildcard) and its first CDS response ACKed."""
        c = self.client(token=await self.mesh_token(mesh))
        doc = doc if doc is not None else dataplane_doc(name, mesh=mesh)
        c.send(sotw(CLUSTER, node_=node(f"{mesh}.{name}", resource=doc)))
        cds = await c.recv_type(CLUSTER)
        c.send(sotw(CLUSTER, nonce=cds.nonce, version=cds.version_info))
        return c, cds

    async def connect_delta(
        self, name: str, doc: dict[str, Any] | None = None, mesh: str = "default"
    ) -> tuple[AdsClient, discovery_pb2.DeltaDiscoveryResponse]:
        c = self.client(delta_mode=True, token=await self.mesh_token(mesh))
        doc = doc if doc is not None else dataplane_doc(name, mesh=mesh)
        c.send(delta(CLUSTER, node_=node(f"{mesh}.{name}", resource=doc)))
        cds = await c.recv_type(CLUSTER)
        c.send(delta(CLUSTER, nonce=cds.nonce))
        return c, cds

    async def barrier(
        self, *clients: AdsClient, mesh: str = "default", eds_wildcard: bool = False
    ) -> None:
        """Push a new cluster; each client's next response must be that CDS update (ACKed).

        With `eds_wildcard`, the clients also subscribe to all endpoints, so the marker's
        ClusterLoadAssignment follows; it is consumed and ACKed too.
        """
        self._markers += 1
        marker = f"marker-{self._markers}"
        await self.apply(mesh_service_doc(marker, mesh=mesh, port=9000))
        for c in clients:
            response = await c.recv()
            names = names_of(response)
            assert response.type_url == CLUSTER and f"{marker}_9000" in names, (
                f"expected the {marker} cluster, got {response.type_url} {names}"
            )
            is_delta = isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
            c.send(
                delta(CLUSTER, nonce=response.nonce)
                if is_delta
                else sotw(CLUSTER, nonce=response.nonce, version=response.version_info)
            )
            if eds_wildcard:
                eds = await c.recv_type(ENDPOINT)
                assert f"{marker}_9000" in names_of(eds), names_of(eds)
                c.send(
                    delta(ENDPOINT, nonce=eds.nonce)
                    if is_delta
                    else sotw(ENDPOINT, nonce=eds.nonce, version=eds.version_info)
                )

    def requests_seen(self, key: ResourceKey) -> int:
        record = self.server.registry.record(key)
        return record.requests if record else 0

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.runtime.metrics.get_sample_value(name, labels or {}) or 0.0


@contextlib.asynccontextmanager
async def running_xds(
    generator: Generator | None = None,
    *,
    zone: str = "zone-1",
    env: dict[str, str] | None = None,
    store: MemoryStore | None = None,
    **server_kwargs: Any,
) -> AsyncIterator[Harness]:
    """`env`: more settings by their env names; `store`: one that outlives the server (a CP
    restart)."""
    config = load_config(
        env={
            "ZONEMESH_XDS_DEBOUNCE_QUIET": "0.01",
            "ZONEMESH_XDS_DEBOUNCE_MAX": "0.2",
            **(env or {}),
        },
        flags={"xds_port": 0, "store": "memory", "zone": zone},
    )
    runtime = Runtime(config=config, store=store or MemoryStore())
    await runtime.tokens.start()
    if await runtime.store.find(ResourceKey("Mesh", "", "default")) is None:
        await runtime.store.create(resource_from_wire({"type": "Mesh", "name": "default"}))
    # The protocol tests reason about SimpleGenerator's output, not the full data path.
    server = XdsServer(runtime, generator or SimpleGenerator(), **server_kwargs)
    await server.start()
    harness = Harness(runtime, server)
    for proxy_type in ("dataplane", "ingress", "egress"):
        harness.tokens[proxy_type] = await issue_token(runtime, proxy_type=proxy_type)
    # TokenService re-reads the signing key it just stored from the store event (parsing an
    # RSA key blocks the loop for tens of ms): let that happen now, not during a test's first
    # connect (several tests reason about debounce timing).
    await asyncio.sleep(0.2)
    try:
        yield harness
    finally:
        for c in harness.clients:
            await c.close()
        await server.stop()
        await runtime.tokens.stop()
