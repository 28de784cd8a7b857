"""The mesh state kept up to date from store and health events, instead of re-read.

`MeshStateTracker` lists the store once (`load`), then applies each store event to its own
mirror (`apply`). `state()` freezes the mirror into an immutable `MeshState` — shallow copies
of a few dicts and the health of each proxy, no store I/O — only when something changed
since the last one. What changed accumulates in a `Changes` until the scheduler takes it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.registry import (
    DATAPLANE,
    MESH,
    MESH_GATEWAY,
    MESH_HTTP_ROUTE,
    MESH_LOAD_BALANCING_STRATEGY,
    MESH_MULTI_ZONE_SERVICE,
    MESH_SERVICE,
    SECRET,
    ZONE_EGRESS,
    ZONE_INGRESS,
)
from zonemesh.resources.types.meshservice import MeshServiceStatus
from zonemesh.runtime.health import InstanceHealth
from zonemesh.store.base import EventKind, ResourceEvent, Store
from zonemesh.translate.caches import TranslationCaches
from zonemesh.translate.state import HealthSnapshot, MeshState, gateway_secret_keys

# Store types the generators read; changes to other types do not trigger a push.
STATE_TYPES = frozenset(
    t.name
    for t in (
        MESH,
        DATAPLANE,
        ZONE_INGRESS,
        ZONE_EGRESS,
        MESH_SERVICE,
        MESH_MULTI_ZONE_SERVICE,
        MESH_LOAD_BALANCING_STRATEGY,
        MESH_GATEWAY,
        MESH_HTTP_ROUTE,
        SECRET,  # mirrored whole; a state holds only those a MeshGateway names
    )
)
PROXY_TYPES = frozenset({DATAPLANE.name, ZONE_INGRESS.name, ZONE_EGRESS.name})
# Inputs a sidecar's *own* resources (inbound listeners, its DNS table) do not read: a change
# to these reaches other sidecars only through the shared parts (outbound clusters and their
# endpoints), which the scheduler recomputes once per part. Everything else (Mesh,
# MeshService, MMZS, MLBS, MeshGateway, MeshHTTPRoute, a gateway's certificate) can change
# what any proxy generates for itself.
PART_ONLY_TYPES = frozenset({DATAPLANE.name, ZONE_INGRESS.name, ZONE_EGRESS.name})


def only_counts_changed(previous: Resource | None, current: Resource) -> bool:
    """A MeshService whose status changed in its instance counts alone (every instance
    that joins or leaves rewrites them): no generator reads those, so it is not a structural
    change. Anything else (spec, labels, VIPs, addresses) is."""
    if previous is None or current.type != MESH_SERVICE.name:
        return False
    if previous.spec != current.spec or previous.labels != current.labels:
        return False
    before, after = previous.status, current.status
    if not isinstance(before, MeshServiceStatus) or not isinstance(after, MeshServiceStatus):
        return False
    return before.model_copy(update={"dataplane_proxies": None}) == after.model_copy(
        update={"dataplane_proxies": None}
    )


@dataclass
class Changes:
    """What changed since the scheduler last looked."""

    proxies: set[ResourceKey] = field(default_factory=set)  # resource or health changed
    # Of those, the proxies whose own resource changed: their own output may differ. A
    # proxy whose health alone changed generates the same own resources (health is read
    # only by shared parts), so the scheduler refreshes it through its group.
    resources: set[ResourceKey] = field(default_factory=set)
    structural: bool = False  # a type outside `PART_ONLY_TYPES` changed

    def __bool__(self) -> bool:
        return bool(self.proxies) or self.structural


class MeshStateTracker:
    def __init__(
        self,
        store: Store,
        health: InstanceHealth,
        zone: str,
        caches: TranslationCaches | None = None,
    ) -> None:
        self.store, self.health, self.zone = store, health, zone
        self.caches = caches or TranslationCaches()
        self._items: dict[str, dict[ResourceKey, Resource]] = {t: {} for t in STATE_TYPES}
        self._health: dict[ResourceKey, HealthSnapshot] = {}
        self._health_seen = -1
        self._state: MeshState | None = None
        self._dirty = True
        self._version = 0
        self.built_at = 0.0
        self.changes = Changes(structural=True)
        self._since_state: set[ResourceKey] | None = None  # None: everything (after load)

    async def load(self) -> None:
        """Read every input type once; subscribe to the store before calling this."""
        for type_name in STATE_TYPES:
            self._items[type_name] = {r.key: r for r in await self.store.list(type_name)}
        self._dirty = True
        self._since_state = None
        self.changes.structural = True

    def apply(self, event: ResourceEvent) -> bool:
        """Apply one store event; False when it changed nothing the generators read."""
        resource = event.resource
        items = self._items.get(resource.type)
        if items is None:
            return False
        # Events come in write order, so applying each (also those `load` already saw)
        # ends at the store's state.
        previous = items.get(resource.key)
        if event.kind is EventKind.DELETED:
            items.pop(resource.key, None)
        else:
            items[resource.key] = resource
        if resource.type == SECRET.name and resource.key not in self._gateway_secret_keys():
            return False  # a Secret no gateway serves (a CA, token revocations): not read
        self._dirty = True
        if event.kind is EventKind.UPDATED and only_counts_changed(previous, resource):
            # Nothing a generator reads (the instance counts of the status): the next state
            # carries them, but they call for no generation round of their own (each new
            # or removed instance would otherwise cost a second round after its own).
            return False
        if resource.type in PROXY_TYPES:
            self.changes.proxies.add(resource.key)
            self.changes.resources.add(resource.key)
            if self._since_state is not None:
                self._since_state.add(resource.key)
        if resource.type not in PART_ONLY_TYPES:
            self.changes.structural = True
        return True

    def _gateway_secret_keys(self) -> set[ResourceKey]:
        return gateway_secret_keys(self._items[MESH_GATEWAY.name].values())

    def resource(self, key: ResourceKey) -> Resource | None:
        """The latest known resource behind `key` (newer than the last state, maybe)."""
        items = self._items.get(key.type)
        return items.get(key) if items is not None else None

    @property
    def current(self) -> MeshState | None:
        """The last state built, without building one."""
        return self._state

    @property
    def stale(self) -> bool:
        return self._dirty or self.health.version != self._health_seen

    def state(self) -> MeshState:
        """The current state, frozen anew only when something changed since the last one."""
        if self._state is not None and not self.stale:
            return self._state
        self._health_seen = self.health.version
        self._version += 1
        dataplanes = dict(self._items[DATAPLANE.name])
        ingresses = dict(self._items[ZONE_INGRESS.name])
        egresses = dict(self._items[ZONE_EGRESS.name])
        health = self._freeze_health((dataplanes, ingresses, egresses))
        since, self._since_state = self._since_state, set()
        self._state = MeshState(
            version=self._version,
            zone=self.zone,
            meshes={k.name: r for k, r in self._items[MESH.name].items()},
            dataplanes=dataplanes,
            mesh_services=dict(self._items[MESH_SERVICE.name]),
            mesh_multi_zone_services=dict(self._items[MESH_MULTI_ZONE_SERVICE.name]),
            zone_ingresses=ingresses,
            zone_egresses=egresses,
            mesh_load_balancing_strategies=dict(self._items[MESH_LOAD_BALANCING_STRATEGY.name]),
            mesh_gateways=dict(self._items[MESH_GATEWAY.name]),
            gateway_secrets={
                key: secret
                for key in self._gateway_secret_keys()
                if (secret := self._items[SECRET.name].get(key)) is not None
            },
            mesh_http_routes=dict(self._items[MESH_HTTP_ROUTE.name]),
            health=health,
            caches=self.caches,
            changed_since_previous=frozenset(since) if since is not None else None,
        )
        self._dirty = False
        self.built_at = time.monotonic()
        return self._state

    def _freeze_health(
        self, proxies: tuple[Mapping[ResourceKey, Resource], ...]
    ) -> dict[ResourceKey, HealthSnapshot]:
        """Health of every proxy resource, frozen; a proxy whose health differs from the
        previous state's is a change (unchanged entries keep their object)."""
        previous = self._health
        frozen: dict[ResourceKey, HealthSnapshot] = {}
        get = self.health.get
        since = self._since_state

        def changed(key: ResourceKey) -> None:
            self.changes.proxies.add(key)
            if since is not None:
                since.add(key)

        for items in proxies:
            for key in items:
                h = get(key)
                if h is None:
                    if key in previous:
                        changed(key)
                    continue
                before = previous.get(key)
                if (
                    before is not None
                    and before.connected == h.connected
                    and before.ready == h.ready
                    and before.not_ready_inbounds == h.not_ready_inbounds
                ):
                    frozen[key] = before
                    continue
                frozen[key] = HealthSnapshot(h.connected, h.ready, tuple(h.not_ready_inbounds))
                changed(key)
        self._health = frozen
        return frozen

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes
