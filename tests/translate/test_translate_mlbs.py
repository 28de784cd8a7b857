"""MeshLoadBalancingStrategy: which policies reach a proxy and a destination, how they merge
(Kuma's order), and what each field does to the client's clusters and endpoints."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from translate_topologies import (
    LOCAL_ZONE,
    Topology,
    build,
    dataplane,
    inbound,
    mlbs,
    mmzs_outbound,
    to_mmzs,
)

from zonemesh.envoy_types import CLUSTER, ENDPOINT
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.types.mlbs import LBDefault
from zonemesh.translate import names
from zonemesh.translate.default import default_generator
from zonemesh.translate.generator import ProxyResources
from zonemesh.translate.policies import matching
from zonemesh.translate.policies.mlbs import policies_for, resolve_conf

ECHO_MMZS = names.mmzs_cluster("default", "echo", 1027)
ECHO_MMZS_TCP = names.mmzs_cluster("default", "echo", 1028)
GENERATOR = default_generator()
DISABLED = {"localityAwareness": {"disabled": True}}
AWARE = {"localityAwareness": {"disabled": False}}


def generate(topology: Topology, role: str = "client") -> ProxyResources:
    state = topology.state()
    return GENERATOR.generate(state, topology.proxy(role, state))


def priorities(resources: ProxyResources, cluster: str = ECHO_MMZS) -> dict[str, int]:
    """Zone (or zone/sub-zone) -> priority, for the localities that have endpoints."""
    out = {}
    for group in resources.of_type(ENDPOINT)[cluster].endpoints:
        if group.lb_endpoints:
            sub_zone = group.locality.sub_zone
            out[group.locality.zone + (f"/{sub_zone}" if sub_zone else "")] = group.priority
    return out


def lb_policy(resources: ProxyResources, cluster: str = ECHO_MMZS) -> str:
    return cluster_pb2.Cluster.LbPolicy.Name(resources.of_type(CLUSTER)[cluster].lb_policy)


def three_zones(*policies: Any, **kwargs: Any) -> Topology:
    topology = build("t", local_instances=1, remote={"zone-2": 1, "zone-3": 1}, **kwargs)
    topology.resources.extend(policies)
    return topology


def flat(resources: ProxyResources) -> bool:
    return set(priorities(resources).values()) == {0}


# --- no policy ---------------------------------------------------------------------------------


def test_without_a_policy_the_local_zone_comes_first() -> None:
    assert priorities(generate(three_zones())) == {LOCAL_ZONE: 0, "zone-2": 1, "zone-3": 1}


def test_a_policy_with_only_a_load_balancer_keeps_the_default_endpoints() -> None:
    plain = generate(three_zones()).of_type(ENDPOINT)[ECHO_MMZS]
    policy = mlbs("lb", [to_mmzs({"loadBalancer": {"type": "Random"}})])
    resources = generate(three_zones(policy))
    assert resources.of_type(ENDPOINT)[ECHO_MMZS] == plain
    assert lb_policy(resources) == "RANDOM"


# --- top-level targetRef: which proxies --------------------------------------------------------


def client_with(tags: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Any:
    client_inbound = inbound("client", 20080, 8080)
    client_inbound["name"] = "main"
    client_inbound["tags"].update(tags or {})
    dp = dataplane("client", "127.0.1.10", [client_inbound], [mmzs_outbound("echo", 1027, 11027)])
    if labels:
        dp = resource_from_wire(
            {
                "type": "Dataplane",
                "mesh": "default",
                "name": "client",
                "labels": {**dp.labels, **labels},
                "networking": dp.spec.networking.to_wire(),
            }
        )
    return dp


@pytest.mark.parametrize(
    ("target_ref", "selected"),
    [
        (None, True),
        ({"kind": "Mesh"}, True),
        ({"kind": "Mesh", "proxyTypes": ["Gateway"]}, False),
        ({"kind": "MeshSubset", "tags": {"team": "a"}}, True),
        ({"kind": "MeshSubset", "tags": {"team": "b"}}, False),
        ({"kind": "MeshService", "name": "client"}, True),
        ({"kind": "MeshService", "name": "echo"}, False),
        ({"kind": "MeshServiceSubset", "name": "client", "tags": {"team": "a"}}, True),
        ({"kind": "MeshServiceSubset", "name": "client", "tags": {"team": "b"}}, False),
        ({"kind": "Dataplane", "name": "client"}, True),
        ({"kind": "Dataplane", "name": "other"}, False),
        ({"kind": "Dataplane", "labels": {"app": "web"}}, True),
        ({"kind": "Dataplane", "labels": {"app": "db"}}, False),
        ({"kind": "Dataplane", "name": "client", "sectionName": "main"}, True),
        ({"kind": "Dataplane", "name": "client", "sectionName": "20080"}, True),
        ({"kind": "Dataplane", "name": "client", "sectionName": "admin"}, False),
    ],
)
def test_top_level_target_ref_selects_proxies(
    target_ref: dict[str, Any] | None, selected: bool
) -> None:
    client = client_with(tags={"team": "a"}, labels={"app": "web"})
    topology = three_zones(mlbs("flat", [to_mmzs(DISABLED)], target_ref))
    topology.resources = [client if r.key == client.key else r for r in topology.resources]
    assert flat(generate(topology)) is selected


def test_policy_of_another_mesh_does_not_apply() -> None:
    doc = {
        "type": "MeshLoadBalancingStrategy",
        "mesh": "other",
        "name": "flat",
        "spec": {"to": [to_mmzs(DISABLED)]},
    }
    assert not flat(generate(three_zones(resource_from_wire(doc))))


# --- merge order ---------------------------------------------------------------------------------


def test_more_specific_top_level_target_ref_wins_whatever_the_names() -> None:
    mesh_wide = mlbs("aaa", [to_mmzs(DISABLED)], {"kind": "Mesh"})
    for_client = mlbs("zzz", [to_mmzs(AWARE)], {"kind": "Dataplane", "name": "client"})
    assert not flat(generate(three_zones(mesh_wide, for_client)))
    mesh_wide = mlbs("zzz", [to_mmzs(AWARE)], {"kind": "Mesh"})
    for_client = mlbs("aaa", [to_mmzs(DISABLED)], {"kind": "MeshService", "name": "client"})
    assert flat(generate(three_zones(mesh_wide, for_client)))


def test_same_specificity_the_lexicographically_first_name_wins() -> None:
    assert flat(generate(three_zones(mlbs("a", [to_mmzs(DISABLED)]), mlbs("b", [to_mmzs(AWARE)]))))
    assert not flat(
        generate(three_zones(mlbs("a", [to_mmzs(AWARE)]), mlbs("b", [to_mmzs(DISABLED)])))
    )


def test_same_specificity_a_zone_policy_wins_over_one_synced_from_global() -> None:
    synced = mlbs("a", [to_mmzs(DISABLED)], labels={"kuma.io/origin": "global"})
    local = mlbs("b", [to_mmzs(AWARE)], labels={"kuma.io/origin": "zone"})
    assert not flat(generate(three_zones(synced, local)))


def test_to_entries_merge_field_by_field_more_specific_kind_last() -> None:
    """A Mesh entry and an MMZS entry (listed first) merge: the MMZS one wins where both
    speak, the Mesh one's other fields stay (JSON merge patch)."""
    policy = mlbs(
        "lb",
        [
            to_mmzs(AWARE),
            {
                "targetRef": {"kind": "Mesh"},
                "default": {**DISABLED, "loadBalancer": {"type": "LeastRequest"}},
            },
        ],
    )
    resources = generate(three_zones(policy))
    assert not flat(resources)
    assert lb_policy(resources) == "LEAST_REQUEST"


