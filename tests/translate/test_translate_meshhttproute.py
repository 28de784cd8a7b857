"""MeshHTTPRoute translation: which routes reach a proxy and a destination, how they merge
(Kuma's order), their precedence, the clusters they add, unresolved backends, and the
gateway-side resolution the builtin gateway reuses."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from route_topologies import (
    ECHO_MMZS_REF,
    TO_MS,
    V2,
    http_route,
    prefix,
    routed,
    rule,
)
from translate_topologies import Topology

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.types.meshhttproute import HttpMatch, RuleConf
from zonemesh.translate import names
from zonemesh.translate.default import default_generator
from zonemesh.translate.policies import matching
from zonemesh.translate.policies.meshhttproute import (
    UNRESOLVED_BACKEND,
    BackendRef,
    ResolvedRule,
    envoy_routes,
    gateway_rules,
    resolve_rules,
)
from zonemesh.translate.state import MeshState

GENERATOR = default_generator()
MMZS_LISTENER = names.outbound_listener("127.0.0.1", 11027)
MS_LISTENER = names.outbound_listener("127.0.0.1", 12027)
MMZS_CLUSTER = names.mmzs_cluster("default", "echo", 1027)
V2_CLUSTER = names.mesh_service_cluster("default", "echo-v2", "zone-1", 1027)


def routes_of(topology: Topology, listener: str = MMZS_LISTENER, role: str = "client") -> list[Any]:
    state = topology.state()
    resources = GENERATOR.generate(state, topology.proxy(role, state))
    message = resources.of_type(LISTENER)[listener]
    manager = hcm_pb2.HttpConnectionManager()
    message.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return list(manager.route_config.virtual_hosts[0].routes)


def summary(routes: list[rc.Route]) -> list[tuple[str, str]]:
    """(match, where to) for each route, in Envoy's order."""
    out = []
    for r in routes:
        m = r.match
        where = m.path or m.prefix or m.path_separated_prefix or m.safe_regex.regex
        if m.headers:
            where += " +" + ",".join(h.name for h in m.headers)
        if r.HasField("redirect"):
            to = "redirect"
        elif r.route.weighted_clusters.clusters:
            to = ",".join(f"{c.name}*{c.weight.value}" for c in r.route.weighted_clusters.clusters)
        else:
            to = r.route.cluster
        out.append((where, to))
    return out


def test_without_routes_the_outbound_keeps_its_single_route() -> None:
    assert summary(routes_of(routed("plain"))) == [("/", MMZS_CLUSTER)]


def test_a_route_replaces_the_catch_all_and_keeps_it_last() -> None:
    topology = routed("t", http_route("r", [rule([prefix("/v2")], [V2])]))
    assert summary(routes_of(topology)) == [("/v2", V2_CLUSTER), ("/", MMZS_CLUSTER)]
    # The other outbound (the MeshService `echo`) is not the route's destination.
    assert summary(routes_of(topology, MS_LISTENER)) == [
        ("/", names.mesh_service_cluster("default", "echo", "zone-1", 1027))
    ]


def test_backends_of_routes_join_the_proxy_with_their_endpoints() -> None:
    topology = routed("t", http_route("r", [rule([prefix("/v2")], [V2])]))
    state = topology.state()
    resources = GENERATOR.generate(state, topology.proxy("client", state))
    assert V2_CLUSTER in resources.of_type(CLUSTER)
    (group,) = resources.of_type(ENDPOINT)[V2_CLUSTER].endpoints
    assert [e.endpoint.address.socket_address.address for e in group.lb_endpoints] == ["127.0.1.31"]
    plain = routed("plain")
    state = plain.state()
    assert V2_CLUSTER not in GENERATOR.generate(state, plain.proxy("client", state)).of_type(
        CLUSTER
    )


@pytest.mark.parametrize(
    ("target_ref", "applies"),
    [
        (None, True),
        ({"kind": "Mesh"}, True),
        ({"kind": "MeshService", "name": "client"}, True),
        ({"kind": "MeshService", "name": "echo"}, False),
        ({"kind": "Dataplane", "name": "client"}, True),
        ({"kind": "Dataplane", "name": "other"}, False),
        ({"kind": "MeshGateway", "name": "edge"}, False),
    ],
)
def test_top_level_target_ref_selects_proxies(
    target_ref: dict[str, Any] | None, applies: bool
) -> None:
    to = {"kind": "Mesh"} if target_ref and target_ref["kind"] == "MeshGateway" else None
    route = http_route("r", [rule([prefix("/v2")], [V2])], to, target_ref)
    assert (len(routes_of(routed("t", route))) == 2) is applies


