"""Zone egress: with `routing.zoneEgress: true`, zone-crossing traffic leaves through it.

The sidecars' priority-1 endpoint becomes the local ZoneEgress (keeping the SNI). The egress
has one `tls_inspector` filter chain per remote target SNI, a `tcp_proxy` (TLS passed through)
to the ingresses of the zones serving that target: one cluster per remote zone, each zone an
equal share when several zones serve one SNI (by instance count with the MeshMultiZoneService
opt-in `zonemesh.io/zone-weights: instances`).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from zonemesh.resources.ownership import is_local
from zonemesh.resources.types.meshservice import MeshServiceSpec
from zonemesh.resources.types.mmzs import MeshMultiZoneServiceSpec
from zonemesh.resources.types.zone_proxies import ZoneEgressSpec
from zonemesh.translate import names
from zonemesh.translate.builders import is_ip, weighted_tcp_proxy_filter
from zonemesh.translate.endpoints import (
    Plan,
    ingress_addresses,
    mesh_service_plan,
    mesh_spec,
    mmzs_plan,
    plain_load_assignment,
)
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.ingress import meshes_of, passthrough_cluster, sni_listener
from zonemesh.translate.state import MeshState

log = logging.getLogger("zonemesh.translate")


def egress_routes(state: MeshState) -> dict[str, dict[str, int]]:
    """SNI -> {remote zone: weight}, for every mesh that sends zone-crossing traffic out."""

    def build() -> dict[str, dict[str, int]]:
        routes: dict[str, dict[str, int]] = defaultdict(dict)

        def add(plan: Plan) -> None:
            for target in plan.remote:
                weight = target.weight  # the zone's, shared by its ingresses
                zones = routes[plan.sni]
                zones[target.zone] = zones.get(target.zone, 0) + weight

        for mesh in meshes_of(state):
            routing = mesh_spec(state, mesh).routing
            if routing is None or not routing.zone_egress:
                continue
            for mmzs in state.mesh_multi_zone_services_in(mesh):
                spec = mmzs.spec
                assert isinstance(spec, MeshMultiZoneServiceSpec)
                for port in spec.ports:
                    add(mmzs_plan(state, mmzs, port))
            for ms in state.mesh_services_in(mesh):
                if is_local(ms, state.zone):
                    continue
                ms_spec = ms.spec
                assert isinstance(ms_spec, MeshServiceSpec)
                for ms_port in ms_spec.ports:
                    add(mesh_service_plan(state, ms, ms_port))
        return {sni: dict(sorted(zones.items())) for sni, zones in sorted(routes.items()) if zones}

    return state.memo(("egress.routes",), build)


class EgressGenerator:
    """The listener, per-zone clusters and endpoints of this zone's egress."""

    OWN_OUTPUT_IS_LOCAL = True  # nothing for sidecars; zone proxies are always regenerated

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        spec = proxy.resource.spec
        assert isinstance(spec, ZoneEgressSpec)
        net = spec.networking
        if not is_ip(net.address):
            log.warning(
                "ZoneEgress %s: address %r is not an IP; no listener", proxy.name, net.address
            )
            return out
        routes = egress_routes(state)
        addresses = ingress_addresses(state)
        for zone in sorted({z for zones in routes.values() for z in zones}):
            name = names.egress_cluster(zone)
            out.add(passthrough_cluster(name))
            out.add(plain_load_assignment(name, addresses.get(zone, ()), zone))
        name = names.egress_listener(net.address, net.port)
        chains = [
            (
                sni,
                weighted_tcp_proxy_filter(
                    f"{name}_{sni}", [(names.egress_cluster(z), w) for z, w in zones.items()]
                ),
            )
            for sni, zones in routes.items()
        ]
        out.add(sni_listener(name, net.address, net.port, chains))
        return out
