"""Real Envoys (`zonemesh dp run --cp-address A,B`) on two `cp run` of one zone sharing a real
PostgreSQL: when the instance holding every ADS stream (the leader) is SIGKILLed, the proxies
move to the other instance by themselves, the client's EDS never loses a healthy endpoint of
the service, and changes keep reaching them through the survivor."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres_server import PostgresServer
from replicas_helpers import is_leader, measure_takeover
from support.processes import CpProcess, free_port, wait_for
from support.sidecars import Sidecar, dataplane, start_sidecar, stop
from support.tokens import issue_dataplane_token, token_file

pytestmark = pytest.mark.timeout(240)

APP_PORT = free_port()
SERVERS = {"echo-1": "127.0.8.21", "echo-2": "127.0.8.22"}
CLIENT = "127.0.8.30"


def healthy_echo_endpoints(client: Sidecar) -> int | None:
    """Healthy hosts of the client's `echo` cluster, as its Envoy holds them (None: no answer)."""
    try:
        body = httpx.get(
            f"http://127.0.0.1:{client.admin}/clusters", params={"format": "json"}, timeout=1
        ).json()
    except (httpx.HTTPError, ValueError):
        return None
    for cluster in body.get("cluster_statuses", []):
        if "echo" in cluster["name"]:
            hosts = cluster.get("host_statuses", [])
            return sum(
                1
                for h in hosts
                if h.get("health_status", {}).get("eds_health_status", "HEALTHY") == "HEALTHY"
            )
    return 0


@dataclass
class Zone:
    a: CpProcess
    b: CpProcess
    servers: list[Sidecar]
    client: Sidecar
    procs: dict[str, subprocess.Popen[bytes]]


@pytest.fixture
def zone(tmp_path: Path, pg_database: str, postgres_server: PostgresServer) -> Iterator[Zone]:
    env = postgres_server.env(pg_database)
    a = CpProcess(tmp_path, name="a", store="postgres", env=env)
    b = CpProcess(tmp_path, name="b", store="postgres", env=env)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        a.start()  # alone at first: every proxy's stream lands on it
        cp_address = f"grpcs://127.0.0.1:{a.xds_port},127.0.0.1:{b.xds_port}"
        servers = [Sidecar(n, addr, free_port(), free_port()) for n, addr in SERVERS.items()]
        client = Sidecar("client-1", CLIENT, free_port(), free_port(), outbound=free_port())
        echo_token = token_file(
            tmp_path, "echo", issue_dataplane_token(a.url, tags={"kuma.io/service": ["echo"]})
        )
        client_token = token_file(tmp_path, "client", issue_dataplane_token(a.url, name="client-1"))
        client_app = free_port()
        for sidecar, token, service, app in (
            *((s, echo_token, "echo", APP_PORT) for s in servers),
            (client, client_token, "client", client_app),
        ):
            doc = dataplane(sidecar, service, app, echo_port=APP_PORT)
            procs[f"{sidecar.name}-app"], procs[f"{sidecar.name}-dp"] = start_sidecar(
                sidecar,
                doc,
                app,
                token,
                tmp_path,
                cp=a,
                cp_address=cp_address,
                dp_args=("--log-level", "info"),
            )

        def both_answer() -> bool:
            seen = set()
            for _ in range(10):
                try:
                    answer = httpx.get(f"http://{CLIENT}:{client.outbound}/", timeout=2)
                    seen.add(answer.json()["instance"])
                except (httpx.HTTPError, ValueError, KeyError):
                    return False
            return seen == set(SERVERS)

        wait_for(both_answer, timeout=60, interval=0.5, message="traffic to both echo instances")
        b.start()
        yield Zone(a, b, servers, client, procs)
    finally:
        for proc in reversed(list(procs.values())):
            stop(proc)
        b.kill()
        a.kill()


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_proxies_move_to_the_survivor_without_losing_an_endpoint(zone: Zone, how: str) -> None:
    a, b, client = zone.a, zone.b, zone.client
    assert is_leader(a) and not is_leader(b)
    assert healthy_echo_endpoints(client) == 2

    samples: list[int | None] = []
    sampling = threading.Event()
    sampling.set()

    def sample() -> None:
        while sampling.is_set():
            samples.append(healthy_echo_endpoints(client))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        time.sleep(0.5)
        killed_at = time.monotonic()
        if how == "sigkill":
            a.kill()  # the leader, with every ADS stream
        else:
            assert a.proc is not None
            a.proc.send_signal(signal.SIGTERM)  # a clean stop: it steps down first
        takeover = measure_takeover(b, killed_at, 3.0)

        def everyone_on_b() -> bool:
            overview = b.as_admin("GET", "/meshes/default/dataplanes/_overview").json()
            return sum(1 for i in overview["items"] if _online_on(i)) == 3

        wait_for(everyone_on_b, timeout=60, interval=0.2, message="proxies did not reconnect to b")
        moved = time.monotonic() - killed_at
        time.sleep(12)  # past the dead instance's health grace: still nothing dropped
        if how == "sigterm":
            assert a.proc is not None and a.proc.wait(timeout=30) == 0
    finally:
        sampling.clear()
        sampler.join()
    print(f"takeover {takeover:.2f}s, all proxies on b after {moved:.2f}s, {len(samples)} samples")
    answered = [s for s in samples if s is not None]
    assert answered and min(answered) == 2, samples

    # Changes keep reaching the proxies through b: echo-2's app stops, its sidecar reports
    # not ready to b, the leader (b) drops it from echo, and the client's EDS follows.
    stop(zone.procs["echo-2-app"])
    wait_for(
        lambda: healthy_echo_endpoints(client) == 1,
        timeout=30,
        message="the client never lost echo-2's endpoint after its app stopped",
    )
    answers = {
        httpx.get(f"http://{CLIENT}:{client.outbound}/", timeout=2).json()["instance"]
        for _ in range(6)
    }
    assert answers == {"echo-1"}


def _online_on(item: dict[str, Any]) -> bool:
    """The proxy's ADS stream is on the instance whose API answered (insights are per instance)."""
    return bool((item.get("dataplaneInsight") or {}).get("online"))
