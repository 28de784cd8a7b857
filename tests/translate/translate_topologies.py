"""Topologies for translation tests, built as `MeshState`s from Kuma Universal documents.

Everything is seen from zone-1's control plane. Names and addresses are fixed so that the
generated configuration, and the golden files made from it, are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.proxy_types import ProxyType
from zonemesh.translate.generator import Proxy
from zonemesh.translate.state import HealthSnapshot, MeshState

LOCAL_ZONE = "zone-1"
MESH = "default"
ZONE_INDEX = {"zone-1": 1, "zone-2": 2, "zone-3": 3, "zone-4": 4}


def mesh(*, mtls: bool = False, zone_egress: bool = False) -> Resource:
    doc: dict[str, Any] = {"type": "Mesh", "name": MESH}
    if mtls:
        doc["mtls"] = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}
    if zone_egress:
        doc["routing"] = {"zoneEgress": True}
    return resource_from_wire(doc)


def dataplane(
    name: str,
    address: str,
    inbounds: Iterable[dict[str, Any]] = (),
    outbounds: Iterable[dict[str, Any]] = (),
) -> Resource:
    return resource_from_wire(
        {
            "type": "Dataplane",
            "mesh": MESH,
            "name": name,
            "labels": {"kuma.io/origin": "zone", "kuma.io/zone": LOCAL_ZONE},
            "networking": {
                "address": address,
                "inbound": list(inbounds),
                "outbound": list(outbounds),
            },
        }
    )


def inbound(service: str, port: int, service_port: int, protocol: str = "http") -> dict[str, Any]:
    return {
        "port": port,
        "servicePort": service_port,
        "tags": {"kuma.io/service": service, "kuma.io/protocol": protocol},
    }


def mmzs_outbound(name: str, port: int, listen: int, address: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "port": listen,
        "address": address,
        "backendRef": {"kind": "MeshMultiZoneService", "name": name, "port": port},
    }


def ms_outbound(name: str, port: int, listen: int) -> dict[str, Any]:
    return {"port": listen, "backendRef": {"kind": "MeshService", "name": name, "port": port}}


def mesh_service(
    name: str,
    zone: str,
    ports: Iterable[tuple[int, int, str]],
    *,
    available: bool = True,
    identity: str | None = None,
) -> Resource:
    """A MeshService as zone-1 stores it: generated locally, or synced from another zone."""
    local = zone == LOCAL_ZONE
    labels = {
        "kuma.io/display-name": name,
        "kuma.io/zone": zone,
        "kuma.io/mesh": MESH,
        "kuma.io/origin": "zone" if local else "global",
    }
    if local:
        labels["zonemesh.io/generated-by"] = "meshservice-generator"
    return resource_from_wire(
        {
            "type": "MeshService",
            "mesh": MESH,
            "name": name if local else f"{name}-{zone}",
            "labels": labels,
            "spec": {
                "selector": {"dataplaneTags": {"kuma.io/service": name}},
                "ports": [
                    {"port": p, "targetPort": t, "appProtocol": proto} for p, t, proto in ports
                ],
                "identities": [{"type": "ServiceTag", "value": identity or name}],
                "state": "Available" if available else "Unavailable",
            },
        }
    )


def mmzs(
    name: str,
    ports: Iterable[tuple[int, str]],
    match: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Resource:
    return resource_from_wire(
        {
            "type": "MeshMultiZoneService",
            "mesh": MESH,
            "name": name,
            "labels": {"kuma.io/origin": "global", **(labels or {})},
            "spec": {
                "selector": {
                    "meshService": {"matchLabels": {"kuma.io/display-name": match or name}}
                },
                "ports": [{"port": p, "appProtocol": proto} for p, proto in ports],
            },
        }
    )


def zone_ingress(
    zone: str, *, advertised: bool = True, services: Mapping[str, int] | None = None
) -> Resource:
    """The zone's ingress: 127.0.<zone>.100:10001, advertised the same when `advertised`."""
    address = f"127.0.{ZONE_INDEX[zone]}.100"
    networking: dict[str, Any] = {"address": address, "port": 10001}
    if advertised:
        networking.update(advertisedAddress=address, advertisedPort=10001)
    doc: dict[str, Any] = {
        "type": "ZoneIngress",
        "name": f"ingress-{zone}",
        "labels": {
            "kuma.io/origin": "zone" if zone == LOCAL_ZONE else "global",
            "kuma.io/zone": zone,
        },
        "zone": zone,
        "networking": networking,
    }
    if services:
        doc["availableServices"] = [
            {"mesh": MESH, "tags": {"kuma.io/service": s, "kuma.io/zone": zone}, "instances": n}
            for s, n in sorted(services.items())
        ]
    return resource_from_wire(doc)