def test_proxies_with_the_same_outbounds_but_different_routes_differ() -> None:
    """The shared per-state result is keyed by the routes too: one client's route never
    leaks to another with the same outbounds."""
    base = routed(
        "t",
        http_route(
            "r", [rule([prefix("/v2")], [V2])], target_ref={"kind": "Dataplane", "name": "client"}
        ),
    )
    client = next(r for r in base.resources if r.name == "client")
    wire = {
        "type": "Dataplane",
        "mesh": "default",
        "name": "client-2",
        "labels": dict(client.labels),
        "networking": {**client.spec.networking.to_wire(), "address": "127.0.1.12"},
    }
    other = resource_from_wire(wire)
    topology = Topology("t", [*base.resources, other], {"client": client.key, "other": other.key})
    state = topology.state()
    first = GENERATOR.generate(state, topology.proxy("client", state))
    second = GENERATOR.generate(state, topology.proxy("other", state))
    assert first.of_type(LISTENER)[MMZS_LISTENER] != second.of_type(LISTENER)[MMZS_LISTENER]
    assert len(routes_of(topology, role="other")) == 1


def test_same_matches_the_later_policy_wins_and_within_one_the_first_rule() -> None:
    weak = http_route("b", [rule([prefix("/m")], [ECHO_MMZS_REF])])
    strong = http_route("a", [rule([prefix("/m")], [V2]), rule([prefix("/m")], [ECHO_MMZS_REF])])
    assert summary(routes_of(routed("t", weak, strong)))[0] == ("/m", V2_CLUSTER)
    specific = http_route(
        "z",
        [rule([prefix("/m")], [ECHO_MMZS_REF])],
        target_ref={"kind": "Dataplane", "name": "client"},
    )
    assert summary(routes_of(routed("t", strong, specific)))[0] == ("/m", MMZS_CLUSTER)


def test_merge_is_a_patch_of_the_default() -> None:
    """A later policy's rule with only filters keeps the earlier one's backends."""
    weak = http_route("b", [rule([prefix("/m")], [V2])])
    headers = {
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]},
    }
    strong = http_route("a", [rule([prefix("/m")], filters=[headers])])
    (first, _) = routes_of(routed("t", weak, strong))
    assert first.route.cluster == V2_CLUSTER
    assert [h.header.key for h in first.request_headers_to_add] == ["x-a"]


def test_a_rule_for_slash_overrides_the_default_route() -> None:
    topology = routed("t", http_route("r", [rule([prefix("/")], [V2])]))
    assert summary(routes_of(topology)) == [("/", V2_CLUSTER)]


def test_a_rule_without_backends_goes_to_the_destination() -> None:
    headers = {
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"add": [{"name": "x-a", "value": "1"}]},
    }
    topology = routed("t", http_route("r", [rule([prefix("/h")], filters=[headers])]))
    assert summary(routes_of(topology)) == [("/h", MMZS_CLUSTER), ("/", MMZS_CLUSTER)]


def test_precedence_exact_then_longest_prefix_then_method_headers_then_regex() -> None:
    route = http_route(
        "r",
        [
            rule([{"path": {"type": "RegularExpression", "value": "^/a.*"}}], [V2]),
            rule([prefix("/a")], [V2]),
            rule([{**prefix("/a"), "headers": [{"name": "x-a", "value": "1"}]}], [V2]),
            rule([{**prefix("/a"), "method": "GET"}], [V2]),
            rule([prefix("/a/b")], [V2]),
            rule([{"path": {"type": "Exact", "value": "/a"}}], [V2]),
        ],
    )
    assert [w for w, _ in summary(routes_of(routed("t", route)))] == [
        "/a",  # Exact
        "/a/b",
        "/a +:method",
        "/a +x-a",
        "/a",
        "/",
        "^/a.*",
    ]


def test_one_route_per_match_of_a_rule() -> None:
    route = http_route("r", [rule([prefix("/x"), prefix("/y")], [V2])])
    assert summary(routes_of(routed("t", route))) == [
        ("/x", V2_CLUSTER),
        ("/y", V2_CLUSTER),
        ("/", MMZS_CLUSTER),
    ]


def test_unresolved_backend_answers_500_for_its_share_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = {"kind": "MeshService", "name": "nowhere", "port": 1027}
    route = http_route("r", [rule([prefix("/s")], [V2, nowhere])])
    with caplog.at_level(logging.WARNING, logger="zonemesh.translate"):
        first, _ = routes_of(routed("t", route))
    assert [c.name for c in first.route.weighted_clusters.clusters] == [
        V2_CLUSTER,
        UNRESOLVED_BACKEND,
    ]
    assert first.route.cluster_not_found_response_code == rc.RouteAction.INTERNAL_SERVER_ERROR
    assert "MeshHTTPRoute backend MeshService/nowhere:1027 does not resolve" in caplog.text


def test_weight_zero_backends_get_nothing_and_no_backend_at_all_is_a_500() -> None:
    rules = [ResolvedRule.of([resource_match()], _conf([{**V2, "weight": 0}]))]
    (only,) = envoy_routes(rules, lambda ref: "c")
    assert only.direct_response.status == 500
    rules = [
        ResolvedRule.of(
            [resource_match()], _conf([{**V2, "weight": 0}, {**ECHO_MMZS_REF, "weight": 2}])
        )
    ]
    (only,) = envoy_routes(rules, lambda ref: ref.kind)
    assert only.route.cluster == "MeshMultiZoneService"


def resource_match() -> HttpMatch:
    return HttpMatch.model_validate(prefix("/"))


