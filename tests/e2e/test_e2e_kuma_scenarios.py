"""Kuma's own multi-zone e2e scenarios (test/e2e_env/multizone/, reference §5), with real Envoy
through real control planes: global and three zone CPs, a zone ingress per zone, `zonemesh
echo` instances behind `zonemesh dp run` sidecars (two in zone1, one in zone2, none in zone3)
and a client sidecar per zone. Plus what zonemesh adds: zone health (a dead ingress, a dead
zone CP), global's view of every proxy, and the Dataplane lifecycle.

One topology for the module; the tests run in file order, each leaving the mesh as it found
it (the last one kills a zone CP). Traffic is counted, never timed: ~100-200 requests per
case, split checked within a tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from zonemesh.demo.topology import ECHO_PORT, MESH, TwoZoneMesh
from zonemesh.demo.traffic import Answer, Load, summary

pytestmark = pytest.mark.timeout(420)

ZONES = ("zone1", "zone2", "zone3")
INSTANCES = {"zone1": 2, "zone2": 1, "zone3": 0}
GRACE_S = 2
REQUESTS = 200
# An equal split of 200 requests between two zones: each well inside 30 %..70 %.
LOW, HIGH = 0.30, 0.70
MLBS_PATH = f"/meshes/{MESH}/meshloadbalancingstrategies"
MEASURED: dict[str, Any] = {}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoZoneMesh]:
    run_dir = tmp_path_factory.mktemp("three-zones")
    topology = TwoZoneMesh(
        run_dir,
        zones=ZONES,
        instances=INSTANCES,
        cp_env={
            "ZONEMESH_ZONE_OFFLINE_GRACE": str(GRACE_S),
            "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY": "1s",
        },
    )
    with topology:
        yield topology
    print(f"\nrun directory: {run_dir}\nmeasured: {json.dumps(MEASURED, indent=2)}")


def zones_of(answers: list[Answer]) -> dict[str, int]:
    return summary(answers)


def zone_api(mesh: TwoZoneMesh, zone: str, path: str) -> Any:
    response = httpx.get(f"{mesh.cps[zone].url}{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "zonemesh", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def apply_on_global(mesh: TwoZoneMesh, doc: dict[str, Any]) -> None:
    path = f"{MLBS_PATH}/{doc['name']}" if doc["type"] != "Zone" else f"/zones/{doc['name']}"
    response = mesh.global_api("PUT", path, json=doc)
    assert response.status_code in (200, 201), response.text


def delete_on_global(mesh: TwoZoneMesh, name: str) -> None:
    response = mesh.global_api("DELETE", f"{MLBS_PATH}/{name}")
    assert response.status_code == 200, response.text


def mlbs(name: str, default: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "MeshLoadBalancingStrategy",
        "mesh": MESH,
        "name": name,
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [
                {"targetRef": {"kind": "MeshMultiZoneService", "name": "echo"}, "default": default}
            ],
        },
    }


def priorities(mesh: TwoZoneMesh, zone: str) -> dict[str, int]:
    """address -> priority of `zone`'s client cluster for the http MMZS port."""
    return {h.address: h.priority for h in mesh.hosts(zone)}


def wait_priorities(mesh: TwoZoneMesh, zone: str, expected: dict[str, int | None]) -> None:
    """Until each address has its expected priority (None: absent) and the present ones
    passed their health check (a zone that comes back is used once its ingress answers)."""

    def holds(hosts: list[Any]) -> bool:
        found = {h.address: h.priority for h in hosts if h.healthy}
        gone = {h.address for h in hosts}
        return all((a not in gone) if p is None else found.get(a) == p for a, p in expected.items())

    mesh.wait_hosts(zone, f"priorities {expected}", holds, timeout=30)


def assert_equal_split(answers: list[Answer], zones: tuple[str, str]) -> None:
    counts = zones_of(answers)
    total = len(answers)
    assert counts.get("failed", 0) == 0, counts
    assert set(counts) == set(zones), counts
    for zone in zones:
        assert LOW * total <= counts[zone] <= HIGH * total, counts


