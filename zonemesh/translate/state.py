"""`MeshState`: one consistent, immutable snapshot of everything the generators read.

Built once per debounced change and shared by every proxy's generation, so anything derived
from it that is the same for many proxies (a service's ClusterLoadAssignment, say) can be
computed once with `MeshState.memo` and reused — the xDS cache then serializes it only once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.registry import (
    DATAPLANE,
    SECRET,
    ZONE_EGRESS,
    ZONE_INGRESS,
)
from zonemesh.resources.types.meshgateway import MeshGatewaySpec
from zonemesh.runtime.health import is_healthy as health_rule
from zonemesh.translate.caches import TranslationCaches

T = TypeVar("T")
log = logging.getLogger("zonemesh.translate")


@dataclass(frozen=True)
class HealthSnapshot:
    """A proxy's health frozen at state-build time (`InstanceHealth` entries are mutable)."""

    connected: bool
    ready: bool
    not_ready_inbounds: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class MeshState:
    version: int  # increases with every build; generators may use it in memo keys
    zone: str
    meshes: Mapping[str, Resource]
    dataplanes: Mapping[ResourceKey, Resource]
    mesh_services: Mapping[ResourceKey, Resource]
    mesh_multi_zone_services: Mapping[ResourceKey, Resource]
    zone_ingresses: Mapping[ResourceKey, Resource]
    zone_egresses: Mapping[ResourceKey, Resource]
    mesh_load_balancing_strategies: Mapping[ResourceKey, Resource]
    # Only proxies the health tracker knows; absent means "applied through the API: healthy".
    health: Mapping[ResourceKey, HealthSnapshot] = field(default_factory=dict)
    mesh_gateways: Mapping[ResourceKey, Resource] = field(default_factory=dict)
    # Only the Secrets a MeshGateway names as a listener certificate (never the mesh CA's).
    gateway_secrets: Mapping[ResourceKey, Resource] = field(default_factory=dict)
    mesh_http_routes: Mapping[ResourceKey, Resource] = field(default_factory=dict)
    # Owned by the engine that builds the states; a state built alone gets its own.
    caches: TranslationCaches = field(default_factory=TranslationCaches, repr=False)
    # Proxies whose resource or health differs from the state of version - 1 built with the
    # same caches; None: unknown (derived indexes are then rebuilt, not patched).
    changed_since_previous: frozenset[ResourceKey] | None = field(default=None, repr=False)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    def is_healthy(self, key: ResourceKey, inbound_port: int | None = None) -> bool:
        """`runtime.health`'s rule, on the frozen copy."""
        return health_rule(self.health.get(key), inbound_port)

    def memo(self, key: Any, build: Callable[[], T]) -> T:
        """Compute a derived value once per state; later callers get the same object."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = build()
            return value

    def dataplanes_in(self, mesh: str) -> list[Resource]:
        return self._by_mesh("dataplanes", self.dataplanes).get(mesh, [])

    def mesh_services_in(self, mesh: str) -> list[Resource]:
        return self._by_mesh("mesh_services", self.mesh_services).get(mesh, [])

    def mesh_multi_zone_services_in(self, mesh: str) -> list[Resource]:
        return self._by_mesh("mmzs", self.mesh_multi_zone_services).get(mesh, [])

    def _by_mesh(
        self, label: str, items: Mapping[ResourceKey, Resource]
    ) -> dict[str, list[Resource]]:
        def build() -> dict[str, list[Resource]]:
            grouped: dict[str, list[Resource]] = defaultdict(list)
            for key in sorted(items):
                grouped[key.mesh].append(items[key])
            return dict(grouped)

        return self.memo(("state.by_mesh", label), build)

    def proxy_resource(self, key: ResourceKey) -> Resource | None:
        """The Dataplane, ZoneIngress or ZoneEgress behind a proxy key."""
        if key.type == DATAPLANE.name:
            return self.dataplanes.get(key)
        if key.type == ZONE_INGRESS.name:
            return self.zone_ingresses.get(key)
        if key.type == ZONE_EGRESS.name:
            return self.zone_egresses.get(key)
        return None


def content_memo(state: MeshState, key: Any, build: Callable[[], T]) -> T:
    """A message that is a pure function of hashable inputs, reused across states through
    the state's `TranslationCaches` (see `translate.caches`). `key` must hold every input of
    `build`; the result is shared: never mutate it."""
    return state.caches.content.get(key, build)


def gateway_secret_keys(gateways: Iterable[Resource]) -> set[ResourceKey]:
    """The Secrets MeshGateways name as listener certificates: the only key material a
    state holds (never the mesh CA's)."""
    wanted = set()
    for gateway in gateways:
        spec = gateway.spec
        assert isinstance(spec, MeshGatewaySpec)
        wanted.update(ResourceKey(SECRET.name, gateway.mesh, n) for n in spec.secret_names())
    return wanted
