"""Zone health in-process: Zone status on global, the offline grace period, duplicate zones,
global going away, and the client's reconnects."""

from __future__ import annotations

import asyncio
import logging

import pytest
from federation_helpers import (
    Federation,
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
from zonemesh.resources.types.zone import ZoneSpec

MS = "MeshService"


async def zone_status(federation: Federation, zone: str):  # type: ignore[no-untyped-def]
    assert federation.global_rt is not None
    found = await federation.global_rt.store.find(ResourceKey("Zone", "", zone))
    assert found is not None and found.status is not None
    return found.status


async def test_zone_resource_shows_connection_version_and_instance(
    federation: Federation,
) -> None:
    await federation.start_global()
    z1, _ = await federation.start_zone("zone1")
    await put(z1, mesh_service("echo"))

    async def online() -> None:
        status = await zone_status(federation, "zone1")
        assert status.connected is True
        assert status.instance_id == z1.instance_id
        assert status.version == "0.1.0"
        assert status.last_connected

    await eventually(online)

    async def counted() -> None:
        assert (await zone_status(federation, "zone1")).total_updates >= 1

    await eventually(counted)
    await federation.stop_zone("zone1")

    async def offline() -> None:
        status = await zone_status(federation, "zone1")
        assert status.connected is False and status.last_disconnected

    await eventually(offline)
    assert federation.global_rt is not None
    assert "zone1 offline" in federation.global_rt.status["zones"]


async def test_a_zone_whose_cp_is_offline_past_the_grace_period_is_still_passed_on(
    federation: Federation,
) -> None:
    """Its data path may well serve: its MeshServices stay Available and its ingresses stay
    listed in the other zones (the sidecars' health checks judge the ingresses)."""
    await federation.start_global()
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    await put(z2, mesh_service("echo"))
    await put(z2, zone_ingress("ingress-z2"))
    ms, ingress = global_name("echo", "zone2"), global_name("ingress-z2", "zone2")

    async def available_in_zone1() -> None:
        got = await find(z1, MS, ms)
        assert got is not None and got.spec.state == "Available"
        assert await names(z1, "ZoneIngress") == {ingress}

    await eventually(available_in_zone1)

    await federation.stop_zone("zone2")  # grace is 1s in this fixture
    assert federation.global_rt is not None

    async def noted_offline() -> None:
        assert "zone2 offline (for over 1s)" in federation.global_rt.status["zones"]

    await eventually(noted_offline)
    await asyncio.sleep(1.0)  # a few more ticks of global's check
    await available_in_zone1()

    await federation.start_zone("zone2", store=z2.store)
    await eventually(lambda: _online(federation))
    await available_in_zone1()


async def _online(federation: Federation) -> None:
    assert federation.global_rt is not None
    assert "zone2 online" in federation.global_rt.status["zones"]


async def test_a_disabled_zone_is_withdrawn_from_the_others_and_comes_back(
    federation: Federation,
) -> None:
    """Kuma's `enabled: false`: the zone's MeshServices and ingresses disappear elsewhere, so
    MMZS status stops listing it; re-enabling brings them back."""
    g = await federation.start_global()
    await put(g, mmzs("echo"))
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    await put(z2, mesh_service("echo"))
    await put(z2, zone_ingress("ingress-z2"))
    ms, ingress = global_name("echo", "zone2"), global_name("ingress-z2", "zone2")

    async def present_in_zone1() -> None:
        got = await find(z1, MS, ms)
        assert got is not None and got.spec.state == "Available"
        assert await names(z1, "ZoneIngress") == {ingress}

    await eventually(present_in_zone1)
    key = ResourceKey("Zone", "", "zone2")
    zone = await g.store.get(key)
    await g.store.update(zone.with_(spec=ZoneSpec(enabled=False)))

    async def gone_from_zone1() -> None:
        assert await find(z1, MS, ms) is None
        assert await names(z1, "ZoneIngress") == set()

    await eventually(gone_from_zone1)
    # Global keeps its copies (inspect on global shows the zone), and zone2 keeps its own.
    assert await find(g, MS, ms) is not None
    assert await find(z2, MS, "echo") is not None
    zone = await g.store.get(key)
    await g.store.update(zone.with_(spec=ZoneSpec(enabled=True)))
    await eventually(present_in_zone1)


async def test_a_second_zone_of_the_same_name_is_refused_on_both_sides(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zonemesh.kds")
    await federation.start_global()
    first, first_client = await federation.start_zone("zone1")
    await first_client.connected.wait()
    runtime = federation.zones["zone1"][0]
    # A second control plane claiming the same zone name.
    federation.zones.pop("zone1")
    second, second_client = await federation.start_zone("zone1")
    expected = 'zone "zone1" is already connected from another control plane'

    async def refused() -> None:
        assert expected in second.status["global"]
        assert second_client.attempts >= 1

    await eventually(refused)
    # Nothing of the connected control plane: its instance id would let a peer pose as it.
    assert runtime.instance_id not in second.status["global"]
    assert federation.global_rt is not None
    assert federation.global_rt.refusals.count("kds", "already-connected") >= 1
    assert not second_client.connected.is_set()
    assert first_client.connected.is_set()
    assert first.status["global"].startswith("connected to grpc://")
    global_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("refused a connection" in line and expected in line for line in global_lines)
    assert any("attempt" in line and expected in line for line in global_lines)


async def test_zone_keeps_its_data_while_global_is_down_and_resyncs(
    federation: Federation,
) -> None:
    g = await federation.start_global()
    await put(g, mmzs("echo"))
    z1, client = await federation.start_zone("zone1")
    await put(z1, mesh_service("svc"))
    await eventually(lambda: _has(z1, "MeshMultiZoneService", "echo"))
    await eventually(lambda: _has(g, MS, global_name("svc", "zone1")))

    await federation.stop_global()

    async def reconnecting() -> None:
        assert "connecting to grpc://" in z1.status["global"]
        assert "does not answer" in z1.status["global"]
        assert client.attempts >= 2

    await eventually(reconnecting)
    assert await find(z1, "MeshMultiZoneService", "echo") is not None

    # Changes made meanwhile on both sides meet when global is back.
    await put(z1, mesh_service("later"))
    await put(g, mmzs("echo2"))
    await federation.start_global()  # same store, same port: a restarted global
    await eventually(lambda: _has(z1, "MeshMultiZoneService", "echo2"), timeout=15)
    await eventually(lambda: _has(g, MS, global_name("later", "zone1")))
    assert z1.status["global"].startswith("connected to grpc://")


async def _has(runtime, type_: str, name: str) -> None:  # type: ignore[no-untyped-def]
    assert await find(runtime, type_, name) is not None


async def test_deleting_a_disconnected_zone_deletes_what_it_synced(federation: Federation) -> None:
    g = await federation.start_global()
    z1, _ = await federation.start_zone("zone1")
    z2, _ = await federation.start_zone("zone2")
    await put(z2, mesh_service("echo"))
    await put(z2, zone_ingress("ingress-z2"))
    ms = global_name("echo", "zone2")
    await eventually(lambda: _has(z1, MS, ms))
    await federation.stop_zone("zone2")
    await eventually(lambda: _zone_offline(federation, "zone2"))

    await g.store.delete(ResourceKey("Zone", "", "zone2"))

    async def purged() -> None:
        assert await names(g, MS) == set()
        assert await names(g, "ZoneIngress") == set()
        assert await names(z1, MS) == set()
        assert await names(z1, "ZoneIngress") == set()

    await eventually(purged)
    assert await find(z2, MS, "echo") is not None  # the zone's own data is its own


async def _zone_offline(federation: Federation, zone: str) -> None:
    assert (await zone_status(federation, zone)).connected is False
