"""MeshServices generated from the Dataplane inbounds of this zone, grouped by `kuma.io/service`.

A generated MeshService carries a marker label, so the generator only ever changes or deletes
what it created: a MeshService applied by hand, or one synced in from another zone, is never
touched. The same index also counts the proxies behind any local MeshService's selector.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.ownership import is_local
from zonemesh.resources.registry import MESH_SERVICE
from zonemesh.resources.types.common import APP_PROTOCOLS
from zonemesh.resources.types.dataplane import DataplaneSpec
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.resources.types.meshservice import (
    STATE_AVAILABLE,
    STATE_UNAVAILABLE,
    DataplaneProxies,
    Identity,
    MeshServicePort,
    MeshServiceSelector,
    MeshServiceSpec,
)
from zonemesh.runtime.health import InstanceHealth, is_healthy

# Marks a MeshService as owned by the generator (Kuma marks its own with a managed-by label).
GENERATED_BY = "zonemesh.io/generated-by"
GENERATOR = "meshservice-generator"

# The rule resource names follow in the API (see resources/codec.py).
_VALID_NAME = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")


def is_generated(resource: Resource, zone: str) -> bool:
    """Generated here: the marker alone is not enough, a synced copy may carry it too."""
    return resource.labels.get(GENERATED_BY) == GENERATOR and is_local(resource, zone)


class _InboundRef(NamedTuple):
    """A tuple, not a frozen dataclass: one is built per inbound on every pass."""

    dataplane: ResourceKey
    tags: dict[str, str]
    connected: bool
    healthy: bool


@dataclass
class _ServiceGroup:
    ports: dict[int, MeshServicePort] = field(default_factory=dict)
    inbounds: list[_InboundRef] = field(default_factory=list)
    cached_counts: DataplaneProxies | None = None

    def counts(self) -> DataplaneProxies:
        if self.cached_counts is None:
            self.cached_counts = _count(self.inbounds)
        return self.cached_counts


def index_inputs(dp: Resource) -> tuple[Any, ...]:
    """What `DataplaneIndex` reads of a Dataplane (its labels and inbounds): a change
    elsewhere (its address, outbounds, admin port) cannot change the computed state."""
    spec = dp.spec
    inbounds = spec.networking.inbound if isinstance(spec, DataplaneSpec) else None
    return (dict(dp.labels), inbounds)


class _Inbound(NamedTuple):
    """What the index reads of one serving inbound, as plain values."""

    service: str
    tags: dict[str, str]
    port: int  # the inbound port: health is per inbound port
    service_port: int
    protocol: str  # an app protocol, "tcp" for anything else
    declared_not_ready: bool


def _serving_inbounds(dp: Resource) -> tuple[_Inbound, ...]:
    spec = dp.spec
    assert isinstance(spec, DataplaneSpec)
    return tuple(
        _Inbound(
            inbound.service,
            inbound.tags,
            inbound.port,
            inbound.effective_service_port,
            inbound.protocol if inbound.protocol in APP_PROTOCOLS else "tcp",
            inbound.declared_not_ready,
        )
        for inbound in spec.networking.inbound
        if not inbound.ignored and inbound.service
    )


class InboundsMemo:
    """Per Dataplane object, whether it is local and its serving inbounds as plain tuples.
    Stores hand out the same object until the Dataplane changes, so a pass over the zone
    (every new or removed instance) reads tuples instead of walking pydantic models for
    each of thousands of Dataplanes. Owned by the reconciler, which runs the passes."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self._items: dict[int, tuple[Resource, tuple[_Inbound, ...] | None]] = {}

    def get(self, dp: Resource) -> tuple[_Inbound, ...] | None:
        """None: not a Dataplane of this zone."""
        hit = self._items.get(id(dp))
        if hit is not None and hit[0] is dp:
            return hit[1]
        value = _serving_inbounds(dp) if is_local(dp, self.zone) else None
        self._items[id(dp)] = (dp, value)  # holding dp keeps its id from being reused
        return value

    def limit(self, live: int) -> None:
        if len(self._items) > 2 * live + 64:
            self._items.clear()  # forget the objects gone or replaced


