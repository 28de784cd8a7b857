"""Helpers for computed-state tests: a MemoryStore-backed runtime, resource builders, and
`eventually`, which polls until assertions hold (computed state is asynchronous)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from zonemesh.config import CpConfig
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.origin import stamp_origin
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import Store
from zonemesh.store.memory import MemoryStore


def make_config(
    *,
    mode: str = "zone",
    zone: str = "z1",
    federated: bool = False,
    ms_cidr: str = "241.0.0.0/8",
    mmzs_cidr: str = "243.0.0.0/8",
) -> CpConfig:
    multizone: dict[str, Any] = {}
    if mode == "zone":
        multizone["zone"] = {"name": zone}
        if federated:
            multizone["zone"]["globalAddress"] = "grpc://127.0.0.1:5685"
    return CpConfig.model_validate(
        {
            "mode": mode,
            "store": {"type": "memory"},
            "multizone": multizone,
            "ipam": {"meshService": {"cidr": ms_cidr}, "meshMultiZoneService": {"cidr": mmzs_cidr}},
        }
    )


def make_runtime(store: Store | None = None, **config: Any) -> Runtime:
    return Runtime(config=make_config(**config), store=store or MemoryStore())


async def put(runtime: Runtime, doc: dict[str, Any], *, stamp: bool = True) -> Resource:
    """Store a wire document the way the API would (origin labels stamped), create or update.

    `stamp=False` stores the labels as given, e.g. for a resource synced in from global."""
    resource = resource_from_wire(doc)
    if stamp:
        cfg = runtime.config
        resource = stamp_origin(resource, is_global=cfg.is_global, zone=cfg.zone_name)
    current = await runtime.store.find(resource.key)
    if current is None:
        return await runtime.store.create(resource)
    return await runtime.store.update(
        resource.with_(version=current.version, status=current.status)
    )


def dataplane(
    name: str,
    service: str = "echo",
    *,
    port: int = 21027,
    service_port: int | None = 1027,
    protocol: str | None = "http",
    mesh: str = "default",
    address: str = "127.0.1.11",
    extra_inbounds: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    tags = {labels.SERVICE_TAG: service}
    if protocol:
        tags[labels.PROTOCOL_TAG] = protocol
    inbound: dict[str, Any] = {"port": port, "tags": tags}
    if service_port is not None:
        inbound["servicePort"] = service_port
    return {
        "type": "Dataplane",
        "mesh": mesh,
        "name": name,
        "networking": {"address": address, "inbound": [inbound, *extra_inbounds]},
    }


def mmzs(name: str, match: dict[str, str], port: int = 1027, proto: str = "http") -> dict[str, Any]:
    return {
        "type": "MeshMultiZoneService",
        "mesh": "default",
        "name": name,
        "spec": {
            "selector": {"meshService": {"matchLabels": match}},
            "ports": [{"port": port, "appProtocol": proto}],
        },
    }


def synced_mesh_service(name: str, zone: str, display: str, port: int = 1027) -> dict[str, Any]:
    """A MeshService of another zone as sync from global stores it (no status, origin global)."""
    return {
        "type": "MeshService",
        "mesh": "default",
        "name": name,
        "labels": {
            labels.ORIGIN: labels.ORIGIN_GLOBAL,
            labels.ZONE: zone,
            labels.DISPLAY_NAME: display,
            labels.MESH: "default",
        },
        "spec": {
            "selector": {"dataplaneTags": {labels.SERVICE_TAG: display}},
            "ports": [{"port": port, "targetPort": port, "appProtocol": "http"}],
            "state": "Available",
        },
    }


def ms_key(name: str, mesh: str = "default") -> ResourceKey:
    return ResourceKey("MeshService", mesh, name)


def mmzs_key(name: str, mesh: str = "default") -> ResourceKey:
    return ResourceKey("MeshMultiZoneService", mesh, name)


def dp_key(name: str, mesh: str = "default") -> ResourceKey:
    return ResourceKey("Dataplane", mesh, name)


def wire_status(resource: Resource | None) -> dict[str, Any]:
    assert resource is not None, "resource does not exist"
    assert resource.status is not None, f"{resource.key} has no status yet"
    return resource.status.to_wire()


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.02
) -> Any:
    """Run `check` until it stops raising AssertionError; re-raise the last one at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if loop.time() >= deadline:
                raise
        await asyncio.sleep(interval)
