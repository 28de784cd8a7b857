"""The DR scenario's verdict without Envoy: `DrScenario` against a stand-in whose "global load
balancer" is a small HTTP server that picks a gateway per request and answers like `zonemesh
echo` behind it. A mesh that keeps sending to a lost zone, that keeps failing after the 2 s
bound, or to which traffic never returns must fail its phase or target, and the run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support.demo_fakes import FakeGroup, answer_like_echo, run_to_end, shorten

from zonemesh.demo import dr_scenario
from zonemesh.demo.dr_scenario import DrScenario
from zonemesh.demo.glb import UPSTREAM_HEADER
from zonemesh.demo.live import DrLiveView, plain_summary
from zonemesh.demo.traffic import Answer, Load

VIA = {"zone1": "127.0.0.1:1", "zone2": "127.0.0.1:2"}


class FakeDrMesh:
    """`lb_sends[zone]`: the load balancer routes there; `echo_in[zone]`: whose echo that
    zone's gateway reaches; a lost zone answers 503 until the LB stops sending to it, which
    happens `lb_delay` seconds after the kill (never if `keeps_sending`)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        lb_delay: float = 0.02,
        keeps_sending: bool = False,
        returns: bool = True,
        starts_failed_over: bool = False,
        relapses: bool = False,
    ) -> None:
        self.run_dir = run_dir
        self.lb_delay, self.keeps_sending, self.returns = lb_delay, keeps_sending, returns
        # zone-back: the gateway is up before its zone's instances (answers from zone2 while
        # the zone starts), or goes back to zone2 after it served from its zone again.
        self.starts_failed_over, self.relapses = starts_failed_over, relapses
        self.lb_sends = {"zone1": True, "zone2": True}
        self.echo_in = {"zone1": "zone1", "zone2": "zone2"}
        self.lost: set[str] = set()
        self.group = FakeGroup()
        self.target = "the fake load balancer"
        self.server: ThreadingHTTPServer | None = None
        self._next = count()

    def start(self) -> None:
        mesh = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                zones = [z for z in ("zone1", "zone2") if mesh.lb_sends[z]]
                gateway = zones[next(mesh._next) % len(zones)]
                if gateway in mesh.lost:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answering = mesh.echo_in[gateway]
                answer_like_echo(
                    self, answering, f"echo-{answering}", {UPSTREAM_HEADER: VIA[gateway]}
                )

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def load(self, name: str, interval: float) -> Load:
        assert self.server is not None
        url = f"http://127.0.0.1:{self.server.server_address[1]}/echo"
        return Load(url, interval=interval, via_header=UPSTREAM_HEADER)

    def gateway_zone(self, answer: Answer) -> str:
        return {v: k for k, v in VIA.items()}.get(answer.via, "")

    def lb_health(self) -> dict[str, bool]:
        return dict(self.lb_sends)

    def stop_zone_instances(self, zone: str) -> None:
        self.echo_in[zone] = "zone2"

    def start_zone_instances(self, zone: str) -> None:
        self.echo_in[zone] = zone

    def kill_zone(self, zone: str) -> list[str]:
        self.lost.add(zone)
        if not self.keeps_sending:
            threading.Timer(self.lb_delay, self.lb_sends.__setitem__, (zone, False)).start()
        return [f"cp-{zone}", f"gateway-{zone}"]

    def restore_zone(self, zone: str) -> None:
        if not self.returns:
            return
        if self.starts_failed_over:
            self.echo_in[zone] = "zone2"
        self.lost.discard(zone)
        self.lb_sends[zone] = True
        if self.starts_failed_over:
            time.sleep(0.3)  # requests reach the gateway before its instances are up
            self.echo_in[zone] = zone
        if self.relapses:
            threading.Timer(0.35, self.echo_in.__setitem__, (zone, "zone2")).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(autouse=True)
def short_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    shorten(
        monkeypatch,
        dr_scenario,
        STEADY_S=0.5,
        INSTANCES_DOWN_S=0.5,
        ZONE_LOST_S=1.0,
        AFTER_RETURN_S=0.5,
        SETTLE_WAIT_S=1.5,
        LOAD_INTERVAL_S=0.01,
        HEALTH_POLL_S=0.05,
    )


