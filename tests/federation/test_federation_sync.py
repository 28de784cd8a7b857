"""The sync engine in-process: global and two zones over MemoryStores, real gRPC on loopback."""

from __future__ import annotations

from federation_helpers import (
    MESH_DEFAULT,
    Federation,
    delete,
    eventually,
    find,
    mesh_service,
    mmzs,
    names,
    put,
    zone_ingress,
)

from zonemesh.federation.mapping import global_name
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.types.meshservice import MeshServiceStatus

MS = "MeshService"
MZ = "MeshMultiZoneService"


async def test_global_resources_reach_every_zone_and_follow_updates_and_deletes(
    federation: Federation,
) -> None:
    g = await federation.start_global()
    await put(g, MESH_DEFAULT)
    await put(g, mmzs("echo"))
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")

    async def present_in_both() -> None:
        for z in (z1, z2):
            got = await find(z, MZ, "echo")
            assert got is not None
            assert got.labels["kuma.io/origin"] == "global"
            assert got.labels["kuma.io/display-name"] == "echo"
            assert await z.store.find(ResourceKey("Mesh", "", "default")) is not None

    await eventually(present_in_both)

    await put(g, mmzs("echo", port=8080))

    async def updated() -> None:
        for z in (z1, z2):
            got = await find(z, MZ, "echo")
            assert got is not None and got.spec.ports[0].port == 8080

    await eventually(updated)

    await delete(g, ResourceKey(MZ, "default", "echo"))

    async def gone() -> None:
        for z in (z1, z2):
            assert await find(z, MZ, "echo") is None

    await eventually(gone)


async def test_zone_services_go_up_renamed_and_across_without_collisions_or_echo(
    federation: Federation,
) -> None:
    g = await federation.start_global()
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    await put(z1, mesh_service("echo"))
    await put(z2, mesh_service("echo", state="Unavailable"))
    await put(z1, zone_ingress("ingress-z1"))
    await put(
        z1,
        {
            "type": "Dataplane",
            "mesh": "default",
            "name": "echo-z1-a",
            "networking": {
                "address": "127.0.1.11",
                "inbound": [
                    {"port": 21027, "servicePort": 1027, "tags": {"kuma.io/service": "echo"}}
                ],
            },
        },
    )
    n1, n2 = global_name("echo", "zone1"), global_name("echo", "zone2")
    assert n1 != n2

    async def on_global() -> None:
        assert await names(g, MS) == {n1, n2}
        copy = await find(g, MS, n1)
        assert copy is not None
        assert copy.labels["kuma.io/origin"] == "zone"
        assert copy.labels["kuma.io/zone"] == "zone1"
        assert copy.labels["kuma.io/display-name"] == "echo"
        assert copy.spec.state == "Available"
        other = await find(g, MS, n2)
        assert other is not None and other.spec.state == "Unavailable"
        # Dataplanes go up (read-only copies) but no further.
        assert await names(g, "Dataplane") == {global_name("echo-z1-a", "zone1")}
        assert await names(g, "ZoneIngress") == {global_name("ingress-z1", "zone1")}

    await eventually(on_global)

    async def across() -> None:
        assert await names(z1, MS) == {"echo", n2}  # its own, and zone2's; nothing echoed
        assert await names(z2, MS) == {"echo", n1}
        synced = await find(z2, MS, n1)
        assert synced is not None
        assert synced.labels["kuma.io/origin"] == "global"
        assert synced.labels["kuma.io/zone"] == "zone1"
        assert synced.labels["kuma.io/display-name"] == "echo"
        assert synced.spec.state == "Available"
        assert await names(z2, "ZoneIngress") == {global_name("ingress-z1", "zone1")}
        assert await names(z2, "Dataplane") == set()
        assert await names(z1, "ZoneIngress") == {"ingress-z1"}

    await eventually(across)


async def test_status_is_not_synced_but_spec_state_is(federation: Federation) -> None:
    g = await federation.start_global()
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    ms = await put(z1, mesh_service("echo"))
    await z1.store.update(ms.with_(status=MeshServiceStatus(vips=[{"ip": "241.0.0.1"}])))
    n1 = global_name("echo", "zone1")

    async def synced() -> None:
        for rt in (g, z2):
            got = await find(rt, MS, n1)
            assert got is not None and got.status is None and got.spec.state == "Available"

    await eventually(synced)

    # Status computed in zone2 survives a spec update arriving from zone1.
    local = await find(z2, MS, n1)
    assert local is not None
    await z2.store.update(local.with_(status=MeshServiceStatus(vips=[{"ip": "241.0.0.9"}])))
    await put(z1, mesh_service("echo", state="Unavailable"))

    async def updated_keeping_status() -> None:
        got = await find(z2, MS, n1)
        assert got is not None and got.spec.state == "Unavailable"
        assert got.status is not None and got.status.vips[0].ip == "241.0.0.9"

    await eventually(updated_keeping_status)


