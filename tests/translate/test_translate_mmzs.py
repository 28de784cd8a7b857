"""What a sidecar calling a MeshMultiZoneService is given: priorities, weights, TLS, failover."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from translate_topologies import (
    LOCAL_ZONE,
    Topology,
    build,
    dataplane,
    inbound,
    mesh_service,
    mmzs,
    mmzs_outbound,
    ms_outbound,
    zone_ingress,
)

from zonemesh.cpdp.names import SDS_CLUSTER, ca_secret, identity_secret
from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER, SECRET
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.translate import names
from zonemesh.translate.caches import TranslationCaches
from zonemesh.translate.default import default_generator
from zonemesh.translate.generator import ProxyResources
from zonemesh.translate.state import HealthSnapshot

ECHO_MMZS = names.mmzs_cluster("default", "echo", 1027)
GENERATOR = default_generator()


def generate(topology: Topology, role: str = "client") -> ProxyResources:
    state = topology.state()
    return GENERATOR.generate(state, topology.proxy(role, state))


def as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message)


def localities(resources: ProxyResources, cluster: str = ECHO_MMZS) -> list[dict[str, Any]]:
    """[{zone, priority, endpoints: [(address, port, weight, cross_zone)]}] of a cluster's CLA."""
    cla = resources.of_type(ENDPOINT)[cluster]
    out = []
    for group in cla.endpoints:
        endpoints = []
        for ep in group.lb_endpoints:
            addr = ep.endpoint.address.socket_address
            cross = "envoy.transport_socket_match" in ep.metadata.filter_metadata
            weight = ep.load_balancing_weight.value if ep.HasField("load_balancing_weight") else 1
            endpoints.append((addr.address, addr.port_value, weight, cross))
        out.append(
            {"zone": group.locality.zone, "priority": group.priority, "endpoints": endpoints}
        )
    return out


def upstream_tls(socket: Any) -> dict[str, Any]:
    return as_dict(socket)["typedConfig"]


# --- priorities, localities, weights -----------------------------------------------------


def test_local_instances_at_priority_0_and_other_zones_equally_at_priority_1() -> None:
    """Kuma's documented default: each other zone one equal share, whatever its size."""
    topology = build("t", local_instances=2, remote={"zone-2": 1, "zone-3": 3})
    assert localities(generate(topology)) == [
        {
            "zone": LOCAL_ZONE,
            "priority": 0,
            "endpoints": [("127.0.1.21", 21027, 1, False), ("127.0.1.22", 21027, 1, False)],
        },
        {"zone": "zone-2", "priority": 1, "endpoints": [("127.0.2.100", 10001, 1, True)]},
        {"zone": "zone-3", "priority": 1, "endpoints": [("127.0.3.100", 10001, 1, True)]},
    ]


def test_zones_weighted_by_instances_only_when_the_mmzs_opts_in() -> None:
    topology = build(
        "t",
        local_instances=2,
        remote={"zone-2": 1, "zone-3": 3},
        mmzs_labels={"zonemesh.io/zone-weights": "instances"},
    )
    weights = {g["zone"]: [ep[2] for ep in g["endpoints"]] for g in localities(generate(topology))}
    assert weights == {LOCAL_ZONE: [1, 1], "zone-2": [1], "zone-3": [3]}


def test_a_zone_with_two_ingresses_gets_the_same_share_as_a_zone_with_one() -> None:
    topology = build("t", local_instances=0, remote={"zone-2": 1, "zone-3": 1})
    topology.resources.append(_ingress_at("zone-3", "ingress-zone-3-b", "127.0.3.200"))
    groups = {g["zone"]: g["endpoints"] for g in localities(generate(topology))}
    assert groups["zone-2"] == [("127.0.2.100", 10001, 2, True)]
    assert groups["zone-3"] == [("127.0.3.100", 10001, 1, True), ("127.0.3.200", 10001, 1, True)]


