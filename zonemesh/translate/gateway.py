"""Builtin gateway: the Envoy of a `gateway: {type: BUILTIN}` Dataplane, from its MeshGateway.

Per port of the bound MeshGateway (`resources.gateway_binding`), one listener
`<gateway>:<PROTOCOL>:<port>` on the Dataplane's address, Kuma's names:

- HTTP: an HTTP connection manager whose routes come over RDS as `<listener>:*`, one virtual
  host per listener hostname, routes from the MeshHTTPRoutes attached to the gateway
  (`translate.gateway_routes`); a host with no route answers 404, as Kuma's.
- HTTPS: the same behind TLS terminated with the listener's certificates (`gateway_tls`), one
  filter chain per hostname chosen by SNI, route configuration `<listener>:<hostname>`.
- TCP: tcp_proxy to the backends of the routes attached to the listener.

Backends are reached as sidecars reach them: the outbound clusters and endpoints of
`translate.outbound` (same names, locality, failover across zones, mTLS with the gateway's
own identity over the local SDS, MeshLoadBalancingStrategy resolved for the gateway
Dataplane). A listener that cannot be served (port taken, certificate missing or bad, no
backend) is left out with a log line naming why; the rest of the gateway keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2

from zonemesh.resources import labels
from zonemesh.resources.base import Resource
from zonemesh.resources.gateway_binding import PortGroup, bind, gateway_spec, plan_listeners
from zonemesh.resources.types.dataplane import BackendRef as OutboundRef
from zonemesh.resources.types.dataplane import Outbound
from zonemesh.resources.types.meshgateway import ANY_HOST, Listener
from zonemesh.resources.types.meshhttproute import BackendRef
from zonemesh.translate import gateway_routes
from zonemesh.translate.builders import (
    HCM,
    ads_source,
    packed,
    socket,
    stat_prefix,
    tcp_proxy_filter,
    tls_inspector,
    weighted_tcp_proxy_filter,
)
from zonemesh.translate.gateway_tls import (
    CertificateError,
    ServingCertificate,
    serving_certificate,
    terminating_tls,
    tls_secret,
)
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.outbound import Backend, resolve
from zonemesh.translate.policies.mlbs import (
    ProxyPolicies,
    RequestHash,
    policies_for,
    route_hash_policies,
    tcp_hash_policies,
)
from zonemesh.translate.resilience import TCP_CONNECT_ATTEMPTS
from zonemesh.translate.state import MeshState

log = logging.getLogger("zonemesh.translate")

SERVER_NAME = "Kuma Gateway"
NO_ROUTE_BODY = "This is a Kuma MeshGateway. No routes match this MeshGateway!\n"
BUFFER_LIMIT = 32 * 1024
REQUEST_HEADERS_TIMEOUT = duration_pb2.Duration(nanos=500_000_000)
STREAM_IDLE_TIMEOUT = duration_pb2.Duration(seconds=5)


def listener_name(gateway: str, protocol: str, port: int) -> str:
    return f"{gateway}:{protocol}:{port}"


def route_config_name(listener: str, hostname: str) -> str:
    return f"{listener}:{hostname}"


@dataclass
class Backends:
    """Resolves route backendRefs to the sidecar outbound clusters, keeping what it used."""

    state: MeshState
    mesh: str
    policies: ProxyPolicies
    used: dict[str, Backend] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)

    def cluster_for(self, ref: BackendRef) -> str | None:
        """The cluster of `ref`, or None (the route then answers 500: Kuma's unresolved
        backend) with the reason logged."""
        if ref.port is None and ref.kind == "MeshService" and ref.name:
            # A legacy ref: the `kuma.io/service` name; the service's single port.
            outbound = Outbound(port=1, tags={labels.SERVICE_TAG: ref.name})
        else:
            outbound = Outbound(
                port=ref.port or 1,
                backend_ref=OutboundRef(
                    kind=ref.kind, name=ref.name or "", port=ref.port, labels=ref.labels
                ),
            )
        backend = resolve(self.state, self.mesh, outbound, self.policies)
        if isinstance(backend, str):
            self.unresolved.append(backend)
            return None
        self.used.setdefault(backend.cluster.name, backend)
        return backend.cluster.name

    def backend(self, ref: BackendRef) -> Backend | None:
        cluster = self.cluster_for(ref)
        return self.used.get(cluster) if cluster is not None else None

    def hashes(self, refs: Sequence[BackendRef]) -> tuple[RequestHash, ...]:
        """The hashes the backends' strategies want, when they agree (else none: one route
        table serves them all)."""
        found = {b.hashes for b in (self.backend(r) for r in refs) if b is not None}
        return found.pop() if len(found) == 1 else ()

    def route_hashes(
        self, refs: Sequence[BackendRef]
    ) -> list[route_components_pb2.RouteAction.HashPolicy]:
        return route_hash_policies(self.hashes(refs))


class GatewayGenerator:
    """Listeners, routes, secrets and clusters of BUILTIN gateway Dataplanes (nothing else)."""

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        spec = gateway_spec(proxy.resource)
        if spec is None:  # the profile (`translate.profiles`) sends only builtin gateways here
            return out
        binding = bind(state.mesh_gateways.values(), proxy.resource)
        if binding.gateway is None:
            log.warning("%s: builtin gateway selected by no MeshGateway; no listener", proxy.key)
            return out
        for other in binding.passed_over:
            log.warning(
                "%s: MeshGateway %s selects it too; it serves %s only (Kuma's binding: best "
                "selector, then newest)",
                proxy.key,
                other.name,
                binding.gateway.name,
            )
        gateway = binding.gateway
        plan = plan_listeners(gateway, proxy.resource)
        for index, why in plan.left_out:
            log.warning(
                "%s: MeshGateway %s listener[%d] left out: %s", proxy.key, gateway.name, index, why
            )
        backends = Backends(state, proxy.mesh, policies_for(state, proxy.resource))
        secrets: dict[str, ServingCertificate] = {}
        build = _GatewayBuild(state, proxy, gateway, backends, secrets, out)
        for group in plan.groups:
            name = listener_name(gateway.name, group.protocol, group.port)
            chains = _CHAIN_BUILDERS[group.protocol](build, name, group)
            if chains:
                tls = group.protocol == "HTTPS"
                listener = _listener(name, spec.networking.address, group.port, chains, tls=tls)
                out.add(listener)
        for why in sorted(set(backends.unresolved)):
            log.warning(
                "%s: MeshGateway %s backend unresolved (answers 500): %s",
                proxy.key,
                gateway.name,
                why,
            )
        for backend in backends.used.values():
            out.add(backend.cluster)
            out.add(backend.load_assignment)
        for cert in secrets.values():
            out.add(tls_secret(cert))
        return out


@dataclass
class _GatewayBuild:
    """What every listener of one gateway proxy is built from, and where its resources go."""

    state: MeshState
    proxy: Proxy
    gateway: Resource
    backends: Backends
    secrets: dict[str, ServingCertificate]
    out: ProxyResources


FilterChains = list[listener_components_pb2.FilterChain]


def _http_chains(build: _GatewayBuild, name: str, group: PortGroup) -> FilterChains:
    route_name = route_config_name(name, ANY_HOST)
    listeners = [listener for _, listener in group.listeners]
    hosts = gateway_routes.http_virtual_hosts(
        build.state, build.proxy.resource, build.gateway, listeners, build.backends
    )
    build.out.add(route_configuration(route_name, hosts))
    return [listener_components_pb2.FilterChain(filters=[connection_manager(name, route_name)])]


def _https_chains(build: _GatewayBuild, name: str, group: PortGroup) -> FilterChains:
    chains = []
    for index, listener in sorted(
        group.listeners, key=lambda p: gateway_routes.host_order(p[1].host)
    ):
        certs = _certificates(build.state, build.gateway, index, listener, build.proxy)
        if certs is None:
            continue
        for cert in certs:
            build.secrets[cert.secret_name] = cert
        host = listener.host
        route_name = route_config_name(name, host)
        hosts = gateway_routes.http_virtual_hosts(
            build.state, build.proxy.resource, build.gateway, [listener], build.backends
        )
        build.out.add(route_configuration(route_name, hosts))
        chain = listener_components_pb2.FilterChain(
            filters=[connection_manager(name, route_name)],
            transport_socket=terminating_tls([c.secret_name for c in certs]),
        )
        if host != ANY_HOST:
            chain.filter_chain_match.server_names.append(host)
        chains.append(chain)
    if not chains:
        log.warning("%s: listener %s has no usable certificate; left out", build.proxy.key, name)
    return chains


def _tcp_chains(build: _GatewayBuild, name: str, group: PortGroup) -> FilterChains:
    backends = build.backends
    weighted = []
    refs = []
    for _, listener in group.listeners[:1]:  # validated: one TCP listener per port
        for ref, weight in gateway_routes.tcp_backends(
            build.state, build.proxy.resource, build.gateway, listener
        ):
            cluster = backends.cluster_for(ref)
            if cluster is not None and weight > 0:
                weighted.append((cluster, weight))
                refs.append(ref)
    if not weighted:
        log.warning(
            "%s: TCP listener %s has no resolvable backend; left out", build.proxy.key, name
        )
        return []
    if len(weighted) == 1:  # retry the connect on another host, as sidecar outbounds do
        proxy_filter = tcp_proxy_filter(
            name,
            weighted[0][0],
            max_connect_attempts=TCP_CONNECT_ATTEMPTS,
            hash_policy=tcp_hash_policies(backends.hashes(refs)),
        )
    else:
        proxy_filter = weighted_tcp_proxy_filter(name, weighted)
    return [listener_components_pb2.FilterChain(filters=[proxy_filter])]


# A port group's filter chains by protocol; a group without any gets no listener.
_CHAIN_BUILDERS = {"HTTP": _http_chains, "HTTPS": _https_chains, "TCP": _tcp_chains}


def _certificates(
    state: MeshState, gateway: Resource, index: int, listener: Listener, proxy: Proxy
) -> list[ServingCertificate] | None:
    assert listener.tls is not None  # validated for HTTPS
    certs = []
    for source in listener.tls.certificates:
        try:
            certs.append(serving_certificate(state, gateway.mesh, source))
        except CertificateError as e:
            log.warning(
                "%s: MeshGateway %s listener[%d] (%s) left out: certificate %s",
                proxy.key,
                gateway.name,
                index,
                listener.host,
                e,
            )
            return None
    return certs


def route_configuration(
    name: str, hosts: Sequence[gateway_routes.VirtualHostRoutes]
) -> route_pb2.RouteConfiguration:
    """One virtual host per hostname; a request no route matches answers 404 with Kuma's
    text (Kuma says it for a host without routes; zonemesh also after the last route, so an
    unmatched path is told apart from a 404 of the backend). Clusters are not validated: an
    unresolved backend answers 500, the rest keeps working."""
    config = route_pb2.RouteConfiguration(name=name)
    config.validate_clusters.value = False
    for host in hosts:
        vhost = route_components_pb2.VirtualHost(name=host.host, domains=[host.host])
        vhost.routes.extend(host.routes)
        vhost.routes.append(
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                direct_response=route_components_pb2.DirectResponseAction(
                    status=404, body=base_pb2.DataSource(inline_string=NO_ROUTE_BODY)
                ),
            )
        )
        config.virtual_hosts.append(vhost)
    return config


def connection_manager(listener: str, route_name: str) -> listener_components_pb2.Filter:
    """Kuma's gateway HCM settings: the client's address as the remote address, normalized
    paths, short header and idle timeouts against slow clients; routes over RDS."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(listener),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=route_name),
        server_name=SERVER_NAME,
        merge_slashes=True,
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.UNESCAPE_AND_REDIRECT,
        request_headers_timeout=REQUEST_HEADERS_TIMEOUT,
        stream_idle_timeout=STREAM_IDLE_TIMEOUT,
        strip_any_host_port=True,
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=packed(router_pb2.Router())
            )
        ],
    )
    manager.use_remote_address.value = True
    manager.normalize_path.value = True
    return listener_components_pb2.Filter(name=HCM, typed_config=packed(manager))


def _listener(
    name: str,
    address: str,
    port: int,
    chains: list[listener_components_pb2.FilterChain],
    *,
    tls: bool = False,
) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(
        name=name,
        address=socket(address, port),
        filter_chains=chains,
        listener_filters=[tls_inspector()] if tls else [],
    )
    listener.per_connection_buffer_limit_bytes.value = BUFFER_LIMIT
    return listener
