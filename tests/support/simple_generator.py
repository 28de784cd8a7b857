"""`SimpleGenerator` (a test double for the xDS layer): inbound listeners for a Dataplane plus
one EDS cluster per MeshService.

Enough to carry traffic into an instance and to exercise the xDS server end to end: every
proxy of a mesh gets the same clusters and ClusterLoadAssignments for that mesh's
MeshServices, built once per state (see `MeshState.memo`), so one endpoint change reaches
every proxy with bytes serialized once. Zone proxies get nothing (an empty, valid set).
Only tests use it, so it lives with them: the control plane serves `translate.default`.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2

from zonemesh.resources.proxy_types import ProxyType
from zonemesh.resources.types.dataplane import DataplaneSpec, Inbound
from zonemesh.resources.types.meshservice import MeshServiceSpec
from zonemesh.translate.builders import is_ip
from zonemesh.translate.endpoints import local_instances
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.state import MeshState

HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})
H2_PROTOCOLS = frozenset({"http2", "grpc"})
CONNECT_TIMEOUT_S = 5
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class SimpleGenerator:
    """Inbounds and mesh-wide service clusters; see the module docstring."""

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        if proxy.proxy_type is not ProxyType.DATAPLANE:
            return out
        spec = proxy.resource.spec
        assert isinstance(spec, DataplaneSpec)
        networking = spec.networking
        clusters_added: set[str] = set()
        for inbound in networking.inbound:
            if inbound.ignored:
                continue
            address = inbound.address or networking.address
            cluster = _local_cluster(inbound, inbound.service_address or networking.address)
            if cluster.name not in clusters_added:
                out.add(cluster)
                clusters_added.add(cluster.name)
            out.add(_inbound_listener(address, inbound, cluster.name))
        for cluster, cla in mesh_service_clusters(state, proxy.mesh):
            out.add(cluster)
            out.add(cla)
        return out


def mesh_service_clusters(
    state: MeshState, mesh: str
) -> list[tuple[cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment]]:
    """One (EDS cluster, CLA) per MeshService port of a mesh; shared by all its proxies."""

    def build() -> list[tuple[cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment]]:
        pairs = []
        for ms in state.mesh_services_in(mesh):
            spec = ms.spec
            assert isinstance(spec, MeshServiceSpec)
            for port in spec.ports:
                name = f"{ms.name}_{port.port}"
                endpoints = local_instances(state, ms, port)
                pairs.append((_eds_cluster(name), _load_assignment(name, endpoints)))
        return pairs

    return state.memo(("simple.mesh_service_clusters", mesh), build)


def _socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _eds_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            )
        ),
    )


def _load_assignment(
    name: str, endpoints: list[tuple[str, int]]
) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=_socket(address, port))
        )
        for address, port in endpoints
    ]
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if lb_endpoints:
        cla.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints))
    return cla


def _local_cluster(inbound: Inbound, service_address: str) -> cluster_pb2.Cluster:
    """The cluster an inbound forwards to: the application next to the sidecar."""
    port = inbound.effective_service_port
    name = f"localhost:{service_address}:{port}"
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC
        if is_ip(service_address)
        else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        load_assignment=_load_assignment(name, [(service_address, port)]),
    )
    if inbound.protocol in H2_PROTOCOLS:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[_HTTP_OPTIONS_KEY].CopyFrom(_packed(options))
    return cluster


def _inbound_listener(address: str, inbound: Inbound, cluster: str) -> listener_pb2.Listener:
    name = f"inbound:{address}:{inbound.port}"
    stat_prefix = f"inbound_{address}_{inbound.port}".replace(".", "_").replace(":", "_")
    if inbound.protocol in HTTP_PROTOCOLS:
        manager = hcm_pb2.HttpConnectionManager(
            stat_prefix=stat_prefix,
            codec_type=hcm_pb2.HttpConnectionManager.AUTO,
            route_config=route_pb2.RouteConfiguration(
                name=name,
                virtual_hosts=[
                    route_components_pb2.VirtualHost(
                        name=inbound.service or name,
                        domains=["*"],
                        routes=[
                            route_components_pb2.Route(
                                match=route_components_pb2.RouteMatch(prefix="/"),
                                route=route_components_pb2.RouteAction(cluster=cluster),
                            )
                        ],
                    )
                ],
            ),
            http_filters=[
                hcm_pb2.HttpFilter(
                    name="envoy.filters.http.router", typed_config=_packed(router_pb2.Router())
                )
            ],
        )
        network_filter = listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=_packed(manager)
        )
    else:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)
        network_filter = listener_components_pb2.Filter(
            name="envoy.filters.network.tcp_proxy", typed_config=_packed(proxy)
        )
    return listener_pb2.Listener(
        name=name,
        address=_socket(address, inbound.port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[network_filter])],
    )
