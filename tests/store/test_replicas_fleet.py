"""100 proxies on one of two `cp run` instances of a zone sharing a real PostgreSQL: when that
instance is SIGKILLed, every proxy moves to the other by itself and keeps receiving changes,
and the proxies' endpoints never drop out of what the other proxies are sent.

The 100 are simulated Envoys (real gRPC ADS clients, `support.ads_client`, with node metadata
and dataplane tokens as `dp run` gives Envoy, and both CP addresses); two real Envoys
(`dp run --cp-address a,b`) carry traffic through the move. An observer proxy, on the
surviving instance from the start, records every EDS update it is sent: each must hold all of
the moved proxies' endpoints. Shared health makes that hold: a proxy connected to a live
instance is healthy everywhere, a dead instance's proxies stay connected for its health grace,
and by then they are connected again to the survivor."""

from __future__ import annotations

import contextlib
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
from replicas_helpers import dataplane as registered
from replicas_helpers import is_leader
from support.ads_client import ProxyFleet, SimulatedProxy
from support.processes import CpProcess, free_port, wait_for
from support.sidecars import Sidecar, dataplane, start_sidecar, stop
from support.tokens import issue_dataplane_token, token_file
from test_replicas_proxies import healthy_echo_endpoints

pytestmark = pytest.mark.timeout(420)

FLEET_SIZE = 100
FLEET_PORT = 20080  # every fleet proxy's inbound (each has an address of its own)
SERVICE_PORT = 8080
PING = {"ping-1": "127.0.22.1", "ping-2": "127.0.22.2"}  # applied through the API: healthy
# Members of `fleet` applied through b while the 100 sit on a, then move, then a's health
# expires: (count, seconds apart) before the kill, right after it, and up to past the 10 s grace.
EXTRA_BEFORE = (6, 0.5)  # longer than a's 2 s heartbeat: its view must never look stale
EXTRA_AFTER = ((10, 0.2), (11, 1.0))  # the reconnection window, then past the grace
EXTRA_MEMBERS = EXTRA_BEFORE[0] + sum(n for n, _ in EXTRA_AFTER)
APP_PORT = free_port()
ECHO = "127.0.8.41"
CLIENT = "127.0.8.42"


def fleet_address(index: int) -> str:
    return f"127.0.21.{index + 1}"


def fleet_endpoints() -> frozenset[str]:
    return frozenset(f"{fleet_address(i)}:{FLEET_PORT}" for i in range(FLEET_SIZE))


def outbound(service: str, port: int, listen: int) -> dict[str, Any]:
    return {
        "address": "127.0.0.1",
        "port": listen,
        "backendRef": {"kind": "MeshService", "name": service, "port": port},
    }


def fleet_dataplane(index: int) -> dict[str, Any]:
    """A member of service `fleet`, calling `ping`."""
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": f"fleet-{index:03d}",
        "networking": {
            "address": fleet_address(index),
            "inbound": [
                {
                    "port": FLEET_PORT,
                    "servicePort": SERVICE_PORT,
                    "tags": {"kuma.io/service": "fleet", "kuma.io/protocol": "http"},
                }
            ],
            "outbound": [outbound("ping", SERVICE_PORT, 30001)],
        },
    }


def observer_dataplane() -> dict[str, Any]:
    """A pure client of `fleet` and `echo`: its EDS shows whether their endpoints flap."""
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": "observer",
        "networking": {
            "address": "127.0.21.250",
            "inbound": [
                {
                    "port": FLEET_PORT,
                    "servicePort": SERVICE_PORT,
                    "state": "Ignored",
                    "tags": {"kuma.io/service": "observer", "kuma.io/protocol": "http"},
                }
            ],
            "outbound": [
                outbound("fleet", SERVICE_PORT, 30002),
                outbound("echo", APP_PORT, 30003),
            ],
        },
    }


def api_dataplane(name: str, address: str, service: str = "ping") -> dict[str, Any]:
    """A member of `service` (`ping` by default) applied through the API."""
    return registered(name, service, address, FLEET_PORT)


def ping_endpoints(proxy: SimulatedProxy) -> frozenset[str]:
    """What the proxy holds of `ping` (its only outbound)."""
    return frozenset().union(*proxy.clusters.values()) if proxy.clusters else frozenset()


@dataclass
class Zone:
    a: CpProcess
    b: CpProcess
    fleet: ProxyFleet
    observer: SimulatedProxy
    client: Sidecar
    procs: dict[str, subprocess.Popen[bytes]]


