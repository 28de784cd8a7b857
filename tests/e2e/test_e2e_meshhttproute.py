"""MeshHTTPRoute on sidecars, with real processes: `zonemesh cp run` (mesh mTLS on), the
services `a` and `b` (one `zonemesh echo` behind `zonemesh dp run` each) and a client sidecar
whose outbound names the MeshService `a`. One MeshHTTPRoute, applied through the API once the
mesh serves, decides where each request goes; the echo app shows what reached it.

- `PathPrefix /b` goes to `b` (and `/bx`, not a `/`-separated prefix, stays on `a`);
- a header match sends `x-canary: yes` to `b`;
- a 1:3 split over `a` and `b` counted over 200 requests, with a wide tolerance;
- `URLRewrite` `ReplacePrefixMatch` (`/rewrite` -> `/new`) and `RequestHeaderModifier`, as the
  app sees them; a redirect; a backend that does not exist answers 500 and nothing else breaks;
- the route deleted, everything goes to `a` again.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.processes import CpProcess, free_port, wait_for
from support.sidecars import Sidecar, dataplane, start_sidecar, stop
from support.tokens import issue_dataplane_token, token_file

pytestmark = pytest.mark.timeout(240)

APP_PORT = free_port()  # every service's port, on its instance's own address
SERVERS = {"a": "127.0.9.21", "b": "127.0.9.22"}
CLIENT = "127.0.9.30"
ROUTE_PATH = "/meshes/default/meshhttproutes/client-routes"
REQUESTS = 200


def to(service: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": "MeshService", "name": service, "port": APP_PORT}
    if weight is not None:
        ref["weight"] = weight
    return ref


def prefix(value: str) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": value}}


def route_rules() -> list[dict[str, Any]]:
    return [
        {"matches": [prefix("/b")], "default": {"backendRefs": [to("b")]}},
        {
            "matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
            "default": {"backendRefs": [to("b")]},
        },
        {"matches": [prefix("/split")], "default": {"backendRefs": [to("a", 1), to("b", 3)]}},
        {
            "matches": [prefix("/rewrite")],
            "default": {
                "backendRefs": [to("b")],
                "filters": [
                    {
                        "type": "URLRewrite",
                        "urlRewrite": {
                            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}
                        },
                    }
                ],
            },
        },
        {
            "matches": [prefix("/headers")],
            "default": {
                "filters": [
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {
                            "set": [{"name": "x-added", "value": "by-route"}],
                            "remove": ["x-secret"],
                        },
                    }
                ]
            },
        },
        {
            "matches": [{"path": {"type": "Exact", "value": "/old"}}],
            "default": {
                "filters": [
                    {
                        "type": "RequestRedirect",
                        "requestRedirect": {
                            "path": {"type": "ReplaceFullPath", "replaceFullPath": "/b/new"},
                            "statusCode": 301,
                        },
                    }
                ]
            },
        },
        {
            "matches": [prefix("/nowhere")],
            "default": {"backendRefs": [{"kind": "MeshService", "name": "ghost", "port": 1}]},
        },
    ]


ROUTE = {
    "type": "MeshHTTPRoute",
    "mesh": "default",
    "name": "client-routes",
    "spec": {
        "targetRef": {"kind": "MeshService", "name": "client"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "a"}, "rules": route_rules()}],
    },
}


@dataclass
class Mesh:
    cp: CpProcess
    client: Sidecar

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        url = f"http://{CLIENT}:{self.client.outbound}{path}"
        return httpx.get(url, headers=headers, timeout=5, follow_redirects=False)

    def who(self, path: str, headers: dict[str, str] | None = None) -> str:
        response = self.get(path, headers)
        if response.status_code != 200:
            return f"status {response.status_code}"
        return str(response.json()["instance"])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp: Path = tmp_path_factory.mktemp("meshhttproute")
    cp = CpProcess(tmp, store="memory")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cp.start()
        mtls = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}
        response = cp.api(
            "PUT", "/meshes/default", json={"type": "Mesh", "name": "default", "mtls": mtls}
        )
        assert response.status_code in (200, 201), response.text
        client = Sidecar("client-1", CLIENT, free_port(), free_port(), outbound=free_port())
        sidecars = [
            *(
                (Sidecar(f"{s}-1", addr, free_port(), free_port()), s, APP_PORT)
                for s, addr in SERVERS.items()
            ),
            (client, "client", free_port()),
        ]
        for sidecar, service, app in sidecars:
            token = token_file(tmp, sidecar.name, issue_dataplane_token(cp.url, name=sidecar.name))
            doc = dataplane(sidecar, service, app, echo_port=APP_PORT, to="a")
            procs += start_sidecar(sidecar, doc, app, token, tmp, cp=cp)
        the_mesh = Mesh(cp, client)

        def answers(path: str, instance: str) -> bool:
            try:
                return the_mesh.who(path) == instance
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_for(lambda: answers("/", "a-1"), timeout=60, interval=0.5, message="client -> a")
        applied = cp.api("PUT", ROUTE_PATH, json=ROUTE)
        assert applied.status_code == 201, applied.text
        wait_for(lambda: answers("/b/x", "b-1"), timeout=30, interval=0.3, message="route applied")
        yield the_mesh
    finally:
        for proc in reversed(procs):
            stop(proc)
        cp.terminate()


def test_path_prefix_sends_to_another_service(mesh: Mesh) -> None:
    assert mesh.who("/b") == "b-1"
    assert mesh.who("/b/deeper/still") == "b-1"
    assert mesh.who("/bx") == "a-1"  # not a `/`-separated prefix of /b
    assert mesh.who("/anything") == "a-1"  # no rule: the outbound's own service


def test_header_match(mesh: Mesh) -> None:
    assert mesh.who("/", {"x-canary": "yes"}) == "b-1"
    assert mesh.who("/", {"x-canary": "no"}) == "a-1"


def test_weighted_split_over_two_services(mesh: Mesh) -> None:
    counts = Counter(mesh.who("/split") for _ in range(REQUESTS))
    assert set(counts) == {"a-1", "b-1"}, counts
    share_b = counts["b-1"] / REQUESTS
    assert 0.6 <= share_b <= 0.9, counts  # 3 of 4 expected; a binomial sd is about 3 %


def test_url_rewrite_is_what_the_app_sees(mesh: Mesh) -> None:
    response = mesh.get("/rewrite/item?q=1")
    assert response.status_code == 200
    body = response.json()
    assert body["instance"] == "b-1"
    assert body["path"] == "/new/item"


def test_request_headers_are_set_and_removed(mesh: Mesh) -> None:
    response = mesh.get("/headers", {"x-secret": "s3cret", "x-added": "by-client"})
    body = response.json()
    assert body["instance"] == "a-1"
    assert body["headers"].get("x-added") == "by-route"
    assert "x-secret" not in body["headers"]


def test_redirect(mesh: Mesh) -> None:
    response = mesh.get("/old")
    assert response.status_code == 301
    assert response.headers["location"].endswith("/b/new")


def test_a_backend_that_does_not_exist_answers_500_and_the_rest_works(mesh: Mesh) -> None:
    assert mesh.get("/nowhere").status_code == 500
    assert mesh.who("/b") == "b-1"


def test_deleting_the_route_sends_everything_to_the_outbounds_service(mesh: Mesh) -> None:
    """Last: it changes the shared mesh."""
    assert mesh.cp.api("DELETE", ROUTE_PATH).status_code == 200
    wait_for(lambda: mesh.who("/b/x") == "a-1", timeout=30, interval=0.3, message="route gone")
    assert mesh.who("/", {"x-canary": "yes"}) == "a-1"