class DataplaneIndex:
    """The inbounds of this zone's Dataplanes, with health, indexed for selector lookups."""

    def __init__(
        self,
        dataplanes: Iterable[Resource],
        zone: str,
        health: InstanceHealth,
        memo: InboundsMemo | None = None,
    ) -> None:
        self.zone = zone
        self.services: dict[tuple[str, str], _ServiceGroup] = defaultdict(_ServiceGroup)
        self._by_mesh: dict[str, list[_InboundRef]] = defaultdict(list)
        self._by_dataplane: dict[ResourceKey, list[_InboundRef]] = defaultdict(list)
        memo = memo if memo is not None and memo.zone == zone else InboundsMemo(zone)
        # (mesh, name) as `Store.list` returns them: timsort passes over sorted input once.
        ordered = sorted(dataplanes, key=lambda r: (r.mesh, r.name))
        memo.limit(len(ordered))
        for dp in ordered:
            inbounds = memo.get(dp)
            if inbounds:
                self._add(dp, inbounds, health)

    def _add(self, dp: Resource, inbounds: tuple[_Inbound, ...], health: InstanceHealth) -> None:
        key, mesh = dp.key, dp.mesh
        proxy = health.get(key)  # once per Dataplane, not again per inbound
        connected = proxy is not None and proxy.connected
        for inbound in inbounds:
            healthy = not inbound.declared_not_ready and is_healthy(proxy, inbound.port)
            ref = _InboundRef(key, inbound.tags, connected, healthy)
            self._by_mesh[mesh].append(ref)
            self._by_dataplane[key].append(ref)
            group = self.services[(mesh, inbound.service)]
            group.inbounds.append(ref)
            port = inbound.service_port
            known = group.ports.get(port)
            if known is None:
                group.ports[port] = MeshServicePort.model_construct(
                    port=port, target_port=inbound.port, app_protocol=inbound.protocol
                )
            elif known.target_port not in (None, inbound.port):
                # Instances listen on different inbound ports: no single targetPort names
                # them all, so leave it out and let endpoints match by the service port.
                group.ports[port] = known.model_copy(update={"target_port": None})

    def proxies(self, mesh: str, selector: MeshServiceSelector) -> DataplaneProxies | None:
        """Counts of the proxies a local MeshService selects; None if it selects none by rule."""
        if selector.dataplane_ref is not None:
            refs = self._by_dataplane.get(
                ResourceKey("Dataplane", mesh, selector.dataplane_ref.name), []
            )
        elif selector.dataplane_tags:
            wanted = selector.dataplane_tags
            service = wanted.get(labels.SERVICE_TAG)
            if service is not None:
                group = self.services.get((mesh, service))
                if group is not None and len(wanted) == 1:
                    return group.counts()  # the generator's own selector: the whole group
                candidates = group.inbounds if group else []
            else:
                candidates = self._by_mesh.get(mesh, [])
            refs = [r for r in candidates if all(r.tags.get(k) == v for k, v in wanted.items())]
        else:
            return None
        return _count(refs)


def _count(refs: list[_InboundRef]) -> DataplaneProxies:
    connected: dict[ResourceKey, bool] = {}
    healthy: dict[ResourceKey, bool] = {}
    for ref in refs:
        connected[ref.dataplane] = connected.get(ref.dataplane, False) or ref.connected
        healthy[ref.dataplane] = healthy.get(ref.dataplane, False) or ref.healthy
    return DataplaneProxies.model_construct(
        connected=sum(connected.values()), healthy=sum(healthy.values()), total=len(connected)
    )


def generated_mesh_services(
    index: DataplaneIndex, meshes: Iterable[Resource]
) -> dict[ResourceKey, Resource]:
    """The MeshServices this zone's inbounds call for (not yet reconciled with the store).

    Meshes that switch MeshServices off (`meshServices.mode: Disabled`) get none. Service
    names that cannot be resource names are skipped.
    """
    disabled = {
        m.name
        for m in meshes
        if isinstance(m.spec, MeshSpec)
        and m.spec.mesh_services is not None
        and m.spec.mesh_services.mode == "Disabled"
    }
    out: dict[ResourceKey, Resource] = {}
    for (mesh, service), group in index.services.items():
        if mesh in disabled or len(service) > 253 or not _VALID_NAME.match(service):
            continue
        counts = group.counts()
        # Built from values checked here, so construction skips re-validation (this runs for
        # every service on every pass).
        spec = MeshServiceSpec.model_construct(
            selector=MeshServiceSelector.model_construct(
                dataplane_tags={labels.SERVICE_TAG: service}
            ),
            ports=[group.ports[p] for p in sorted(group.ports)],
            identities=[Identity.model_construct(type="ServiceTag", value=service)],
            state=STATE_AVAILABLE if counts.healthy else STATE_UNAVAILABLE,
        )
        resource = Resource(
            type=MESH_SERVICE.name,
            name=service,
            mesh=mesh,
            spec=spec,
            labels={
                labels.DISPLAY_NAME: service,
                labels.ZONE: index.zone,
                labels.MESH: mesh,
                labels.ORIGIN: labels.ORIGIN_ZONE,
                GENERATED_BY: GENERATOR,
            },
        )
        out[ResourceKey(MESH_SERVICE.name, mesh, service)] = resource
    return out