def test_lists_are_replaced_not_appended() -> None:
    first = {"to": {"type": "Only", "zones": ["zone-2"]}}
    second = {"to": {"type": "Only", "zones": ["zone-3"]}}
    weaker = mlbs(
        "b", [to_mmzs({"localityAwareness": {"crossZone": {"failover": [first, second]}}})]
    )
    stronger = mlbs("a", [to_mmzs({"localityAwareness": {"crossZone": {"failover": [second]}}})])
    assert priorities(generate(three_zones(weaker, stronger))) == {LOCAL_ZONE: 0, "zone-3": 1}


def test_to_entry_selects_destinations_by_name_labels_and_section_name() -> None:
    def applies(ref: dict[str, Any], cluster: str = ECHO_MMZS) -> bool:
        policy = mlbs("flat", [{"targetRef": ref, "default": DISABLED}])
        resources = generate(three_zones(policy, tcp=True))
        return set(priorities(resources, cluster).values()) == {0}

    assert applies({"kind": "MeshMultiZoneService", "name": "echo"})
    assert not applies({"kind": "MeshMultiZoneService", "name": "other"})
    assert applies({"kind": "MeshMultiZoneService", "labels": {"kuma.io/origin": "global"}})
    assert not applies({"kind": "MeshMultiZoneService", "name": "echo", "sectionName": "1028"})
    assert applies(
        {"kind": "MeshMultiZoneService", "name": "echo", "sectionName": "1028"}, ECHO_MMZS_TCP
    )
    assert not applies({"kind": "MeshService", "name": "echo"})  # names the MeshService only


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": 1, "b": {"c": [1, 2], "d": 4}}
    patch = {"b": {"c": [], "d": None, "e": 5}, "f": 6}
    assert matching.merge_patch(target, patch) == {"a": 1, "b": {"c": [], "e": 5}, "f": 6}
    assert target == {"a": 1, "b": {"c": [1, 2], "d": 4}}  # not mutated