def test_zone_whose_mesh_service_is_unavailable_is_left_out() -> None:
    topology = build(
        "t", local_instances=1, remote={"zone-2": 2, "zone-3": 5}, unavailable=["zone-3"]
    )
    zones = [loc["zone"] for loc in localities(generate(topology))]
    assert zones == [LOCAL_ZONE, "zone-2"]


def test_zone_without_local_instances_sends_everything_to_priority_1() -> None:
    topology = build("t", local_instances=0, remote={"zone-2": 2})
    groups = localities(generate(topology))
    assert groups[0] == {"zone": LOCAL_ZONE, "priority": 0, "endpoints": []}
    assert groups[1]["priority"] == 1 and groups[1]["endpoints"] == [
        ("127.0.2.100", 10001, 1, True)
    ]


def _ingress_at(zone: str, name: str, address: str) -> Any:
    return resource_from_wire(
        {
            "type": "ZoneIngress",
            "name": name,
            "labels": {"kuma.io/origin": "global", "kuma.io/zone": zone},
            "zone": zone,
            "networking": {
                "address": address,
                "port": 10001,
                "advertisedAddress": address,
                "advertisedPort": 10001,
            },
        }
    )


def test_unknown_instance_count_weighs_a_zone_as_one() -> None:
    topology = build(
        "t",
        local_instances=1,
        remote={"zone-2": 4},
        mmzs_labels={"zonemesh.io/zone-weights": "instances"},
    )
    topology.resources = [
        zone_ingress("zone-2") if r.key == ResourceKey("ZoneIngress", "", "ingress-zone-2") else r
        for r in topology.resources
    ]
    assert localities(generate(topology))[1]["endpoints"] == [("127.0.2.100", 10001, 1, True)]


def test_zone_ingress_without_advertised_address_is_not_a_target(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 1, "zone-3": 1})
    topology.resources = [
        zone_ingress("zone-3", advertised=False)
        if r.key == ResourceKey("ZoneIngress", "", "ingress-zone-3")
        else r
        for r in topology.resources
    ]
    with caplog.at_level(logging.WARNING, logger="zonemesh.translate"):
        zones = [loc["zone"] for loc in localities(generate(topology))]
    assert zones == [LOCAL_ZONE, "zone-2"]
    assert "ingress-zone-3" in caplog.text and "advertisedAddress" in caplog.text


def test_only_healthy_local_instances_are_endpoints() -> None:
    topology = build("t", local_instances=3, remote={"zone-2": 1})
    dp = {
        f"echo-zone-1-{i}": ResourceKey("Dataplane", "default", f"echo-zone-1-{i}")
        for i in (1, 2, 3)
    }
    topology.health = {
        dp["echo-zone-1-1"]: HealthSnapshot(connected=False, ready=True),  # stream gone
        dp["echo-zone-1-2"]: HealthSnapshot(
            connected=True, ready=False, not_ready_inbounds=(21027,)
        ),
        dp["echo-zone-1-3"]: HealthSnapshot(connected=True, ready=True),
    }
    local = localities(generate(topology))[0]
    assert local["endpoints"] == [("127.0.1.23", 21027, 1, False)]


def test_mmzs_matching_nothing_is_a_cluster_without_endpoints() -> None:
    topology = build("t", local_instances=1)
    topology.resources = [
        mmzs("echo", [(1027, "http")], match="nothing-has-this-name")
        if r.type == "MeshMultiZoneService"
        else r
        for r in topology.resources
    ]
    resources = generate(topology)
    assert ECHO_MMZS in resources.of_type(CLUSTER)
    assert localities(resources) == [{"zone": LOCAL_ZONE, "priority": 0, "endpoints": []}]


def test_mesh_service_cluster_holds_local_instances_only() -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 3})
    cluster = names.mesh_service_cluster("default", "echo", LOCAL_ZONE, 1027)
    assert localities(generate(topology), cluster) == [
        {"zone": LOCAL_ZONE, "priority": 0, "endpoints": [("127.0.1.21", 21027, 1, False)]}
    ]


