"""What the API returns for a resource: the Universal form plus Kuma's `kri` and `snis`.

Both are derived, read-only fields; `apply` accepts them back and ignores them.
"""

from __future__ import annotations

from typing import Any

from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceType
from zonemesh.resources.codec import resource_to_wire
from zonemesh.resources.registry import by_kind

# Kuma's short names of the types that have a KRI here.
KRI_SHORT_NAMES = {
    "MeshService": "msvc",
    "MeshMultiZoneService": "mzsvc",
    "MeshLoadBalancingStrategy": "mlbs",
    "Dataplane": "dp",
}
# SNI prefixes of the services reachable through zone ingress / egress.
SNI_PREFIXES = {"MeshService": "msvc", "MeshMultiZoneService": "mzsvc"}


def kri(resource: Resource) -> str | None:
    """`kri_<short>_<mesh>_<zone>_<namespace>_<name>_<section>`; None for types without one."""
    short = KRI_SHORT_NAMES.get(resource.type)
    if short is None:
        return None
    zone = resource.label(labels.ZONE)
    name = resource.label(labels.DISPLAY_NAME) or resource.name
    return f"kri_{short}_{resource.mesh}_{zone}__{name}_"


def snis(resource: Resource) -> list[dict[str, Any]] | None:
    """One SNI per port: `sni.<mzsvc|msvc>.<mesh>.<name>.<port>`."""
    prefix = SNI_PREFIXES.get(resource.type)
    if prefix is None:
        return None
    ports = getattr(resource.spec, "ports", [])
    return [
        {"port": p.port, "sni": f"sni.{prefix}.{resource.mesh}.{resource.name}.{p.port}"}
        for p in ports
    ]


def render(resource: Resource, rtype: ResourceType | None = None) -> dict[str, Any]:
    wire = resource_to_wire(resource, rtype or by_kind(resource.type))
    if (k := kri(resource)) is not None:
        wire["kri"] = k
    if (s := snis(resource)) is not None:
        wire["snis"] = s
    return wire
