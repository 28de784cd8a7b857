"""Where a service's traffic may go: local instances, other zones' ingresses, the local egress.

Everything here is derived from the `MeshState` alone and memoized on it, so the plan for a
service, and the ClusterLoadAssignment built from it, is computed once per state for every
proxy that calls the service.

What a service has (`Plan`):

- Local: each healthy local instance's inbound, for every local MeshService the
  MeshMultiZoneService matches. Health is read from the state (the proxy's ADS stream and
  readiness), not from `spec.state`, which may lag a pass behind.
- Remote: per other zone, one endpoint per distinct advertised address of its ZoneIngresses.
  A zone whose MeshService is not `Available` is left out (its CP reports no healthy
  instance). Whether a remote zone's ingress answers right now is not known here: the
  sidecars check it themselves (`resilience.apply_zone_health_checks`); local endpoints are
  excluded from those checks. Every zone weighs the same (Kuma's documented default: "load
  balanced equally for each zone"), however many instances or ingresses it has. Opt-in:
  the label `zonemesh.io/zone-weights: instances` on a MeshMultiZoneService weighs each zone
  by its healthy instance count as its ingress advertises it (`availableServices`).

How it is laid out (`load_assignment`) is the resolved MeshLoadBalancingStrategy's
`LocalityPolicy` (see `zonemesh.translate.policies.mlbs`); without a policy: the local zone at
priority 0 (always present, even empty), the other zones at priority 1. With
`routing.zoneEgress` and a local ZoneEgress, the other zones are the egress instead; it
forwards by SNI to the zones' ingresses.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from zonemesh.cpdp.names import spiffe_id
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.ownership import display_name, is_local, is_synced, zone_of
from zonemesh.resources.types.dataplane import DataplaneSpec, Inbound
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.resources.types.meshservice import (
    STATE_AVAILABLE,
    MeshServicePort,
    MeshServiceSpec,
)
from zonemesh.resources.types.mmzs import (
    MMZSPort,
    selects_mesh_service,
)
from zonemesh.resources.types.zone_proxies import ZoneEgressSpec, ZoneIngressSpec
from zonemesh.translate import names
from zonemesh.translate.builders import is_ip, lb_endpoint
from zonemesh.translate.policies.mlbs import LocalityPolicy
from zonemesh.translate.resilience import exclude_from_health_checks, load_assignment_policy
from zonemesh.translate.state import MeshState
from zonemesh.translate.tls import cross_zone_metadata

log = logging.getLogger("zonemesh.translate")

HostPort = tuple[str, int]
EGRESS_SUB_ZONE = "zone-egress"
# Opt-in on a MeshMultiZoneService: weigh other zones by their healthy instance counts.
ZONE_WEIGHTS_LABEL = "zonemesh.io/zone-weights"
ZONE_WEIGHTS_BY_INSTANCES = "instances"
# A local endpoint's place: (address:port, sub-zone, locality weight).
LocalLayout = tuple[tuple[HostPort, str, int], ...]


@dataclass(frozen=True)
class RemoteZone:
    """One other zone serving a target: its ingress addresses and the zone's weight (1, or its
    instance count with the opt-in), shared by its addresses."""

    zone: str
    addresses: tuple[HostPort, ...]
    weight: int


@dataclass(frozen=True)
class Plan:
    """The endpoints of one service port, before they become Envoy messages (their priorities
    and localities are the resolved policy's, applied by `load_assignment`)."""

    mesh: str
    sni: str
    local: tuple[HostPort, ...]  # this zone's instances
    remote: tuple[RemoteZone, ...]  # the other zones serving it
    spiffe_ids: tuple[str, ...]  # what the client accepts from the server
    app_protocol: str


# --- zones, ingresses, egresses --------------------------------------------------------------


def zone_of_proxy(resource: Resource, local_zone: str) -> str:
    """The zone a ZoneIngress/ZoneEgress lives in: its spec, its label, else ours if not synced."""
    spec = resource.spec
    zone = getattr(spec, "zone", None) or resource.labels.get(labels.ZONE)
    if zone:
        return str(zone)
    return "" if is_synced(resource) else local_zone


def ingress_addresses(state: MeshState) -> dict[str, tuple[HostPort, ...]]:
    """Each zone's ingress addresses other zones dial (advertised IP:port, deduplicated)."""

    def build() -> dict[str, tuple[HostPort, ...]]:
        found: dict[str, set[HostPort]] = defaultdict(set)
        for key in sorted(state.zone_ingresses):
            ingress = state.zone_ingresses[key]
            spec = ingress.spec
            assert isinstance(spec, ZoneIngressSpec)
            zone = zone_of_proxy(ingress, state.zone)
            net = spec.networking
            if not zone:
                log.warning("ZoneIngress %s: zone unknown; not used as a target", ingress.name)
                continue
            if not net.advertised_address or not net.advertised_port:
                log.warning(
                    "ZoneIngress %s (zone %s): no advertisedAddress/advertisedPort; "
                    "not used as a target",
                    ingress.name,
                    zone,
                )
                continue
            if not is_ip(net.advertised_address):
                log.warning(
                    "ZoneIngress %s (zone %s): advertisedAddress %r is not an IP address; "
                    "not used as a target",
                    ingress.name,
                    zone,
                    net.advertised_address,
                )
                continue
            found[zone].add((net.advertised_address, net.advertised_port))
        return {zone: tuple(sorted(addrs)) for zone, addrs in found.items()}

    return state.memo(("endpoints.ingress_addresses",), build)


def available_instances(state: MeshState) -> dict[tuple[str, str, str], int]:
    """(zone, mesh, service) -> healthy instances, as each zone's ingresses advertise them."""

    def build() -> dict[tuple[str, str, str], int]:
        counts: dict[tuple[str, str, str], int] = {}
        for key in sorted(state.zone_ingresses):
            ingress = state.zone_ingresses[key]
            spec = ingress.spec
            assert isinstance(spec, ZoneIngressSpec)
            zone = zone_of_proxy(ingress, state.zone)
            for entry in spec.available_services or []:
                tags = entry.get("tags") or {}
                service = tags.get(labels.SERVICE_TAG)
                mesh = entry.get("mesh")
                instances = entry.get("instances")
                if not isinstance(service, str) or not isinstance(mesh, str):
                    continue
                if not isinstance(instances, int) or instances < 0:
                    continue
                where = (tags.get(labels.ZONE) or zone, mesh, service)
                counts[where] = max(counts.get(where, 0), instances)
        return counts

    return state.memo(("endpoints.available_instances",), build)


def local_egress(state: MeshState) -> HostPort | None:
    """This zone's ZoneEgress (the first by name with an IP address), if any."""

    def build() -> HostPort | None:
        for key in sorted(state.zone_egresses):
            egress = state.zone_egresses[key]
            spec = egress.spec
            assert isinstance(spec, ZoneEgressSpec)
            if zone_of_proxy(egress, state.zone) != state.zone:
                continue
            if is_ip(spec.networking.address):
                return (spec.networking.address, spec.networking.port)
            log.warning("ZoneEgress %s: address is not an IP address; not used", egress.name)
        return None

    return state.memo(("endpoints.local_egress",), build)


def mesh_spec(state: MeshState, mesh: str) -> MeshSpec:
    resource = state.meshes.get(mesh)
    if resource is not None and isinstance(resource.spec, MeshSpec):
        return resource.spec
    return MeshSpec()


def mtls_enabled(state: MeshState, mesh: str) -> bool:
    return mesh_spec(state, mesh).mtls_enabled


def egress_for(state: MeshState, mesh: str) -> HostPort | None:
    """The egress zone-crossing traffic of `mesh` goes through, or None to dial ingresses."""
    routing = mesh_spec(state, mesh).routing
    if routing is None or not routing.zone_egress:
        return None
    return local_egress(state)


# --- services ----------------------------------------------------------------------------------


def spiffe_ids(ms: Resource) -> list[str]:
    """The identities a MeshService's instances present (Kuma: `spec.identities`)."""
    spec = ms.spec
    assert isinstance(spec, MeshServiceSpec)
    out = []
    for identity in spec.identities:
        if identity.type == "SpiffeID":
            out.append(identity.value)
        else:
            out.append(spiffe_id(ms.mesh, identity.value))
    return out or [spiffe_id(ms.mesh, display_name(ms))]


@dataclass(frozen=True, slots=True)
class _LocalInbound:
    """A serving inbound of a local Dataplane (not NotReady/Ignored, healthy), pre-resolved."""

    dataplane: ResourceKey
    inbound: Inbound
    address: str | None
    is_ip: bool


@dataclass
class _MeshInbounds:
    """One mesh's serving local inbounds, indexed the ways MeshService selectors ask.

    Never changed once built: a newer state's index is a patched copy (`_patched`) sharing
    the lists of every service and Dataplane the change did not touch."""

    by_service: dict[str, list[_LocalInbound]] = field(default_factory=dict)
    by_dataplane: dict[str, list[_LocalInbound]] = field(default_factory=dict)
    _all: list[_LocalInbound] | None = None

    @property
    def all(self) -> list[_LocalInbound]:
        if self._all is None:
            self._all = [e for entries in self.by_dataplane.values() for e in entries]
        return self._all

    def add(self, entry: _LocalInbound) -> None:
        """While building only."""
        service = entry.inbound.tags.get(labels.SERVICE_TAG, "")
        self.by_service.setdefault(service, []).append(entry)
        self.by_dataplane.setdefault(entry.dataplane.name, []).append(entry)


_ServingInbounds = tuple[tuple[Inbound, str | None, bool], ...]


def _serving_inbounds(state: MeshState, dp: Resource) -> _ServingInbounds:
    """A Dataplane's serving inbounds with their address resolved, derived once per
    Dataplane object (stores hand out the same one until it changes), so a new state does
    not redo it for every Dataplane."""

    def build() -> _ServingInbounds:
        spec = dp.spec
        assert isinstance(spec, DataplaneSpec)
        net = spec.networking
        found = []
        for inbound in net.inbound:
            if inbound.ignored or inbound.declared_not_ready:
                continue
            address = inbound.address or net.advertised_address or net.address
            found.append((inbound, address, is_ip(address)))
        return tuple(found)

    return state.caches.serving_inbounds.get(dp, build)  # type: ignore[no-any-return]


def _serving_entries(state: MeshState, key: ResourceKey, dp: Resource) -> list[_LocalInbound]:
    if not is_local(dp, state.zone):
        return []
    return [
        _LocalInbound(key, inbound, address, address_is_ip)
        for inbound, address, address_is_ip in _serving_inbounds(state, dp)
        if state.is_healthy(key, inbound.port)
    ]


def _build_index(state: MeshState) -> dict[str, _MeshInbounds]:
    """One O(Dataplanes) pass."""
    state.caches.serving_inbounds.limit(len(state.dataplanes))
    out: dict[str, _MeshInbounds] = {}
    for key, dp in state.dataplanes.items():  # any order: callers sort what they find
        entries = _serving_entries(state, key, dp)
        if not entries:
            continue
        index = out.get(dp.mesh)
        if index is None:
            index = out[dp.mesh] = _MeshInbounds()
        for entry in entries:
            index.add(entry)
    return out


def _patched(
    state: MeshState, previous: dict[str, _MeshInbounds], changed: frozenset[ResourceKey]
) -> dict[str, _MeshInbounds]:
    """`previous` (the index of the state before) with only the `changed` Dataplanes redone:
    O(changed + services and Dataplanes of the touched meshes' dict copies)."""
    out = dict(previous)
    by_mesh: dict[str, list[ResourceKey]] = {}
    for key in changed:
        if key.type == "Dataplane":
            by_mesh.setdefault(key.mesh, []).append(key)
    for mesh, keys in by_mesh.items():
        old = previous.get(mesh) or _MeshInbounds()
        index = _MeshInbounds(dict(old.by_service), dict(old.by_dataplane))
        names = {k.name for k in keys}
        fresh: list[_LocalInbound] = []
        touched: set[str] = set()
        for key in keys:
            for entry in old.by_dataplane.get(key.name, ()):
                touched.add(entry.inbound.tags.get(labels.SERVICE_TAG, ""))
            index.by_dataplane.pop(key.name, None)
            dp = state.dataplanes.get(key)
            if dp is None:
                continue
            entries = _serving_entries(state, key, dp)
            if entries:
                index.by_dataplane[key.name] = entries
            fresh.extend(entries)
            touched.update(e.inbound.tags.get(labels.SERVICE_TAG, "") for e in entries)
        for service in touched:
            kept = [e for e in old.by_service.get(service, ()) if e.dataplane.name not in names]
            kept.extend(e for e in fresh if e.inbound.tags.get(labels.SERVICE_TAG, "") == service)
            if kept:
                index.by_service[service] = kept
            else:
                index.by_service.pop(service, None)
        if index.by_dataplane:
            out[mesh] = index
        else:
            out.pop(mesh, None)
    return out


def local_inbounds(state: MeshState) -> dict[str, _MeshInbounds]:
    """Mesh -> its local serving inbounds: patched from the previous state's index when the
    engine says which proxies changed in between (`MeshState.changed_since_previous`), else
    one O(Dataplanes) pass."""

    def build() -> dict[str, _MeshInbounds]:
        memo = state.caches.inbound_index
        changed = state.changed_since_previous
        if memo is not None and changed is not None and memo[0] == state.version - 1:
            index = _patched(state, memo[1], changed)
        else:
            index = _build_index(state)
        state.caches.inbound_index = (state.version, index)
        return index

    return state.memo(("endpoints.local_inbounds",), build)


def local_instances(state: MeshState, ms: Resource, port: MeshServicePort) -> tuple[HostPort, ...]:
    """Healthy `address:inbound.port` of the local Dataplanes the MeshService selects."""

    def build() -> tuple[HostPort, ...]:
        spec = ms.spec
        assert isinstance(spec, MeshServiceSpec)
        selector = spec.selector
        index = local_inbounds(state).get(ms.mesh)
        if index is None:
            return ()
        tags = selector.dataplane_tags or {}
        candidates: list[_LocalInbound]
        if selector.dataplane_ref is not None:
            candidates = index.by_dataplane.get(selector.dataplane_ref.name, [])
        elif not tags:
            return ()
        elif labels.SERVICE_TAG in tags:
            candidates = index.by_service.get(tags[labels.SERVICE_TAG], [])
        else:
            candidates = index.all
        found: set[HostPort] = set()
        for entry in candidates:
            inbound = entry.inbound
            if not all(inbound.tags.get(k) == v for k, v in tags.items()):
                continue
            if not _port_matches(port, inbound):
                continue
            if entry.is_ip:
                assert entry.address is not None
                found.add((entry.address, inbound.port))
            else:
                log.warning(
                    "Dataplane %s: %r is not an IP address; skipped", entry.dataplane, entry.address
                )
        return tuple(sorted(found))

    return state.memo(("endpoints.local_instances", ms.key, port.port), build)


def _port_matches(port: MeshServicePort, inbound: Inbound) -> bool:
    target = port.target_port
    if isinstance(target, int):
        return inbound.port == target
    if target:
        return inbound.name == target or str(inbound.port) == target
    return inbound.effective_service_port == port.port


def matched_mesh_services(state: MeshState, mmzs: Resource) -> list[Resource]:
    """Local and synced MeshServices the MMZS selects (`mmzs.selects_mesh_service`)."""
    return [ms for ms in state.mesh_services_in(mmzs.mesh) if selects_mesh_service(mmzs, ms)]


def mesh_service_port(ms: Resource, mmzs_port: MMZSPort) -> MeshServicePort | None:
    """The MeshService port behind an MMZS port: same name when both are named, else number."""
    spec = ms.spec
    assert isinstance(spec, MeshServiceSpec)
    if mmzs_port.name:
        for port in spec.ports:
            if port.name == mmzs_port.name:
                return port
    for port in spec.ports:
        if port.port == mmzs_port.port:
            return port
    return None


def _remote_zone(
    state: MeshState, zone: str, mesh: str, service: str, *, by_instances: bool
) -> RemoteZone | None:
    addresses = ingress_addresses(state).get(zone, ())
    if not addresses:
        log.info("zone %s has no usable ZoneIngress; its %s/%s left out", zone, mesh, service)
        return None
    if not by_instances:
        return RemoteZone(zone, addresses, 1)
    # Unknown (or not yet counted) is weight 1: Available says at least one instance is healthy.
    count = available_instances(state).get((zone, mesh, service))
    return RemoteZone(zone, addresses, count or 1)


def weighs_zones_by_instances(mmzs: Resource) -> bool:
    return mmzs.labels.get(ZONE_WEIGHTS_LABEL, "").lower() == ZONE_WEIGHTS_BY_INSTANCES


def mmzs_plan(state: MeshState, mmzs: Resource, mmzs_port: MMZSPort) -> Plan:
    """Local instances and the other zones serving one port of a MeshMultiZoneService."""

    def build() -> Plan:
        by_instances = weighs_zones_by_instances(mmzs)
        local: set[HostPort] = set()
        remote: dict[str, RemoteZone] = {}
        identities: set[str] = set()
        for ms in matched_mesh_services(state, mmzs):
            port = mesh_service_port(ms, mmzs_port)
            if port is None:
                continue
            identities.update(spiffe_ids(ms))
            if is_local(ms, state.zone):
                local.update(local_instances(state, ms, port))
                continue
            spec = ms.spec
            assert isinstance(spec, MeshServiceSpec)
            zone = zone_of(ms, state.zone)
            if spec.state != STATE_AVAILABLE or zone == state.zone:
                continue
            target = _remote_zone(state, zone, ms.mesh, display_name(ms), by_instances=by_instances)
            if target is None:
                continue
            if zone in remote:  # two MeshServices of one zone: still one zone
                prev = remote[zone]
                weight = prev.weight + target.weight if by_instances else prev.weight
                target = RemoteZone(zone, prev.addresses, weight)
            remote[zone] = target
        return Plan(
            mesh=mmzs.mesh,
            sni=names.mmzs_sni(mmzs.mesh, mmzs.name, mmzs_port.port, mmzs_port.name),
            local=tuple(sorted(local)),
            remote=tuple(remote[z] for z in sorted(remote)),
            spiffe_ids=tuple(sorted(identities)),
            app_protocol=mmzs_port.app_protocol,
        )

    return state.memo(("endpoints.mmzs_plan", mmzs.key, mmzs_port.port), build)


def mesh_service_plan(state: MeshState, ms: Resource, port: MeshServicePort) -> Plan:
    """A local MeshService: its local instances. A synced one: its zone's ingresses."""

    def build() -> Plan:
        sni = names.mesh_service_sni(ms.mesh, display_name(ms), port.port, port.name)
        local: tuple[HostPort, ...] = ()
        remote: tuple[RemoteZone, ...] = ()
        if is_local(ms, state.zone):
            local = local_instances(state, ms, port)
        else:
            spec = ms.spec
            assert isinstance(spec, MeshServiceSpec)
            zone = zone_of(ms, state.zone)
            if spec.state == STATE_AVAILABLE:
                target = _remote_zone(state, zone, ms.mesh, display_name(ms), by_instances=False)
                remote = (target,) if target is not None else ()
        return Plan(
            mesh=ms.mesh,
            sni=sni,
            local=local,
            remote=remote,
            spiffe_ids=tuple(sorted(set(spiffe_ids(ms)))),
            app_protocol=port.app_protocol,
        )

    return state.memo(("endpoints.ms_plan", ms.key, port.port), build)


# --- ClusterLoadAssignments ---------------------------------------------------------------


def local_endpoint_tags(state: MeshState, mesh: str) -> dict[HostPort, Mapping[str, str]]:
    """A local endpoint's tags, for affinity: its inbound's tags over its Dataplane's labels."""

    def build() -> dict[HostPort, Mapping[str, str]]:
        index = local_inbounds(state).get(mesh)
        found: dict[HostPort, Mapping[str, str]] = {}
        if index is None:
            return found
        for entry in sorted(index.all, key=lambda e: (e.dataplane, e.inbound.port)):
            if not entry.is_ip or entry.address is None:
                continue
            where = (entry.address, entry.inbound.port)
            if where not in found:
                dp = state.dataplanes[entry.dataplane]
                found[where] = {**dp.labels, **entry.inbound.tags}
        return found

    return state.memo(("endpoints.local_endpoint_tags", mesh), build)


def local_layout(state: MeshState, plan: Plan, locality: LocalityPolicy) -> LocalLayout | None:
    """Where each local endpoint goes when affinity tags split the local zone; None when
    they all share the zone's one locality."""
    if not locality.affinity or not plan.local:
        return None
    tags = local_endpoint_tags(state, plan.mesh)
    return tuple((hp, *locality.local_locality(tags.get(hp, {}))) for hp in plan.local)


def _locality(zone: str, sub_zone: str = "") -> base_pb2.Locality:
    return base_pb2.Locality(zone=zone, sub_zone=sub_zone)


@dataclass
class _Group:
    """One LocalityLbEndpoints under construction."""

    weight: int
    endpoints: list[endpoint_components_pb2.LbEndpoint] = field(default_factory=list)


def load_assignment(
    state: MeshState,
    cluster_name: str,
    plan: Plan,
    locality: LocalityPolicy,
    *,
    layout: LocalLayout | None = None,
    remote_only: bool = False,
    egress: HostPort | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """The plan as a CLA, laid out by `locality` (module docstring). `remote_only`: the
    destination lives in another zone only (a synced MeshService), its zone at priority 0.

    Each admitted zone gets the same share of its priority: its weight spread over its
    ingress addresses (scaled by their least common multiple, so weights stay integers).
    Remote endpoints carry the metadata that selects mutual TLS."""
    cla = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name,
        policy=load_assignment_policy(locality.overprovisioning_factor),
    )
    admitted: list[tuple[RemoteZone, int]] = []
    for target in plan.remote:
        priority = locality.remote_priority(target.zone)
        if priority is not None:
            admitted.append((target, 0 if remote_only else priority))
    scale = 1 if egress is not None else math.lcm(*(len(t.addresses) for t, _ in admitted))
    shares_priority_0 = any(priority == 0 for _, priority in admitted)
    groups: dict[tuple[int, str, str], _Group] = {}
    if not remote_only:
        # Always present, even empty: P0 with no hosts sends everything to P1 at once.
        groups[(0, state.zone, "")] = _Group(1)
        local_weight = scale if shares_priority_0 and scale > 1 else 0
        places = layout or tuple((hp, "", 1) for hp in plan.local)
        for (address, port), sub_zone, weight in places:
            group = groups.setdefault((0, state.zone, sub_zone), _Group(weight))
            endpoint = lb_endpoint(address, port, weight=local_weight)
            exclude_from_health_checks(endpoint)
            group.endpoints.append(endpoint)
    metadata = cross_zone_metadata()
    if egress is not None and admitted:
        priority = min(p for _, p in admitted)
        groups[(priority, state.zone, EGRESS_SUB_ZONE)] = _Group(
            1, [lb_endpoint(*egress, metadata=metadata)]
        )
    elif egress is None:
        for target, priority in admitted:
            weight = target.weight * scale // len(target.addresses)
            groups[(priority, target.zone, "")] = _Group(
                target.weight,
                [lb_endpoint(a, p, weight=weight, metadata=metadata) for a, p in target.addresses],
            )
    local_zone = state.zone
    for priority, zone, sub_zone in sorted(
        groups, key=lambda k: (k[0], k[1] != local_zone, k[1], k[2])
    ):
        group = groups[(priority, zone, sub_zone)]
        endpoints = endpoint_components_pb2.LocalityLbEndpoints(
            locality=_locality(zone, sub_zone),
            lb_endpoints=group.endpoints,
            priority=priority,
        )
        if locality.weighted:
            endpoints.load_balancing_weight.value = group.weight
        cla.endpoints.append(endpoints)
    return cla


def plain_load_assignment(
    cluster_name: str, endpoints: Iterable[HostPort], zone: str = ""
) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality, no metadata: what a zone ingress or egress forwards to."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    cla.endpoints.append(
        endpoint_components_pb2.LocalityLbEndpoints(
            locality=_locality(zone), lb_endpoints=[lb_endpoint(a, p) for a, p in endpoints]
        )
    )
    return cla