def test_ordered_puts_the_weakest_first() -> None:
    policies = [
        mlbs("b", [to_mmzs(AWARE)], {"kind": "Dataplane", "name": "client"}),
        mlbs("a", [to_mmzs(AWARE)], {"kind": "Dataplane", "labels": {"x": "y"}}),
        mlbs("c", [to_mmzs(AWARE)]),
        mlbs("x", [to_mmzs(AWARE)], {"kind": "Mesh"}, labels={"kuma.io/display-name": "a2"}),
        mlbs("z", [to_mmzs(AWARE)], {"kind": "MeshSubset", "tags": {"x": "y"}}),
    ]
    assert [matching.display_name(p) for p in matching.ordered(policies)] == [
        "c",
        "a2",
        "z",
        "a",
        "b",
    ]


# --- sharing -------------------------------------------------------------------------------------


def test_proxies_with_the_same_policies_share_clusters_others_get_their_own() -> None:
    topology = three_zones(mlbs("flat", [to_mmzs(DISABLED)], {"kind": "Dataplane", "name": "b"}))
    for name in ("a", "b", "c"):
        dp = dataplane(
            name,
            f"127.0.1.{ord(name)}",
            [inbound("client", 20080, 8080)],
            [mmzs_outbound("echo", 1027, 11027)],
        )
        topology.resources.append(dp)
        topology.proxies[name] = dp.key
    state = topology.state()
    cla = {
        n: GENERATOR.generate(state, topology.proxy(n, state)).of_type(ENDPOINT)[ECHO_MMZS]
        for n in ("a", "b", "c")
    }
    assert cla["a"] is cla["c"]
    assert cla["b"] is not cla["a"] and cla["b"] != cla["a"]
    assert policies_for(state, state.dataplanes[ResourceKey("Dataplane", "default", "a")]).key == ()


# --- what the fields resolve to ----------------------------------------------------------------


def conf(
    default: dict[str, Any], client: dict[str, str] | None = None, zone: str = "zone-1"
) -> Any:
    return resolve_conf(LBDefault.model_validate(default), client or {}, zone)


@pytest.mark.parametrize(
    ("percentage", "factor"),
    [(50, 200), (70, 100), (30, 300), ("99.9", 100), (100, 100), (1, 10000)],
)
def test_failover_threshold_gives_kumas_overprovisioning_factor(
    percentage: int | str, factor: int
) -> None:
    resolved = conf(
        {"localityAwareness": {"crossZone": {"failoverThreshold": {"percentage": percentage}}}}
    )
    assert resolved.locality.overprovisioning_factor == factor


def test_affinity_weights_default_to_a_90_9_1_split_by_position() -> None:
    tags = [{"key": "node"}, {"key": "az"}, {"key": "region"}]
    resolved = conf(
        {"localityAwareness": {"localZone": {"affinityTags": tags}}},
        client={"node": "n1", "region": "r1"},  # no az: that group is left out
    )
    groups = [(g.key, g.value, g.weight) for g in resolved.locality.affinity]
    assert groups == [("node", "n1", 900), ("region", "r1", 9)]
    assert resolved.locality.weighted