# --- listeners and bad input ---------------------------------------------------------------


def test_outbound_listeners_http_uses_hcm_with_retries_and_tcp_uses_tcp_proxy() -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 1}, tcp=True)
    listeners = generate(topology).of_type(LISTENER)
    http = as_dict(listeners["outbound:127.0.0.1:11027"])
    hcm = http["filterChains"][0]["filters"][0]["typedConfig"]
    route = hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["route"]
    assert route["cluster"] == ECHO_MMZS
    assert route["retryPolicy"]["retryOn"] == "connect-failure,reset,refused-stream,gateway-error"
    assert route["retryPolicy"]["retryHostPredicate"][0]["name"] == (
        "envoy.retry_host_predicates.previous_hosts"
    )
    tcp = as_dict(listeners["outbound:127.0.0.1:11028"])
    proxy = tcp["filterChains"][0]["filters"][0]
    assert proxy["name"] == "envoy.filters.network.tcp_proxy"
    assert proxy["typedConfig"]["cluster"] == names.mmzs_cluster("default", "echo", 1028)


def test_outbound_to_unknown_service_is_skipped_and_the_rest_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topology = build("t", local_instances=1)
    client = dataplane(
        "client",
        "127.0.1.10",
        [inbound("client", 20080, 8080)],
        [
            mmzs_outbound("no-such-service", 1027, 11000),
            mmzs_outbound("echo", 9999, 11001),  # the MMZS has no such port
            ms_outbound("ghost", 80, 11002),
            mmzs_outbound("echo", 1027, 11027),
        ],
    )
    topology.resources = [client if r.key == client.key else r for r in topology.resources]
    with caplog.at_level(logging.WARNING, logger="zonemesh.translate"):
        resources = generate(topology)
    assert sorted(resources.of_type(LISTENER)) == [
        "inbound:127.0.1.10:20080",
        "outbound:127.0.0.1:11027",
    ]
    assert "no-such-service" in caplog.text and "ghost" in caplog.text and "9999" in caplog.text


def test_outbound_colliding_with_an_inbound_is_skipped() -> None:
    topology = build("t", local_instances=1)
    client = dataplane(
        "client",
        "127.0.1.10",
        [inbound("client", 20080, 8080)],
        [mmzs_outbound("echo", 1027, 20080, address="0.0.0.0"), mmzs_outbound("echo", 1027, 11027)],
    )
    topology.resources = [client if r.key == client.key else r for r in topology.resources]
    assert sorted(generate(topology).of_type(LISTENER)) == [
        "inbound:127.0.1.10:20080",
        "outbound:127.0.0.1:11027",
    ]


def test_clusters_are_built_once_per_state_and_shared_by_callers() -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 1})
    other = dataplane(
        "client-2",
        "127.0.1.11",
        [inbound("client", 20080, 8080)],
        [mmzs_outbound("echo", 1027, 11027)],
    )
    topology.resources.append(other)
    topology.proxies["client-2"] = other.key
    state = topology.state()
    a = GENERATOR.generate(state, topology.proxy("client", state))
    b = GENERATOR.generate(state, topology.proxy("client-2", state))
    assert a.of_type(CLUSTER)[ECHO_MMZS] is b.of_type(CLUSTER)[ECHO_MMZS]
    assert a.of_type(ENDPOINT)[ECHO_MMZS] is b.of_type(ENDPOINT)[ECHO_MMZS]


# --- resilience ---------------------------------------------------------------------------------


def test_mmzs_cluster_never_panics_to_dead_hosts_and_ejects_failing_ones() -> None:
    resources = generate(build("t", local_instances=1, remote={"zone-2": 1}))
    cluster = resources.of_type(CLUSTER)[ECHO_MMZS]
    assert cluster.common_lb_config.HasField("healthy_panic_threshold")
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0
    detection = cluster.outlier_detection
    assert detection.split_external_local_origin_errors
    assert detection.consecutive_local_origin_failure.value <= 3
    assert detection.max_ejection_percent.value == 100
    cla = resources.of_type(ENDPOINT)[ECHO_MMZS]
    assert cla.policy.overprovisioning_factor.value == 200


