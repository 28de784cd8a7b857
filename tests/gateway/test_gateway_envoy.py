"""A builtin gateway with real Envoy, run by `zonemesh dp run`, in the demo's two-zone mesh.

The topology of `zonemesh demo` (global, two zone CPs, ingresses, echo instances behind
sidecars: two in zone1, one in zone2) plus, in zone1, a BUILTIN gateway Dataplane
`edge-gateway-zone1` whose MeshGateway, certificate Secret and MeshHTTPRoutes are applied on
global (they sync down). The gateway has an HTTP listener routing `/echo` to the
MeshMultiZoneService `echo`, an HTTPS listener for `edge.example.com` with the Secret's
certificate, and a TCP listener to the MMZS `echo-tcp`. The tests run in file order, each
leaving the mesh as it found it; every request uses a new connection.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gateway.gateway_topologies import serving_pems, tls_secret
from support.processes import wait_for

from zonemesh.demo.processes import free_port
from zonemesh.demo.topology import ECHO_PORT, HTTP_MMZS, MESH, TCP_MMZS, TwoZoneMesh
from zonemesh.demo.traffic import Answer, Load, ask_many, summary

pytestmark = pytest.mark.timeout(300)

ZONE = "zone1"
NAME = "edge-gateway-zone1"
HOST = "edge.example.com"
REQUESTS = 30
SETTLE_S = 30.0  # how long to poll for an eventual state (not a speed target)
SETTLED_STREAK = 10


@dataclass
class Edge:
    mesh: TwoZoneMesh
    address: str
    http_port: int
    https_port: int
    tcp_port: int
    admin_port: int
    ca_file: Path

    @property
    def process(self) -> str:
        return f"{NAME}-dp"

    def url(self, path: str = "/echo", port: int | None = None) -> str:
        return f"http://{self.address}:{port or self.http_port}{path}"

    def ask(
        self, path: str = "/echo", count: int = REQUESTS, port: int | None = None
    ) -> list[Answer]:
        return ask_many(self.url(path, port), count)

    def envoy_listeners(self) -> set[str]:
        response = httpx.get(f"http://127.0.0.1:{self.admin_port}/listeners?format=json", timeout=5)
        return {s["name"] for s in response.json().get("listener_statuses", [])}


def mesh_gateway(
    edge_ports: dict[str, int], extra: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "type": "MeshGateway",
        "mesh": MESH,
        "name": "edge-gateway",
        "selectors": [{"match": {"kuma.io/service": "edge-gateway"}}],
        "conf": {
            "listeners": [
                {"port": edge_ports["http"], "protocol": "HTTP"},
                {
                    "port": edge_ports["https"],
                    "protocol": "HTTPS",
                    "hostname": HOST,
                    "tls": {"mode": "TERMINATE", "certificates": [{"secret": "edge-cert"}]},
                },
                {"port": edge_ports["tcp"], "protocol": "TCP", "tags": {"listener": "tcp"}},
                *(extra or []),
            ]
        },
    }


def route(name: str, backend: str, path: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": "MeshGateway", "name": "edge-gateway"}
    if tags:
        target["tags"] = tags
    return {
        "type": "MeshHTTPRoute",
        "mesh": MESH,
        "name": name,
        "spec": {
            "targetRef": target,
            "to": [
                {
                    "targetRef": {"kind": "Mesh"},
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                            "default": {
                                "backendRefs": [
                                    {
                                        "kind": "MeshMultiZoneService",
                                        "name": backend,
                                        "port": ECHO_PORT,
                                    }
                                ]
                            },
                        }
                    ],
                }
            ],
        },
    }


def put_on_global(mesh: TwoZoneMesh, doc: dict[str, Any]) -> None:
    plural = {"MeshGateway": "meshgateways", "MeshHTTPRoute": "meshhttproutes", "Secret": "secrets"}
    path = f"/meshes/{MESH}/{plural[doc['type']]}/{doc['name']}"
    response = mesh.global_api("PUT", path, json=doc)
    assert response.status_code in (200, 201), response.text


def zones_of(answers: list[Answer]) -> set[str]:
    return {a.zone if a.ok else f"failed: {a.error}" for a in answers}


def settle(load: Load, since: float, zone: str) -> float | None:
    deadline = since + SETTLE_S
    while time.monotonic() < deadline:
        settled = load.settled_at(since, zone, tail=SETTLED_STREAK)
        if settled is not None:
            return settled - since
        time.sleep(0.1)
    return None


def wait_answering(edge: Edge, zone: str, port: int | None = None) -> None:
    deadline = time.monotonic() + SETTLE_S
    last: list[Answer] = []
    while time.monotonic() < deadline:
        last = edge.ask(count=3, port=port)
        if zones_of(last) == {zone}:
            return
        time.sleep(0.2)
    raise AssertionError(f"gateway never answered from {zone}: {summary(last)}")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    run_dir = tmp_path_factory.mktemp("gateway")
    mesh = TwoZoneMesh(run_dir)
    with mesh:
        address = mesh.address(ZONE, 80)
        ports = {kind: free_port(address) for kind in ("http", "https", "tcp")}
        cert, key = serving_pems(HOST)
        ca_file = run_dir / "edge-cert.pem"
        ca_file.write_bytes(cert)
        put_on_global(mesh, tls_secret("edge-cert", cert, key))
        put_on_global(mesh, mesh_gateway(ports))
        put_on_global(mesh, route("edge-echo", HTTP_MMZS, "/echo"))
        put_on_global(mesh, route("edge-tcp", TCP_MMZS, "/", tags={"listener": "tcp"}))
        cp = mesh.cps[ZONE]
        token = httpx.post(
            f"{cp.url}/tokens/dataplane",
            json={"mesh": MESH, "name": NAME, "type": "dataplane", "validFor": "1h"},
            timeout=10,
        )
        assert token.status_code == 200, token.text
        token_file = mesh.tokens_dir / f"{NAME}.token"
        token_file.touch(mode=0o600)
        token_file.write_text(token.text.strip())
        dataplane = {
            "type": "Dataplane",
            "mesh": MESH,
            "name": NAME,
            "networking": {
                "address": address,
                "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge-gateway"}},
            },
        }
        dataplane_file = run_dir / f"{NAME}.yaml"
        dataplane_file.write_text(yaml.safe_dump(dataplane))
        admin_port = free_port()
        mesh.group.spawn(
            f"{NAME}-dp",
            [
                *("dp", "run", "--cp-address", cp.xds_address, "--ca-cert-file", str(cp.ca_file)),
                *("--dataplane-file", str(dataplane_file), "--admin-port", str(admin_port)),
                *("--dataplane-token-file", str(token_file), "--log-level", "info"),
            ],
        )
        mesh.group.wait_http(f"{NAME}-dp", f"http://127.0.0.1:{admin_port}/ready", timeout=60)
        edge = Edge(mesh, address, ports["http"], ports["https"], ports["tcp"], admin_port, ca_file)
        wait_answering(edge, ZONE)
        yield edge


def test_http_listener_routes_echo_to_the_local_zone(edge: Edge) -> None:
    answers = edge.ask()
    assert zones_of(answers) == {ZONE}, summary(answers)
    assert {a.instance for a in answers} == {"echo-zone1-1", "echo-zone1-2"}, summary(answers)


def test_a_path_no_route_matches_gets_kumas_404(edge: Edge) -> None:
    response = httpx.get(edge.url("/elsewhere"), timeout=10)
    assert response.status_code == 404
    assert "No routes match this MeshGateway" in response.text
    assert response.headers.get("server") == "Kuma Gateway"


def test_https_listener_serves_the_secrets_certificate(edge: Edge) -> None:
    result = subprocess.run(
        [
            *("curl", "-sS", "--max-time", "10", "--cacert", str(edge.ca_file)),
            *("--resolve", f"{HOST}:{edge.https_port}:{edge.address}"),
            f"https://{HOST}:{edge.https_port}/echo",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["zone"] == ZONE
    # A name the certificate does not carry is refused by curl's verification.
    other = subprocess.run(
        [
            *("curl", "-sS", "--max-time", "10", "--cacert", str(edge.ca_file)),
            *("--resolve", f"other.example.com:{edge.https_port}:{edge.address}"),
            f"https://other.example.com:{edge.https_port}/echo",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert other.returncode != 0


def test_tcp_listener_forwards_to_the_routes_backend(edge: Edge) -> None:
    answers = edge.ask("/", port=edge.tcp_port)
    assert zones_of(answers) == {ZONE}, summary(answers)


def test_gateway_fails_over_to_the_other_zone_and_back(edge: Edge) -> None:
    mesh = edge.mesh
    load = Load(edge.url()).start()
    try:
        time.sleep(0.5)
        stopped_at = time.monotonic()
        mesh.stop_zone_instances(ZONE)
        failover = settle(load, stopped_at, "zone2")
        started_at = time.monotonic()
        mesh.start_zone_instances(ZONE)
        failback = settle(load, started_at, ZONE)
        outage = [a for a in load.since(stopped_at) if a.at < started_at]
    finally:
        load.stop()
    assert failover is not None, summary(outage)
    late = [a for a in outage if a.at >= stopped_at + failover]
    assert late and zones_of(late) == {"zone2"}, summary(late)
    assert failback is not None, summary(load.since(started_at))
    answers = edge.ask()
    assert zones_of(answers) == {ZONE}, summary(answers)


def test_a_listener_with_a_missing_certificate_is_left_out_and_the_rest_keeps_serving(
    edge: Edge,
) -> None:
    ports = {"http": edge.http_port, "https": edge.https_port, "tcp": edge.tcp_port}
    bad_port = free_port(edge.address)
    bad = {
        "port": bad_port,
        "protocol": "HTTPS",
        "tls": {"mode": "TERMINATE", "certificates": [{"secret": "no-such-secret"}]},
    }
    put_on_global(edge.mesh, mesh_gateway(ports, [bad]))
    log = edge.mesh.run_dir / "cp-zone1.log"
    try:
        # The zone CP got the change (it says why the listener is left out) ...
        wait_for(
            lambda: 'Secret "no-such-secret" not found in mesh "default"' in log.read_text(),
            timeout=SETTLE_S,
            message="the zone CP never reported the missing certificate",
        )
        # ... and the gateway's other listeners are still there and still answer.
        listeners = edge.envoy_listeners()
        assert f"edge-gateway:HTTPS:{bad_port}" not in listeners, listeners
        assert f"edge-gateway:HTTP:{edge.http_port}" in listeners, listeners
        answers = edge.ask(count=10)
        assert zones_of(answers) == {ZONE}, summary(answers)
        # Nothing was NACKed: the CP left the listener out rather than send a bad one.
        stats = httpx.get(
            f"http://127.0.0.1:{edge.admin_port}/stats?filter=update_rejected$", timeout=5
        ).text
        rejected = {k: int(v) for k, v in (ln.split(": ") for ln in stats.splitlines() if ln)}
        assert rejected and not any(rejected.values()), rejected
    finally:
        put_on_global(edge.mesh, mesh_gateway(ports))


def test_dp_run_says_it_runs_a_builtin_gateway(edge: Edge) -> None:
    log = (edge.mesh.run_dir / f"{edge.process}.log").read_text()
    assert "Dataplane (builtin gateway) default.edge-gateway-zone1" in log


def test_the_xds_view_shows_the_certificate_but_never_its_key(edge: Edge) -> None:
    cp = edge.mesh.cps[ZONE]
    response = httpx.get(f"{cp.url}/meshes/{MESH}/dataplanes/{NAME}/xds", timeout=10)
    assert response.status_code == 200, response.text
    text = response.text
    assert "mesh_gateway_cert:default:secret:edge-cert" in text
    assert "PRIVATE KEY" not in text


def _rule(matches: list[dict[str, Any]], **default: Any) -> dict[str, Any]:
    default.setdefault(
        "backendRefs", [{"kind": "MeshMultiZoneService", "name": HTTP_MMZS, "port": ECHO_PORT}]
    )
    return {"matches": matches, "default": default}


FEATURE_ROUTE = {
    "type": "MeshHTTPRoute",
    "mesh": MESH,
    "name": "edge-features",
    "spec": {
        "targetRef": {"kind": "MeshGateway", "name": "edge-gateway"},
        "to": [
            {
                "targetRef": {"kind": "Mesh"},
                "rules": [
                    _rule(
                        [{"path": {"type": "PathPrefix", "value": "/rewrite"}}],
                        filters=[
                            {
                                "type": "URLRewrite",
                                "urlRewrite": {
                                    "path": {
                                        "type": "ReplacePrefixMatch",
                                        "replacePrefixMatch": "/new",
                                    }
                                },
                            }
                        ],
                    ),
                    _rule(
                        [{"path": {"type": "PathPrefix", "value": "/headers"}}],
                        filters=[
                            {
                                "type": "RequestHeaderModifier",
                                "requestHeaderModifier": {
                                    "set": [{"name": "x-added", "value": "by-gateway"}],
                                    "remove": ["x-secret"],
                                },
                            },
                            {
                                "type": "ResponseHeaderModifier",
                                "responseHeaderModifier": {
                                    "add": [{"name": "x-from", "value": "edge"}]
                                },
                            },
                        ],
                    ),
                    _rule([{"headers": [{"name": "x-canary", "value": "yes"}]}]),
                    {
                        "matches": [{"path": {"type": "Exact", "value": "/old"}}],
                        "default": {
                            "filters": [
                                {
                                    "type": "RequestRedirect",
                                    "requestRedirect": {
                                        "path": {
                                            "type": "ReplaceFullPath",
                                            "replaceFullPath": "/echo",
                                        },
                                        "statusCode": 301,
                                    },
                                }
                            ]
                        },
                    },
                ],
            }
        ],
    },
}


def test_route_filters_and_header_matches_apply_on_the_gateway(edge: Edge) -> None:
    """The MeshHTTPRoute features sidecars have, through the builtin gateway's real Envoy."""
    put_on_global(edge.mesh, FEATURE_ROUTE)

    def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.get(edge.url(path), headers=headers, timeout=10, follow_redirects=False)

    try:
        wait_for(
            lambda: get("/rewrite/x").status_code == 200,
            timeout=SETTLE_S,
            message="the feature route never reached the gateway",
        )
        assert get("/rewrite/x").json()["path"] == "/new/x"
        response = get("/headers", {"x-secret": "s3cret"})
        seen = response.json()["headers"]
        assert seen.get("x-added") == "by-gateway" and "x-secret" not in seen, seen
        assert response.headers.get("x-from") == "edge"
        # A header match alone routes a path no other rule has; without it Kuma's 404.
        assert get("/elsewhere", {"x-canary": "yes"}).json()["zone"] == ZONE
        assert get("/elsewhere").status_code == 404
        redirect = get("/old")
        assert redirect.status_code == 301
        assert redirect.headers["location"].endswith("/echo")
    finally:
        response = edge.mesh.global_api("DELETE", f"/meshes/{MESH}/meshhttproutes/edge-features")
        assert response.status_code == 200, response.text
