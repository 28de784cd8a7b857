"""Ownership (405), diagnostics endpoints, inspect overviews, `/xds`, and the server itself."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from api_helpers import (
    FEDERATED_ZONE,
    GLOBAL,
    MMZS_PATH,
    Api,
    ApiFactory,
    assert_error,
    dataplane,
    make_config,
    mmzs,
)
from prometheus_client import Counter

from zonemesh.api.app import create_app
from zonemesh.api.server import ApiServer
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.insights import ProxyInsight
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore


class FakeXdsView:
    """What the xDS server publishes as `runtime.views["xds"]`."""

    def __init__(self, insights: list[ProxyInsight], dumps: dict[ResourceKey, Any]) -> None:
        self._insights = insights
        self._dumps = dumps

    def insights(self) -> list[ProxyInsight]:
        return list(self._insights)

    def config_dump(self, key: ResourceKey) -> dict[str, list[dict[str, Any]]] | None:
        return self._dumps.get(key)


def insight(name: str, **changes: Any) -> ProxyInsight:
    values: dict[str, Any] = {
        "key": ResourceKey("Dataplane", "default", name),
        "proxy_type": "dataplane",
        "online": True,
        "last_connected": datetime(2024, 1, 1, tzinfo=UTC),
        "last_disconnected": None,
        "responses_sent": 7,
        "acks": 6,
        "nacks": 1,
        "last_nack": None,
        "ready": True,
    }
    values.update(changes)
    return ProxyInsight(**values)


# --- ownership -----------------------------------------------------------------------------


async def test_federated_zone_refuses_writes_of_global_types(api_factory: ApiFactory) -> None:
    api = await api_factory(FEDERATED_ZONE)
    put = await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())
    body = assert_error(put, 405)
    assert "create it on the global control plane" in body["detail"]
    assert_error(await api.client.delete("/meshes/default"), 405)
    assert_error(await api.client.put("/meshes/x", json={"type": "Mesh", "name": "x"}), 405)
    # Reads still work, and what the zone owns is writable.
    assert (await api.client.get(MMZS_PATH)).status_code == 200
    created = await api.client.put("/meshes/default/dataplanes/dp-1", json=dataplane())
    assert created.status_code == 201
    labels = (await api.client.get("/meshes/default/dataplanes/dp-1")).json()["labels"]
    assert labels["kuma.io/zone"] == "zone-1"
    assert labels["kuma.io/origin"] == "zone"


async def test_federated_zone_refuses_writes_to_another_zones_copy(api_factory: ApiFactory) -> None:
    api = await api_factory(FEDERATED_ZONE)
    synced = resource_from_wire(dataplane("remote"))
    synced = synced.with_(labels={"kuma.io/zone": "zone-2", "kuma.io/origin": "zone"})
    await api.runtime.store.create(synced)
    response = await api.client.delete("/meshes/default/dataplanes/remote")
    assert "zone-2" in assert_error(response, 405)["detail"]


async def test_global_refuses_writes_of_zone_types(api_factory: ApiFactory) -> None:
    api = await api_factory(GLOBAL)
    assert_error(await api.client.put("/meshes/default/dataplanes/dp-1", json=dataplane()), 405)
    ingress = {"type": "ZoneIngress", "name": "i", "networking": {"address": "1.1.1.1", "port": 1}}
    assert_error(await api.client.put("/zoneingresses/i", json=ingress), 405)
    created = await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())
    assert created.status_code == 201
    labels = (await api.client.get(f"{MMZS_PATH}/echo")).json()["labels"]
    assert labels["kuma.io/origin"] == "global"


# --- diagnostics ---------------------------------------------------------------------------


async def test_index_names_the_product_and_instance(api: Api) -> None:
    api.runtime.status["kds"] = "not connected"
    body = (await api.client.get("/")).json()
    assert body["product"] == "zonemesh"
    assert body["mode"] == "zone"
    assert body["zone"] == "default"
    assert body["instanceId"] == api.runtime.instance_id
    assert body["version"]
    assert body["status"] == {"kds": "not connected"}


async def test_config_is_the_effective_configuration(api: Api) -> None:
    body = (await api.client.get("/config")).json()
    # An in-process runtime has no TLS material: plaintext gRPC, no HTTPS listener.
    assert body.pop("tlsInUse") == {"grpc": "plaintext", "https": "off"}
    assert body == api.runtime.config.effective()
    assert body["store"]["type"] == "memory"


async def test_openapi_lists_the_resource_paths(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    paths = doc["paths"]
    item = paths["/meshes/{mesh}/meshmultizoneservices/{name}"]
    assert {"get", "put", "delete"} <= set(item)
    assert "/zones/{name}" in paths
    assert "/meshes/{mesh}/dataplanes/_overview" in paths
    assert "MeshMultiZoneServiceSpec" in doc["components"]["schemas"]


async def test_metrics_expose_the_runtime_registry(api: Api) -> None:
    Counter("test_things", "things counted by a test", registry=api.runtime.metrics).inc(3)
    await api.client.get("/nope-at-all")
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "test_things_total 3.0" in response.text
    assert 'api_server_requests_total{code="404",method="GET"}' in response.text


async def test_ready_and_healthy(api: Api) -> None:
    assert (await api.client.get("/ready")).json() == {"status": "ready"}
    assert (await api.client.get("/healthy")).status_code == 200


async def test_not_ready_until_the_server_listens() -> None:
    runtime = Runtime(config=make_config({}), store=MemoryStore())
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
        assert_error(await client.get("/ready"), 503)
        assert (await client.get("/healthy")).status_code == 200


async def test_a_busy_port_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config({"apiServer": {"http": {"port": port}}})
        server = ApiServer(Runtime(config=config, store=MemoryStore()))
        with pytest.raises(OSError, match=str(port)):
            await server.start()
        await server.stop()  # harmless after a failed start


async def test_stop_closes_the_port(api_factory: ApiFactory) -> None:
    api = await api_factory()
    port = api.server.port
    await api.server.stop()
    with pytest.raises(httpx.ConnectError):
        await api.client.get(f"http://127.0.0.1:{port}/healthy")


# --- inspect and /xds ----------------------------------------------------------------------


async def test_dataplane_overview_joins_resources_and_insights(api_factory: ApiFactory) -> None:
    view = FakeXdsView(
        [
            insight("online"),
            insight("gone", online=False, last_nack="cluster x: bad config"),
            insight("degraded", ready=False, not_ready_inbounds=(21027,)),
        ],
        {},
    )
    api = await api_factory(views={"xds": view})
    for name in ("online", "gone", "degraded", "never"):
        body = dataplane(name)
        if name == "degraded":
            body["networking"]["inbound"].append(
                {"port": 21028, "servicePort": 1028, "tags": {"kuma.io/service": "other"}}
            )
        assert (
            await api.client.put(f"/meshes/default/dataplanes/{name}", json=body)
        ).status_code == 201

    page = (await api.client.get("/meshes/default/dataplanes/_overview")).json()
    by_name = {i["name"]: i for i in page["items"]}
    assert page["total"] == 4
    assert by_name["online"]["status"] == "Online"
    assert by_name["online"]["dataplaneInsight"]["responsesSent"] == 7
    assert by_name["online"]["dataplaneInsight"]["lastConnected"] == "2024-01-01T00:00:00Z"
    assert by_name["online"]["dataplane"]["networking"]["address"] == "127.0.1.11"
    assert by_name["gone"]["status"] == "Offline"
    assert "last NACK: cluster x: bad config" in by_name["gone"]["notes"]
    assert by_name["degraded"]["status"] == "Partially degraded"
    assert "inbound[port=21027] is not ready" in by_name["degraded"]["notes"]
    assert by_name["never"]["status"] == "Offline"
    assert by_name["never"]["dataplaneInsight"] is None

    filtered = (await api.client.get("/meshes/default/dataplanes/_overview?name=onl")).json()
    assert [i["name"] for i in filtered["items"]] == ["online"]


async def test_zone_overview_shows_the_status_federation_wrote(api: Api) -> None:
    zone = resource_from_wire(
        {"type": "Zone", "name": "zone-1", "status": {"connected": True, "version": "0.1.0"}},
        keep_status=True,
    )
    await api.runtime.store.create(zone)
    await api.runtime.store.create(resource_from_wire({"type": "Zone", "name": "zone-2"}))
    page = (await api.client.get("/zones/_overview")).json()
    assert [(i["name"], i["status"]) for i in page["items"]] == [
        ("zone-1", "Online"),
        ("zone-2", "Offline"),
    ]
    assert page["items"][0]["zoneInsight"]["version"] == "0.1.0"


async def test_zone_ingress_overview(api: Api) -> None:
    ingress = {
        "type": "ZoneIngress",
        "name": "i-1",
        "networking": {"address": "127.0.1.1", "port": 10001},
    }
    await api.client.put("/zoneingresses/i-1", json=ingress)
    page = (await api.client.get("/zoneingresses/_overview")).json()
    assert page["items"][0]["zoneIngress"]["networking"]["port"] == 10001
    assert page["items"][0]["status"] == "Offline"
    assert (await api.client.get("/zoneegresses/_overview")).json()["total"] == 0


async def test_xds_config_dump(api_factory: ApiFactory) -> None:
    key = ResourceKey("Dataplane", "default", "dp-1")
    dump = {"type.googleapis.com/envoy.config.listener.v3.Listener": [{"name": "inbound"}]}
    api = await api_factory(views={"xds": FakeXdsView([], {key: dump})})
    response = await api.client.get("/meshes/default/dataplanes/dp-1/xds")
    assert response.status_code == 200
    assert response.json() == dump
    assert_error(await api.client.get("/meshes/default/dataplanes/unknown/xds"), 404)


async def test_xds_without_an_xds_server_is_404(api: Api) -> None:
    assert_error(await api.client.get("/meshes/default/dataplanes/dp-1/xds"), 404)


class GatedStore(MemoryStore):
    """Holds a listing of Zones until released, to keep a request in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def list(self, type_name: str, mesh: str | None = None) -> list[Resource]:
        if type_name == "Zone":
            self.entered.set()
            await self.release.wait()
        return await super().list(type_name, mesh)


async def test_stop_lets_a_running_request_finish() -> None:
    store = GatedStore()
    server = ApiServer(Runtime(config=make_config({}), store=store))
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        in_flight = asyncio.create_task(client.get("/zones"))
        await store.entered.wait()
        stopping = asyncio.create_task(server.stop())
        while server.app.state.serving:
            await asyncio.sleep(0)
        store.release.set()
        response = await in_flight
        await stopping
    assert response.status_code == 200
    assert response.json()["total"] == 0


async def test_federated_zone_is_ready_only_after_its_first_sync(api_factory: ApiFactory) -> None:
    api = await api_factory(FEDERATED_ZONE)
    default_mesh = await api.runtime.store.get(ResourceKey("Mesh", "", "default"))
    await api.runtime.store.delete(default_mesh.key)  # a zone that never heard from global
    body = assert_error(await api.client.get("/ready"), 503)
    assert body["detail"] == "waiting for the first sync from the global control plane"
    await api.runtime.store.create(default_mesh.with_(version=0))  # what sync writes
    assert (await api.client.get("/ready")).status_code == 200
