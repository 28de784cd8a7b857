"""The DR demo's global load balancer, a real Envoy from its static bootstrap, in front of two
real HTTP servers (`zonemesh echo`, one per "zone") standing in for the zones' gateways.

What a user of the demo relies on: Envoy accepts the bootstrap; it answers from both zones;
when one zone's server is SIGKILLed no client request fails (retries on the other gateway)
and the load balancer stops sending there; when it comes back, traffic returns to it; and
every answer says which gateway served it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from zonemesh.demo.glb import UPSTREAM_HEADER, Backend, GlobalLoadBalancer, validate
from zonemesh.demo.processes import ProcessGroup, free_port
from zonemesh.demo.traffic import Load, ask_many
from zonemesh.dp.envoy import envoy_binary

pytestmark = pytest.mark.timeout(120)

ZONES = ("zone1", "zone2")


@dataclass
class Lab:
    group: ProcessGroup
    glb: GlobalLoadBalancer
    ports: dict[str, int]

    def start_server(self, zone: str) -> None:
        name = f"gateway-{zone}"
        if name not in self.group.procs:
            args = ["echo", "--address", "127.0.0.1", "--port", str(self.ports[zone])]
            self.group.add(name, [*args, "--zone", zone, "--instance", name])
        self.group.start(name)
        self.group.wait_http(name, f"http://127.0.0.1:{self.ports[zone]}/")

    def wait_health(self, expected: dict[str, bool]) -> None:
        self.group.wait_until(
            f"the load balancer's view {expected}",
            lambda: self.glb.health() == expected,
            timeout=30,
            watch=["glb"],
        )


def plan(tmp_path: Path) -> GlobalLoadBalancer:
    taken: set[tuple[str, int]] = set()
    ports = [free_port("127.0.0.1", taken) for _ in range(4)]
    backends = [Backend(z, "127.0.0.1", p) for z, p in zip(ZONES, ports[2:], strict=True)]
    return GlobalLoadBalancer("127.0.0.1", ports[0], ports[1], backends)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    glb = plan(tmp_path)
    config = glb.write(tmp_path / "glb.yaml")
    with ProcessGroup(tmp_path) as group:
        lab = Lab(group, glb, {b.zone: b.port for b in glb.backends})
        for zone in ZONES:
            lab.start_server(zone)
        group.add("glb", glb.envoy_args(config, tmp_path), program=[str(envoy_binary())])
        group.start("glb")
        group.wait_http("glb", f"{glb.admin_url}/ready")
        lab.wait_health({"zone1": True, "zone2": True})
        yield lab


def test_envoy_accepts_the_bootstrap(tmp_path: Path) -> None:
    config = plan(tmp_path).write(tmp_path / "glb.yaml")
    result = validate(envoy_binary(), config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_answers_come_from_both_gateways_and_name_the_one_that_served(lab: Lab) -> None:
    with httpx.Client() as client:
        responses = [client.get(f"{lab.glb.url}/echo") for _ in range(20)]
    assert all(r.status_code == 200 for r in responses)
    served = {lab.glb.zone_of_upstream(r.headers[UPSTREAM_HEADER]) for r in responses}
    assert served == set(ZONES)
    for response in responses:  # the header names the server that answered
        assert (
            lab.glb.zone_of_upstream(response.headers[UPSTREAM_HEADER]) == response.json()["zone"]
        )


def test_a_killed_gateway_costs_no_request_and_traffic_returns(lab: Lab) -> None:
    with Load(f"{lab.glb.url}/echo", interval=0.01, via_header=UPSTREAM_HEADER) as load:
        lab.group.wait_until(
            "answers from zone1", lambda: any(a.zone == "zone1" for a in load.answers)
        )
        killed_at = time.monotonic()
        lab.group.kill("gateway-zone1")
        lab.wait_health({"zone1": False, "zone2": True})
        out_at = time.monotonic()
        lab.group.wait_until(
            "50 answers after the load balancer took zone1 out",
            lambda: len(load.since(out_at)) >= 50,
        )
        restart_at = time.monotonic()
        lab.start_server("zone1")
        lab.wait_health({"zone1": True, "zone2": True})
        back_at = time.monotonic()
        lab.group.wait_until(
            "answers from zone1 again", lambda: any(a.zone == "zone1" for a in load.since(back_at))
        )
    after_kill = load.since(killed_at)
    failed = [a for a in after_kill if not a.ok]
    print(
        f"{len(after_kill)} requests after the kill, {len(failed)} failed; the load balancer "
        f"took zone1 out {out_at - killed_at:.2f} s after it"
    )
    assert not failed, failed[:5]
    out = [a for a in load.answers if out_at <= a.at < restart_at]
    assert out and {a.zone for a in out} == {"zone2"}
    assert {lab.glb.zone_of_upstream(a.via) for a in out} == {"zone2"}


def test_a_gateway_that_answers_but_cannot_serve_is_taken_out(lab: Lab) -> None:
    """A gateway whose listener accepts but answers 503 (its zone cannot serve) fails the
    active health check and is taken out; clients are answered by the other zone."""

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    lab.group.stop("gateway-zone1")
    server = ThreadingHTTPServer(("127.0.0.1", lab.ports["zone1"]), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        lab.wait_health({"zone1": False, "zone2": True})
        answers = ask_many(f"{lab.glb.url}/echo", 20)
        assert all(a.ok and a.zone == "zone2" for a in answers), answers
    finally:
        server.shutdown()
        server.server_close()
