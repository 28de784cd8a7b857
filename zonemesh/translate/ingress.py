"""Zone ingress: the one door other zones use, routing by TLS SNI to this zone's instances.

One listener with `tls_inspector` and one filter chain per SNI: per port of every local
MeshService (`sni.msvc.<mesh>.<name>.<port>`) and of every MeshMultiZoneService
(`sni.mzsvc.<mesh>.<name>.<port>`; a named port puts its name there, `names.section_name`).
Each chain is a `tcp_proxy` to a cluster of this zone's healthy instances only. TLS is passed
through, never terminated: it runs end to end between the two sidecars. A cluster never holds
another zone's ingress, so traffic cannot loop between zones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.direct_response.v3 import config_pb2 as direct_response_pb2

from zonemesh.resources.base import Resource
from zonemesh.resources.ownership import display_name, is_local
from zonemesh.resources.types.meshservice import MeshServiceSpec
from zonemesh.resources.types.mmzs import MeshMultiZoneServiceSpec
from zonemesh.resources.types.zone_proxies import ZoneIngressSpec
from zonemesh.translate import names
from zonemesh.translate.builders import (
    eds_cluster,
    is_ip,
    packed,
    socket,
    tcp_proxy_filter,
    tls_inspector,
)
from zonemesh.translate.endpoints import (
    HostPort,
    local_instances,
    matched_mesh_services,
    mesh_service_port,
    plain_load_assignment,
)
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.resilience import apply_cluster_defaults
from zonemesh.translate.state import MeshState

log = logging.getLogger("zonemesh.translate")

DIRECT_RESPONSE = "envoy.filters.network.direct_response"


@dataclass(frozen=True)
class SniTarget:
    """One SNI a zone proxy routes, with the cluster (and endpoints) behind it."""

    sni: str
    cluster: cluster_pb2.Cluster
    load_assignment: endpoint_pb2.ClusterLoadAssignment


def meshes_of(state: MeshState) -> list[str]:
    found = set(state.meshes)
    found.update(k.mesh for k in state.mesh_services)
    found.update(k.mesh for k in state.mesh_multi_zone_services)
    return sorted(found)


def passthrough_cluster(name: str) -> cluster_pb2.Cluster:
    """Plain TCP to the hosts: the bytes are the callers' TLS, untouched."""
    cluster = eds_cluster(name)
    apply_cluster_defaults(cluster)
    return cluster


def _local_mesh_service_snis(state: MeshState, ms: Resource) -> Iterable[tuple[str, set[HostPort]]]:
    spec = ms.spec
    assert isinstance(spec, MeshServiceSpec)
    for port in spec.ports:
        sni = names.mesh_service_sni(ms.mesh, display_name(ms), port.port, port.name)
        yield sni, set(local_instances(state, ms, port))


def _mmzs_snis(state: MeshState, mmzs: Resource) -> Iterable[tuple[str, set[HostPort]]]:
    spec = mmzs.spec
    assert isinstance(spec, MeshMultiZoneServiceSpec)
    local = [ms for ms in matched_mesh_services(state, mmzs) if is_local(ms, state.zone)]
    for mmzs_port in spec.ports:
        endpoints: set[HostPort] = set()
        for ms in local:
            port = mesh_service_port(ms, mmzs_port)
            if port is not None:
                endpoints.update(local_instances(state, ms, port))
        yield names.mmzs_sni(mmzs.mesh, mmzs.name, mmzs_port.port, mmzs_port.name), endpoints


def ingress_targets(state: MeshState) -> list[SniTarget]:
    """Every SNI this zone's ingresses route, shared by all of them."""

    def build() -> list[SniTarget]:
        by_sni: dict[str, set[HostPort]] = {}
        for mesh in meshes_of(state):
            pairs: list[tuple[str, set[HostPort]]] = []
            for ms in state.mesh_services_in(mesh):
                if is_local(ms, state.zone):
                    pairs.extend(_local_mesh_service_snis(state, ms))
            for mmzs in state.mesh_multi_zone_services_in(mesh):
                pairs.extend(_mmzs_snis(state, mmzs))
            for sni, endpoints in pairs:
                if sni in by_sni:
                    log.warning("SNI %s claimed twice; keeping the first", sni)
                    continue
                by_sni[sni] = endpoints
        targets = []
        for sni in sorted(by_sni):
            name = names.ingress_cluster(sni)
            cla = plain_load_assignment(name, sorted(by_sni[sni]), state.zone)
            targets.append(SniTarget(sni, passthrough_cluster(name), cla))
        return targets

    return state.memo(("ingress.targets",), build)


def sni_listener(
    name: str, address: str, port: int, chains: Iterable[tuple[str, listener_components_pb2.Filter]]
) -> listener_pb2.Listener:
    """A `tls_inspector` listener with one passthrough chain per (SNI, network filter).

    A connection for any other SNI (or without TLS) meets the default chain, which closes it.
    That chain also keeps a listener with no SNI at all valid (Envoy refuses a listener
    without any filter chain).
    """
    listener = listener_pb2.Listener(
        name=name,
        address=socket(address, port),
        listener_filters=[tls_inspector()],
        default_filter_chain=listener_components_pb2.FilterChain(
            name="unknown-sni",
            filters=[
                listener_components_pb2.Filter(
                    name=DIRECT_RESPONSE, typed_config=packed(direct_response_pb2.Config())
                )
            ],
        ),
    )
    for sni, network_filter in chains:
        chain = listener.filter_chains.add(name=sni)
        chain.filter_chain_match.transport_protocol = "tls"
        chain.filter_chain_match.server_names.append(sni)
        chain.filters.append(network_filter)
    return listener


class IngressGenerator:
    """The listener, clusters and endpoints of a zone ingress of this zone."""

    OWN_OUTPUT_IS_LOCAL = True  # nothing for sidecars; zone proxies are always regenerated

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        spec = proxy.resource.spec
        assert isinstance(spec, ZoneIngressSpec)
        net = spec.networking
        if not is_ip(net.address):
            log.warning(
                "ZoneIngress %s: address %r is not an IP; no listener", proxy.name, net.address
            )
            return out
        targets = ingress_targets(state)
        for target in targets:
            out.add(target.cluster)
            out.add(target.load_assignment)
        name = names.ingress_listener(net.address, net.port)
        chains = [(t.sni, tcp_proxy_filter(f"{name}_{t.sni}", t.cluster.name)) for t in targets]
        out.add(sni_listener(name, net.address, net.port, chains))
        return out
