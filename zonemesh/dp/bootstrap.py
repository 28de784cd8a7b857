"""The Envoy v3 bootstrap a zonemesh data plane starts from.

Everything else Envoy needs (listeners, clusters, endpoints) comes over ADS from the zone
control plane, so the bootstrap only carries the proxy's identity (node id and metadata the
CP registers the proxy from), its dataplane token (the ADS stream's `initial_metadata`
`authorization`, as Kuma's bootstrap does), the admin listener, a static cluster to the CP,
and, for a sidecar, a static cluster to `dp run`'s local SDS socket (`cpdp.names.SDS_CLUSTER`),
where the TLS contexts take the workload's certificate and key from.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from zonemesh import __version__
from zonemesh.dp.cp_address import parse_cp_address, require_ca
from zonemesh.resources.proxy_types import PROXY_TYPES
from zonemesh.tls.address import GrpcAddress

__all__ = ["parse_cp_address", "render_bootstrap"]
from zonemesh.cpdp.names import SDS_CLUSTER

ADS_CLUSTER = "ads_cluster"
# Envoy's node.cluster for zone proxies, which have no inbound to name a service after.
_ZONE_PROXY_SERVICE = {"ingress": "zone-ingress", "egress": "zone-egress"}


def node_id(resource: dict[str, Any], proxy_type: str) -> str:
    """`<mesh>.<name>`; zone proxies are global-scoped, so they use "default" unless given."""
    name = resource.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("name: cannot be empty")
    mesh = resource.get("mesh") or ("default" if proxy_type != "dataplane" else "")
    if not isinstance(mesh, str) or not mesh:
        raise ValueError("mesh: cannot be empty")
    return f"{mesh}.{name}"


def node_cluster(resource: dict[str, Any], proxy_type: str) -> str:
    """The first inbound's `kuma.io/service` (a gateway's own), Envoy's node.cluster, as Kuma."""
    if proxy_type in _ZONE_PROXY_SERVICE:
        return _ZONE_PROXY_SERVICE[proxy_type]
    networking = resource.get("networking") or {}
    gateway_service = ((networking.get("gateway") or {}).get("tags") or {}).get("kuma.io/service")
    if gateway_service:
        return str(gateway_service)
    for inbound in networking.get("inbound") or []:
        service = (inbound.get("tags") or {}).get("kuma.io/service")
        if service:
            return str(service)
    return str(resource.get("name", ""))


def render_bootstrap(
    resource: dict[str, Any],
    proxy_type: str,
    cp_address: str,
    admin_port: int,
    zone: str | None = None,
    delta: bool = True,
    envoy_version: str = "",
    ca_file: str | Path | None = None,
    token: str | None = None,
    sds_socket: str | None = None,
) -> dict[str, Any]:
    """Envoy's bootstrap (JSON form) for the given Dataplane/ZoneIngress/ZoneEgress wire form.

    `admin_port` 0 lets the kernel pick; `EnvoyProcess` reads the chosen port back.
    `grpcs://` needs `ca_file`: Envoy's ADS connection then verifies the CP against it.
    `token`: the dataplane token Envoy presents on ADS; `sds_socket`: the local SDS server's
    Unix socket (sidecars; zone proxies pass TLS through and need none).
    """
    if proxy_type not in PROXY_TYPES:
        raise ValueError(f"proxy type must be one of: {', '.join(PROXY_TYPES)}")
    if not 0 <= admin_port <= 65535:
        raise ValueError(f"admin port {admin_port} out of range")
    address = parse_cp_address(cp_address)
    require_ca(address, ca_file)

    version: dict[str, Any] = {"dp": {"product": "zonemesh", "version": __version__}}
    if envoy_version:
        version["envoy"] = {"version": envoy_version}
    node: dict[str, Any] = {
        "id": node_id(resource, proxy_type),
        "cluster": node_cluster(resource, proxy_type),
        "metadata": {
            "dataplane.proxyType": proxy_type,
            "dataplane.resource": json.dumps(resource, separators=(",", ":"), sort_keys=True),
            "dataplane.admin.address": "127.0.0.1",
            "dataplane.admin.port": str(admin_port),
            "version": version,
        },
    }
    if zone:
        node["locality"] = {"zone": zone}
    ads_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": ADS_CLUSTER}}
    if token:
        ads_service["initial_metadata"] = [{"key": "authorization", "value": token}]
    clusters = [_ads_cluster(address, ca_file if address.tls else None)]
    if sds_socket:
        clusters.append(sds_cluster(sds_socket))

    return {
        "node": node,
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [ads_service],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": clusters},
        "stats_config": {"use_all_default_tags": True},
        "overload_manager": _overload_manager(),
        # An admin layer lets operators flip runtime flags through `/runtime_modify`.
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
    }


def _ads_cluster(address: GrpcAddress, ca_file: str | Path | None) -> dict[str, Any]:
    """HTTP/2 to the CP, one endpoint per address; STATIC for IPs, STRICT_DNS with a name;
    keepalives detect a dead CP; TLS verifying the CP when `ca_file` is given."""
    discovery = "STATIC" if all(e.is_ip for e in address.endpoints) else "STRICT_DNS"
    cluster: dict[str, Any] = {
        "name": ADS_CLUSTER,
        "type": discovery,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": e.host, "port_value": e.port}
                                }
                            }
                        }
                        for e in address.endpoints
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "10s"}
                    }
                },
            }
        },
        "upstream_connection_options": {
            "tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 10, "keepalive_interval": 5}
        },
        # The ADS stream is one long request: never trip the default circuit breakers.
        "circuit_breakers": {
            "thresholds": [
                {"priority": "DEFAULT", "max_connections": 1024, "max_requests": 1024},
                {"priority": "HIGH", "max_connections": 1024, "max_requests": 1024},
            ]
        },
    }
    if discovery == "STRICT_DNS":
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if ca_file is not None:
        cluster["transport_socket"] = _ads_tls(address, ca_file)
    return cluster


def _ads_tls(address: GrpcAddress, ca_file: str | Path) -> dict[str, Any]:
    """Trust only the given CA, and only a certificate naming a host we dial: an IP SAN for
    an IP, a DNS SAN for a name (several addresses: any of them, as one CP certificate
    serves every replica). SNI is the first name dialled; an IP is never sent as SNI."""
    sans = [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": str(ipaddress.ip_address(e.host))}}
        if e.is_ip
        else {"san_type": "DNS", "matcher": {"exact": e.host}}
        for e in address.endpoints
    ]
    unique = [s for i, s in enumerate(sans) if s not in sans[:i]]
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "validation_context": {
                "trusted_ca": {"filename": str(Path(ca_file).expanduser().resolve())},
                "match_typed_subject_alt_names": unique,
            },
        },
    }
    names = [e.host for e in address.endpoints if not e.is_ip]
    if names:
        context["sni"] = names[0]
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def sds_cluster(socket_path: str) -> dict[str, Any]:
    """HTTP/2 over the Unix socket of `dp run`'s SDS server."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def _overload_manager() -> dict[str, Any]:
    """A cap on downstream connections, so a connection flood cannot exhaust the sidecar."""
    return {
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                    "downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 50000,
                },
            }
        ]
    }