def run(tmp_path: Path, **behaviour: Any) -> Iterator[DrScenario]:
    mesh = FakeDrMesh(tmp_path, **behaviour)
    yield from run_to_end(mesh, DrScenario(mesh))


@pytest.fixture
def healthy(tmp_path: Path) -> Iterator[DrScenario]:
    yield from run(tmp_path)


def test_a_mesh_that_behaves_passes_every_phase_and_target(healthy: DrScenario) -> None:
    statuses = {k: p.status for k, p in healthy.phases.items()}
    assert statuses == dict.fromkeys(statuses, "PASS"), {
        k: p.reason for k, p in healthy.phases.items()
    }
    assert [t.status for t in healthy.targets] == ["PASS"] * 3, healthy.targets
    assert healthy.passed
    assert plain_summary(healthy)[-1] == "result: PASS"
    lines = healthy.target_lines()
    assert lines[0] == "targets" and all(line.startswith("  PASS") for line in lines[1:])
    summary = json.loads((healthy.mesh.run_dir / "summary.json").read_text())
    assert summary["passed"] is True and len(summary["targets"]) == 3
    events = (healthy.mesh.run_dir / "demo-events.log").read_text()
    assert "stopped sending to gateway-zone1" in events  # the LB's change, as it happened
    assert "answered by zone2 only" in healthy.phases["instances-fail"].reason


def test_the_live_view_shows_each_gateway_and_the_load_balancers_view(
    healthy: DrScenario,
) -> None:
    console = Console(width=140, record=True, color_system=None)
    console.print(DrLiveView(healthy))
    text = console.export_text()
    for expected in ("gateway-zone1", "gateway-zone2", "from zone1", "failed", "zone1 lost"):
        assert expected in text, text
    assert "sends" in text and str(healthy.mesh.run_dir) in text


def test_a_load_balancer_that_keeps_sending_to_the_lost_zone_fails(tmp_path: Path) -> None:
    for scenario in run(tmp_path, keeps_sending=True):
        lost = scenario.phases["zone-lost"]
        assert lost.status == "FAIL", lost.reason
        assert "not served by gateway-zone2 only" in lost.reason
        assert scenario.phases["zone-back"].status == "SKIP"  # built on a zone taken out
        assert not scenario.passed
        assert plain_summary(scenario)[-1] == "result: FAIL"


def test_failures_later_than_the_bound_fail_the_zone_loss_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dr_scenario, "NO_FAILURE_AFTER_S", 0.2)
    for scenario in run(tmp_path, lb_delay=0.7):
        lost = scenario.phases["zone-lost"]
        assert lost.status == "FAIL" and "target: none after 0.2 s" in lost.reason, lost.reason
        target = scenario.targets[1]
        assert target.status == "FAIL" and "failed after the kill" in target.measured
        assert not scenario.passed


def test_traffic_that_never_returns_fails_the_last_phase(tmp_path: Path) -> None:
    for scenario in run(tmp_path, returns=False):
        back = scenario.phases["zone-back"]
        assert back.status == "FAIL", {k: p.reason for k, p in scenario.phases.items()}
        assert "no traffic through gateway-zone1" in back.reason
        assert scenario.phases["zone-lost"].status == "PASS"
        assert not scenario.passed


def test_failing_over_while_the_zone_starts_is_no_error(tmp_path: Path) -> None:
    for scenario in run(tmp_path, starts_failed_over=True):
        back = scenario.phases["zone-back"]
        assert back.status == "PASS", back.reason
        before = int(back.reason.split(" answered by zone2 through it before")[0].split()[-1])
        assert before > 0, back.reason  # it did fail over, and the reason says how often


def test_a_gateway_that_leaves_its_zone_again_after_the_return_fails(tmp_path: Path) -> None:
    for scenario in run(tmp_path, relapses=True):
        back = scenario.phases["zone-back"]
        assert back.status == "FAIL", back.reason
        # Answers from zone2 after the return (or, on a slow machine, no return at all).
        assert "from elsewhere" in back.reason or "no traffic" in back.reason, back.reason
