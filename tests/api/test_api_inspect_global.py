"""Global's inspect views: each proxy as its zone reports it (the insight copies KDS brings up),
with its zone; a zone whose CP is disconnected is said to be reporting its last state."""

from __future__ import annotations

from typing import Any

from api_helpers import GLOBAL, ApiFactory

from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.types.insight import ProxyInsightSpec
from zonemesh.resources.types.zone import ZoneSpec, ZoneStatus


def zone_copy(doc: dict[str, Any], zone: str) -> Resource:
    """A zone's resource as global stores it (what `mapping.to_global_copy` writes)."""
    labels = {"kuma.io/origin": "zone", "kuma.io/zone": zone, **doc.get("labels", {})}
    return resource_from_wire({**doc, "labels": labels})


def dataplane(name: str, zone: str) -> Resource:
    return zone_copy(
        {
            "type": "Dataplane",
            "mesh": "default",
            "name": name,
            "labels": {"kuma.io/mesh": "default"},
            "networking": {
                "address": "127.0.1.11",
                "inbound": [{"port": 21027, "tags": {"kuma.io/service": "echo"}}],
            },
        },
        zone,
    )


def insight(name: str, zone: str, **spec: Any) -> Resource:
    return Resource(
        type="DataplaneInsight",
        name=name,
        mesh="default",
        spec=ProxyInsightSpec(**spec),
        labels={"kuma.io/origin": "zone", "kuma.io/zone": zone, "kuma.io/mesh": "default"},
    )


def zone(name: str, connected: bool, disconnected_at: str | None = None) -> Resource:
    return Resource(
        type="Zone",
        name=name,
        mesh="",
        spec=ZoneSpec(),
        status=ZoneStatus(connected=connected, last_disconnected=disconnected_at),
    )


async def test_global_shows_each_dataplane_as_its_zone_reports_it(api_factory: ApiFactory) -> None:
    api = await api_factory(GLOBAL)
    store = api.runtime.store
    await store.create(zone("zone1", connected=True))
    await store.create(zone("zone2", connected=False, disconnected_at="2026-01-01T10:00:00Z"))
    await store.create(dataplane("a-1", "zone1"))
    await store.create(dataplane("b-1", "zone1"))
    await store.create(dataplane("c-1", "zone2"))
    await store.create(dataplane("d-1", "zone1"))  # no insight synced (yet)
    connected = "2026-01-01T09:00:00Z"
    await store.create(insight("a-1", "zone1", online=True, last_connected=connected))
    await store.create(
        insight("b-1", "zone1", online=False, last_disconnected="2026-01-01T09:30:00Z")
    )
    await store.create(insight("c-1", "zone2", online=True, last_connected=connected))

    response = await api.client.get("/meshes/default/dataplanes/_overview")
    assert response.status_code == 200, response.text
    items = {i["name"]: i for i in response.json()["items"]}
    assert {n: (i["zone"], i["status"]) for n, i in items.items()} == {
        "a-1": ("zone1", "Online"),
        "b-1": ("zone1", "Offline"),
        "c-1": ("zone2", "Online"),
        "d-1": ("zone1", "Offline"),
    }
    assert items["a-1"]["notes"] == [] and items["a-1"]["lastSeen"]
    assert items["a-1"]["dataplaneInsight"]["lastConnected"] == connected
    assert items["b-1"]["lastSeen"] == "2026-01-01T09:30:00Z"
    # zone2's CP is gone: its last report, and when global last heard from it.
    assert items["c-1"]["notes"] == [
        'zone "zone2" is offline: as it last reported at 2026-01-01T10:00:00Z'
    ]
    assert items["c-1"]["lastSeen"] == "2026-01-01T10:00:00Z"
    assert items["d-1"]["notes"] == ["its zone has not reported it (yet)"]


async def test_global_shows_zone_ingresses_with_their_zone(api_factory: ApiFactory) -> None:
    api = await api_factory(GLOBAL)
    store = api.runtime.store
    await store.create(zone("zone1", connected=True))
    ingress = zone_copy(
        {
            "type": "ZoneIngress",
            "name": "ingress-zone1",
            "zone": "zone1",
            "networking": {"address": "127.0.1.100", "port": 10001},
        },
        "zone1",
    )
    await store.create(ingress)
    await store.create(
        Resource(
            type="ZoneIngressInsight",
            name="ingress-zone1",
            mesh="",
            spec=ProxyInsightSpec(online=True),
            labels={"kuma.io/origin": "zone", "kuma.io/zone": "zone1"},
        )
    )
    items = (await api.client.get("/zoneingresses/_overview")).json()["items"]
    assert [(i["name"], i["zone"], i["status"]) for i in items] == [
        ("ingress-zone1", "zone1", "Online")
    ]
