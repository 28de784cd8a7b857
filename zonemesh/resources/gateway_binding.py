"""Which MeshGateway a BUILTIN gateway Dataplane serves, and which of its listeners it can bind.

One home for these rules, used by translation (`translate.gateway`) and by the admission check
on write (`resources.admission`):

- Binding (Kuma v2.14, `pkg/xds/topology/gateway.go`): every selector of every MeshGateway of
  the mesh is ranked against the Dataplane's gateway tags; the best-ranked selector wins (more
  tags matched exactly, then more matched at all), and on a tie the newest gateway, then the
  first by name. A Dataplane therefore serves one MeshGateway; the others that select it are
  reported, never merged (two gateways' listeners on one Envoy could collide).
- Listeners: those sharing a port become one Envoy listener (validation guarantees one
  protocol and distinct hosts per port). A port the Dataplane already uses (its Envoy admin
  port on a loopback or wildcard address) is left out with a reason: Envoy could not bind it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from zonemesh.resources.base import Resource
from zonemesh.resources.types.dataplane import DEFAULT_ADMIN_PORT, DataplaneSpec
from zonemesh.resources.types.meshgateway import Listener, MeshGatewaySpec

ADMIN_ADDRESS = "127.0.0.1"  # where `dp run`'s bootstrap binds Envoy's admin (dp.bootstrap)
_EPOCH = datetime.min.replace(tzinfo=UTC)


def gateway_spec(dataplane: Resource) -> DataplaneSpec | None:
    """The Dataplane's spec when it is a BUILTIN gateway, else None."""
    spec = dataplane.spec
    if isinstance(spec, DataplaneSpec) and spec.networking.is_builtin_gateway:
        return spec
    return None


def selector_rank(match: Mapping[str, str], tags: Mapping[str, str]) -> tuple[int, int] | None:
    """(exact matches, matches) when every selector tag matches `tags` (`*`: any value)."""
    exact = 0
    for key, value in match.items():
        have = tags.get(key)
        if have is None or (value != "*" and value != have):
            return None
        exact += value != "*"
    return exact, len(match)


def gateway_rank(gateway: Resource, tags: Mapping[str, str]) -> tuple[int, int] | None:
    spec = gateway.spec
    assert isinstance(spec, MeshGatewaySpec)
    ranks = [r for s in spec.selectors if (r := selector_rank(s.match, tags)) is not None]
    return max(ranks) if ranks else None


@dataclass(frozen=True)
class Binding:
    """The gateway a Dataplane serves (None: no MeshGateway selects it) and those passed over."""

    gateway: Resource | None
    passed_over: tuple[Resource, ...] = ()


def selecting(gateways: Iterable[Resource], dataplane: Resource) -> list[Resource]:
    """The gateways of the Dataplane's mesh selecting it, best binding first."""
    spec = gateway_spec(dataplane)
    if spec is None:
        return []
    tags = spec.networking.gateway_tags
    ranked = []
    for gateway in gateways:
        if gateway.mesh != dataplane.mesh:
            continue
        rank = gateway_rank(gateway, tags)
        if rank is not None:
            ranked.append((rank, gateway.creation_time or _EPOCH, gateway))
    # Best rank first; newest first on a tie; then by name (sort is stable).
    ranked.sort(key=lambda r: r[2].name)
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [gateway for _, _, gateway in ranked]


def bind(gateways: Iterable[Resource], dataplane: Resource) -> Binding:
    found = selecting(gateways, dataplane)
    if not found:
        return Binding(None)
    return Binding(found[0], tuple(found[1:]))


def used_ports(dataplane: Resource, *, admin_port: int | None = None) -> dict[int, str]:
    """Ports of the gateway's address something else of the Dataplane already binds."""
    spec = dataplane.spec
    assert isinstance(spec, DataplaneSpec)
    net = spec.networking
    port = admin_port or (net.admin.port if net.admin is not None else DEFAULT_ADMIN_PORT)
    if _overlaps(net.address, ADMIN_ADDRESS):
        return {port: f'the Envoy admin port of Dataplane "{dataplane.name}"'}
    return {}


def _overlaps(address: str, other: str) -> bool:
    if address == other:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_unspecified


@dataclass(frozen=True)
class PortGroup:
    """One Envoy listener: every MeshGateway listener on one port (one protocol)."""

    port: int
    protocol: str
    listeners: tuple[tuple[int, Listener], ...]  # (index in conf.listeners, listener)


@dataclass(frozen=True)
class ListenerPlan:
    groups: tuple[PortGroup, ...]
    left_out: tuple[tuple[int, str], ...]  # (listener index, why)


def plan_listeners(gateway: Resource, dataplane: Resource) -> ListenerPlan:
    spec = gateway.spec
    assert isinstance(spec, MeshGatewaySpec)
    taken = used_ports(dataplane)
    by_port: dict[int, list[tuple[int, Listener]]] = {}
    left_out: list[tuple[int, str]] = []
    for i, listener in enumerate(spec.conf.listeners if spec.conf else []):
        assert listener.port is not None and listener.protocol is not None  # validated
        if listener.port in taken:
            left_out.append((i, f"port {listener.port} is {taken[listener.port]}"))
            continue
        group = by_port.setdefault(listener.port, [])
        if group and group[0][1].protocol != listener.protocol:
            left_out.append((i, f"port {listener.port} is taken by another protocol"))
            continue
        group.append((i, listener))
    groups = tuple(
        PortGroup(port, str(found[0][1].protocol), tuple(found))
        for port, found in sorted(by_port.items())
    )
    return ListenerPlan(groups, tuple(left_out))
