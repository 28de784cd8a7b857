"""Outbound: one listener per `networking.outbound` entry, and the service clusters they use.

A sidecar gets clusters only for the services its outbounds name. The cluster and its
ClusterLoadAssignment depend on the service and on the MeshLoadBalancingStrategy resolved for
(proxy, service) (`policies.mlbs`, taken as given here), so they are built once per state for
every caller with the same resolved policy and shared (`MeshState.memo`); without a policy
that is every caller.

An outbound whose backend cannot be resolved (unknown service, unknown port, a kind zonemesh
does not route) is logged and skipped: the rest of the proxy's configuration stays valid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from google.protobuf import struct_pb2

from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.ownership import display_name, is_local, zone_of
from zonemesh.resources.registry import MESH_MULTI_ZONE_SERVICE
from zonemesh.resources.types.dataplane import DataplaneSpec, Outbound
from zonemesh.resources.types.meshservice import MeshServiceSpec
from zonemesh.resources.types.mmzs import MeshMultiZoneServiceSpec
from zonemesh.translate import names
from zonemesh.translate.builders import (
    eds_cluster,
    http_filter,
    http_routes_filter,
    is_http,
    set_http2_upstream,
    socket,
    tcp_proxy_filter,
)
from zonemesh.translate.endpoints import (
    HostPort,
    Plan,
    egress_for,
    load_assignment,
    local_layout,
    mesh_service_plan,
    mmzs_plan,
    mtls_enabled,
)
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.inbound import WILDCARDS
from zonemesh.translate.policies import matching, meshhttproute
from zonemesh.translate.policies.mlbs import (
    DEFAULT,
    LbConf,
    LocalityPolicy,
    ProxyPolicies,
    RequestHash,
    configure_cluster,
    policies_for,
    route_hash_policies,
    tcp_hash_policies,
)
from zonemesh.translate.resilience import (
    TCP_CONNECT_ATTEMPTS,
    apply_cluster_defaults,
    apply_http2_keepalive,
    apply_zone_health_checks,
    retry_policy,
)
from zonemesh.translate.state import MeshState, content_memo
from zonemesh.translate.tls import CROSS_ZONE_KEY, CROSS_ZONE_MATCH, upstream_tls

log = logging.getLogger("zonemesh.translate")

ClusterPair = tuple[cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment]


@dataclass(frozen=True)
class Backend:
    """A resolved outbound target: the cluster to send to and how to speak to it."""

    cluster: cluster_pb2.Cluster
    load_assignment: endpoint_pb2.ClusterLoadAssignment
    app_protocol: str
    display: str
    hashes: tuple[RequestHash, ...] = ()  # what RingHash/Maglev hash on, for the listener
    destination: matching.Destination | None = None  # what MeshHTTPRoutes select it by


def service_cluster(
    state: MeshState, name: str, plan: Plan, conf: LbConf = DEFAULT
) -> cluster_pb2.Cluster:
    """EDS cluster with resilience defaults, the policy's load balancer, mutual TLS to
    every zone-crossing endpoint, and active health checks of those (`resilience`).

    With the mesh's mTLS on, every endpoint gets TLS. With it off, only the endpoints marked
    cross-zone (other zones' ingresses, the egress) do, via `transport_socket_matches`, and
    local instances stay plaintext.
    """
    cluster = eds_cluster(name)
    http = is_http(plan.app_protocol)
    if http:
        set_http2_upstream(cluster)  # proxy-to-proxy hop: HTTP/2 whatever the app speaks
        apply_http2_keepalive(cluster)
    apply_cluster_defaults(cluster)
    configure_cluster(cluster, conf)
    tls = upstream_tls(plan.mesh, plan.sni, plan.spiffe_ids, http2=http)
    if mtls_enabled(state, plan.mesh):
        cluster.transport_socket.CopyFrom(tls)
    else:
        match = struct_pb2.Struct()
        match.update({CROSS_ZONE_KEY: "true"})
        cluster.transport_socket_matches.append(
            cluster_pb2.Cluster.TransportSocketMatch(
                name=CROSS_ZONE_MATCH, match=match, transport_socket=tls
            )
        )
    apply_zone_health_checks(cluster)
    return cluster


def shared_service_cluster(
    state: MeshState, name: str, plan: Plan, conf: LbConf
) -> cluster_pb2.Cluster:
    """`service_cluster`, reused across states while its inputs are the same."""
    key = (
        "outbound.cluster",
        name,
        plan,
        mtls_enabled(state, plan.mesh),
        conf.balancer,
        conf.locality.weighted,
    )
    return content_memo(state, key, lambda: service_cluster(state, name, plan, conf))


def shared_load_assignment(
    state: MeshState,
    name: str,
    plan: Plan,
    locality: LocalityPolicy,
    *,
    remote_only: bool = False,
    egress: HostPort | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """`load_assignment`, reused across states while its inputs are the same."""
    layout = local_layout(state, plan, locality)
    key = ("outbound.cla", name, plan, state.zone, locality, layout, remote_only, egress)
    return content_memo(
        state,
        key,
        lambda: load_assignment(
            state, name, plan, locality, layout=layout, remote_only=remote_only, egress=egress
        ),
    )


def mmzs_backend(
    state: MeshState, mmzs: Resource, port_number: int, policies: ProxyPolicies
) -> Backend | None:
    spec = mmzs.spec
    assert isinstance(spec, MeshMultiZoneServiceSpec)
    port = next((p for p in spec.ports if p.port == port_number), None)
    if port is None:
        return None
    destination = matching.Destination(matching.MESH_MULTI_ZONE_SERVICE, mmzs, port.port, port.name)
    conf = policies.conf_for(state, destination)

    def build() -> Backend:
        name = names.mmzs_cluster(mmzs.mesh, mmzs.name, port.port)
        plan = mmzs_plan(state, mmzs, port)
        egress = egress_for(state, mmzs.mesh)
        cla = shared_load_assignment(state, name, plan, conf.locality, egress=egress)
        cluster = shared_service_cluster(state, name, plan, conf)
        return Backend(cluster, cla, port.app_protocol, mmzs.name, conf.hashes, destination)

    return state.memo(("outbound.mmzs", mmzs.key, port.port, conf), build)


def mesh_service_backend(
    state: MeshState, ms: Resource, port_number: int, policies: ProxyPolicies
) -> Backend | None:
    spec = ms.spec
    assert isinstance(spec, MeshServiceSpec)
    port = spec.port_by_name_or_number(port_number)
    if port is None:
        return None
    destination = matching.Destination(matching.MESH_SERVICE, ms, port.port, port.name)
    conf = policies.conf_for(state, destination)

    def build() -> Backend:
        zone = zone_of(ms, state.zone)
        name = names.mesh_service_cluster(ms.mesh, display_name(ms), zone, port.port)
        plan = mesh_service_plan(state, ms, port)
        if is_local(ms, state.zone):
            cla = shared_load_assignment(state, name, plan, conf.locality)
        else:  # another zone's service: its ingresses (or our egress) are all there is
            egress = egress_for(state, ms.mesh)
            cla = shared_load_assignment(
                state, name, plan, conf.locality, remote_only=True, egress=egress
            )
        cluster = shared_service_cluster(state, name, plan, conf)
        return Backend(cluster, cla, port.app_protocol, ms.name, conf.hashes, destination)

    return state.memo(("outbound.msvc", ms.key, port.port, conf), build)


def find_mesh_service(
    state: MeshState, mesh: str, name: str, selector: dict[str, str] | None
) -> Resource | None:
    """By resource name, else by display name (this zone's first); `labels` narrow the choice.

    Memoized per state: every proxy's outbounds ask the same questions."""
    key = ("outbound.find_ms", mesh, name, tuple(sorted(selector.items())) if selector else ())
    return state.memo(key, lambda: _find_mesh_service(state, mesh, name, selector))


def _find_mesh_service(
    state: MeshState, mesh: str, name: str, selector: dict[str, str] | None
) -> Resource | None:
    candidates = state.mesh_services_in(mesh)
    if selector:
        candidates = [
            ms for ms in candidates if all(ms.labels.get(k) == v for k, v in selector.items())
        ]
    if name:
        exact = [ms for ms in candidates if ms.name == name]
        if exact:
            return exact[0]
        candidates = [ms for ms in candidates if display_name(ms) == name]
    local = [ms for ms in candidates if is_local(ms, state.zone)]
    chosen = local or candidates
    return chosen[0] if chosen else None


def resolve(
    state: MeshState, mesh: str, outbound: Outbound, policies: ProxyPolicies
) -> Backend | str:
    """The backend an outbound names, or why it has none."""
    ref = outbound.backend_ref
    if ref is None:
        service = (outbound.tags or {}).get(labels.SERVICE_TAG)
        if not service:
            return "no backendRef and no kuma.io/service tag"
        ms = find_mesh_service(state, mesh, service, None)
        if ms is None:
            return f"unknown service {service!r}"
        ms_spec = ms.spec
        assert isinstance(ms_spec, MeshServiceSpec)
        # Legacy form: the listener port names the service port unless it has only one.
        number = ms_spec.ports[0].port if len(ms_spec.ports) == 1 else outbound.port
        backend = mesh_service_backend(state, ms, number, policies)
        return backend or f"MeshService {service!r} has no port {number}"
    if ref.port is None:
        return "backendRef without a port"
    return resolve_ref(state, mesh, ref.kind, ref.name, ref.labels, ref.port, policies)


def resolve_ref(
    state: MeshState,
    mesh: str,
    kind: str,
    name: str | None,
    selector: dict[str, str] | None,
    port: int | None,
    policies: ProxyPolicies,
) -> Backend | str:
    """The backend a backendRef (an outbound's, a MeshHTTPRoute's) names, or why it has none.
    A MeshService ref without a port (Kuma's legacy form) means its only port."""
    if kind == MESH_MULTI_ZONE_SERVICE.name:
        mmzs = state.mesh_multi_zone_services.get(
            ResourceKey(MESH_MULTI_ZONE_SERVICE.name, mesh, name or "")
        )
        if mmzs is None:
            return f"unknown MeshMultiZoneService {name!r}"
        if port is None:
            return f"MeshMultiZoneService {name!r} without a port"
        backend = mmzs_backend(state, mmzs, port, policies)
        return backend or f"MeshMultiZoneService {name!r} has no port {port}"
    if kind == "MeshService":
        ms = find_mesh_service(state, mesh, name or "", selector)
        if ms is None:
            return f"unknown MeshService {name or selector!r}"
        if port is None:
            ms_spec = ms.spec
            assert isinstance(ms_spec, MeshServiceSpec)
            if len(ms_spec.ports) != 1:
                return f"MeshService {name!r} has several ports and the ref names none"
            port = ms_spec.ports[0].port
        backend = mesh_service_backend(state, ms, port, policies)
        return backend or f"MeshService {name!r} has no port {port}"
    return f"backendRef kind {kind} is not routed by zonemesh"


@dataclass(frozen=True)
class NetworkFilter:
    """What an outbound does with its connections, and every backend it sends to."""

    # The HTTP connection manager with the routes; None: no route applies, the outbound
    # keeps `outbound_network_filter` (shared by every proxy with the same outbound).
    filter: listener_components_pb2.Filter | None
    backends: tuple[Backend, ...]  # the outbound's own first
    warnings: tuple[str, ...] = ()


def routed_network_filter(
    state: MeshState,
    mesh: str,
    name: str,
    backend: Backend,
    policies: ProxyPolicies,
    routes: meshhttproute.ProxyRoutes,
) -> NetworkFilter:
    """`outbound_network_filter`, with the proxy's MeshHTTPRoutes for `backend` applied:
    their routes replace the catch-all, and the services they send to join the proxy."""
    rules = []
    if is_http(backend.app_protocol) and backend.destination is not None:
        rules = routes.rules_for(state, backend.destination)
    if not rules:
        return NetworkFilter(None, (backend,))
    used = {backend.cluster.name: backend}

    def cluster_for(ref: meshhttproute.BackendRef) -> str | None:
        found = resolve_ref(state, mesh, ref.kind, ref.name, ref.labels, ref.port, policies)
        if isinstance(found, str):
            return None
        used.setdefault(found.cluster.name, found)
        return found.cluster.name

    envoy_routes = meshhttproute.envoy_routes(
        rules,
        cluster_for,
        retry_policy=retry_policy(),
        hash_policy=route_hash_policies(backend.hashes),
    )
    config = meshhttproute.route_configuration(name, backend.display, envoy_routes)
    warnings = tuple(
        f"MeshHTTPRoute backend {meshhttproute.ref_label(ref)} does not resolve; "
        "its share of the requests is answered 500"
        for ref in meshhttproute.unresolved_refs(rules, cluster_for)
    )
    return NetworkFilter(http_routes_filter(name, config), tuple(used.values()), warnings)


def shared_outbound_listener(
    state: MeshState, outbound: Outbound, backend: Backend
) -> listener_pb2.Listener:
    """`outbound_listener`, built once for every proxy with the same outbound (across states)."""
    key = (
        "outbound.listener",
        outbound.address,
        outbound.port,
        backend.cluster.name,
        backend.app_protocol,
        backend.display,
        backend.hashes,
    )
    return content_memo(state, key, lambda: outbound_listener(outbound, backend))


def outbound_listener(
    outbound: Outbound,
    backend: Backend,
    network_filter: listener_components_pb2.Filter | None = None,
) -> listener_pb2.Listener:
    name = names.outbound_listener(outbound.address, outbound.port)
    if network_filter is None:
        network_filter = outbound_network_filter(name, backend)
    return listener_pb2.Listener(
        name=name,
        address=socket(outbound.address, outbound.port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[network_filter])],
    )


def outbound_network_filter(name: str, backend: Backend) -> listener_components_pb2.Filter:
    """What an outbound does with a connection to `backend`: HTTP with retries, or TCP
    proxying; also used by the transparent proxy's filter chains (`translate.transparent`)."""
    cluster = backend.cluster.name
    if is_http(backend.app_protocol):
        return http_filter(
            name,
            name,
            cluster,
            virtual_host=backend.display,
            retry_policy=retry_policy(),
            hash_policy=route_hash_policies(backend.hashes),
        )
    return tcp_proxy_filter(
        name,
        cluster,
        max_connect_attempts=TCP_CONNECT_ATTEMPTS,
        hash_policy=tcp_hash_policies(backend.hashes),
    )


class _Binds:
    """Addresses bound per port; `collides` is `binds_collide` against all of them, in O(1)."""

    def __init__(self, binds: Iterable[tuple[str, int]] = ()) -> None:
        self._by_port: dict[int, set[str]] = {}
        for where in binds:
            self.add(where)

    def add(self, where: tuple[str, int]) -> None:
        self._by_port.setdefault(where[1], set()).add(where[0])

    def collides(self, where: tuple[str, int]) -> bool:
        addresses = self._by_port.get(where[1])
        if not addresses:
            return False
        return where[0] in addresses or where[0] in WILDCARDS or not addresses.isdisjoint(WILDCARDS)


OutboundSignature = tuple[tuple[object, ...], ...]


def _signature(outbounds: list[Outbound]) -> OutboundSignature:
    """Everything `resolve` and `outbound_listener` read from a proxy's outbounds, hashable."""
    out = []
    for o in outbounds:
        ref = o.backend_ref
        out.append(
            (
                o.address,
                o.port,
                tuple(sorted(o.tags.items())) if o.tags else None,
                None
                if ref is None
                else (
                    ref.kind,
                    ref.name,
                    ref.port,
                    tuple(sorted(ref.labels.items())) if ref.labels is not None else None,
                ),
            )
        )
    return tuple(out)


class _Signature:
    """`_signature` with its hash computed once (it is a memo key on every pass) and the
    outbounds' ports; one object per distinct list of outbounds (`_signature_of`)."""

    __slots__ = ("__weakref__", "_hash", "items", "ports")

    def __init__(self, items: OutboundSignature, ports: frozenset[int]) -> None:
        self.items = items
        self.ports = ports
        self._hash = hash(items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, _Signature):
            return NotImplemented
        return self._hash == other._hash and self.items == other.items


def _signature_of(state: MeshState, dp: Resource) -> tuple[_Signature, frozenset[int]]:
    """A Dataplane's outbounds' signature and ports, derived once per Dataplane object (the
    store hands out the same one until it changes), in the engine-owned caches. Sidecars
    mostly list the same outbounds: equal signatures are one shared object, not one per
    proxy (a list of 100 outbounds is ~20 KB of tuples)."""

    def build() -> _Signature:
        spec = dp.spec
        assert isinstance(spec, DataplaneSpec)
        outbounds = spec.networking.outbound
        items = _signature(outbounds)
        shared = state.caches.shared_signatures
        found = shared.get(items)
        if found is None:
            found = shared[items] = _Signature(items, frozenset(o.port for o in outbounds))
        return found  # type: ignore[no-any-return]

    memo = state.caches.outbound_signatures
    memo.limit(len(state.dataplanes))
    signature: _Signature = memo.get(dp, build)
    return signature, signature.ports


@dataclass(frozen=True)
class _Outbounds:
    """One list of outbounds, generated: shared by every proxy that has the same list."""

    resources: ProxyResources
    warnings: tuple[tuple[str, tuple[object, ...]], ...]  # (format, args) after the proxy key


class OutboundGenerator:
    """Outbound listeners of a Dataplane and the clusters (with endpoints) they route to.

    Proxies with the same outbounds (and no inbound on their ports) and the same
    MeshLoadBalancingStrategies get the same result, so it is computed once per state and the
    per-proxy work is copying references."""

    OWN_OUTPUT_IS_LOCAL = True  # see `generator.own_output_is_local`

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        spec = proxy.resource.spec
        assert isinstance(spec, DataplaneSpec)
        net = spec.networking
        if not net.outbound:
            return out
        signature, ports = _signature_of(state, proxy.resource)
        # Only an inbound on one of the outbounds' ports can collide with them.
        binds = tuple(
            sorted(
                {
                    (inbound.address or net.address, inbound.port)
                    for inbound in net.inbound
                    if not inbound.ignored and inbound.port in ports
                }
            )
        )
        policies = policies_for(state, proxy.resource)
        routes = meshhttproute.routes_for(state, proxy.resource)
        generated = state.memo(
            ("outbound.proxy", proxy.mesh, binds, signature, policies.key, routes.key),
            lambda: _generate(state, proxy.mesh, binds, net.outbound, policies, routes),
        )
        if state.caches.warnings.fresh(("outbound", proxy.key), generated.warnings):
            for fmt, args in generated.warnings:
                log.warning(fmt, proxy.key, *args)
        out.include(generated.resources)
        return out


def _generate(
    state: MeshState,
    mesh: str,
    binds: tuple[tuple[str, int], ...],
    outbounds: list[Outbound],
    policies: ProxyPolicies,
    routes: meshhttproute.ProxyRoutes = meshhttproute.NO_ROUTES,
) -> _Outbounds:
    out = ProxyResources()
    warnings: list[tuple[str, tuple[object, ...]]] = []
    bound = _Binds(binds)
    clusters: set[str] = set()
    for i, outbound in enumerate(outbounds):
        where = (outbound.address, outbound.port)
        if bound.collides(where):
            warnings.append(
                ("%s: outbound[%d] %s:%d collides with another listener; skipped", (i, *where))
            )
            continue
        backend = resolve(state, mesh, outbound, policies)
        if isinstance(backend, str):
            warnings.append(("%s: outbound[%d] skipped: %s", (i, backend)))
            continue
        bound.add(where)
        name = names.outbound_listener(*where)
        routed = routed_network_filter(state, mesh, name, backend, policies, routes)
        if routed.filter is not None:
            out.add(outbound_listener(outbound, backend, routed.filter))
        else:
            out.add(shared_outbound_listener(state, outbound, backend))
        warnings.extend(("%s: outbound[%d]: %s", (i, w)) for w in routed.warnings)
        for used in routed.backends:
            if used.cluster.name not in clusters:
                clusters.add(used.cluster.name)
                out.add(used.cluster)
                out.add(used.load_assignment)
    return _Outbounds(out, tuple(warnings))
