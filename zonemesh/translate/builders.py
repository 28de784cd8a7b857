"""Small Envoy message builders shared by the sidecar, ingress and egress generators.

Each returns a fresh message; callers that share a message between proxies build it once per
state (`MeshState.memo`) and never mutate it afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import hash_policy_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

from zonemesh.resources.types.common import is_ip_address

HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})
H2_PROTOCOLS = frozenset({"http2", "grpc"})
CONNECT_TIMEOUT_S = 5
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"

_STAT_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def is_http(protocol: str) -> bool:
    return protocol in HTTP_PROTOCOLS


def is_ip(value: str | None) -> bool:
    """EDS and STATIC endpoints take IP addresses only."""
    if not value:
        return False
    return is_ip_address(value)


def stat_prefix(name: str) -> str:
    return _STAT_UNSAFE.sub("_", name)


def packed(message: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def ads_source() -> config_source_pb2.ConfigSource:
    """Everything dynamic comes over the one ADS stream."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
    )


def set_http2_upstream(cluster: cluster_pb2.Cluster) -> None:
    """Speak HTTP/2 to the cluster's hosts (proxy-to-proxy hops, h2/gRPC apps)."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(packed(options))


def lb_endpoint(
    address: str, port: int, *, weight: int = 0, metadata: base_pb2.Metadata | None = None
) -> endpoint_components_pb2.LbEndpoint:
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket(address, port))
    )
    if weight:
        endpoint.load_balancing_weight.value = weight
    if metadata is not None:
        endpoint.metadata.CopyFrom(metadata)
    return endpoint


def struct_metadata(filter_name: str, values: dict[str, str]) -> base_pb2.Metadata:
    value = struct_pb2.Struct()
    value.update(values)
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[filter_name].CopyFrom(value)
    return metadata


def static_load_assignment(
    name: str, endpoints: Iterable[tuple[str, int]]
) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality, unweighted: for the app next to a sidecar."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    lb_endpoints = [lb_endpoint(address, port) for address, port in endpoints]
    if lb_endpoints:
        cla.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints))
    return cla


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(
        name=TLS_INSPECTOR, typed_config=packed(tls_inspector_pb2.TlsInspector())
    )


def tcp_proxy_filter(
    prefix: str,
    cluster: str,
    *,
    max_connect_attempts: int = 0,
    hash_policy: Sequence[hash_policy_pb2.HashPolicy] = (),
) -> listener_components_pb2.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(
        stat_prefix=stat_prefix(prefix), cluster=cluster, hash_policy=list(hash_policy)
    )
    if max_connect_attempts:
        proxy.max_connect_attempts.value = max_connect_attempts
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=packed(proxy))


def weighted_tcp_proxy_filter(
    prefix: str, clusters: Sequence[tuple[str, int]]
) -> listener_components_pb2.Filter:
    """tcp_proxy spreading connections over several clusters by weight."""
    if len(clusters) == 1:
        return tcp_proxy_filter(prefix, clusters[0][0])
    proxy = tcp_proxy_pb2.TcpProxy(
        stat_prefix=stat_prefix(prefix),
        weighted_clusters=tcp_proxy_pb2.TcpProxy.WeightedCluster(
            clusters=[
                tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight)
                for name, weight in clusters
            ]
        ),
    )
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=packed(proxy))


def http_filter(
    prefix: str,
    route_name: str,
    cluster: str,
    *,
    virtual_host: str,
    retry_policy: route_components_pb2.RetryPolicy | None = None,
    hash_policy: Sequence[route_components_pb2.RouteAction.HashPolicy] = (),
) -> listener_components_pb2.Filter:
    """An HTTP connection manager with one inline route: everything to `cluster`."""
    action = route_components_pb2.RouteAction(cluster=cluster, hash_policy=list(hash_policy))
    if retry_policy is not None:
        action.retry_policy.CopyFrom(retry_policy)
    return http_routes_filter(
        prefix,
        route_pb2.RouteConfiguration(
            name=route_name,
            virtual_hosts=[
                route_components_pb2.VirtualHost(
                    name=virtual_host or route_name,
                    domains=["*"],
                    routes=[
                        route_components_pb2.Route(
                            match=route_components_pb2.RouteMatch(prefix="/"), route=action
                        )
                    ],
                )
            ],
        ),
    )


def http_routes_filter(
    prefix: str, route_config: route_pb2.RouteConfiguration
) -> listener_components_pb2.Filter:
    """An HTTP connection manager with an inline route configuration.

    The codec is AUTO, so the listener takes HTTP/1.1, h2c and (behind TLS) h2 alike.
    """
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(prefix),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_config,
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=packed(router_pb2.Router())
            )
        ],
    )
    return listener_components_pb2.Filter(name=HCM, typed_config=packed(manager))