def test_a_client_with_no_local_instance_splits_equally_between_the_other_zones(
    mesh: TwoZoneMesh,
) -> None:
    """No policy: the other zones equally (zone1 has two instances, zone2 one)."""
    for tcp in (False, True):
        answers = mesh.ask("zone3", tcp=tcp, count=REQUESTS)
        MEASURED[f"equal_split.{'tcp' if tcp else 'http'}"] = zones_of(answers)
        assert_equal_split(answers, ("zone1", "zone2"))


def test_should_fallback_only_to_first_zone(mesh: TwoZoneMesh) -> None:
    """Kuma's localityawarelb scenario: `failover: [Only zone1, Any]`, threshold 100."""
    z1, z2 = mesh.ingress_endpoint("zone1"), mesh.ingress_endpoint("zone2")
    policy = mlbs(
        "fallback-to-first-zone",
        {
            "localityAwareness": {
                "crossZone": {
                    "failover": [
                        {"to": {"type": "Only", "zones": ["zone1"]}},
                        {"to": {"type": "Any"}},
                    ],
                    "failoverThreshold": {"percentage": 100},
                }
            }
        },
    )
    apply_on_global(mesh, policy)
    try:
        wait_priorities(mesh, "zone3", {z1: 1, z2: 2})
        answers = mesh.ask("zone3", count=REQUESTS // 2)
        MEASURED["fallback_only_to_first_zone"] = zones_of(answers)
        assert zones_of(answers) == {"zone1": REQUESTS // 2}
    finally:
        delete_on_global(mesh, policy["name"])
    wait_priorities(mesh, "zone3", {z1: 1, z2: 1})
    assert_equal_split(mesh.ask("zone3", count=REQUESTS), ("zone1", "zone2"))


def test_should_be_locality_aware_unless_disabled(mesh: TwoZoneMesh) -> None:
    """Kuma's scenario: zone1's client stays local until `localityAwareness.disabled`."""
    answers = mesh.ask("zone1", count=REQUESTS // 2)
    assert zones_of(answers) == {"zone1": REQUESTS // 2}
    z2 = mesh.ingress_endpoint("zone2")
    policy = mlbs("no-locality", {"localityAwareness": {"disabled": True}})
    apply_on_global(mesh, policy)
    try:
        wait_priorities(mesh, "zone1", {z2: 0})
        answers = mesh.ask("zone1", count=REQUESTS // 2)
        counts = zones_of(answers)
        MEASURED["locality_disabled"] = counts
        assert counts.get("failed", 0) == 0 and counts.get("zone1", 0) > 0, counts
        assert counts.get("zone2", 0) >= 10, counts  # one flat pool: zone2 answers too
    finally:
        delete_on_global(mesh, policy["name"])
    wait_priorities(mesh, "zone1", {z2: 1})
    assert zones_of(mesh.ask("zone1", count=REQUESTS // 2)) == {"zone1": REQUESTS // 2}


def zone_rows(table: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in table.splitlines()[1:] if line.strip()}


def test_a_disabled_zone_gets_no_traffic_and_disappears_from_the_others(
    mesh: TwoZoneMesh,
) -> None:
    """Kuma's zonedisable scenario, and what goes with it: zone2's MeshService and ingress
    leave zone3, zone3's MMZS status lists zone1 only, global shows zone2 Disabled."""
    z2 = mesh.ingress_endpoint("zone2")
    apply_on_global(mesh, {"type": "Zone", "name": "zone2", "enabled": False})
    try:
        wait_priorities(mesh, "zone3", {z2: None})
        answers = mesh.ask("zone3", count=REQUESTS // 2)
        MEASURED["zone2_disabled"] = zones_of(answers)
        assert zones_of(answers) == {"zone1": REQUESTS // 2}
        services = zone_api(mesh, "zone3", f"/meshes/{MESH}/meshservices")["items"]
        assert {s["labels"].get("kuma.io/zone") for s in services} == {"zone1", "zone3"}
        ingresses = zone_api(mesh, "zone3", "/zoneingresses")["items"]
        assert "zone2" not in {i["labels"].get("kuma.io/zone") for i in ingresses}
        echo = zone_api(mesh, "zone3", f"/meshes/{MESH}/meshmultizoneservices/echo")
        assert [m["zone"] for m in echo["status"]["meshServices"]] == ["zone1"]
        global_url = mesh.cps["global"].url
        for command in ("get", "inspect"):
            assert zone_rows(cli(command, "zones", "--cp", global_url))["zone2"] == "Disabled"
    finally:
        apply_on_global(mesh, {"type": "Zone", "name": "zone2", "enabled": True})
    wait_priorities(mesh, "zone3", {z2: 1})
    assert_equal_split(mesh.ask("zone3", count=REQUESTS), ("zone1", "zone2"))
    assert zone_rows(cli("get", "zones", "--cp", mesh.cps["global"].url))["zone2"] == "Online"


def overview(mesh: TwoZoneMesh, what: str) -> list[dict[str, Any]]:
    doc = json.loads(cli("inspect", what, "--cp", mesh.cps["global"].url, "-o", "json"))
    items: list[dict[str, Any]] = doc["items"]
    return items


def display(item: dict[str, Any], field: str) -> str:
    return str(item[field]["labels"]["kuma.io/display-name"])


def test_global_shows_every_proxy_as_its_zone_reports_it(mesh: TwoZoneMesh) -> None:
    expected = {p.name: p.zone for p in mesh.proxies() if p.resource["type"] == "Dataplane"}

    def all_online() -> bool:
        items = overview(mesh, "dataplanes")
        got = {display(i, "dataplane"): (i["zone"], i["status"]) for i in items}
        return got == {name: (zone, "Online") for name, zone in expected.items()}

    mesh.group.wait_until("every Dataplane Online on global", all_online, timeout=30)
    ingresses = overview(mesh, "zoneingresses")
    assert {display(i, "zoneIngress"): (i["zone"], i["status"]) for i in ingresses} == {
        f"ingress-{z}": (z, "Online") for z in ZONES
    }
    table = cli("inspect", "dataplanes", "--cp", mesh.cps["global"].url)
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["MESH", "NAME", "ZONE", "TAGS"]
    assert {row.split()[2] for row in rows} == set(ZONES)
    assert all("Online" in row.split() for row in rows), table


def test_a_dead_ingress_stops_getting_traffic_within_seconds(mesh: TwoZoneMesh) -> None:
    """zone1's ingress killed (connections refused): zone3's sidecar health-checks it out,
    the requests that met it are retried on zone2, and zone1 comes back with its ingress."""
    ingress = mesh.ingresses["zone1"]
    z1 = mesh.ingress_endpoint("zone1")
    with Load(mesh.client_url("zone3"), interval=0.02) as load:
        time.sleep(0.5)
        killed_at = time.monotonic()
        mesh.group[ingress.sidecar].kill()
        mesh.wait_hosts(
            "zone3",
            f"{z1} failing its health check",
            lambda hosts: any(h.address == z1 and not h.healthy for h in hosts),
            timeout=15,
        )
        detected_s = time.monotonic() - killed_at
        time.sleep(2)
    after = load.since(killed_at)
    failed = [a for a in after if not a.ok]
    last_zone1 = max((a.at for a in after if a.ok and a.zone == "zone1"), default=killed_at)
    MEASURED["dead_ingress"] = {
        "detected_s": round(detected_s, 2),
        "failed": len(failed),
        "answers": zones_of(after),
        "last_zone1_answer_s": round(last_zone1 - killed_at, 2),
    }
    assert len(failed) <= 3, MEASURED["dead_ingress"]
    tail = [a for a in after if a.at >= killed_at + detected_s]
    assert tail and {a.zone for a in tail} == {"zone2"}, zones_of(tail)

    mesh.group.start(ingress.sidecar)
    mesh.group.wait_http(ingress.sidecar, f"{ingress.admin_url}/ready", timeout=60)
    mesh.wait_hosts(
        "zone3",
        f"{z1} healthy again",
        lambda hosts: any(h.address == z1 and h.healthy for h in hosts),
        timeout=30,
    )
    assert_equal_split(mesh.ask("zone3", count=REQUESTS), ("zone1", "zone2"))


def test_a_changed_dataplane_file_takes_effect_on_restart(mesh: TwoZoneMesh) -> None:
    """`dp run` killed (no graceful stop: its Dataplane stays), its file given one more
    outbound, started again: the Dataplane and the sidecar's listeners have it."""
    client = mesh.clients["zone3"]
    port = client.outbounds["echo"] + 1000
    path = mesh.run_dir / f"{client.name}.yaml"
    original = path.read_text()
    doc = yaml.safe_load(original)
    doc["networking"]["outbound"].append(
        {
            "address": client.address,
            "port": port,
            "backendRef": {"kind": "MeshMultiZoneService", "name": "echo", "port": ECHO_PORT},
        }
    )
    dp_path = f"/meshes/{MESH}/dataplanes/{client.name}"
    try:
        mesh.group[client.sidecar].kill()
        assert len(zone_api(mesh, "zone3", dp_path)["networking"]["outbound"]) == 2
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        mesh.group.start(client.sidecar)
        mesh.group.wait_http(client.sidecar, f"{client.admin_url}/ready", timeout=60)

        def listening() -> bool:
            try:
                return httpx.get(f"http://{client.address}:{port}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        mesh.group.wait_until("the new outbound answers", listening, timeout=30)
        assert len(zone_api(mesh, "zone3", dp_path)["networking"]["outbound"]) == 3
    finally:
        path.write_text(original)


def test_a_gracefully_stopped_dp_run_deregisters_its_dataplane(mesh: TwoZoneMesh) -> None:
    """SIGTERM: `dp run` reports it is stopping; its Dataplane leaves the zone and global."""
    client = mesh.clients["zone3"]
    dp_path = f"/meshes/{MESH}/dataplanes/{client.name}"
    mesh.group.stop(client.sidecar)

    def deregistered() -> bool:
        on_zone = httpx.get(f"{mesh.cps['zone3'].url}{dp_path}", timeout=5).status_code == 404
        names = {display(i, "dataplane") for i in overview(mesh, "dataplanes")}
        return on_zone and client.name not in names

    mesh.group.wait_until("client-zone3 deregistered", deregistered, timeout=30)
    mesh.group.start(client.sidecar)
    mesh.group.wait_http(client.sidecar, f"{client.admin_url}/ready", timeout=60)
    mesh.wait_hosts(
        "zone3",
        "both other zones at priority 1",
        lambda hosts: (
            {h.address for h in hosts if h.priority == 1}
            >= {mesh.ingress_endpoint("zone1"), mesh.ingress_endpoint("zone2")}
        ),
    )
    assert zone_api(mesh, "zone3", dp_path)["name"] == client.name


def test_a_zone_whose_cp_is_down_keeps_receiving_failover_traffic(mesh: TwoZoneMesh) -> None:
    """zone2's CP killed (its ingress and instances still serve): past the grace period the
    other zones still send to zone2, and global shows zone2's proxies as last reported."""
    mesh.kill_cp("zone2")

    def past_grace() -> bool:
        info = mesh.global_api("GET", "/").json()
        return f"zone2 offline (for over {GRACE_S:g}s)" in info["status"]["zones"]

    mesh.group.wait_until("global notes zone2 offline", past_grace, timeout=30)
    time.sleep(GRACE_S)  # a few more of global's checks
    answers = mesh.ask("zone3", count=REQUESTS)
    MEASURED["zone2_cp_down"] = zones_of(answers)
    assert_equal_split(answers, ("zone1", "zone2"))
    zone2 = [i for i in overview(mesh, "dataplanes") if i["zone"] == "zone2"]
    assert zone2 and all(i["status"] == "Online" for i in zone2), zone2
    assert all(i["notes"][0].startswith('zone "zone2" is offline') for i in zone2), zone2