# --- mutual TLS --------------------------------------------------------------------------------


def test_mtls_off_remote_endpoints_use_tls_by_transport_socket_match_local_stay_plain() -> None:
    resources = generate(build("t", local_instances=1, remote={"zone-2": 1}))
    cluster = resources.of_type(CLUSTER)[ECHO_MMZS]
    assert not cluster.HasField("transport_socket")
    match, health_check = cluster.transport_socket_matches  # first match wins: TLS first
    assert dict(match.match) == {"zonemesh.io/cross-zone": "true"}
    assert dict(health_check.match) == {"zonemesh.io/health-check": "tcp"}
    tls = upstream_tls(match.transport_socket)
    assert tls["sni"] == "sni.mzsvc.default.echo.1027"
    common = tls["commonTlsContext"]
    assert common["alpnProtocols"] == ["h2"]
    assert common["tlsCertificateSdsSecretConfigs"][0]["name"] == identity_secret("default")
    validation = common["combinedValidationContext"]
    assert validation["validationContextSdsSecretConfig"]["name"] == ca_secret("default")
    assert validation["defaultValidationContext"]["matchTypedSubjectAltNames"] == [
        {"sanType": "URI", "matcher": {"exact": "spiffe://default/echo"}}
    ]
    # the metadata that selects TLS is on the remote endpoints only
    assert [ep[3] for loc in localities(resources) for ep in loc["endpoints"]] == [False, True]


def test_mtls_on_every_endpoint_uses_tls() -> None:
    resources = generate(build("t", local_instances=1, remote={"zone-2": 1}, mtls=True))
    cluster = resources.of_type(CLUSTER)[ECHO_MMZS]
    assert upstream_tls(cluster.transport_socket)["sni"] == "sni.mzsvc.default.echo.1027"
    assert [m.name for m in cluster.transport_socket_matches] == ["zone-health-check-tcp"]


def test_client_accepts_the_identities_of_every_matched_mesh_service() -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 1})
    # zone-3 runs echo under another identity; the client must accept both
    topology.resources.append(
        mesh_service("echo", "zone-3", [(1027, 21027, "http")], identity="echo-v2")
    )
    topology.resources.append(zone_ingress("zone-3", services={"echo": 1}))
    cluster = generate(topology).of_type(CLUSTER)[ECHO_MMZS]
    tls = upstream_tls(cluster.transport_socket_matches[0].transport_socket)
    validation = tls["commonTlsContext"]["combinedValidationContext"]
    sans = validation["defaultValidationContext"]["matchTypedSubjectAltNames"]
    assert [s["matcher"]["exact"] for s in sans] == [
        "spiffe://default/echo",
        "spiffe://default/echo-v2",
    ]


def test_tcp_port_offers_no_http_alpn() -> None:
    resources = generate(build("t", local_instances=1, remote={"zone-2": 1}, tcp=True))
    cluster = resources.of_type(CLUSTER)[names.mmzs_cluster("default", "echo", 1028)]
    tls = upstream_tls(cluster.transport_socket_matches[0].transport_socket)
    assert "alpnProtocols" not in tls["commonTlsContext"]
    assert tls["sni"] == "sni.mzsvc.default.echo.1028"
    assert not cluster.typed_extension_protocol_options  # no HTTP/2 for raw TCP


