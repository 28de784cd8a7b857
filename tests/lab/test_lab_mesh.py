"""The seed's flow end to end in the network lab: an app in zone1's client namespace calls
`http://echo.mzsvc.mesh.local:1027/` (curl) and `echo-tcp.mzsvc.mesh.local:1027` (a raw TCP
client) through the transparent proxy - real iptables, real DNS queries, real Envoy - and is
answered by zone1; by zone2, over mTLS through zone2's ingress, once zone1's instances are
gone; by zone1 again when they are back. Tests run in file order on one mesh."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.netlab import requires_lab

from zonemesh.demo.processes import ProcessError
from zonemesh.lab.mesh import LAB_NAMES, LabMesh, hostname_url
from zonemesh.lab.netns import NetLab

pytestmark = [requires_lab(), pytest.mark.timeout(240)]

CLIENT = "zone1-client"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabMesh]:
    run_dir = tmp_path_factory.mktemp("lab-mesh")
    lab_mesh = LabMesh(run_dir)
    try:
        with lab_mesh:
            yield lab_mesh
    finally:
        left = lab_mesh.group.pids()
        assert not left, f"processes left behind: {left}"
        assert not [n for n in _namespaces() if n.startswith(lab_mesh.lab.tag)]


def _namespaces() -> list[str]:
    import subprocess

    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def curl(lab: NetLab, role: str, url: str) -> dict[str, str]:
    """The seed's command, run by the app: `curl http://echo.mzsvc.mesh.local:1027/`."""
    result = lab.run(role, ["curl", "-s", "-m", "5", url])
    assert result.returncode == 0, f"curl exited {result.returncode}: {result.stderr}"
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def dig(lab: NetLab, role: str, *args: str) -> str:
    result = lab.run(role, ["dig", "+tries=1", "+time=2", *args])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def vip_of(mesh: LabMesh, kind: str, name: str) -> str:
    status, text = mesh.http("zone1", f"{mesh.cps['zone1'].url}/meshes/default/{kind}/{name}")
    assert status == 200, text
    return str(json.loads(text)["status"]["vips"][0]["ip"])


def test_curl_by_hostname_is_answered_by_the_local_zone(mesh: LabMesh) -> None:
    answers = [curl(mesh.lab, CLIENT, hostname_url()) for _ in range(6)]
    assert {a["zone"] for a in answers} == {"zone1"}
    assert {a["instance"] for a in answers} == {"echo-zone1-1", "echo-zone1-2"}


def test_a_raw_tcp_client_by_hostname_is_answered_by_the_local_zone(mesh: LabMesh) -> None:
    answers = [mesh.ask("zone1", tcp=True) for _ in range(3)]
    assert all(a.ok and a.zone == "zone1" for a in answers), answers


def test_the_vip_itself_routes_like_the_name(mesh: LabMesh) -> None:
    vip = vip_of(mesh, "meshmultizoneservices", "echo")
    assert vip.startswith("243.")
    assert curl(mesh.lab, CLIENT, f"http://{vip}:1027/")["zone"] == "zone1"


def test_every_status_hostname_resolves_to_its_vip(mesh: LabMesh) -> None:
    expected = {
        "echo.mzsvc.mesh.local": vip_of(mesh, "meshmultizoneservices", "echo"),
        "echo-tcp.mzsvc.mesh.local": vip_of(mesh, "meshmultizoneservices", "echo-tcp"),
        "echo.svc.mesh.local": vip_of(mesh, "meshservices", "echo"),
    }
    for name, vip in expected.items():
        assert dig(mesh.lab, CLIENT, "+short", name).split() == [vip], name
        assert dig(mesh.lab, CLIENT, "+tcp", "+short", name).split() == [vip], name
    # zone2's echo, synced in, under its zone's name (its own VIP in this zone).
    synced = dig(mesh.lab, CLIENT, "+short", "echo.svc.zone2.mesh.local").split()
    assert len(synced) == 1 and synced[0].startswith("241.")
    # The app's own resolver (glibc) sees the same: what curl exited 6 for before.
    getent = mesh.lab.run(CLIENT, ["getent", "hosts", "echo.mzsvc.mesh.local"])
    assert getent.stdout.split()[0] == expected["echo.mzsvc.mesh.local"]


def test_aaaa_and_other_types_of_a_mesh_name_answer_empty_at_once(mesh: LabMesh) -> None:
    for rdtype in ("AAAA", "TXT", "MX"):
        out = dig(mesh.lab, CLIENT, rdtype, "echo.mzsvc.mesh.local")
        assert "status: NOERROR" in out and "ANSWER: 0" in out, out