async def test_reconnect_with_stale_state_converges_and_writes_nothing_twice(
    federation: Federation,
) -> None:
    g = await federation.start_global()
    await put(g, mmzs("keep"))
    await put(g, mmzs("dropped"))
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    await put(z2, mesh_service("stays"))
    await put(z2, mesh_service("goes"))
    stays, goes = global_name("stays", "zone2"), global_name("goes", "zone2")

    async def first_sync() -> None:
        assert await names(z2, MZ) == {"keep", "dropped"}
        assert await names(z1, MS) == {stays, goes}

    await eventually(first_sync)

    # zone2 goes away; both sides change meanwhile.
    await federation.stop_zone("zone2")
    await delete(g, ResourceKey(MZ, "default", "dropped"))
    await put(g, mmzs("added"))
    await put(g, mmzs("keep", port=9090))
    await delete(z2, ResourceKey(MS, "default", "goes"))
    await put(z2, mesh_service("new"))

    await federation.start_zone("zone2", store=z2.store)
    new = global_name("new", "zone2")

    async def converged() -> None:
        assert await names(z2, MZ) == {"keep", "added"}
        keep = await find(z2, MZ, "keep")
        assert keep is not None and keep.spec.ports[0].port == 9090
        assert await names(g, MS) == {stays, new}
        assert await names(z1, MS) == {stays, new}

    await eventually(converged)

    # A reconnect with nothing changed writes nothing on either side.
    writes = {"g": g.store.subscribe(), "z1": z1.store.subscribe(), "z2": z2.store.subscribe()}
    await federation.stop_zone("zone2")
    _, client = await federation.start_zone("zone2", store=z2.store)
    await eventually(lambda: _snapshot_applied(client))
    await eventually(lambda: _global_applied(federation, "zone2"))
    rt_writes = {
        name: [e for e in sub.drain() if e.key.type != "Zone"] for name, sub in writes.items()
    }
    assert rt_writes == {"g": [], "z1": [], "z2": []}
    for sub in writes.values():
        sub.close()


async def _snapshot_applied(client: object) -> None:
    inbox = client.inbox  # type: ignore[attr-defined]
    assert inbox is not None and inbox.snapshot_done.is_set()
    assert client.outbox is not None and client.outbox.snapshot_sent.is_set()  # type: ignore[attr-defined]


async def _global_applied(federation: Federation, zone: str) -> None:
    assert federation.server is not None
    session = federation.server.tracker.zones[zone].session
    assert session is not None and session.inbox.snapshot_done.is_set()


async def test_deletes_in_a_zone_reach_global_and_the_other_zones(federation: Federation) -> None:
    g = await federation.start_global()
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    await put(z1, mesh_service("echo"))
    await put(z1, zone_ingress("ingress-z1"))
    n = global_name("echo", "zone1")

    async def there() -> None:
        assert n in await names(z2, MS)
        assert await names(z2, "ZoneIngress")

    await eventually(there)
    await delete(z1, ResourceKey(MS, "default", "echo"))
    await delete(z1, ResourceKey("ZoneIngress", "", "ingress-z1"))

    async def gone() -> None:
        assert await names(g, MS) == set()
        assert await names(z2, MS) == set()
        assert await names(z2, "ZoneIngress") == set()
        assert await names(g, "ZoneIngress") == set()

    await eventually(gone)


async def test_a_zone_that_was_standalone_takes_globals_version_of_global_types(
    federation: Federation,
) -> None:
    from federation_helpers import zone_config

    from zonemesh.runtime.kernel import Runtime
    from zonemesh.store.memory import MemoryStore

    g = await federation.start_global()
    await put(g, mmzs("echo", port=7070))
    # Written while standalone (origin zone); global's MMZS of the same name takes over.
    store = MemoryStore()
    standalone = Runtime(config=zone_config("zone1", "", token=""), store=store)
    await put(standalone, mmzs("echo", port=1111))
    await put(standalone, mmzs("local-only", port=2222))
    z1, _ = await federation.start_zone("zone1", store=store)

    async def taken_over() -> None:
        echo = await find(z1, MZ, "echo")
        assert echo is not None and echo.spec.ports[0].port == 7070
        assert echo.labels["kuma.io/origin"] == "global"
        # Not global's, and not removed: a local leftover is the user's business.
        assert await find(z1, MZ, "local-only") is not None

    await eventually(taken_over)


async def test_proxy_insights_go_up_to_global_only_named_like_their_proxy(
    federation: Federation,
) -> None:
    """What global's inspect reads: a zone's DataplaneInsight next to its Dataplane copy."""
    await federation.start_global()
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    dataplane = {
        "type": "Dataplane",
        "mesh": "default",
        "name": "echo-1",
        "networking": {
            "address": "127.0.1.11",
            "inbound": [{"port": 21027, "tags": {"kuma.io/service": "echo"}}],
        },
    }
    await put(z1, dataplane)
    await put(
        z1,
        {
            "type": "DataplaneInsight",
            "mesh": "default",
            "name": "echo-1",
            "spec": {"online": True, "lastConnected": "2026-01-01T09:00:00Z"},
        },
    )
    copy = global_name("echo-1", "zone1")
    assert federation.global_rt is not None

    async def on_global() -> None:
        assert federation.global_rt is not None
        got = await find(federation.global_rt, "DataplaneInsight", copy)
        assert got is not None and got.spec.online
        assert got.labels["kuma.io/zone"] == "zone1"
        assert await find(federation.global_rt, "Dataplane", copy) is not None

    await eventually(on_global)
    assert await names(z2, "DataplaneInsight") == set()  # never passed on to other zones