@pytest.fixture
def zone(tmp_path: Path, pg_database: str, postgres_server: PostgresServer) -> Iterator[Zone]:
    env = postgres_server.env(pg_database)
    a = CpProcess(tmp_path, name="a", store="postgres", env=env)
    b = CpProcess(tmp_path, name="b", store="postgres", env=env)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    fleet: ProxyFleet | None = None
    try:
        a.start()  # alone at first: every proxy's stream lands on it
        for name, address in PING.items():
            response = a.api(
                "PUT", f"/meshes/default/dataplanes/{name}", json=api_dataplane(name, address)
            )
            assert response.status_code == 201, response.text
        both = f"grpcs://127.0.0.1:{a.xds_port},127.0.0.1:{b.xds_port}"

        # Two real Envoys for the data path: echo-1 (with its app) and a client of it.
        echo = Sidecar("echo-1", ECHO, free_port(), free_port())
        client = Sidecar("client-1", CLIENT, free_port(), free_port(), outbound=free_port())
        echo_token = token_file(
            tmp_path, "echo", issue_dataplane_token(a.url, tags={"kuma.io/service": ["echo"]})
        )
        client_token = token_file(tmp_path, "client", issue_dataplane_token(a.url, name="client-1"))
        for sidecar, token, service, app in (
            (echo, echo_token, "echo", APP_PORT),
            (client, client_token, "client", free_port()),
        ):
            doc = dataplane(sidecar, service, app, echo_port=APP_PORT)
            procs[f"{sidecar.name}-app"], procs[f"{sidecar.name}-dp"] = start_sidecar(
                sidecar,
                doc,
                app,
                token,
                tmp_path,
                cp=a,
                cp_address=both,
                dp_args=("--log-level", "info"),
            )

        fleet_token = issue_dataplane_token(a.url, tags={"kuma.io/service": ["fleet"]})
        fleet = ProxyFleet(
            [
                SimulatedProxy(fleet_dataplane(i), fleet_token, both, a.ca_file)
                for i in range(FLEET_SIZE)
            ]
        )
        fleet.__enter__()
        a_target = f"127.0.0.1:{a.xds_port}"
        wait_for(
            lambda: (
                all(
                    p.connected_to == a_target and len(ping_endpoints(p)) == len(PING)
                    for p in fleet.proxies
                )
                or fleet.errors()
            ),
            timeout=90,
            interval=0.5,
            message="the fleet never got its config from a",
        )
        assert not fleet.errors(), fleet.errors()
        wait_for(
            lambda: _answers(client) == {"echo-1"},
            timeout=60,
            interval=0.5,
            message="traffic from client-1 to echo-1",
        )

        b.start()
        # The observer is on b from the start (b first), so its stream never moves.
        observer = SimulatedProxy(
            observer_dataplane(),
            issue_dataplane_token(a.url, name="observer"),
            f"grpcs://127.0.0.1:{b.xds_port},127.0.0.1:{a.xds_port}",
            a.ca_file,
        )
        fleet.add([observer])
        yield Zone(a, b, fleet, observer, client, procs)
    finally:
        if fleet is not None:
            fleet.close()
        for proc in reversed(list(procs.values())):
            stop(proc)
        b.kill()
        a.kill()


