"""Transparent proxying: what a Dataplane with `networking.transparentProxying` gets besides
its explicit outbounds, so that its app can call any mesh service by hostname or VIP.

- A virtual outbound listener on `redirectPortOutbound` (15001), where the redirect rules of
  `zonemesh install transparent-proxy` send the app's outgoing TCP. Its `original_dst`
  listener filter restores the address the app dialled, and one filter chain per VIP:port
  (matched on that address) does what an explicit outbound to the same backend does: the same
  filter (HTTP or TCP by `appProtocol`), the same cluster and ClusterLoadAssignment, hence the
  same local preference and failover (`translate.outbound` builds them all). One listener with
  many chains rather than Kuma's listener per VIP: a change adds or removes chains, which
  Envoy applies in place. Connections to anything else pass through to where they were going
  (`outbound:passthrough:ipv4`), unless the Mesh turns `networking.outbound.passthrough` off.
- A virtual inbound listener on `redirectPortInbound` (15006) with `use_original_dst`: a
  redirected connection to an inbound's port is handed to that inbound's listener (mTLS and
  all); one to any other port goes on to the app, from 127.0.0.6 so the redirect rules let it.
- The VIP destinations: every MeshMultiZoneService port at its VIP, every local MeshService
  and every MeshService synced from another zone at its VIP, as this zone's status has them;
  `reachableBackends` (or the older `reachableServices`) narrows them to the refs, so a
  sidecar in a large mesh carries only what its app calls.
- The DNS table of the same destinations (hostname -> VIP), served by the proxy's own Envoy
  on an abstract unix socket (`cpdp.names.dns_table_socket`) as a direct response with an ETag;
  `dp run`'s resolver polls it (`zonemesh.dp.dns_source`). Everything stays on the one ADS
  stream, and a table change is a route change, not a UDP listener replaced and drained (as
  Envoy's own DNS filter would need).

IPv4 only: the VIP ranges are IPv4, and `ipFamilyMode: DualStack` adds no IPv6 listener.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2, wrappers_pb2

from zonemesh.cpdp.dns_table import DnsTable
from zonemesh.cpdp.names import DNS_TABLE_LISTENER, DNS_TABLE_PATH, dns_table_socket
from zonemesh.resources.base import Resource
from zonemesh.resources.ownership import display_name
from zonemesh.resources.registry import MESH_MULTI_ZONE_SERVICE, MESH_SERVICE
from zonemesh.resources.types.dataplane import (
    DataplaneSpec,
    Outbound,
    ReachableBackendRef,
    TransparentProxying,
)
from zonemesh.resources.types.meshservice import MeshServiceSpec, MeshServiceStatus
from zonemesh.resources.types.mmzs import MeshMultiZoneServiceSpec, MeshMultiZoneServiceStatus
from zonemesh.translate import names
from zonemesh.translate.builders import (
    CONNECT_TIMEOUT_S,
    HCM,
    packed,
    socket,
    stat_prefix,
    tcp_proxy_filter,
)
from zonemesh.translate.endpoints import mesh_spec
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.outbound import (
    Backend,
    mesh_service_backend,
    mmzs_backend,
    outbound_network_filter,
    resolve,
    routed_network_filter,
)
from zonemesh.translate.policies import meshhttproute
from zonemesh.translate.policies.mlbs import ProxyPolicies, policies_for
from zonemesh.translate.state import MeshState, content_memo

log = logging.getLogger("zonemesh.translate")

ANY_IPV4 = "0.0.0.0"
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"  # the redirect rules let traffic from it through
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
NAMESPACE_LABEL = "k8s.kuma.io/namespace"


@dataclass(frozen=True)
class VipDestination:
    """One port of a mesh service at its VIP, with the hostnames that name it."""

    kind: str  # MeshMultiZoneService | MeshService
    resource: Resource
    vip: str
    port: int
    hostnames: tuple[str, ...]

    @property
    def chain_name(self) -> str:
        return names.outbound_listener(self.vip, self.port)


# --- what a mesh offers ------------------------------------------------------------------------


def vip_destinations(state: MeshState, mesh: str) -> tuple[VipDestination, ...]:
    """Every VIP:port of `mesh` (built once per state), ordered by VIP then port."""
    return state.memo(("transparent.destinations", mesh), lambda: _destinations(state, mesh))


def _destinations(state: MeshState, mesh: str) -> tuple[VipDestination, ...]:
    out: list[VipDestination] = []
    for mmzs in state.mesh_multi_zone_services_in(mesh):
        spec, status = mmzs.spec, mmzs.status
        assert isinstance(spec, MeshMultiZoneServiceSpec)
        if not isinstance(status, MeshMultiZoneServiceStatus) or not status.vips:
            continue
        hostnames = tuple(a.hostname for a in status.addresses)
        for port in spec.ports:
            out.append(
                VipDestination(
                    MESH_MULTI_ZONE_SERVICE.name, mmzs, status.vips[0].ip, port.port, hostnames
                )
            )
    for ms in state.mesh_services_in(mesh):
        ms_spec, ms_status = ms.spec, ms.status
        assert isinstance(ms_spec, MeshServiceSpec)
        if not isinstance(ms_status, MeshServiceStatus) or not ms_status.vips:
            continue
        hostnames = tuple(a.hostname for a in ms_status.addresses)
        for ms_port in ms_spec.ports:
            out.append(
                VipDestination(MESH_SERVICE.name, ms, ms_status.vips[0].ip, ms_port.port, hostnames)
            )
    usable = [d for d in out if _is_ipv4(d.vip)]
    # One VIP:port, one chain: should two resources ever claim one, the first keeps it.
    seen: set[tuple[str, int]] = set()
    unique = []
    for d in sorted(usable, key=lambda d: (ipaddress.ip_address(d.vip), d.port, d.kind)):
        if (d.vip, d.port) not in seen:
            seen.add((d.vip, d.port))
            unique.append(d)
    return tuple(unique)


def _is_ipv4(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


# --- what one proxy may reach ------------------------------------------------------------------


def reachable(
    tp: TransparentProxying, destinations: Iterable[VipDestination], *, mesh_mode: str | None
) -> list[VipDestination]:
    """`reachableBackends` (else the legacy `reachableServices`) narrows the destinations;
    neither set means all of them, except under the Mesh's `meshServices.mode:
    ReachableBackends`, where only listed backends are reachable (Kuma's rule)."""
    refs = tp.reachable_backends.refs if tp.reachable_backends is not None else None
    if refs is not None:
        return [d for d in destinations if any(_matches(ref, d) for ref in refs)]
    if tp.reachable_services is not None:
        wanted = set(tp.reachable_services)
        return [d for d in destinations if display_name(d.resource) in wanted]
    if mesh_mode == "ReachableBackends":
        return []
    return list(destinations)


def _matches(ref: ReachableBackendRef, destination: VipDestination) -> bool:
    """A ref names a resource by name (its own, or its display name: the same name in
    every zone) and namespace, or selects it by labels; `port` narrows it to one port."""
    resource = destination.resource
    if ref.kind != destination.kind:
        return False
    if ref.port is not None and ref.port != destination.port:
        return False
    if ref.name and ref.name not in (resource.name, display_name(resource)):
        return False
    if ref.namespace and resource.labels.get(NAMESPACE_LABEL) != ref.namespace:
        return False
    return all(resource.labels.get(k) == v for k, v in (ref.labels or {}).items())


def backend_of(
    state: MeshState, destination: VipDestination, policies: ProxyPolicies
) -> Backend | None:
    if destination.kind == MESH_MULTI_ZONE_SERVICE.name:
        return mmzs_backend(state, destination.resource, destination.port, policies)
    return mesh_service_backend(state, destination.resource, destination.port, policies)


# --- Envoy messages ----------------------------------------------------------------------------


def vip_filter_chain(
    destination: VipDestination,
    backend: Backend,
    network_filter: listener_components_pb2.Filter | None = None,
) -> listener_components_pb2.FilterChain:
    name = destination.chain_name
    if network_filter is None:
        network_filter = outbound_network_filter(name, backend)
    chain = listener_components_pb2.FilterChain(name=name, filters=[network_filter])
    rng = chain.filter_chain_match.prefix_ranges.add(address_prefix=destination.vip)
    rng.prefix_len.value = 32
    chain.filter_chain_match.destination_port.value = destination.port
    return chain


def original_dst_cluster(name: str, source: str | None = None) -> cluster_pb2.Cluster:
    """Connects to the address a redirected connection was going to."""
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
    )
    if source is not None:
        cluster.upstream_bind_config.source_address.CopyFrom(
            address_pb2.SocketAddress(address=source, port_value=0)
        )
    return cluster


def virtual_outbound_listener(
    port: int, chains: list[listener_components_pb2.FilterChain], *, passthrough: bool
) -> listener_pb2.Listener:
    name = names.OUTBOUND_PASSTHROUGH
    listener = listener_pb2.Listener(
        name=name,
        address=socket(ANY_IPV4, port),
        listener_filters=[
            listener_components_pb2.ListenerFilter(
                name=ORIGINAL_DST_FILTER, typed_config=packed(original_dst_pb2.OriginalDst())
            )
        ],
        filter_chains=chains,
    )
    if passthrough:
        listener.default_filter_chain.CopyFrom(
            listener_components_pb2.FilterChain(
                name="passthrough", filters=[tcp_proxy_filter(name, names.OUTBOUND_PASSTHROUGH)]
            )
        )
    return listener


def virtual_inbound_listener(port: int) -> listener_pb2.Listener:
    name = names.INBOUND_PASSTHROUGH
    return listener_pb2.Listener(
        name=name,
        address=socket(ANY_IPV4, port),
        use_original_dst=wrappers_pb2.BoolValue(value=True),
        filter_chains=[
            listener_components_pb2.FilterChain(
                name="passthrough", filters=[tcp_proxy_filter(name, names.INBOUND_PASSTHROUGH)]
            )
        ],
    )


def dns_table(destinations: Iterable[VipDestination]) -> DnsTable:
    return DnsTable.from_pairs((h, d.vip) for d in destinations for h in d.hostnames)


def dns_table_listener(socket_path: str, table: DnsTable) -> listener_pb2.Listener:
    """`GET /dns` answers the table with its ETag; `If-None-Match` with that ETag gets 304."""
    body = table.encode()
    etag = table.etag()
    not_modified = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(
            prefix=DNS_TABLE_PATH,
            headers=[route_components_pb2.HeaderMatcher(name="if-none-match", exact_match=etag)],
        ),
        direct_response=route_components_pb2.DirectResponseAction(status=304),
    )
    table_route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=DNS_TABLE_PATH),
        direct_response=route_components_pb2.DirectResponseAction(
            status=200, body=base_pb2.DataSource(inline_string=body.decode())
        ),
        response_headers_to_add=[
            base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="etag", value=etag)),
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value="application/json")
            ),
        ],
    )
    route_config = route_pb2.RouteConfiguration(
        name=DNS_TABLE_LISTENER,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=DNS_TABLE_LISTENER, domains=["*"], routes=[not_modified, table_route]
            )
        ],
    )
    # Envoy caps direct response bodies at 4 KiB unless told otherwise.
    route_config.max_direct_response_body_size_bytes.value = max(4096, len(body))
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(DNS_TABLE_LISTENER),
        codec_type=hcm_pb2.HttpConnectionManager.HTTP1,
        route_config=route_config,
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=packed(router_pb2.Router())
            )
        ],
    )
    return listener_pb2.Listener(
        name=DNS_TABLE_LISTENER,
        address=address_pb2.Address(pipe=address_pb2.Pipe(path=socket_path)),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name=HCM, typed_config=packed(manager))]
            )
        ],
    )


# --- the generator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Generated:
    resources: ProxyResources
    table: DnsTable
    skipped: tuple[str, ...]


class TransparentProxyGenerator:
    """The virtual listeners, VIP filter chains, their clusters and the DNS table of a
    transparently proxied Dataplane. Proxies with the same reachable set, policies and
    explicit outbounds share one result per state; only the DNS listener is per proxy."""

    OWN_OUTPUT_IS_LOCAL = True  # see `generator.own_output_is_local`

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        spec = proxy.resource.spec
        assert isinstance(spec, DataplaneSpec)
        tp = spec.networking.transparent_proxying
        if tp is None or not (tp.outbound_enabled or tp.inbound_enabled):
            return out
        policies = policies_for(state, proxy.resource)
        routes = meshhttproute.routes_for(state, proxy.resource)
        # Clusters the explicit outbounds already carry (the same names): not added twice.
        explicit = _explicit_clusters(state, proxy.mesh, spec.networking.outbound, policies, routes)
        reach = (
            json.dumps(tp.reachable_backends.to_wire(), sort_keys=True)
            if tp.reachable_backends is not None
            else None,
            tuple(tp.reachable_services) if tp.reachable_services is not None else None,
        )
        key = (
            "transparent.proxy",
            proxy.mesh,
            tp.redirect_port_outbound,
            tp.redirect_port_inbound,
            reach,
            policies.key,
            routes.key,
            explicit,
        )
        generated = state.memo(
            key, lambda: _generate(state, proxy.mesh, tp, policies, explicit, routes)
        )
        if state.caches.warnings.fresh(("transparent", proxy.key), generated.skipped):
            for reason in generated.skipped:
                log.warning("%s: transparent proxy: %s", proxy.key, reason)
        out.include(generated.resources)
        if tp.outbound_enabled:
            path = dns_table_socket(proxy.mesh, proxy.name)
            out.add(
                content_memo(
                    state,
                    ("transparent.dns", path, generated.table.etag()),
                    lambda: dns_table_listener(path, generated.table),
                )
            )
        return out


def _explicit_clusters(
    state: MeshState,
    mesh: str,
    outbounds: Iterable[Outbound],
    policies: ProxyPolicies,
    routes: meshhttproute.ProxyRoutes,
) -> frozenset[str]:
    """The clusters the explicit outbounds carry, their MeshHTTPRoutes' backends included."""
    found: set[str] = set()
    for outbound in outbounds:
        backend = resolve(state, mesh, outbound, policies)
        if isinstance(backend, str):
            continue
        found.add(backend.cluster.name)
        if routes.policies:
            name = names.outbound_listener(outbound.address, outbound.port)
            routed = routed_network_filter(state, mesh, name, backend, policies, routes)
            found.update(b.cluster.name for b in routed.backends)
    return frozenset(found)


def _generate(
    state: MeshState,
    mesh: str,
    tp: TransparentProxying,
    policies: ProxyPolicies,
    explicit: frozenset[str],
    routes: meshhttproute.ProxyRoutes = meshhttproute.NO_ROUTES,
) -> _Generated:
    out = ProxyResources()
    skipped: list[str] = []
    served: list[VipDestination] = []
    if tp.outbound_enabled:
        assert tp.redirect_port_outbound is not None
        spec = mesh_spec(state, mesh)
        mode = spec.mesh_services.mode if spec.mesh_services is not None else None
        passthrough = bool(((spec.networking or {}).get("outbound") or {}).get("passthrough", True))
        chains = []
        clusters = set(explicit)
        for destination in reachable(tp, vip_destinations(state, mesh), mesh_mode=mode):
            backend = backend_of(state, destination, policies)
            if backend is None:
                skipped.append(f"{destination.chain_name}: no backend; skipped")
                continue
            routed = routed_network_filter(
                state, mesh, destination.chain_name, backend, policies, routes
            )
            chains.append(vip_filter_chain(destination, backend, routed.filter))
            skipped.extend(f"{destination.chain_name}: {w}" for w in routed.warnings)
            served.append(destination)
            for used in routed.backends:
                if used.cluster.name not in clusters:
                    clusters.add(used.cluster.name)
                    out.add(used.cluster)
                    out.add(used.load_assignment)
        out.add(
            virtual_outbound_listener(tp.redirect_port_outbound, chains, passthrough=passthrough)
        )
        if passthrough:
            out.add(original_dst_cluster(names.OUTBOUND_PASSTHROUGH))
    if tp.inbound_enabled:
        assert tp.redirect_port_inbound is not None
        out.add(virtual_inbound_listener(tp.redirect_port_inbound))
        out.add(original_dst_cluster(names.INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH_SOURCE))
    return _Generated(out, dns_table(served), tuple(skipped))
