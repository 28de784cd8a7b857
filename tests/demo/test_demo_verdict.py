"""The demo's verdict without Envoy: the scenario against a stand-in mesh whose clients are
small HTTP servers answering like `zonemesh echo` behind an MMZS outbound. A mesh that does
not fail over (or fail back) must fail its phase and the run, whatever else went well."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console
from support.demo_fakes import FakeGroup, answer_like_echo, run_to_end, shorten

from zonemesh.demo import scenario as scenario_module
from zonemesh.demo.live import LiveView, plain_summary
from zonemesh.demo.scenario import Scenario


class FakeMesh:
    """Two clients answered by the zone in `serving[zone]`; zone1 goes down and comes back
    as the scenario asks, unless `fails_over` / `fails_back` say it does not."""

    def __init__(self, run_dir: Path, *, fails_over: bool = True, fails_back: bool = True):
        self.run_dir = run_dir
        self.fails_over, self.fails_back = fails_over, fails_back
        self.serving = {"zone1": "zone1", "zone2": "zone2"}
        self.instances = {"zone1": [object(), object()], "zone2": [object()]}
        self.group = FakeGroup()
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.count = {"zone1": 0, "zone2": 0}

    def start(self) -> None:
        mesh = self

        for zone in ("zone1", "zone2"):

            class Handler(BaseHTTPRequestHandler):
                client_zone = zone

                def do_GET(self) -> None:
                    mesh.count[self.client_zone] += 1
                    answering = mesh.serving[self.client_zone]
                    instance = f"echo-{answering}-{mesh.count[self.client_zone] % 2 + 1}"
                    answer_like_echo(self, answering, instance)

                def log_message(self, *args: object) -> None:
                    pass

            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[zone] = server

    def client_url(self, zone: str) -> str:
        return f"http://127.0.0.1:{self.servers[zone].server_address[1]}/"

    def stop_zone_instances(self, zone: str) -> None:
        if self.fails_over:
            self.serving["zone1"] = "zone2"

    def start_zone_instances(self, zone: str) -> None:
        if self.fails_back:
            self.serving["zone1"] = "zone1"

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture(autouse=True)
def short_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    shorten(
        monkeypatch,
        scenario_module,
        LOCAL_PREFERENCE_S=0.5,
        OUTAGE_S=0.8,
        AFTER_FAILBACK_S=0.5,
        SETTLE_WAIT_S=1.0,
        LOAD_INTERVAL_S=0.01,
    )


def run(tmp_path: Path, **behaviour: bool) -> Iterator[Scenario]:
    mesh = FakeMesh(tmp_path, **behaviour)
    yield from run_to_end(mesh, Scenario(mesh))  # type: ignore[arg-type]


@pytest.fixture
def healthy(tmp_path: Path) -> Iterator[Scenario]:
    yield from run(tmp_path)


def test_a_mesh_that_behaves_passes_every_phase(healthy: Scenario) -> None:
    statuses = {k: p.status for k, p in healthy.phases.items()}
    assert statuses == dict.fromkeys(statuses, "PASS"), {
        k: p.reason for k, p in healthy.phases.items()
    }
    assert plain_summary(healthy)[-1] == "result: PASS"
    summary = json.loads((healthy.mesh.run_dir / "summary.json").read_text())
    assert summary["passed"] is True
    assert (healthy.mesh.run_dir / "demo-events.log").read_text().count("PASS") >= 4


def test_the_live_view_shows_each_client_and_phase(healthy: Scenario) -> None:
    console = Console(width=120, record=True, color_system=None)
    console.print(LiveView(healthy))
    text = console.export_text()
    for expected in ("client-zone1", "client-zone2", "from zone1", "failback", "finished"):
        assert expected in text, text
    assert str(healthy.mesh.run_dir) in text


@pytest.mark.parametrize(
    ("behaviour", "failing", "why"),
    [
        ({"fails_over": False}, "failover", "not answered by zone2 only"),
        ({"fails_back": False}, "failback", "not answered by zone1 only"),
    ],
    ids=["no-failover", "no-failback"],
)
def test_a_phase_that_misbehaves_fails_the_run(
    tmp_path: Path, behaviour: dict[str, bool], failing: str, why: str
) -> None:
    for scenario in run(tmp_path, **behaviour):
        phase = scenario.phases[failing]
        assert phase.status == "FAIL" and why in phase.reason, phase
        assert scenario.phases["local-preference"].status == "PASS"
        assert not scenario.passed
        lines = plain_summary(scenario)
        assert lines[-1] == "result: FAIL"
        assert any(line.split()[:2] == [failing, "FAIL"] for line in lines), lines