def _answers(client: Sidecar, tries: int = 4) -> set[str] | None:
    seen = set()
    for _ in range(tries):
        try:
            seen.add(httpx.get(f"http://{CLIENT}:{client.outbound}/", timeout=2).json()["instance"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None
    return seen


def test_sigkill_of_the_instance_holding_100_proxies_moves_them_without_a_flap(
    zone: Zone,
) -> None:
    a, b, fleet, observer = zone.a, zone.b, zone.fleet, zone.observer
    movers = fleet.proxies[:FLEET_SIZE]  # the observer was added after them
    assert is_leader(a) and not is_leader(b)
    b_target = f"127.0.0.1:{b.xds_port}"

    def observer_sees_everyone() -> bool:
        views = observer.clusters.values()
        return any(fleet_endpoints() <= v for v in views) and any(
            any(e.startswith(f"{ECHO}:") for e in v) for v in views
        )

    wait_for(observer_sees_everyone, timeout=60, interval=0.2, message="observer's first EDS")
    assert observer.connected_to == b_target
    fleet_cluster = next(n for n, v in observer.clusters.items() if fleet_endpoints() <= v)
    echo_cluster = next(
        n for n, v in observer.clusters.items() if any(e.startswith(f"{ECHO}:") for e in v)
    )
    echo_endpoint = next(e for e in observer.clusters[echo_cluster] if e.startswith(f"{ECHO}:"))
    first_update = len(observer.eds_updates)

    samples: list[int | None] = []
    sampling = threading.Event()
    sampling.set()

    def sample() -> None:
        while sampling.is_set():
            samples.append(healthy_echo_endpoints(zone.client))
            time.sleep(0.1)

    # Before the kill, while the proxies move and while the dead instance's health expires,
    # `fleet` keeps changing (members applied through b's API), so the observer is sent
    # fleet's endpoints again and again: each of those updates must hold every moved proxy.
    extras: list[str] = []
    killed = threading.Event()

    def add_extras(count: int, every_s: float) -> None:
        for _ in range(count):
            if not sampling.is_set():
                return
            k = len(extras) + 1
            name, address = f"fleet-extra-{k}", f"127.0.23.{k}"
            doc = api_dataplane(name, address, service="fleet")
            with contextlib.suppress(httpx.HTTPError):
                if b.api("PUT", f"/meshes/default/dataplanes/{name}", json=doc).is_success:
                    extras.append(f"{address}:{FLEET_PORT}")
            time.sleep(every_s)

    def grow_fleet() -> None:
        add_extras(*EXTRA_BEFORE)
        killed.wait(timeout=30)
        for count, every_s in EXTRA_AFTER:
            add_extras(count, every_s)

    sampler = threading.Thread(target=sample)
    grower = threading.Thread(target=grow_fleet)
    sampler.start()
    grower.start()
    try:
        wait_for(lambda: len(extras) >= EXTRA_BEFORE[0], timeout=30, message="extras before")
        killed_at = time.monotonic()
        a.kill()  # the leader, holding all 100 + 2 streams
        killed.set()
        wait_for(
            lambda: all(p.connected_to == b_target for p in movers),
            timeout=90,
            interval=0.2,
            message="the fleet did not reconnect to b",
        )
        all_on_b = time.monotonic() - killed_at

        def real_envoys_on_b() -> bool:
            overview = b.as_admin("GET", "/meshes/default/dataplanes/_overview").json()
            online = {
                i["name"]
                for i in overview["items"]
                if (i.get("dataplaneInsight") or {}).get("online")
            }
            return {"echo-1", "client-1"} <= online

        wait_for(real_envoys_on_b, timeout=60, interval=0.5, message="real Envoys not on b")
        grower.join(timeout=120)  # past the dead instance's health grace (10 s)
        wait_for(
            lambda: set(extras) <= observer.clusters.get(fleet_cluster, frozenset()),
            timeout=30,
            message="the observer never got the members added through b",
        )

        # Changes keep reaching every moved proxy through b: a third `ping` endpoint.
        response = b.api(
            "PUT", "/meshes/default/dataplanes/ping-3", json=api_dataplane("ping-3", "127.0.22.3")
        )
        assert response.status_code == 201, response.text
        wait_for(
            lambda: all(len(ping_endpoints(p)) == 3 for p in movers),
            timeout=60,
            interval=0.2,
            message="the moved fleet never got the new ping endpoint",
        )
        assert _answers(zone.client) == {"echo-1"}  # the data path, through b's config
    finally:
        sampling.clear()
        killed.set()
        sampler.join()
        grower.join()

    updates = observer.eds_updates[first_update:]
    print(
        f"all {FLEET_SIZE} simulated proxies on b {all_on_b:.2f}s after the SIGKILL; "
        f"the observer got {len(updates)} EDS updates meanwhile "
        f"({sum(u.cluster == fleet_cluster for u in updates)} of fleet); {len(samples)} samples"
    )
    assert not fleet.errors(), fleet.errors()
    assert observer.streams == 1, observer.failures  # its own stream never moved
    assert len(extras) == EXTRA_MEMBERS
    fleet_updates = [u for u in updates if u.cluster == fleet_cluster]
    assert len(fleet_updates) >= EXTRA_MEMBERS // 2  # a check of many updates, not of none
    for update in updates:
        if update.cluster == fleet_cluster:
            missing = fleet_endpoints() - update.endpoints
            when = f"{update.at - killed_at:+.2f}s from the kill"
            assert not missing, f"fleet's EDS {when} lacked {len(missing)}: {sorted(missing)[:3]}"
        if update.cluster == echo_cluster:
            assert echo_endpoint in update.endpoints, update
    answered = [s for s in samples if s is not None]
    assert answered and min(answered) == 1, samples  # the client's Envoy never lost echo-1
    streams = sorted(p.streams for p in movers)
    assert streams[0] >= 2  # every fleet proxy really moved
