"""Checks on write that need other stored resources (a single resource's own rules are its
`validate_semantics`). Refused writes change nothing; what cannot be decided here (a gateway
Dataplane that registers over xDS later) is decided at translation, by the same rules
(`resources.gateway_binding`), and left out with a log line.

Today: a MeshGateway, or a BUILTIN gateway Dataplane, whose listener port another listener of
the same gateway Dataplane already claims, or that the Dataplane itself uses.
"""

from __future__ import annotations

from zonemesh.resources.base import Resource
from zonemesh.resources.errors import Violations
from zonemesh.resources.gateway_binding import gateway_spec, selecting, used_ports
from zonemesh.resources.registry import DATAPLANE, MESH_GATEWAY
from zonemesh.resources.types.meshgateway import MeshGatewaySpec
from zonemesh.store.base import Store


async def check_write(store: Store, resource: Resource) -> None:
    """Raise `ValidationError` if writing `resource` would give a gateway Envoy a port twice."""
    errors = Violations()
    if resource.type == MESH_GATEWAY.name:
        await _check_gateway(store, resource, errors)
    elif resource.type == DATAPLANE.name and gateway_spec(resource) is not None:
        await _check_gateway_dataplane(store, resource, errors)
    errors.raise_if_any()


def _ports(gateway: Resource) -> dict[int, int]:
    """Listener port -> the index of its first listener."""
    spec = gateway.spec
    assert isinstance(spec, MeshGatewaySpec)
    out: dict[int, int] = {}
    for i, listener in enumerate(spec.conf.listeners if spec.conf else []):
        if listener.port is not None:
            out.setdefault(listener.port, i)
    return out


def _conflicts(
    gateway: Resource, others: list[Resource], dataplane: Resource, errors: Violations
) -> None:
    ports = _ports(gateway)
    taken = used_ports(dataplane)
    for port, i in sorted(ports.items(), key=lambda p: p[1]):
        at = f"conf.listeners[{i}].port"
        if port in taken:
            errors.add(at, f"port {port} is already used: it is {taken[port]}")
        for other in others:
            if port in _ports(other):
                errors.add(
                    at,
                    f'port {port} is already claimed by MeshGateway "{other.name}" '
                    f'on gateway Dataplane "{dataplane.name}"',
                )


async def _check_gateway(store: Store, gateway: Resource, errors: Violations) -> None:
    stored = [g for g in await store.list(MESH_GATEWAY.name, gateway.mesh) if g.key != gateway.key]
    for dataplane in await store.list(DATAPLANE.name, gateway.mesh):
        if gateway_spec(dataplane) is None or not selecting([gateway], dataplane):
            continue
        _conflicts(gateway, selecting(stored, dataplane), dataplane, errors)


async def _check_gateway_dataplane(store: Store, dataplane: Resource, errors: Violations) -> None:
    found = selecting(await store.list(MESH_GATEWAY.name, dataplane.mesh), dataplane)
    for i, gateway in enumerate(found):
        sub = Violations()
        _conflicts(gateway, found[:i], dataplane, sub)
        for item in sub.items:
            errors.add("networking.gateway", f'MeshGateway "{gateway.name}": {item}')
