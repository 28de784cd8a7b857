"""Zone ingress and egress configuration, and the instance counts a zone's ingress advertises."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from translate_topologies import LOCAL_ZONE, Topology, build

import zonemesh.translate as translate_pkg
from zonemesh.config import CpConfig
from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.types.zone_proxies import ZoneIngressSpec
from zonemesh.runtime.kernel import Runtime
from zonemesh.state.reconcile import Reconciler
from zonemesh.store.memory import MemoryStore
from zonemesh.translate import names
from zonemesh.translate.default import default_generator, profiles
from zonemesh.translate.generator import ProxyResources
from zonemesh.translate.profiles import Profile

GENERATOR = default_generator()
INGRESS_LISTENER = names.ingress_listener("127.0.1.100", 10001)
EGRESS_LISTENER = names.egress_listener("127.0.1.101", 10002)
ECHO_MMZS = names.mmzs_cluster("default", "echo", 1027)


def generate(topology: Topology, role: str) -> ProxyResources:
    state = topology.state()
    return GENERATOR.generate(state, topology.proxy(role, state))


def endpoints_of(resources: ProxyResources, cluster: str) -> list[tuple[str, int]]:
    cla = resources.of_type(ENDPOINT)[cluster]
    return [
        (ep.endpoint.address.socket_address.address, ep.endpoint.address.socket_address.port_value)
        for group in cla.endpoints
        for ep in group.lb_endpoints
    ]


def chains(listener: Any) -> dict[str, dict[str, Any]]:
    """SNI -> the chain's tcp_proxy config."""
    doc = MessageToDict(listener)
    out = {}
    for chain in doc.get("filterChains", []):
        match = chain["filterChainMatch"]
        assert match["transportProtocol"] == "tls"
        [sni] = match["serverNames"]
        [network] = chain["filters"]
        assert network["name"] == "envoy.filters.network.tcp_proxy"
        assert "transportSocket" not in chain  # passthrough: TLS is never terminated here
        out[sni] = network["typedConfig"]
    return out


# --- zone ingress ------------------------------------------------------------------------------


def test_ingress_has_one_sni_chain_per_mesh_service_port_and_mmzs_port() -> None:
    resources = generate(build("t", local_instances=2, remote={"zone-2": 1}, tcp=True), "ingress")
    listener = resources.of_type(LISTENER)[INGRESS_LISTENER]
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert sorted(chains(listener)) == [
        "sni.msvc.default.client.8080",
        "sni.msvc.default.echo.1027",
        "sni.msvc.default.echo.1028",
        "sni.mzsvc.default.echo.1027",
        "sni.mzsvc.default.echo.1028",
    ]


def test_ingress_forwards_only_to_local_instances_never_to_another_ingress() -> None:
    topology = build("t", local_instances=2, remote={"zone-2": 3, "zone-3": 1})
    resources = generate(topology, "ingress")
    by_sni = chains(resources.of_type(LISTENER)[INGRESS_LISTENER])
    local = [("127.0.1.21", 21027), ("127.0.1.22", 21027)]
    for sni in ("sni.mzsvc.default.echo.1027", "sni.msvc.default.echo.1027"):
        cluster = by_sni[sni]["cluster"]
        assert cluster == names.ingress_cluster(sni)
        assert endpoints_of(resources, cluster) == local
    every_endpoint = {ep for c in resources.of_type(ENDPOINT) for ep in endpoints_of(resources, c)}
    assert not {a for a, _ in every_endpoint} & {"127.0.2.100", "127.0.3.100", "127.0.1.100"}


def test_ingress_of_a_zone_without_instances_keeps_the_mmzs_chain_with_no_endpoints() -> None:
    resources = generate(build("t", local_instances=0, remote={"zone-2": 1}), "ingress")
    by_sni = chains(resources.of_type(LISTENER)[INGRESS_LISTENER])
    assert "sni.mzsvc.default.echo.1027" in by_sni
    assert endpoints_of(resources, by_sni["sni.mzsvc.default.echo.1027"]["cluster"]) == []


def test_ingress_with_nothing_to_route_still_has_a_listener() -> None:
    ingress = resource_from_wire(
        {
            "type": "ZoneIngress",
            "name": "lonely",
            "networking": {"address": "127.0.1.100", "port": 10001},
        }
    )
    topology = Topology("empty", [ingress], {"ingress": ingress.key})
    listener = generate(topology, "ingress").of_type(LISTENER)[INGRESS_LISTENER]
    assert not listener.filter_chains
    assert listener.HasField("default_filter_chain")


# --- zone egress -------------------------------------------------------------------------------


def test_with_zone_egress_priority_1_goes_to_the_local_egress_keeping_the_sni() -> None:
    resources = generate(build("t", local_instances=1, remote={"zone-2": 2}, egress=True), "client")
    cla = resources.of_type(ENDPOINT)[ECHO_MMZS]
    assert [(g.priority, g.locality.zone) for g in cla.endpoints] == [
        (0, LOCAL_ZONE),
        (1, LOCAL_ZONE),
    ]
    assert endpoints_of(resources, ECHO_MMZS) == [("127.0.1.21", 21027), ("127.0.1.101", 10002)]
    cluster = resources.of_type(CLUSTER)[ECHO_MMZS]
    tls = MessageToDict(cluster.transport_socket_matches[0].transport_socket)["typedConfig"]
    assert tls["sni"] == "sni.mzsvc.default.echo.1027"


