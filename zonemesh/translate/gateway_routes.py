"""The routes of a builtin gateway's listeners: the MeshHTTPRoutes attached to its MeshGateway.

Which rules apply and how a rule becomes Envoy routes is `policies.meshhttproute`'s
(`gateway_rules`, `envoy_routes`), shared with sidecars; here is only the gateway's side:

- virtual hosts: one per hostname a listener serves (the listener's hostname, narrowed by the
  routes' `hostnames`), exact names first, wildcard domains next, `*` last; a host already
  served by a more specific listener on the same port is not repeated (Envoy refuses a
  domain twice in one route configuration). A host's routes are the rules for it and those
  for every host (`*`).
- TCP listeners: Kuma routes them with MeshTCPRoute, which zonemesh does not have; a TCP
  listener forwards to the `backendRefs` of the gateway's catch-all rule (`PathPrefix /`, or
  the first rule), with their weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from envoy.config.route.v3 import route_components_pb2

from zonemesh.resources.base import Resource
from zonemesh.resources.types.meshgateway import ANY_HOST, Listener, MeshGatewaySpec
from zonemesh.resources.types.meshhttproute import BackendRef
from zonemesh.translate.policies.meshhttproute import ResolvedRule, envoy_routes, gateway_rules
from zonemesh.translate.resilience import retry_policy
from zonemesh.translate.state import MeshState


class BackendResolver(Protocol):
    """What the gateway resolves route backends with (`translate.gateway.Backends`)."""

    def cluster_for(self, ref: BackendRef) -> str | None: ...

    def route_hashes(
        self, refs: Sequence[BackendRef]
    ) -> Sequence[route_components_pb2.RouteAction.HashPolicy]: ...


@dataclass(frozen=True)
class VirtualHostRoutes:
    host: str
    routes: list[route_components_pb2.Route]


def host_order(host: str) -> tuple[int, int, str]:
    """Exact hosts first, wildcard domains next, `*` last; longer (more specific) first."""
    kind = 2 if host == ANY_HOST else 1 if host.startswith("*.") else 0
    return kind, -len(host), host


def _covers(pattern: str, host: str) -> bool:
    if pattern in (ANY_HOST, host):
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def _rules(
    state: MeshState, dataplane: Resource, gateway: Resource, listener: Listener
) -> list[ResolvedRule]:
    """A route's `targetRef.tags` select listeners by the gateway's tags and the listener's
    (the listener's win), as Kuma's listener policy tags do."""
    spec = gateway.spec
    assert isinstance(spec, MeshGatewaySpec)
    return gateway_rules(
        state,
        gateway_dataplane=dataplane,
        listener_hostname=listener.host,
        gateway_name=gateway.name,
        listener_tags={**(spec.tags or {}), **(listener.tags or {})},
    )


def http_virtual_hosts(
    state: MeshState,
    dataplane: Resource,
    gateway: Resource,
    listeners: Sequence[Listener],
    backends: BackendResolver,
) -> list[VirtualHostRoutes]:
    """The virtual hosts of one HTTP(S) route configuration (listeners of one port, or the one
    listener of an HTTPS filter chain); a host without rules gets no routes (404)."""
    by_host: dict[str, list[ResolvedRule]] = {}
    for listener in sorted(listeners, key=lambda item: host_order(item.host)):
        rules = _rules(state, dataplane, gateway, listener)
        hosts = {listener.host} | {h for rule in rules for h in rule.hostnames}
        for host in sorted(hosts, key=host_order):
            if host in by_host:
                continue  # a more specific listener serves it already
            by_host[host] = [
                rule
                for rule in rules
                if any(_covers(h, host) for h in rule.hostnames or [ANY_HOST])
            ]
    out = []
    for host in sorted(by_host, key=host_order):
        rules = by_host[host]
        # A RingHash/Maglev MeshLoadBalancingStrategy of the backends: what requests hash on.
        hashes = backends.route_hashes([ref for rule in rules for ref in rule.backend_refs])
        routes = envoy_routes(
            rules, backends.cluster_for, retry_policy=retry_policy(), hash_policy=hashes
        )
        out.append(VirtualHostRoutes(host, routes))
    return out


def tcp_backends(
    state: MeshState, dataplane: Resource, gateway: Resource, listener: Listener
) -> list[tuple[BackendRef, int]]:
    """(backendRef, weight) a TCP listener forwards to (see the module docstring)."""
    rules = _rules(state, dataplane, gateway, listener)
    if not rules:
        return []
    catch_all = [
        rule
        for rule in rules
        if any(
            m.path is not None and m.path.type == "PathPrefix" and m.path.value == "/"
            for m in rule.matches
        )
    ]
    rule = (catch_all or rules)[0]
    return [(ref, ref.effective_weight) for ref in rule.backend_refs]