def zone_egress(zone: str = LOCAL_ZONE) -> Resource:
    return resource_from_wire(
        {
            "type": "ZoneEgress",
            "name": f"egress-{zone}",
            "labels": {"kuma.io/origin": "zone", "kuma.io/zone": zone},
            "zone": zone,
            "networking": {"address": f"127.0.{ZONE_INDEX[zone]}.101", "port": 10002},
        }
    )


@dataclass
class Topology:
    """Resources of zone-1's view, and the proxies whose configuration the tests look at."""

    name: str
    resources: list[Resource]
    proxies: dict[str, ResourceKey] = field(default_factory=dict)
    health: dict[ResourceKey, HealthSnapshot] = field(default_factory=dict)

    def state(self, zone: str = LOCAL_ZONE) -> MeshState:
        by_type: dict[str, dict[ResourceKey, Resource]] = {}
        meshes: dict[str, Resource] = {}
        for r in self.resources:
            if r.type == "Mesh":
                meshes[r.name] = r
            else:
                by_type.setdefault(r.type, {})[r.key] = r
        return MeshState(
            version=1,
            zone=zone,
            meshes=meshes,
            dataplanes=by_type.get("Dataplane", {}),
            mesh_services=by_type.get("MeshService", {}),
            mesh_multi_zone_services=by_type.get("MeshMultiZoneService", {}),
            zone_ingresses=by_type.get("ZoneIngress", {}),
            zone_egresses=by_type.get("ZoneEgress", {}),
            mesh_load_balancing_strategies=by_type.get("MeshLoadBalancingStrategy", {}),
            health=dict(self.health),
            mesh_gateways=by_type.get("MeshGateway", {}),
            gateway_secrets=by_type.get("Secret", {}),
            mesh_http_routes=by_type.get("MeshHTTPRoute", {}),
        )

    def proxy(self, role: str, state: MeshState | None = None) -> Proxy:
        key = self.proxies[role]
        state = state or self.state()
        resource = state.proxy_resource(key)
        assert resource is not None, key
        kind = {
            "Dataplane": ProxyType.DATAPLANE,
            "ZoneIngress": ProxyType.INGRESS,
            "ZoneEgress": ProxyType.EGRESS,
        }[key.type]
        return Proxy(key=key, proxy_type=kind, resource=resource)


ECHO_HTTP = (1027, 21027, "http")
ECHO_TCP = (1028, 21028, "tcp")


def _server(name: str, address: str, tcp: bool = False) -> Resource:
    inbounds = [inbound("echo", 21027, 1027, "http")]
    if tcp:
        inbounds.append(inbound("echo", 21028, 1028, "tcp"))
    return dataplane(name, address, inbounds)


def _client(tcp: bool = False) -> Resource:
    outbounds = [mmzs_outbound("echo", 1027, 11027), ms_outbound("echo", 1027, 12027)]
    if tcp:
        outbounds.append(mmzs_outbound("echo", 1028, 11028))
    return dataplane("client", "127.0.1.10", [inbound("client", 20080, 8080, "http")], outbounds)


def build(
    name: str,
    *,
    local_instances: int,
    remote: Mapping[str, int] | None = None,
    unavailable: Iterable[str] = (),
    mtls: bool = False,
    tcp: bool = False,
    egress: bool = False,
    mmzs_labels: Mapping[str, str] | None = None,
) -> Topology:
    """zone-1 with `local_instances` echo servers, plus remote zones with their counts."""
    ports = [ECHO_HTTP, ECHO_TCP] if tcp else [ECHO_HTTP]
    resources = [mesh(mtls=mtls, zone_egress=egress), _client(tcp)]
    proxies: dict[str, ResourceKey] = {}
    client = resources[1]
    proxies["client"] = client.key
    for i in range(local_instances):
        server = _server(f"echo-{LOCAL_ZONE}-{i + 1}", f"127.0.1.{21 + i}", tcp)
        resources.append(server)
        proxies.setdefault("server", server.key)
    resources.append(mesh_service("client", LOCAL_ZONE, [(8080, 20080, "http")]))
    if local_instances:
        resources.append(mesh_service("echo", LOCAL_ZONE, ports))
    local_ingress = zone_ingress(
        LOCAL_ZONE, services={"echo": local_instances} if local_instances else None
    )
    resources.append(local_ingress)
    proxies["ingress"] = local_ingress.key
    for zone, count in sorted((remote or {}).items()):
        resources.append(mesh_service("echo", zone, ports, available=zone not in set(unavailable)))
        resources.append(zone_ingress(zone, services={"echo": count}))
    echo_ports = [(p, proto) for p, _, proto in ports]
    resources.append(mmzs("echo", echo_ports, labels=mmzs_labels))
    if egress:
        egress_resource = zone_egress()
        resources.append(egress_resource)
        proxies["egress"] = egress_resource.key
    return Topology(name, resources, proxies)


