"""In-process federation harness: a global and zones as `Runtime`s over MemoryStores, with the
real KDS server and clients talking gRPC on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from support.processes import free_port

from zonemesh.auth.service import TokenService
from zonemesh.config import CpConfig
from zonemesh.federation.client import KdsClient
from zonemesh.federation.server import KdsServer
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.origin import stamp_origin
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import Store
from zonemesh.store.memory import MemoryStore


def global_config(kds_port: int = 0, grace_s: float = 30.0) -> CpConfig:
    return CpConfig.model_validate(
        {
            "mode": "global",
            "store": {"type": "memory"},
            "multizone": {"global": {"kdsPort": kds_port, "zoneOfflineGraceS": grace_s}},
        }
    )


def zone_config(name: str, global_address: str, token: str) -> CpConfig:
    return CpConfig.model_validate(
        {
            "mode": "zone",
            "store": {"type": "memory"},
            "multizone": {
                "zone": {
                    "name": name,
                    "globalAddress": global_address,
                    "kdsAuth": {"tokenInline": token},
                }
            },
        }
    )


async def put(runtime: Runtime, doc: dict[str, Any]) -> Resource:
    """Write a wire document as the API would (origin labels stamped): create or update."""
    cfg = runtime.config
    resource = stamp_origin(resource_from_wire(doc), is_global=cfg.is_global, zone=cfg.zone_name)
    current = await runtime.store.find(resource.key)
    if current is None:
        return await runtime.store.create(resource)
    return await runtime.store.update(resource.with_(version=current.version))


async def delete(runtime: Runtime, key: ResourceKey) -> None:
    await runtime.store.delete(key)


def mesh_service(name: str, *, port: int = 1027, state: str = "Available") -> dict[str, Any]:
    return {
        "type": "MeshService",
        "mesh": "default",
        "name": name,
        "labels": {"kuma.io/display-name": name},
        "spec": {
            "selector": {"dataplaneTags": {"kuma.io/service": name}},
            "ports": [{"port": port, "targetPort": port + 20000, "appProtocol": "http"}],
            "state": state,
        },
    }


def mmzs(name: str, *, port: int = 1027, match: str | None = None) -> dict[str, Any]:
    return {
        "type": "MeshMultiZoneService",
        "mesh": "default",
        "name": name,
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": match or name}}},
            "ports": [{"port": port, "appProtocol": "http"}],
        },
    }


def zone_ingress(name: str, address: str = "127.0.1.100", port: int = 10001) -> dict[str, Any]:
    return {
        "type": "ZoneIngress",
        "name": name,
        "networking": {
            "address": address,
            "port": port,
            "advertisedAddress": address,
            "advertisedPort": port,
        },
    }


MESH_DEFAULT = {"type": "Mesh", "name": "default"}


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.02
) -> Any:
    """Poll `check` until it returns without AssertionError (its result is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


@dataclass
class Federation:
    """Starts global and zones; everything started is stopped by `close`."""

    global_store: Store = field(default_factory=MemoryStore)
    grace_s: float = 30.0
    kds_port: int = field(default_factory=free_port)
    global_rt: Runtime | None = None
    server: KdsServer | None = None
    zones: dict[str, tuple[Runtime, KdsClient]] = field(default_factory=dict)
    _started: list[Any] = field(default_factory=list)
    _issuer: TokenService | None = None  # issues zone tokens while global is not running

    @property
    def address(self) -> str:
        return f"grpc://127.0.0.1:{self.kds_port}"

    async def start_global(self) -> Runtime:
        runtime = Runtime(
            config=global_config(self.kds_port, self.grace_s), store=self.global_store
        )
        await runtime.tokens.start()
        self._started.append(runtime.tokens)
        server = KdsServer(runtime)
        await server.start()
        self._started.append(server)
        self.global_rt, self.server = runtime, server
        return runtime

    async def stop_global(self) -> None:
        assert self.server is not None and self.global_rt is not None
        await self.server.stop()
        self._started.remove(self.server)
        await self.global_rt.tokens.stop()
        self._started.remove(self.global_rt.tokens)
        self.server = None

    async def zone_token(
        self, zone: str, *, scope: tuple[str, ...] = ("cp",), valid_for: float = 86400
    ) -> str:
        """A zone token signed with global's key (as `POST /tokens/zone` issues it)."""
        if self.server is not None and self.global_rt is not None:
            tokens = self.global_rt.tokens
        else:
            if self._issuer is None:
                self._issuer = TokenService(self.global_store)
                await self._issuer.start()
                self._started.insert(0, self._issuer)  # stopped last
            tokens = self._issuer
        return await tokens.issue_zone(
            zone=zone, scope=list(scope), valid_for=timedelta(seconds=valid_for)
        )

    async def start_zone(
        self,
        name: str,
        store: Store | None = None,
        address: str | None = None,
        token: str | None = None,
    ) -> tuple[Runtime, KdsClient]:
        token = token or await self.zone_token(name)
        runtime = Runtime(
            config=zone_config(name, address or self.address, token), store=store or MemoryStore()
        )
        client = KdsClient(runtime)
        await client.start()
        self._started.append(client)
        self.zones[name] = (runtime, client)
        return runtime, client

    async def stop_zone(self, name: str) -> Runtime:
        runtime, client = self.zones.pop(name)
        await client.stop()
        self._started.remove(client)
        return runtime

    async def close(self) -> None:
        for component in reversed(self._started):
            await component.stop()
        self._started.clear()


async def find(runtime: Runtime, type_: str, name: str, mesh: str = "default") -> Resource | None:
    return await runtime.store.find(ResourceKey(type_, mesh, name))


async def names(runtime: Runtime, type_: str) -> set[str]:
    return {r.name for r in await runtime.store.list(type_)}