def test_from_zones_limits_a_rule_to_clients_in_those_zones_and_keeps_the_index() -> None:
    failover = [
        {"from": {"zones": ["zone-2"]}, "to": {"type": "Only", "zones": ["zone-3"]}},
        {"to": {"type": "Any"}},
    ]
    default = {"localityAwareness": {"crossZone": {"failover": failover}}}
    in_zone_1 = conf(default, zone="zone-1").locality
    in_zone_2 = conf(default, zone="zone-2").locality
    assert (in_zone_1.remote_priority("zone-3"), in_zone_1.remote_priority("zone-4")) == (2, 2)
    assert (in_zone_2.remote_priority("zone-3"), in_zone_2.remote_priority("zone-4")) == (1, 2)


def test_disabled_with_failover_rules_keeps_the_rules_priorities() -> None:
    """Kuma lays endpoints out by the rules whenever crossZone is set."""
    resolved = conf(
        {
            "localityAwareness": {
                "disabled": True,
                "crossZone": {"failover": [{"to": {"type": "Any"}}]},
            }
        }
    )
    assert resolved.locality.remote_priority("zone-2") == 1


# --- the other destinations --------------------------------------------------------------------


def test_another_zones_mesh_service_is_dropped_when_no_rule_admits_its_zone() -> None:
    topology = build("t", local_instances=0, remote={"zone-2": 1})
    client = dataplane(
        "client",
        "127.0.1.10",
        [inbound("client", 20080, 8080)],
        [{"port": 12027, "backendRef": {"kind": "MeshService", "name": "echo", "port": 1027}}],
    )
    topology.resources = [client if r.key == client.key else r for r in topology.resources]
    cluster = names.mesh_service_cluster("default", "echo", "zone-2", 1027)
    assert priorities(generate(topology), cluster) == {"zone-2": 0}
    only_3 = {"crossZone": {"failover": [{"to": {"type": "Only", "zones": ["zone-3"]}}]}}
    topology.resources.append(
        mlbs(
            "only-3",
            [{"targetRef": {"kind": "Mesh"}, "default": {"localityAwareness": only_3}}],
        )
    )
    assert priorities(generate(topology), cluster) == {}


def test_with_zone_egress_the_policy_decides_whether_and_where_the_egress_is() -> None:
    egress = ("127.0.1.101", 10002)

    def egress_priority(*policies: Any) -> int | None:
        resources = generate(three_zones(*policies, egress=True))
        for group in resources.of_type(ENDPOINT)[ECHO_MMZS].endpoints:
            for ep in group.lb_endpoints:
                address = ep.endpoint.address.socket_address
                if (address.address, address.port_value) == egress:
                    return group.priority
        return None

    assert egress_priority() == 1
    assert egress_priority(mlbs("flat", [to_mmzs(DISABLED)])) == 0
    no_cross_zone = {"localityAwareness": {"crossZone": {"failover": [{"to": {"type": "None"}}]}}}
    assert egress_priority(mlbs("local", [to_mmzs(no_cross_zone)])) is None


# --- from the store ------------------------------------------------------------------------------


async def test_a_stored_policy_reaches_the_generated_configuration() -> None:
    """The control plane's path: store -> the engine's state tracker -> generators."""
    from zonemesh.runtime.health import InstanceHealth
    from zonemesh.store.memory import MemoryStore
    from zonemesh.xds.engine.tracker import MeshStateTracker

    topology = three_zones()
    store = MemoryStore()
    for resource in topology.resources:
        await store.create(resource)

    async def client_priorities() -> dict[str, int]:
        tracker = MeshStateTracker(store, InstanceHealth(), LOCAL_ZONE)
        await tracker.load()
        state = tracker.state()
        client = state.dataplanes[topology.proxies["client"]]
        proxy = topology.proxy("client", state)
        assert proxy.resource is client
        return priorities(GENERATOR.generate(state, proxy))

    assert await client_priorities() == {LOCAL_ZONE: 0, "zone-2": 1, "zone-3": 1}
    await store.create(mlbs("flat", [to_mmzs(DISABLED)]))
    assert await client_priorities() == {LOCAL_ZONE: 0, "zone-2": 0, "zone-3": 0}
