"""Real resources, built the way the API builds them (`resource_from_wire`), for store tests."""

from __future__ import annotations

from typing import Any

from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire


def mesh(name: str = "default") -> Resource:
    return resource_from_wire({"type": "Mesh", "name": name, "routing": {"zoneEgress": True}})


def zone(name: str, connected: bool = True) -> Resource:
    return resource_from_wire(
        {
            "type": "Zone",
            "name": name,
            "enabled": True,
            "status": {"connected": connected, "instanceId": f"{name}-cp-1", "totalUpdates": 3},
        },
        keep_status=True,
    )


def mmzs_doc(name: str, mesh: str = "default", vip: str = "243.0.0.1") -> dict[str, Any]:
    return {
        "type": "MeshMultiZoneService",
        "mesh": mesh,
        "name": name,
        "labels": {"team": "payments"},
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": name}}},
            "ports": [{"port": 1027, "appProtocol": "http"}],
        },
        "status": {
            "vips": [{"ip": vip}],
            "addresses": [{"hostname": f"{name}.mzsvc.mesh.local"}],
            "meshServices": [
                {"name": name, "zone": "z1", "mesh": mesh},
                {"name": name, "zone": "z2", "mesh": mesh},
            ],
            "conditions": [
                {"type": "MeshServicesMatched", "status": "True", "reason": "Matched"},
            ],
        },
    }


def mmzs(name: str, mesh: str = "default", vip: str = "243.0.0.1") -> Resource:
    return resource_from_wire(mmzs_doc(name, mesh, vip), keep_status=True)


def mmzs_without_status(name: str, mesh: str = "default") -> Resource:
    doc = mmzs_doc(name, mesh)
    del doc["status"]
    return resource_from_wire(doc)


def meshservice_doc(name: str, mesh: str = "default", port: int = 1027) -> dict[str, Any]:
    return {
        "type": "MeshService",
        "mesh": mesh,
        "name": name,
        "labels": {"kuma.io/display-name": name, "kuma.io/zone": "z1"},
        "spec": {
            "selector": {"dataplaneTags": {"kuma.io/service": name}},
            "ports": [{"port": port, "targetPort": port + 20000, "appProtocol": "http"}],
            "state": "Available",
        },
    }


def meshservice(name: str, mesh: str = "default", port: int = 1027) -> Resource:
    return resource_from_wire(meshservice_doc(name, mesh, port))


def dataplane(name: str, mesh: str = "default", address: str = "127.0.1.11") -> Resource:
    return resource_from_wire(
        {
            "type": "Dataplane",
            "mesh": mesh,
            "name": name,
            "networking": {
                "address": address,
                "inbound": [
                    {
                        "port": 21027,
                        "servicePort": 1027,
                        "tags": {"kuma.io/service": "echo", "kuma.io/protocol": "http"},
                    }
                ],
                "outbound": [
                    {
                        "port": 11027,
                        "address": "127.0.1.50",
                        "backendRef": {
                            "kind": "MeshMultiZoneService",
                            "name": "echo",
                            "port": 1027,
                        },
                    }
                ],
            },
        }
    )
