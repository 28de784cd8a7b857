"""What a transparently proxied Dataplane is served: one virtual outbound with a filter chain
per mesh VIP:port (limited by reachableBackends), the virtual inbound, the DNS table."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from translate_topologies import dataplane, inbound
from transparent_topologies import transparent, transparent_dataplane

from zonemesh.cpdp.dns_table import decode
from zonemesh.cpdp.names import DNS_TABLE_LISTENER
from zonemesh.envoy_types import CLUSTER, LISTENER
from zonemesh.translate import names
from zonemesh.translate.default import default_generator
from zonemesh.translate.generator import ProxyResources
from zonemesh.translate.transparent import vip_destinations

ALL_CHAINS = {
    "outbound:241.0.0.1:8080",  # client (local MeshService)
    "outbound:241.0.0.2:1027",  # echo (local MeshService), http
    "outbound:241.0.0.2:1028",  # echo, tcp
    "outbound:241.0.0.3:1027",  # echo synced from zone-2
    "outbound:241.0.0.3:1028",
    "outbound:243.0.0.1:1027",  # the MeshMultiZoneService
    "outbound:243.0.0.1:1028",
}


def generate(
    topology_name: str = "t", client: dict | None = None, role: str = "client"
) -> ProxyResources:
    topology = transparent(topology_name, client)
    state = topology.state()
    return default_generator().generate(state, topology.proxy(role, state))


def virtual_outbound(resources: ProxyResources) -> listener_pb2.Listener:
    listener = resources.of_type(LISTENER)[names.OUTBOUND_PASSTHROUGH]
    assert isinstance(listener, listener_pb2.Listener)
    return listener


def chains(resources: ProxyResources) -> dict[str, tuple[str, int]]:
    out = {}
    for chain in virtual_outbound(resources).filter_chains:
        match = chain.filter_chain_match
        out[chain.name] = (match.prefix_ranges[0].address_prefix, match.destination_port.value)
    return out


def dns_records(resources: ProxyResources) -> dict[str, tuple[str, ...]]:
    listener = resources.of_type(LISTENER)[DNS_TABLE_LISTENER]
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    route = manager.route_config.virtual_hosts[0].routes[1]
    return dict(decode(route.direct_response.body.inline_string.encode()).records)


def test_every_vip_port_of_the_mesh_gets_a_filter_chain_matched_by_original_destination() -> None:
    resources = generate()
    listener = virtual_outbound(resources)
    assert listener.address.socket_address.port_value == 15001
    assert listener.address.socket_address.address == "0.0.0.0"
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.original_dst"]
    found = chains(resources)
    assert set(found) == ALL_CHAINS
    assert found["outbound:243.0.0.1:1027"] == ("243.0.0.1", 1027)
    # Anything else passes through to where it was going.
    assert listener.default_filter_chain.filters
    assert names.OUTBOUND_PASSTHROUGH in resources.of_type(CLUSTER)


def test_http_and_tcp_chains_use_the_same_clusters_as_explicit_outbounds() -> None:
    resources = generate()
    by_name = {c.name: c for c in virtual_outbound(resources).filter_chains}
    http = by_name["outbound:243.0.0.1:1027"].filters[0]
    tcp = by_name["outbound:243.0.0.1:1028"].filters[0]
    assert http.name == "envoy.filters.network.http_connection_manager"
    assert tcp.name == "envoy.filters.network.tcp_proxy"
    manager = hcm_pb2.HttpConnectionManager()
    http.typed_config.Unpack(manager)
    route = manager.route_config.virtual_hosts[0].routes[0].route
    assert route.cluster == names.mmzs_cluster("default", "echo", 1027)
    # The explicit outbound to echo:1027 and the VIP chain share one cluster: present once,
    # with the failover layout (local at priority 0, zone-2's ingress at priority 1).
    assert "outbound:127.0.0.1:11027" in resources.of_type(LISTENER)
    clusters = resources.of_type(CLUSTER)
    assert names.mmzs_cluster("default", "echo", 1027) in clusters
    assert names.mesh_service_cluster("default", "echo", "zone-2", 1027) in clusters


def test_reachable_backends_limit_the_chains_and_the_dns_table() -> None:
    resources = generate(
        client={
            "reachableBackends": {
                "refs": [{"kind": "MeshMultiZoneService", "name": "echo", "port": 1027}]
            }
        }
    )
    assert set(chains(resources)) == {"outbound:243.0.0.1:1027"}
    assert dns_records(resources) == {"echo.mzsvc.mesh.local": ("243.0.0.1",)}
    clusters = set(resources.of_type(CLUSTER))
    assert names.mesh_service_cluster("default", "echo", "zone-2", 1027) not in clusters


def test_reachable_backends_by_labels_and_display_name() -> None:
    by_labels = generate(
        client={
            "reachableBackends": {
                "refs": [{"kind": "MeshService", "labels": {"kuma.io/zone": "zone-2"}}]
            }
        }
    )
    assert set(chains(by_labels)) == {"outbound:241.0.0.3:1027", "outbound:241.0.0.3:1028"}
    by_name = generate(
        client={"reachableBackends": {"refs": [{"kind": "MeshService", "name": "echo"}]}}
    )
    assert set(chains(by_name)) == {
        "outbound:241.0.0.2:1027",
        "outbound:241.0.0.2:1028",
        "outbound:241.0.0.3:1027",
        "outbound:241.0.0.3:1028",
    }
    empty = generate(client={"reachableBackends": {"refs": []}})
    assert chains(empty) == {} and dns_records(empty) == {}


def test_dns_table_names_every_hostname_of_the_reachable_services() -> None:
    assert dns_records(generate()) == {
        "client.svc.mesh.local": ("241.0.0.1",),
        "echo.mzsvc.mesh.local": ("243.0.0.1",),
        "echo.svc.mesh.local": ("241.0.0.2",),
        "echo.svc.zone-2.mesh.local": ("241.0.0.3",),
    }


def test_virtual_inbound_hands_redirected_connections_to_the_inbound_listeners() -> None:
    resources = generate(role="server")
    listener = resources.of_type(LISTENER)[names.INBOUND_PASSTHROUGH]
    assert listener.address.socket_address.port_value == 15006
    assert listener.use_original_dst.value is True
    assert "inbound:127.0.1.21:21027" in resources.of_type(LISTENER)
    passthrough = resources.of_type(CLUSTER)[names.INBOUND_PASSTHROUGH]
    assert passthrough.upstream_bind_config.source_address.address == "127.0.0.6"


def test_a_dataplane_without_transparent_proxying_gets_nothing_more() -> None:
    topology = transparent("t")
    plain = dataplane("plain", "127.0.1.30", [inbound("plain", 20080, 8080)])
    topology.resources.append(plain)
    topology.proxies["plain"] = plain.key
    state = topology.state()
    resources = default_generator().generate(state, topology.proxy("plain", state))
    assert set(resources.of_type(LISTENER)) == {"inbound:127.0.1.30:20080"}


def test_inbound_only_redirection_has_no_virtual_outbound_nor_dns() -> None:
    topology = transparent("t")
    only_in = transparent_dataplane(
        "in-only", "127.0.1.31", [inbound("x", 20080, 8080)], redirectPortOutbound=0
    )
    topology.resources.append(only_in)
    topology.proxies["in-only"] = only_in.key
    state = topology.state()
    resources = default_generator().generate(state, topology.proxy("in-only", state))
    listeners = set(resources.of_type(LISTENER))
    assert names.INBOUND_PASSTHROUGH in listeners
    assert names.OUTBOUND_PASSTHROUGH not in listeners
    assert DNS_TABLE_LISTENER not in listeners


def test_destinations_without_a_vip_are_left_out() -> None:
    topology = transparent("t")
    no_status = [
        r.with_(status=None) if r.type == "MeshMultiZoneService" else r for r in topology.resources
    ]
    topology.resources[:] = no_status
    state = topology.state()
    kinds = {d.kind for d in vip_destinations(state, "default")}
    assert kinds == {"MeshService"}