def test_inbound_with_mtls_off_accepts_tls_and_plaintext() -> None:
    listener = as_dict(
        generate(build("t", local_instances=1), "server").of_type(LISTENER)[
            "inbound:127.0.1.21:21027"
        ]
    )
    assert [f["name"] for f in listener["listenerFilters"]] == [
        "envoy.filters.listener.tls_inspector"
    ]
    tls_chain, plain_chain = listener["filterChains"]
    assert tls_chain["filterChainMatch"] == {"transportProtocol": "tls"}
    context = tls_chain["transportSocket"]["typedConfig"]
    assert context["requireClientCertificate"] is True
    assert context["commonTlsContext"]["tlsCertificateSdsSecretConfigs"][0]["name"] == (
        identity_secret("default")
    )
    assert plain_chain["filterChainMatch"] == {"transportProtocol": "raw_buffer"}
    assert "transportSocket" not in plain_chain


def test_inbound_with_mtls_on_accepts_tls_only() -> None:
    listener = as_dict(
        generate(build("t", local_instances=1, mtls=True), "server").of_type(LISTENER)[
            "inbound:127.0.1.21:21027"
        ]
    )
    [chain] = listener["filterChains"]
    assert chain["transportSocket"]["typedConfig"]["requireClientCertificate"] is True
    assert "listenerFilters" not in listener


def test_the_default_generator_serves_no_secret_and_the_tls_contexts_use_local_sds() -> None:
    """Workload keys never leave the workload: the CP sends no Secret resource, and every TLS
    context takes its secrets from the data plane's own SDS cluster."""
    topology = build("t", local_instances=1, remote={"zone-2": 1}, mtls=True)
    state = topology.state()
    for role in ("client", "server"):
        resources = default_generator().generate(state, topology.proxy(role, state))
        assert not resources.of_type(SECRET)
    cluster = generate(topology).of_type(CLUSTER)[ECHO_MMZS]
    common = upstream_tls(cluster.transport_socket)["commonTlsContext"]
    source = common["tlsCertificateSdsSecretConfigs"][0]["sdsConfig"]["apiConfigSource"]
    assert source["grpcServices"] == [{"envoyGrpc": {"clusterName": SDS_CLUSTER}}]


def test_instances_on_different_inbound_ports_are_all_endpoints() -> None:
    """A generated MeshService without targetPort (its instances disagree) matches inbounds
    by service port, so every instance serves, whatever port its sidecar listens on."""
    base = build("t", local_instances=0)
    instances = [
        dataplane("echo-a", "127.0.1.21", [inbound("echo", 21027, 1027)]),
        dataplane("echo-b", "127.0.1.22", [inbound("echo", 22027, 1027)]),
    ]
    service = mesh_service("echo", LOCAL_ZONE, [(1027, None, "http")])
    topology = Topology("t", [*base.resources, *instances, service], base.proxies)
    local = localities(generate(topology))[0]
    assert sorted(local["endpoints"]) == [
        ("127.0.1.21", 21027, 1, False),
        ("127.0.1.22", 22027, 1, False),
    ]


def test_a_lasting_outbound_problem_is_logged_once_not_on_every_regeneration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every connect builds a new state; a proxy's unresolvable outbound must not be logged
    again by each of them (1000 proxies made 38 000 such lines in one start)."""
    topology = build("t", local_instances=1, remote={"zone-2": 1})
    client = topology.proxies["client"]

    def unresolvable(dp: Any) -> Any:
        net = dp.spec.networking
        first = net.outbound[0]
        ref = first.backend_ref.model_copy(update={"name": "nowhere"})
        outbound = [first.model_copy(update={"backend_ref": ref}), *net.outbound[1:]]
        spec = dp.spec.model_copy(
            update={"networking": net.model_copy(update={"outbound": outbound})}
        )
        return dataclasses.replace(dp, spec=spec)

    topology.resources = [unresolvable(r) if r.key == client else r for r in topology.resources]
    caches = TranslationCaches()

    def regenerate() -> None:
        state = dataclasses.replace(topology.state(), caches=caches)
        GENERATOR.generate(state, topology.proxy("client", state))

    with caplog.at_level(logging.WARNING, logger="zonemesh.translate"):
        for _ in range(3):
            regenerate()
    assert caplog.text.count("skipped") == 1, caplog.text
    assert "nowhere" in caplog.text