def test_egress_forwards_each_remote_sni_to_the_zones_ingresses_equally() -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 2, "zone-3": 1}, egress=True)
    resources = generate(topology, "egress")
    by_sni = chains(resources.of_type(LISTENER)[EGRESS_LISTENER])
    weighted = by_sni["sni.mzsvc.default.echo.1027"]["weightedClusters"]["clusters"]
    assert weighted == [
        {"name": names.egress_cluster("zone-2"), "weight": 1},
        {"name": names.egress_cluster("zone-3"), "weight": 1},
    ]
    assert endpoints_of(resources, names.egress_cluster("zone-2")) == [("127.0.2.100", 10001)]
    assert endpoints_of(resources, names.egress_cluster("zone-3")) == [("127.0.3.100", 10001)]


def test_without_a_zone_egress_the_mesh_setting_falls_back_to_ingresses() -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 2}, egress=True)
    topology.resources = [r for r in topology.resources if r.type != "ZoneEgress"]
    del topology.proxies["egress"]
    assert endpoints_of(generate(topology, "client"), ECHO_MMZS)[1] == ("127.0.2.100", 10001)


# --- availableServices --------------------------------------------------------------------------


def _runtime(zone: str = "zone-1") -> Runtime:
    config = CpConfig.model_validate(
        {"mode": "zone", "store": {"type": "memory"}, "multizone": {"zone": {"name": zone}}}
    )
    return Runtime(config=config, store=MemoryStore())


async def _put(runtime: Runtime, doc: dict[str, Any], *, stamp: bool = True) -> Resource:
    resource = resource_from_wire(doc)
    if stamp:
        resource = stamp_origin(resource, is_global=False, zone=runtime.config.zone_name)
    return await runtime.store.create(resource)


def _server(name: str, address: str) -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": name,
        "networking": {
            "address": address,
            "inbound": [
                {
                    "port": 21027,
                    "servicePort": 1027,
                    "tags": {"kuma.io/service": "echo", "kuma.io/protocol": "http"},
                }
            ],
        },
    }


async def _available(runtime: Runtime, name: str) -> list[dict[str, Any]] | None:
    ingress = await runtime.store.find(ResourceKey("ZoneIngress", "", name))
    assert ingress is not None
    assert isinstance(ingress.spec, ZoneIngressSpec)
    return ingress.spec.available_services


async def test_local_zone_ingress_advertises_healthy_instance_counts() -> None:
    runtime = _runtime()
    reconciler = Reconciler(runtime, lambda _: None)
    await reconciler.load()
    await _put(runtime, {"type": "Mesh", "name": "default"})
    for i in (1, 2, 3):
        await _put(runtime, _server(f"echo-{i}", f"127.0.1.{20 + i}"))
    ingress = {
        "type": "ZoneIngress",
        "name": "ingress-zone-1",
        "networking": {"address": "127.0.1.100", "port": 10001},
    }
    await _put(runtime, ingress)
    synced = {
        "type": "ZoneIngress",
        "name": "ingress-zone-2",
        "labels": {"kuma.io/origin": "global", "kuma.io/zone": "zone-2"},
        "networking": {"address": "127.0.2.100", "port": 10001},
        "availableServices": [
            {
                "mesh": "default",
                "tags": {"kuma.io/service": "echo", "kuma.io/zone": "zone-2"},
                "instances": 7,
            }
        ],
    }
    await _put(runtime, synced, stamp=False)

    await reconciler.run_once()
    expected = {
        "mesh": "default",
        "tags": {"kuma.io/service": "echo", "kuma.io/zone": "zone-1"},
        "instances": 3,
    }
    assert await _available(runtime, "ingress-zone-1") == [expected]
    # another zone's ingress (synced in) is never rewritten by this zone
    synced_services = await _available(runtime, "ingress-zone-2")
    assert synced_services is not None and synced_services[0]["instances"] == 7

    # an instance whose proxy disconnected no longer counts
    runtime.health.set_connected(ResourceKey("Dataplane", "default", "echo-2"), False)
    await reconciler.run_once()
    assert await _available(runtime, "ingress-zone-1") == [{**expected, "instances": 2}]

    # a pass with nothing new writes nothing (a fixed point: no write loop through events)
    result = await reconciler.run_once()
    assert result.writes == 0


def test_egress_weighs_zones_by_instances_when_the_mmzs_opts_in() -> None:
    topology = build(
        "t",
        local_instances=1,
        remote={"zone-2": 2, "zone-3": 1},
        egress=True,
        mmzs_labels={"zonemesh.io/zone-weights": "instances"},
    )
    by_sni = chains(generate(topology, "egress").of_type(LISTENER)[EGRESS_LISTENER])
    assert by_sni["sni.mzsvc.default.echo.1027"]["weightedClusters"]["clusters"] == [
        {"name": names.egress_cluster("zone-2"), "weight": 2},
        {"name": names.egress_cluster("zone-3"), "weight": 1},
    ]


def test_each_kind_of_proxy_is_generated_by_its_profile_alone() -> None:
    """The composition picks generators by profile; no generator looks at the proxy type, so
    a new kind of proxy (a gateway) is a new profile, not a guard in every generator."""
    assert set(profiles()) == set(Profile)
    root = Path(translate_pkg.__file__).parent
    guards = [
        f"{path.name}:{node.lineno}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "profiles.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "proxy_type"
    ]
    assert guards == []
