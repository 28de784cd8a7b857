"""Labels a control plane stamps on the resources written through it (API, xDS registration).

On global: `kuma.io/origin: global`. In a zone (federated or standalone): `kuma.io/origin: zone`
and, for the types a zone owns, `kuma.io/zone: <zone>`. Mesh-scoped types also get
`kuma.io/mesh`. Resources that arrive through federation keep the labels sync gave them.
"""

from __future__ import annotations

from zonemesh.resources import labels
from zonemesh.resources.base import Resource
from zonemesh.resources.registry import by_kind


def stamp_origin(resource: Resource, *, is_global: bool, zone: str) -> Resource:
    rtype = by_kind(resource.type)
    stamped = dict(resource.labels)
    if is_global:
        stamped[labels.ORIGIN] = labels.ORIGIN_GLOBAL
    else:
        stamped[labels.ORIGIN] = labels.ORIGIN_ZONE
        if rtype.zone_owned and zone:
            stamped[labels.ZONE] = zone
    if rtype.mesh_scoped:
        stamped[labels.MESH] = resource.mesh
    return resource if stamped == resource.labels else resource.with_(labels=stamped)
