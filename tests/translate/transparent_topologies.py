"""Topologies with transparently proxied Dataplanes, seen from zone-1 (golden files and unit
tests of `zonemesh.translate.transparent`).

The MeshServices and MeshMultiZoneServices carry the status zone-1's control plane computes
(VIPs from 241/8 and 243/8, default hostnames), since that is what the VIP listeners and the
DNS table are made from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from translate_topologies import (
    LOCAL_ZONE,
    MESH,
    Topology,
    build,
    dataplane,
    inbound,
    mmzs_outbound,
)

from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire, resource_to_wire

REDIRECT = {"redirectPortInbound": 15006, "redirectPortOutbound": 15001}
VIPS = {
    ("MeshMultiZoneService", "echo"): ("243.0.0.1", ["echo.mzsvc.mesh.local"]),
    ("MeshService", "client"): ("241.0.0.1", ["client.svc.mesh.local"]),
    ("MeshService", "echo"): ("241.0.0.2", ["echo.svc.mesh.local"]),
    ("MeshService", "echo-zone-2"): ("241.0.0.3", ["echo.svc.zone-2.mesh.local"]),
}


def with_status(resource: Resource) -> Resource:
    """The resource with the VIP and hostnames zone-1 gave it (unchanged if it has none)."""
    entry = VIPS.get((resource.type, resource.name))
    if entry is None:
        return resource
    vip, hostnames = entry
    wire = resource_to_wire(resource)
    wire["status"] = {
        "vips": [{"ip": vip}],
        "addresses": [{"hostname": h, "origin": "HostnameGenerator"} for h in hostnames],
    }
    return resource_from_wire(wire, keep_status=True)


def transparent_dataplane(
    name: str,
    address: str,
    inbounds: list[dict[str, Any]],
    outbounds: list[dict[str, Any]] | None = None,
    **transparent: Any,
) -> Resource:
    plain = dataplane(name, address, inbounds, outbounds or [])
    wire = resource_to_wire(plain)
    wire["networking"]["transparentProxying"] = {**REDIRECT, **transparent}
    return resource_from_wire(wire)


def transparent(name: str, client: Mapping[str, Any] | None = None) -> Topology:
    """zone-1 with one echo instance (http 1027, tcp 1028), zone-2 serving echo too; the
    client and the echo instance transparently proxied. The client also keeps one explicit
    outbound to `echo:1027`: the VIP chain and the explicit listener share the cluster."""
    base = build(name, local_instances=1, remote={"zone-2": 1}, tcp=True)
    kept = [with_status(r) for r in base.resources if r.type != "Dataplane"]
    client = transparent_dataplane(
        "client",
        "127.0.1.10",
        [inbound("client", 20080, 8080, "http")],
        [mmzs_outbound("echo", 1027, 11027)],
        **(client or {}),
    )
    server = transparent_dataplane(
        f"echo-{LOCAL_ZONE}-1",
        "127.0.1.21",
        [inbound("echo", 21027, 1027, "http"), inbound("echo", 21028, 1028, "tcp")],
    )
    resources = [*kept, client, server]
    proxies = {"client": client.key, "server": server.key}
    return Topology(name, resources, proxies)


def transparent_topologies() -> list[Topology]:
    return [
        transparent("transparent-proxy"),
        transparent(
            "transparent-proxy-reachable-backends",
            {
                "reachableBackends": {
                    "refs": [
                        {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027},
                        {"kind": "MeshService", "labels": {"kuma.io/zone": "zone-2"}},
                    ]
                }
            },
        ),
    ]


__all__ = ["MESH", "transparent", "transparent_dataplane", "transparent_topologies"]
