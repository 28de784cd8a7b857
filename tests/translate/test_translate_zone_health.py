"""What tells a sidecar that another zone's data path is dead: active health checks of the
cross-zone endpoints (never of local ones); and Kuma's SNI for named MMZS ports."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from translate_topologies import LOCAL_ZONE, Topology, build, mmzs

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.resources.codec import resource_from_wire
from zonemesh.translate import names
from zonemesh.translate.default import default_generator
from zonemesh.translate.resilience import (
    HEALTH_CHECK_KEY,
    ZONE_HC_INTERVAL_S,
    ZONE_HC_TIMEOUT_S,
)

GENERATOR = default_generator()
ECHO_MMZS = names.mmzs_cluster("default", "echo", 1027)


def generate(topology: Topology, role: str = "client"):  # type: ignore[no-untyped-def]
    state = topology.state()
    return GENERATOR.generate(state, topology.proxy(role, state))


def checked_endpoints(cla) -> dict[tuple[str, str], bool]:  # type: ignore[no-untyped-def]
    """(zone, address) -> whether Envoy actively health checks that endpoint."""
    out = {}
    for group in cla.endpoints:
        for ep in group.lb_endpoints:
            address = ep.endpoint.address.socket_address.address
            disabled = ep.endpoint.health_check_config.disable_active_health_check
            out[(group.locality.zone, address)] = not disabled
    return out


def test_other_zones_ingresses_are_health_checked_by_tcp_and_local_instances_are_not() -> None:
    resources = generate(build("t", local_instances=2, remote={"zone-2": 1, "zone-3": 1}))
    cluster = resources.of_type(CLUSTER)[ECHO_MMZS]
    [check] = cluster.health_checks
    assert check.HasField("tcp_health_check")  # connect only: no bytes, no TLS
    assert check.interval.ToMilliseconds() == ZONE_HC_INTERVAL_S * 1000
    assert check.timeout.ToMilliseconds() == ZONE_HC_TIMEOUT_S * 1000
    assert check.no_traffic_interval.ToMilliseconds() > 0
    assert check.unhealthy_threshold.value == 1
    # The check's socket is raw TCP: the match its criteria select, and nothing else does.
    criteria = dict(check.transport_socket_match_criteria)
    by_name = {m.name: m for m in cluster.transport_socket_matches}
    selected = [
        m for m in cluster.transport_socket_matches if dict(m.match).items() <= criteria.items()
    ]
    assert [m.transport_socket.name for m in selected] == ["envoy.transport_sockets.raw_buffer"]
    assert HEALTH_CHECK_KEY in criteria
    assert by_name["cross-zone-mtls"].transport_socket.name == "envoy.transport_sockets.tls"
    # A blackholed ingress: its connections are closed when it fails, so stuck requests are
    # reset (and retried elsewhere); EDS stays authoritative on removal.
    assert cluster.close_connections_on_host_health_failure
    assert cluster.ignore_health_on_host_removal

    cla = resources.of_type(ENDPOINT)[ECHO_MMZS]
    assert checked_endpoints(cla) == {
        (LOCAL_ZONE, "127.0.1.21"): False,
        (LOCAL_ZONE, "127.0.1.22"): False,
        ("zone-2", "127.0.2.100"): True,
        ("zone-3", "127.0.3.100"): True,
    }


def test_a_synced_mesh_service_cluster_checks_its_zone_ingress() -> None:
    resources = generate(build("t", local_instances=0, remote={"zone-2": 1}))
    name = names.mesh_service_cluster("default", "echo", "zone-2", 1027)
    assert len(resources.of_type(CLUSTER)[name].health_checks) == 1
    assert checked_endpoints(resources.of_type(ENDPOINT)[name]) == {("zone-2", "127.0.2.100"): True}


def test_the_egress_is_checked_as_the_door_out() -> None:
    resources = generate(build("t", local_instances=1, remote={"zone-2": 1}, egress=True))
    checked = checked_endpoints(resources.of_type(ENDPOINT)[ECHO_MMZS])
    assert checked == {(LOCAL_ZONE, "127.0.1.21"): False, (LOCAL_ZONE, "127.0.1.101"): True}


# --- SNI of named ports ----------------------------------------------------------------------


def with_named_port(topology: Topology) -> Topology:
    """The topology with the MMZS port named `http` (Kuma's sectionName)."""
    named = resource_from_wire(
        {
            **{"type": "MeshMultiZoneService", "mesh": "default", "name": "echo"},
            "labels": {"kuma.io/origin": "global"},
            "spec": {
                "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
                "ports": [{"port": 1027, "appProtocol": "http", "name": "http"}],
            },
        }
    )
    resources = [r for r in topology.resources if r.type != "MeshMultiZoneService"]
    return Topology(topology.name, [*resources, named], topology.proxies, topology.health)


def sni_of(cluster) -> str:  # type: ignore[no-untyped-def]
    socket = cluster.transport_socket_matches[0].transport_socket
    return str(MessageToDict(socket)["typedConfig"]["sni"])


def test_a_named_mmzs_port_puts_its_name_in_the_sni_on_both_sides() -> None:
    """Kuma: `sni.mzsvc.<mesh>.<name>.<sectionName>`, the port's name when it has one."""
    topology = with_named_port(build("t", local_instances=1, remote={"zone-2": 1}))
    client = generate(topology)
    assert sni_of(client.of_type(CLUSTER)[ECHO_MMZS]) == "sni.mzsvc.default.echo.http"
    ingress = generate(topology, "ingress")
    listener = next(iter(ingress.of_type(LISTENER).values()))
    served = {
        name for chain in listener.filter_chains for name in chain.filter_chain_match.server_names
    }
    assert "sni.mzsvc.default.echo.http" in served
    assert "sni.mzsvc.default.echo.1027" not in served


def test_an_unnamed_port_keeps_its_number() -> None:
    topology = build("t", local_instances=1, remote={"zone-2": 1})
    assert sni_of(generate(topology).of_type(CLUSTER)[ECHO_MMZS]) == "sni.mzsvc.default.echo.1027"
    assert mmzs("echo", [(1027, "http")]).spec.ports[0].section_name == "1027"


def test_dead_http2_connections_are_found_and_what_they_held_may_all_be_retried() -> None:
    """A blackholed connection never closes by itself: pings find it; its requests are
    reset together, so as many may be retried at once as requests may be in flight."""
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    cluster = generate(build("t", local_instances=1, remote={"zone-2": 1})).of_type(CLUSTER)[
        ECHO_MMZS
    ]
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Unpack(options)
    keepalive = options.explicit_http_config.http2_protocol_options.connection_keepalive
    assert keepalive.interval.ToMilliseconds() > 0 and keepalive.timeout.ToMilliseconds() > 0
    [thresholds] = cluster.circuit_breakers.thresholds
    assert thresholds.max_retries.value >= 1024
    assert cluster.common_lb_config.update_merge_window.ToMilliseconds() == 0
