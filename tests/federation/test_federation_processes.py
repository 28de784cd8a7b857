"""Federation with three real control planes: `zonemesh cp run` as global, zone1 and zone2,
SQLite stores, free ports, a 2 s offline grace period. Everything through the HTTP APIs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from federation_helpers import eventually
from federation_procs import GRACE_S, Api, Cluster

pytestmark = pytest.mark.timeout(150)

MMZS_PATH = "/meshes/default/meshmultizoneservices"
DP_PATH = "/meshes/default/dataplanes"
MS_PATH = "/meshes/default/meshservices"


def mmzs(name: str = "echo", port: int = 1027) -> dict[str, Any]:
    return {
        "type": "MeshMultiZoneService",
        "mesh": "default",
        "name": name,
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
            "ports": [{"port": port, "appProtocol": "http"}],
        },
    }


def dataplane(name: str, address: str, service: str = "echo") -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": name,
        "networking": {
            "address": address,
            "inbound": [
                {
                    "port": 21027,
                    "servicePort": 1027,
                    "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"},
                }
            ],
        },
    }


def ingress(name: str, address: str) -> dict[str, Any]:
    return {
        "type": "ZoneIngress",
        "name": name,
        "networking": {
            "address": address,
            "port": 10001,
            "advertisedAddress": address,
            "advertisedPort": 10001,
        },
    }


class Fed:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.g = Api(cluster["global"])
        self.z1 = Api(cluster["zone1"])
        self.z2 = Api(cluster["zone2"])

    async def close(self) -> None:
        for api in (self.g, self.z1, self.z2):
            await api.close()


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Fed]:
    cluster = Cluster(tmp_path)
    fed = Fed(cluster)
    try:
        await cluster.start()
        yield fed
    finally:
        await fed.close()
        cluster.stop_all()
        print(cluster.logs())  # shown only when the test failed


async def zone_services(api: Api, zone: str) -> list[dict[str, Any]]:
    found = await api.json(MS_PATH, **{"filter[labels.kuma.io/zone]": zone})
    return found["items"]


async def with_echo_in_both_zones(fed: Fed) -> None:
    """MMZS on global, an echo Dataplane in each zone, and a zone ingress in zone2."""
    assert (await fed.g.put(f"{MMZS_PATH}/echo", mmzs())).status_code == 201
    assert (
        await fed.z1.put(f"{DP_PATH}/echo-z1-a", dataplane("echo-z1-a", "127.0.1.11"))
    ).status_code == 201
    assert (
        await fed.z2.put(f"{DP_PATH}/echo-z2-a", dataplane("echo-z2-a", "127.0.2.11"))
    ).status_code == 201
    r = await fed.z2.put("/zoneingresses/ingress-z2", ingress("ingress-z2", "127.0.2.100"))
    assert r.status_code == 201, r.text

    async def matched_in_zone1() -> None:
        got = await fed.z1.json(f"{MMZS_PATH}/echo")
        matched = [(m["name"], m["zone"]) for m in got.get("status", {}).get("meshServices", [])]
        assert matched == [("echo", "zone1"), ("echo", "zone2")]

    await eventually(matched_in_zone1, timeout=5)


async def test_mmzs_from_global_reaches_zones_matches_both_zones_and_follows_changes(
    fed: Fed,
) -> None:
    await with_echo_in_both_zones(fed)

    for api in (fed.z1, fed.z2):
        got = await api.json(f"{MMZS_PATH}/echo")
        assert got["labels"]["kuma.io/origin"] == "global"

    # zone2 sees the same: both zones' MeshServices, zone1's as a synced copy.
    async def matched_in_zone2() -> None:
        got = await fed.z2.json(f"{MMZS_PATH}/echo")
        matched = [(m["name"], m["zone"]) for m in got["status"]["meshServices"]]
        assert matched == [("echo", "zone1"), ("echo", "zone2")]

    await eventually(matched_in_zone2, timeout=5)

    # Global holds read-only copies of the zones' Dataplanes and MeshServices, for inspect.
    copies = await fed.g.json(MS_PATH)
    assert sorted(
        (m["labels"]["kuma.io/display-name"], m["labels"]["kuma.io/zone"]) for m in copies["items"]
    ) == [
        ("echo", "zone1"),
        ("echo", "zone2"),
    ]

    # MMZS are written on global only (the API's rule).
    r = await fed.z1.put(f"{MMZS_PATH}/echo", mmzs(port=2000))
    assert r.status_code == 405, r.text

    assert (await fed.g.put(f"{MMZS_PATH}/echo", mmzs(port=8080))).status_code == 200

    async def updated() -> None:
        for api in (fed.z1, fed.z2):
            got = await api.json(f"{MMZS_PATH}/echo")
            assert got["spec"]["ports"][0]["port"] == 8080

    await eventually(updated)

    assert (await fed.g.delete(f"{MMZS_PATH}/echo")).status_code == 200

    async def deleted() -> None:
        for api in (fed.z1, fed.z2):
            assert (await api.get(f"{MMZS_PATH}/echo")).status_code == 404

    await eventually(deleted)

    # A zone's Dataplane deleted there disappears from global and the other zone.
    assert (await fed.z2.delete(f"{DP_PATH}/echo-z2-a")).status_code == 200

    async def zone2_service_gone() -> None:
        assert await zone_services(fed.z1, "zone2") == []
        assert (await fed.g.json(DP_PATH, **{"filter[labels.kuma.io/zone]": "zone2"}))[
            "items"
        ] == []

    await eventually(zone2_service_gone)


async def test_a_dead_zone_cp_goes_offline_yet_stays_routable_and_comes_back(fed: Fed) -> None:
    """A zone CP killed: global shows it Offline, but the other zones keep its MeshServices
    Available and its ingress, past the grace period (its data path may well serve)."""
    await with_echo_in_both_zones(fed)

    async def zone2_reachable_from_zone1() -> None:
        services = await zone_services(fed.z1, "zone2")
        assert [s["spec"]["state"] for s in services] == ["Available"]
        ingresses = (await fed.z1.json("/zoneingresses"))["items"]
        assert [i["labels"]["kuma.io/zone"] for i in ingresses] == ["zone2"]
        got = await fed.z1.json(f"{MMZS_PATH}/echo")
        assert [m["zone"] for m in got["status"]["meshServices"]] == ["zone1", "zone2"]

    await eventually(zone2_reachable_from_zone1)

    fed.cluster["zone2"].kill(signal.SIGKILL)

    async def offline_on_global() -> None:
        zone = await fed.g.json("/zones/zone2")
        assert zone["status"]["connected"] is False
        overview = await fed.g.json("/zones/_overview")
        assert {z["name"]: z["status"] for z in overview["items"]} == {
            "zone1": "Online",
            "zone2": "Offline",
        }

    await eventually(offline_on_global)
    table = subprocess.run(
        [sys.executable, "-m", "zonemesh", "inspect", "zones", "--cp", fed.g.cp.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert table.returncode == 0, table.stderr
    assert "Offline" in table.stdout and "zone2" in table.stdout

    async def past_grace_on_global() -> None:
        info = await fed.g.json("/")
        assert f"zone2 offline (for over {GRACE_S:g}s)" in info["status"]["zones"]

    await eventually(past_grace_on_global, timeout=GRACE_S + 8)
    await zone2_reachable_from_zone1()

    # Meanwhile global changes; zone2 must converge when back.
    assert (await fed.g.put(f"{MMZS_PATH}/other", mmzs("other", 2000))).status_code == 201
    await fed.cluster.start("zone2")

    async def back() -> None:
        zone = await fed.g.json("/zones/zone2")
        assert zone["status"]["connected"] is True
        assert (await fed.z2.get(f"{MMZS_PATH}/other")).status_code == 200
        await zone2_reachable_from_zone1()

    await eventually(back, timeout=15)


async def test_zones_keep_serving_without_global_and_a_killed_global_loses_nothing(
    fed: Fed,
) -> None:
    await with_echo_in_both_zones(fed)

    fed.cluster["global"].kill(signal.SIGTERM)
    # Zones keep serving what they have.
    for api in (fed.z1, fed.z2):
        assert (await api.json(f"{MMZS_PATH}/echo"))["labels"]["kuma.io/origin"] == "global"

    async def zone1_reconnecting() -> None:
        info = await fed.z1.json("/")
        assert "connecting to grpcs://" in info["status"]["global"]

    await eventually(zone1_reconnecting)
    got = await fed.z1.json(f"{MMZS_PATH}/echo")
    assert [m["zone"] for m in got["status"]["meshServices"]] == ["zone1", "zone2"]

    # A change in a zone while global is away arrives once it is back.
    r = await fed.z1.put(f"{DP_PATH}/late-z1", dataplane("late-z1", "127.0.1.12", "late"))
    assert r.status_code == 201
    await fed.cluster.start("global")

    async def resynced() -> None:
        overview = await fed.g.json("/zones/_overview")
        assert {z["name"]: z["status"] for z in overview["items"]} == {
            "zone1": "Online",
            "zone2": "Online",
        }
        assert [
            s["labels"]["kuma.io/display-name"] for s in await zone_services(fed.z2, "zone1")
        ] == [
            "echo",
            "late",
        ]

    await eventually(resynced, timeout=15)

    # kill -9 in the middle of a burst: what global acknowledged survives, and the rest
    # arrives after the restart.
    assert (await fed.g.put(f"{MMZS_PATH}/durable", mmzs("durable", 3000))).status_code == 201
    burst = [
        fed.z1.put(f"{DP_PATH}/burst-{i}", dataplane(f"burst-{i}", "127.0.1.20", f"burst-{i}"))
        for i in range(60)
    ]
    results = await asyncio.gather(*burst)
    assert {r.status_code for r in results} == {201}
    fed.cluster["global"].kill(signal.SIGKILL)
    await fed.cluster.start("global")
    assert (await fed.g.get(f"{MMZS_PATH}/durable")).status_code == 200

    async def everything_arrived() -> None:
        for api in (fed.z1, fed.z2):
            assert (await api.get(f"{MMZS_PATH}/durable")).status_code == 200
        names = {s["labels"]["kuma.io/display-name"] for s in await zone_services(fed.z2, "zone1")}
        assert names == {"echo", "late", *(f"burst-{i}" for i in range(60))}
        dps = await fed.g.json(DP_PATH, **{"filter[labels.kuma.io/zone]": "zone1", "size": 1000})
        assert dps["total"] == 62

    await eventually(everything_arrived, timeout=20)


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "zonemesh", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def zone_rows(table: str) -> dict[str, str]:
    """NAME -> STATUS of a `get zones` / `inspect zones` table."""
    lines = table.splitlines()
    return {line.split()[0]: line.split()[1] for line in lines[1:] if line.strip()}


async def test_a_disabled_zone_disappears_from_the_others_shows_disabled_and_comes_back(
    fed: Fed,
) -> None:
    """Kuma's `Zone enabled: false`, applied on global: zone2's MeshService and ingress leave
    zone1, zone1's MMZS status no longer lists zone2, the CLI shows it Disabled."""
    await with_echo_in_both_zones(fed)

    async def zone2_in_zone1(present: bool) -> None:
        services = await zone_services(fed.z1, "zone2")
        ingresses = (await fed.z1.json("/zoneingresses"))["items"]
        got = await fed.z1.json(f"{MMZS_PATH}/echo")
        matched = [m["zone"] for m in got["status"]["meshServices"]]
        if present:
            assert [s["spec"]["state"] for s in services] == ["Available"]
            assert [i["labels"]["kuma.io/zone"] for i in ingresses] == ["zone2"]
            assert matched == ["zone1", "zone2"]
        else:
            assert services == [] and ingresses == []
            assert matched == ["zone1"]

    await eventually(lambda: zone2_in_zone1(True))
    r = await fed.g.put("/zones/zone2", {"type": "Zone", "name": "zone2", "enabled": False})
    assert r.status_code == 200, r.text
    await eventually(lambda: zone2_in_zone1(False))
    for command in ("get", "inspect"):
        rows = zone_rows(cli(command, "zones", "--cp", fed.g.cp.url))
        assert rows == {"zone1": "Online", "zone2": "Disabled"}, (command, rows)
    # zone2 itself keeps running and syncing up: global still holds its copies.
    assert await zone_services(fed.g, "zone2") != []

    r = await fed.g.put("/zones/zone2", {"type": "Zone", "name": "zone2", "enabled": True})
    assert r.status_code == 200, r.text
    await eventually(lambda: zone2_in_zone1(True))
    assert zone_rows(cli("get", "zones", "--cp", fed.g.cp.url))["zone2"] == "Online"