def empty_zone() -> Topology:
    """Only a zone ingress: nothing to route, yet a listener Envoy accepts."""
    ingress = zone_ingress(LOCAL_ZONE)
    return Topology("empty-zone", [mesh(), ingress], {"ingress": ingress.key})


# --- MeshLoadBalancingStrategy ----------------------------------------------------------------


def mlbs(
    name: str,
    to: list[dict[str, Any]],
    target_ref: dict[str, Any] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
) -> Resource:
    spec: dict[str, Any] = {"to": to}
    if target_ref is not None:
        spec["targetRef"] = target_ref
    return resource_from_wire(
        {
            "type": "MeshLoadBalancingStrategy",
            "mesh": MESH,
            "name": name,
            "labels": dict(labels or {}),
            "spec": spec,
        }
    )


def to_mmzs(default: dict[str, Any], name: str = "echo", **ref: Any) -> dict[str, Any]:
    return {"targetRef": {"kind": "MeshMultiZoneService", "name": name, **ref}, "default": default}


def with_policies(topology: Topology, *policies: Resource, client_only: bool = True) -> Topology:
    """The topology plus policies; only the client's configuration is golden-tested."""
    proxies = {"client": topology.proxies["client"]} if client_only else topology.proxies
    return Topology(topology.name, [*topology.resources, *policies], proxies, topology.health)


AFFINITY_CLIENT_TAGS = {"k8s.io/node": "node-1", "k8s.io/az": "az-1", "k8s.io/region": "r-1"}


def affinity_topology(name: str) -> Topology:
    """zone-1's echo instances spread over nodes and zones of one region, a client on node-1,
    and zone-2 serving echo too."""
    placements = [
        ("echo-node-1", {"k8s.io/node": "node-1", "k8s.io/az": "az-1"}),
        ("echo-node-2", {"k8s.io/node": "node-2", "k8s.io/az": "az-1"}),
        ("echo-az-2", {"k8s.io/node": "node-3", "k8s.io/az": "az-2", "k8s.io/region": "r-1"}),
        ("echo-elsewhere", {"k8s.io/node": "node-4", "k8s.io/az": "az-9"}),
    ]
    base = build(name, local_instances=0, remote={"zone-2": 1})
    resources = [r for r in base.resources if r.type != "Dataplane"]
    for i, (instance, tags) in enumerate(placements):
        server = inbound("echo", 21027, 1027, "http")
        server["tags"] = {**server["tags"], **tags}
        resources.append(dataplane(instance, f"127.0.1.{21 + i}", [server]))
    client_inbound = inbound("client", 20080, 8080, "http")
    client_inbound["tags"] = {**client_inbound["tags"], **AFFINITY_CLIENT_TAGS}
    client = dataplane(
        "client",
        "127.0.1.10",
        [client_inbound],
        [mmzs_outbound("echo", 1027, 11027), ms_outbound("echo", 1027, 12027)],
    )
    resources.append(client)
    resources.append(mesh_service("echo", LOCAL_ZONE, [ECHO_HTTP]))
    return Topology(name, resources, {"client": client.key})


AFFINITY_TAGS = [{"key": "k8s.io/node"}, {"key": "k8s.io/az"}, {"key": "k8s.io/region"}]


