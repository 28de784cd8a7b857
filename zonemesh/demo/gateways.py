"""The edge gateway of the disaster-recovery demo, as Kuma users write it (Universal YAML).

Two kinds, as in Kuma: `builtin` (below) and `delegated`, a Dataplane whose outbound to the
MMZS listens where the gateway would (no path routing; it runs without MeshGateway support).

One `MeshGateway` and one `MeshHTTPRoute`, both on global (they sync to every zone), and in
each zone a builtin gateway instance: a Dataplane with `networking.gateway.type: BUILTIN`
that `zonemesh dp run` runs as the gateway's Envoy. The route sends `/echo` to the `echo`
MeshMultiZoneService: the local zone's instances first, another zone's through its ingress
when they fail, the same as a sidecar's outbound (the seed's `HTTPRoute` to `echo-mmzs-service`).
"""

from __future__ import annotations

from typing import Any

GATEWAY = "edge-gateway"  # the MeshGateway's name and its instances' kuma.io/service
ROUTE = "edge-gateway-echo"
ROUTE_PREFIX = "/echo"


def mesh_gateway(mesh: str, port: int) -> dict[str, Any]:
    """The gateway: one plain HTTP listener, any hostname, on `port` of every instance."""
    return {
        "type": "MeshGateway",
        "mesh": mesh,
        "name": GATEWAY,
        "selectors": [{"match": {"kuma.io/service": GATEWAY}}],
        "conf": {"listeners": [{"port": port, "protocol": "HTTP"}]},
    }


def echo_route(mesh: str, mmzs: str, port: int) -> dict[str, Any]:
    """`PathPrefix /echo` on the gateway -> the MeshMultiZoneService `mmzs`, port `port`."""
    return {
        "type": "MeshHTTPRoute",
        "mesh": mesh,
        "name": ROUTE,
        "spec": {
            "targetRef": {"kind": "MeshGateway", "name": GATEWAY},
            "to": [
                {
                    "targetRef": {"kind": "Mesh"},
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": ROUTE_PREFIX}}],
                            "default": {
                                "backendRefs": [
                                    {"kind": "MeshMultiZoneService", "name": mmzs, "port": port}
                                ]
                            },
                        }
                    ],
                }
            ],
        },
    }


def gateway_dataplane(mesh: str, name: str, address: str) -> dict[str, Any]:
    """A builtin gateway instance: no inbounds, the listener comes from the MeshGateway."""
    return {
        "type": "Dataplane",
        "mesh": mesh,
        "name": name,
        "networking": {
            "address": address,
            "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": GATEWAY}},
        },
    }


def delegated_gateway_dataplane(
    mesh: str, name: str, address: str, port: int, mmzs: str, mmzs_port: int
) -> dict[str, Any]:
    """The same gateway as Kuma's other kind: a proxy of one's own (the seed's Kong Gateway)
    in front of the instance's data plane, which gives it an outbound to the MMZS. The
    outbound listens on the gateway's address and port and sends every path to `mmzs`."""
    return {
        "type": "Dataplane",
        "mesh": mesh,
        "name": name,
        "networking": {
            "address": address,
            "gateway": {"type": "DELEGATED", "tags": {"kuma.io/service": GATEWAY}},
            "outbound": [
                {
                    "address": address,
                    "port": port,
                    "backendRef": {"kind": "MeshMultiZoneService", "name": mmzs, "port": mmzs_port},
                }
            ],
        },
    }


def api_path(mesh: str, doc: dict[str, Any]) -> str:
    """Where `doc` lives in the HTTP API (Kuma's plural of its type)."""
    plural = {"MeshGateway": "meshgateways", "MeshHTTPRoute": "meshhttproutes"}[doc["type"]]
    return f"/meshes/{mesh}/{plural}/{doc['name']}"