def _conf(refs: list[dict[str, Any]]) -> RuleConf:
    return RuleConf.model_validate({"backendRefs": refs})


def test_resolve_rules_for_a_mesh_service_destination() -> None:
    topology = routed("t", http_route("r", [rule([prefix("/g")], [ECHO_MMZS_REF])], to=TO_MS))
    state = topology.state()
    client = state.dataplanes[topology.proxies["client"]]
    echo = next(ms for ms in state.mesh_services.values() if ms.name == "echo")
    destination = matching.Destination(matching.MESH_SERVICE, echo, 1027)
    rules = resolve_rules(state, proxy_dataplane=client, to_target=destination)
    assert [r.matches[0].path.value for r in rules] == ["/g", "/"]
    assert rules[-1].backend_refs == (BackendRef(kind="MeshService", name="echo", port=1027),)
    mmzs = next(iter(state.mesh_multi_zone_services.values()))
    other = matching.Destination(matching.MESH_MULTI_ZONE_SERVICE, mmzs, 1027)
    assert resolve_rules(state, proxy_dataplane=client, to_target=other) == []


# --- gateways ------------------------------------------------------------------------------------


def gateway_dp(service: str = "edge") -> Any:
    return resource_from_wire(
        {
            "type": "Dataplane",
            "mesh": "default",
            "name": f"{service}-1",
            "networking": {
                "address": "127.0.1.90",
                "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": service}},
            },
        }
    )


def gateway_state(*routes: Any) -> MeshState:
    return Topology(
        "g", [resource_from_wire({"type": "Mesh", "name": "default"}), gateway_dp(), *routes]
    ).state()


def gw_route(
    name: str, rules: list[dict[str, Any]], hostnames: list[str] | None = None, **ref: Any
) -> Any:
    spec: dict[str, Any] = {
        "targetRef": {"kind": "MeshGateway", "name": "edge", **ref},
        "to": [
            {
                "targetRef": {"kind": "Mesh"},
                "rules": rules,
                **({"hostnames": hostnames} if hostnames else {}),
            }
        ],
    }
    return resource_from_wire(
        {"type": "MeshHTTPRoute", "mesh": "default", "name": name, "spec": spec}
    )


def test_gateway_rules_take_routes_for_the_gateway_only() -> None:
    echo = gw_route("echo", [rule([prefix("/echo")], [ECHO_MMZS_REF])])
    other = resource_from_wire(
        {
            "type": "MeshHTTPRoute",
            "mesh": "default",
            "name": "other",
            "spec": {
                "targetRef": {"kind": "MeshGateway", "name": "another"},
                "to": [{"targetRef": {"kind": "Mesh"}, "rules": [rule([prefix("/x")], [V2])]}],
            },
        }
    )
    sidecar = http_route("sidecar", [rule([prefix("/s")], [V2])])
    state = gateway_state(echo, other, sidecar)
    rules = gateway_rules(state, gateway_dataplane=gateway_dp(), listener_hostname=None)
    assert [(r.matches[0].path.value, r.hostnames) for r in rules] == [("/echo", ("*",))]
    routes = envoy_routes(rules, lambda ref: f"{ref.kind}/{ref.name}")
    assert summary(routes) == [("/echo", "MeshMultiZoneService/echo")]
    by_name = gateway_rules(
        state, gateway_dataplane=gateway_dp("x"), listener_hostname=None, gateway_name="edge"
    )
    assert len(by_name) == 1


def test_gateway_hostnames_narrow_to_the_listener() -> None:
    wild = gw_route("wild", [rule([prefix("/a")], [V2])], hostnames=["*.example.com"])
    exact = gw_route("exact", [rule([prefix("/b")], [V2])], hostnames=["api.example.com"])
    elsewhere = gw_route("elsewhere", [rule([prefix("/c")], [V2])], hostnames=["other.org"])
    state = gateway_state(wild, exact, elsewhere)
    listener = gateway_rules(
        state, gateway_dataplane=gateway_dp(), listener_hostname="api.example.com"
    )
    assert sorted((r.matches[0].path.value, r.hostnames) for r in listener) == [
        ("/a", ("api.example.com",)),
        ("/b", ("api.example.com",)),
    ]
    anyhost = gateway_rules(state, gateway_dataplane=gateway_dp(), listener_hostname="*")
    assert sorted(r.hostnames[0] for r in anyhost) == [
        "*.example.com",
        "api.example.com",
        "other.org",
    ]


def test_gateway_same_matches_merge_later_policy_wins() -> None:
    first = gw_route("b", [rule([prefix("/e")], [V2])])
    second = gw_route("a", [rule([prefix("/e")], [ECHO_MMZS_REF])])
    (only,) = gateway_rules(
        gateway_state(first, second), gateway_dataplane=gateway_dp(), listener_hostname=None
    )
    assert only.backend_refs[0].kind == "MeshMultiZoneService"


def test_a_match_without_a_path_overrides_the_default_route() -> None:
    topology = routed("t", http_route("r", [rule([{}], [V2])]))
    assert summary(routes_of(topology)) == [("/", V2_CLUSTER)]