def mlbs_topologies() -> list[Topology]:
    """One per MeshLoadBalancingStrategy rule, each seen by the client in zone-1."""
    three = {"zone-2": 2, "zone-3": 1}
    four = {"zone-2": 1, "zone-3": 1, "zone-4": 1}
    tcp = dict(local_instances=1, remote={"zone-2": 1}, tcp=True)
    hashes = [
        {"type": "Header", "header": {"name": "x-user"}, "terminal": True},
        {"type": "Cookie", "cookie": {"name": "session", "ttl": "1h", "path": "/"}},
        {"type": "QueryParameter", "queryParameter": {"name": "user"}},
        {"type": "FilterState", "filterState": {"key": "io.zonemesh.key"}},
        {"type": "Connection", "connection": {"sourceIP": True}},
    ]
    return [
        with_policies(
            build("mlbs-disabled", local_instances=1, remote=three),
            mlbs("flat", [to_mmzs({"localityAwareness": {"disabled": True}})]),
        ),
        with_policies(
            affinity_topology("mlbs-affinity-default-weights"),
            mlbs(
                "affinity",
                [
                    to_mmzs(
                        {
                            "localityAwareness": {
                                "localZone": {"affinityTags": AFFINITY_TAGS},
                                "crossZone": {"failover": [{"to": {"type": "Any"}}]},
                            }
                        }
                    )
                ],
            ),
        ),
        with_policies(
            affinity_topology("mlbs-affinity-explicit-weights-no-cross-zone"),
            mlbs(
                "affinity",
                [
                    to_mmzs(
                        {
                            "localityAwareness": {
                                "localZone": {
                                    "affinityTags": [
                                        {"key": "k8s.io/node", "weight": 70},
                                        {"key": "k8s.io/az", "weight": 20},
                                        {"key": "k8s.io/region", "weight": 10},
                                    ]
                                }
                            }
                        }
                    )
                ],
            ),
        ),
        with_policies(
            build("mlbs-failover-rules", local_instances=1, remote=four),
            mlbs(
                "failover",
                [
                    to_mmzs(
                        {
                            "localityAwareness": {
                                "crossZone": {
                                    "failover": [
                                        {
                                            "from": {"zones": ["zone-9"]},
                                            "to": {"type": "Only", "zones": ["zone-4"]},
                                        },
                                        {"to": {"type": "Only", "zones": ["zone-3"]}},
                                        {
                                            "to": {
                                                "type": "AnyExcept",
                                                "zones": ["zone-3", "zone-4"],
                                            }
                                        },
                                        {"to": {"type": "None"}},
                                    ],
                                    "failoverThreshold": {"percentage": 30},
                                }
                            }
                        }
                    )
                ],
            ),
        ),
        with_policies(
            build("mlbs-fallback-only-to-first-zone", local_instances=0, remote=three),
            mlbs(
                "first-zone",
                [
                    to_mmzs(
                        {
                            "localityAwareness": {
                                "crossZone": {
                                    "failover": [
                                        {"to": {"type": "Only", "zones": ["zone-3"]}},
                                        {"to": {"type": "Any"}},
                                    ],
                                    "failoverThreshold": {"percentage": 100},
                                }
                            }
                        }
                    )
                ],
            ),
        ),
        with_policies(
            build("mlbs-round-robin", **tcp),
            mlbs("lb", [{"targetRef": {"kind": "Mesh"}, "default": _lb("RoundRobin")}]),
        ),
        with_policies(
            build("mlbs-least-request", **tcp),
            mlbs(
                "lb",
                [
                    {
                        "targetRef": {"kind": "Mesh"},
                        "default": _lb(
                            "LeastRequest",
                            leastRequest={"choiceCount": 4, "activeRequestBias": "1.5"},
                        ),
                    }
                ],
            ),
        ),
        with_policies(
            build("mlbs-ring-hash", **tcp),
            mlbs(
                "lb",
                [
                    {
                        "targetRef": {"kind": "Mesh"},
                        "default": _lb(
                            "RingHash",
                            ringHash={
                                "hashFunction": "MurmurHash2",
                                "minRingSize": 64,
                                "maxRingSize": 1024,
                                "hashPolicies": hashes,
                            },
                        ),
                    }
                ],
            ),
        ),
        with_policies(
            build("mlbs-random", **tcp),
            mlbs("lb", [{"targetRef": {"kind": "Mesh"}, "default": _lb("Random")}]),
        ),
        with_policies(
            build("mlbs-maglev", **tcp),
            mlbs(
                "lb",
                [
                    {
                        "targetRef": {"kind": "Mesh"},
                        "default": _lb(
                            "Maglev",
                            maglev={
                                "tableSize": 1021,
                                "hashPolicies": [hashes[0], hashes[-1]],
                            },
                        ),
                    }
                ],
            ),
        ),
    ]


def _lb(kind: str, **options: Any) -> dict[str, Any]:
    return {"loadBalancer": {"type": kind, **options}}


def golden_topologies() -> list[Topology]:
    from route_topologies import route_topologies
    from transparent_topologies import transparent_topologies

    return [
        empty_zone(),
        build("one-zone", local_instances=2),
        build("two-zones", local_instances=1, remote={"zone-2": 2}),
        build("two-zones-mtls", local_instances=1, remote={"zone-2": 2}, mtls=True),
        build("three-zones", local_instances=2, remote={"zone-2": 1, "zone-3": 3}, mtls=True),
        build(
            "zone-without-instances",
            local_instances=0,
            remote={"zone-2": 2, "zone-3": 1},
            unavailable=["zone-3"],
        ),
        build("tcp-and-http", local_instances=1, remote={"zone-2": 1}, tcp=True),
        build("tcp-and-http-mtls", local_instances=1, remote={"zone-2": 1}, tcp=True, mtls=True),
        build("zone-egress", local_instances=1, remote={"zone-2": 2, "zone-3": 1}, egress=True),
        *mlbs_topologies(),
        *transparent_topologies(),
        *route_topologies(),
    ]
