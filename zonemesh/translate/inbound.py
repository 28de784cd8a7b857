"""Inbound: one listener per Dataplane inbound, forwarding to the app next to the sidecar.

Callers from other zones always come over mutual TLS (the zone ingress routes by SNI, so TLS
runs end to end). When the mesh enables mTLS, TLS is all an inbound accepts. When it does not,
the listener sniffs the first bytes (`tls_inspector`): TLS goes to a chain that terminates it
with the proxy's identity and requires a client certificate from the mesh CA; anything else
goes to a plaintext chain for callers inside the zone.
"""

from __future__ import annotations

import functools
import logging

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from google.protobuf import duration_pb2

from zonemesh.resources.types.dataplane import DataplaneSpec, Inbound
from zonemesh.translate import names
from zonemesh.translate.builders import (
    CONNECT_TIMEOUT_S,
    H2_PROTOCOLS,
    http_filter,
    is_http,
    is_ip,
    set_http2_upstream,
    socket,
    static_load_assignment,
    tcp_proxy_filter,
    tls_inspector,
)
from zonemesh.translate.endpoints import mtls_enabled
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.state import MeshState, content_memo
from zonemesh.translate.tls import downstream_tls

log = logging.getLogger("zonemesh.translate")

# A TLS client speaks first (ClientHello), so a short wait tells TLS from plaintext; a
# server-first plaintext protocol continues as plaintext after it.
SNIFF_TIMEOUT_S = 1
WILDCARDS = frozenset({"0.0.0.0", "::"})


def binds_collide(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Two listeners cannot bind the same port on the same (or a wildcard) address."""
    if a[1] != b[1]:
        return False
    return a[0] == b[0] or a[0] in WILDCARDS or b[0] in WILDCARDS


def app_cluster(inbound: Inbound, service_address: str) -> cluster_pb2.Cluster:
    """The app behind an inbound, reached directly (plaintext, its own protocol)."""
    port = inbound.effective_service_port
    name = names.local_app_cluster(service_address, port)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC
        if is_ip(service_address)
        else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        load_assignment=static_load_assignment(name, [(service_address, port)]),
    )
    if inbound.protocol in H2_PROTOCOLS:
        set_http2_upstream(cluster)
    return cluster


def inbound_listener(
    mesh: str, address: str, inbound: Inbound, cluster: str, *, mtls: bool
) -> listener_pb2.Listener:
    name = names.inbound_listener(address, inbound.port)
    http = is_http(inbound.protocol)

    def network_filter() -> listener_components_pb2.Filter:
        if http:
            return http_filter(name, name, cluster, virtual_host=inbound.service)
        return tcp_proxy_filter(name, cluster)

    tls_chain = listener_components_pb2.FilterChain(
        name="inbound-mtls",
        filters=[network_filter()],
        transport_socket=downstream_tls(mesh, http=http),
    )
    listener = listener_pb2.Listener(
        name=name, address=socket(address, inbound.port), filter_chains=[tls_chain]
    )
    if not mtls:
        listener.filter_chains[0].filter_chain_match.transport_protocol = "tls"
        plain = listener.filter_chains.add(name="inbound-plaintext", filters=[network_filter()])
        plain.filter_chain_match.transport_protocol = "raw_buffer"
        listener.listener_filters.append(tls_inspector())
        listener.listener_filters_timeout.CopyFrom(duration_pb2.Duration(seconds=SNIFF_TIMEOUT_S))
        listener.continue_on_listener_filters_timeout = True
    return listener


class InboundGenerator:
    """Inbound listeners and the app clusters behind them, for a Dataplane."""

    OWN_OUTPUT_IS_LOCAL = True  # see `generator.own_output_is_local`

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        spec = proxy.resource.spec
        assert isinstance(spec, DataplaneSpec)
        net = spec.networking
        mtls = mtls_enabled(state, proxy.mesh)
        bound: list[tuple[str, int]] = []
        clusters: set[str] = set()
        for inbound in net.inbound:
            if inbound.ignored:
                continue
            address = inbound.address or net.address
            if not is_ip(address):
                log.warning("%s: inbound address %r is not an IP; skipped", proxy.key, address)
                continue
            where = (address, inbound.port)
            if any(binds_collide(where, other) for other in bound):
                log.warning("%s: inbound %s:%d collides; skipped", proxy.key, *where)
                continue
            bound.append(where)
            service_address = inbound.service_address or net.address
            # Reused across states while their inputs are equal: not re-encoded on every pass.
            cluster = content_memo(
                state,
                (
                    "inbound.app_cluster",
                    service_address,
                    inbound.effective_service_port,
                    inbound.protocol,
                ),
                functools.partial(app_cluster, inbound, service_address),
            )
            if cluster.name not in clusters:
                out.add(cluster)
                clusters.add(cluster.name)
            out.add(
                content_memo(
                    state,
                    (
                        "inbound.listener",
                        proxy.mesh,
                        address,
                        inbound.port,
                        inbound.protocol,
                        inbound.service,
                        cluster.name,
                        mtls,
                    ),
                    functools.partial(
                        inbound_listener, proxy.mesh, address, inbound, cluster.name, mtls=mtls
                    ),
                )
            )
        return out