def test_other_names_go_to_the_hosts_resolver_and_mesh_names_do_not(mesh: LabMesh) -> None:
    ((name, ip),) = LAB_NAMES.items()
    assert dig(mesh.lab, CLIENT, "+short", name).split() == [ip]
    assert "status: NXDOMAIN" in dig(mesh.lab, CLIENT, "nowhere.lab.test")
    asked = (mesh.run_dir / "upstream-dns-queries.log").read_text()
    assert name in asked and "nowhere.lab.test" in asked
    assert "mesh.local" not in asked


FLOOD = """
import os, socket, struct
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
header = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
for i in range(3000):  # malformed names, huge packets, short junk, random bytes
    body = [header + b"\\x3f" + os.urandom(20), header + b"x" * 9000, b"\\x01", os.urandom(40)][i % 4]
    sock.sendto(body, ("10.213.0.1", 53))
"""


def test_a_flood_of_bad_queries_does_not_stall_the_sidecar(mesh: LabMesh) -> None:
    result = mesh.lab.run(CLIENT, [sys.executable, "-c", FLOOD], timeout=30)
    assert result.returncode == 0, result.stderr
    # Asked the way glibc asks (a retry after its timeout): a query the flood's backlog
    # crowded out of a socket buffer is retried, as by any real app's resolver.
    # dig reports each timed-out try on a ";;" line before the answer: keep only records.
    output = dig(mesh.lab, CLIENT, "+tries=3", "+short", "echo.mzsvc.mesh.local")
    records = [line for line in output.splitlines() if line and not line.startswith(";")]
    assert records and records[0].startswith("243."), output
    assert curl(mesh.lab, CLIENT, hostname_url())["zone"] == "zone1"
    assert mesh.group["client-zone1-dp"].running


def test_a_new_service_resolves_and_routes_live(mesh: LabMesh) -> None:
    glob = mesh.cps["global"]
    doc = {
        "type": "MeshMultiZoneService",
        "mesh": "default",
        "name": "echo-live",
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
            "ports": [{"port": 1027, "appProtocol": "http"}],
        },
    }
    path = f"{glob.url}/meshes/default/meshmultizoneservices/echo-live"
    assert mesh.http("global", path, method="PUT", body=doc)[0] == 201
    url = "http://echo-live.mzsvc.mesh.local:1027/"
    mesh.wait(
        "echo-live.mzsvc.mesh.local resolves and routes",
        lambda: mesh.http(CLIENT, url)[0] == 200,
        watch=["cp-zone1", "client-zone1-dp"],
        timeout=30,
    )
    assert curl(mesh.lab, CLIENT, url)["zone"] == "zone1"
    assert mesh.http("global", path, method="DELETE")[0] == 200
    mesh.wait(
        "echo-live.mzsvc.mesh.local gone",
        lambda: "NXDOMAIN" in dig(mesh.lab, CLIENT, "echo-live.mzsvc.mesh.local"),
        watch=["cp-zone1", "client-zone1-dp"],
        timeout=30,
    )


def test_without_zone1_instances_zone2_answers_over_mtls_through_its_ingress(
    mesh: LabMesh,
) -> None:
    handshakes = mesh.cluster_stat("zone1", "ssl.handshake")
    mesh.stop_zone_instances("zone1")
    for tcp in (False, True):
        mesh.wait_answers_from("zone1", "zone2", tcp=tcp, timeout=30)
    answer = curl(mesh.lab, CLIENT, hostname_url())
    assert answer == {**answer, "zone": "zone2", "instance": "echo-zone2-1"}
    assert mesh.cluster_stat("zone1", "ssl.handshake") > handshakes  # mTLS to zone2
    ingress = mesh.ingresses["zone2"]
    hosts = mesh.hosts("zone1")
    assert any(h.address == f"{ingress.address}:10001" and h.priority == 1 for h in hosts)


def test_with_zone1_back_zone1_answers_again(mesh: LabMesh) -> None:
    try:
        mesh.start_zone_instances("zone1")
    except ProcessError as e:
        pytest.fail(str(e))
    for tcp in (False, True):
        mesh.wait_answers_from("zone1", "zone1", tcp=tcp, timeout=30)
    assert curl(mesh.lab, CLIENT, hostname_url())["zone"] == "zone1"


def test_the_run_directory_has_every_log(mesh: LabMesh) -> None:
    logs = {p.name for p in Path(mesh.run_dir).glob("*.log")}
    assert {"cp-global.log", "cp-zone1.log", "client-zone1-dp.log"} <= logs
