"""What the API returns for a resource: the Universal form plus Kuma's `kri` and `snis`.

Both are derived, read-only fields; `apply` accepts them back and ignores them. Every
resource the API returns goes through `render`, which also hides what a viewer must not see:
private keys in Secret data (from everyone, see `zonemesh.api.redact`) and a Zone's
`status.instanceId` (from non-admins: knowing a zone's instance id was enough to take over its
KDS session).
"""

from __future__ import annotations

from typing import Any

from zonemesh.api.redact import public_secret_data
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceType
from zonemesh.resources.codec import resource_to_wire
from zonemesh.resources.ownership import display_name
from zonemesh.resources.registry import GLOBAL_SECRET, SECRET, ZONE, by_kind
from zonemesh.translate import names

# Kuma's short names of the types that have a KRI here.
KRI_SHORT_NAMES = {
    "MeshService": "msvc",
    "MeshMultiZoneService": "mzsvc",
    "MeshLoadBalancingStrategy": "mlbs",
    "MeshHTTPRoute": "mhttpr",
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
    name = display_name(resource)
    return f"kri_{short}_{resource.mesh}_{zone}__{name}_"


def snis(resource: Resource) -> list[dict[str, Any]] | None:
    """One SNI per port: `sni.<mzsvc|msvc>.<mesh>.<name>.<port name, else number>`."""
    prefix = SNI_PREFIXES.get(resource.type)
    if prefix is None:
        return None
    ports = getattr(resource.spec, "ports", [])
    return [
        {
            "port": p.port,
            "sni": f"sni.{prefix}.{resource.mesh}.{resource.name}."
            + names.section_name(p.port, getattr(p, "name", None)),
        }
        for p in ports
    ]


_SECRET_TYPES = frozenset({SECRET.name, GLOBAL_SECRET.name})


def render(
    resource: Resource, rtype: ResourceType | None = None, *, admin: bool = False
) -> dict[str, Any]:
    """The wire form shown to a viewer; `admin` says whether they are `mesh-system:admin`."""
    wire = resource_to_wire(resource, rtype or by_kind(resource.type))
    if (k := kri(resource)) is not None:
        wire["kri"] = k
    if (s := snis(resource)) is not None:
        wire["snis"] = s
    return viewable(wire, admin=admin)


def viewable(wire: dict[str, Any], *, admin: bool) -> dict[str, Any]:
    """`wire` without what the viewer may not see (see the module docstring)."""
    kind = wire.get("type")
    if kind in _SECRET_TYPES and isinstance(wire.get("data"), str):
        wire["data"] = public_secret_data(wire["data"])
    if kind == ZONE.name and not admin and isinstance(wire.get("status"), dict):
        wire["status"] = {k: v for k, v in wire["status"].items() if k != "instanceId"}
    return wire
