"""What a resource looks like on the other side of the federation.

Three mappings, all pure functions of a stored resource:
- `to_zone` (global -> zone, global's own types): `kuma.io/origin: global`, no status.
- `to_global_copy` (zone -> global, applied by global): the zone's name gets a suffix derived
  from the zone (`echo` from zone1 is `echo-<8 hex>` on global), so two zones' MeshServices
  of the same name never collide; `kuma.io/display-name` keeps the name users and selectors
  see; `kuma.io/origin: zone` and `kuma.io/zone` are set by global, never trusted from the zone.
- `pass_on` (global -> the other zones, a zone's copy): the global copy relabelled
  `kuma.io/origin: global`, keeping `kuma.io/zone` so the receiving zone knows where it lives.

Status never travels: every control plane computes its own. The content hash is taken over
the canonical JSON (sorted keys, no status, no timestamps), so equal hashes mean equal content
on both sides and a receiver can skip writes that would change nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_to_wire
from zonemesh.resources.registry import MESH_SERVICE, ZONE_EGRESS, ZONE_INGRESS, by_kind
from zonemesh.resources.types.meshservice import STATE_UNAVAILABLE

# A zone-internal bookkeeping label (which local controller manages a resource): meaningless
# anywhere else, and harmful if another zone's controller took the copy for its own.
ZONE_LOCAL_LABELS = frozenset({"zonemesh.io/generated-by"})

MAX_NAME = 253


@dataclass(frozen=True)
class Entry:
    """One resource as sent: its key in the sender's namespace, canonical JSON and hash."""

    key: ResourceKey
    json: bytes
    hash: str


def canonical_wire(resource: Resource) -> dict[str, Any]:
    """The wire form without status and timestamps: what sync carries and compares."""
    bare = resource.with_(status=None, creation_time=None, modification_time=None, version=0)
    return resource_to_wire(bare)


def encode(wire: dict[str, Any]) -> bytes:
    return json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def entry(resource: Resource) -> Entry:
    data = encode(canonical_wire(resource))
    return Entry(resource.key, data, content_hash(data))


def same_content(a: Resource, b: Resource) -> bool:
    """Equal labels and spec (status, version and timestamps aside)."""
    return encode(canonical_wire(a)) == encode(canonical_wire(b))


def zone_suffix(zone: str) -> str:
    return hashlib.sha256(zone.encode()).hexdigest()[:8]


def global_name(name: str, zone: str) -> str:
    """The name of a zone's resource on global (and in the other zones)."""
    return f"{name}-{zone_suffix(zone)}"


def zone_name_of(copy_name: str, zone: str) -> str | None:
    """The zone's own name of a copy global holds; None if `copy_name` is not one of zone's."""
    suffix = f"-{zone_suffix(zone)}"
    return copy_name[: -len(suffix)] if copy_name.endswith(suffix) else None


def to_zone(resource: Resource) -> Resource:
    """A global-owned resource as a zone stores it."""
    new_labels = dict(resource.labels)
    new_labels[labels.ORIGIN] = labels.ORIGIN_GLOBAL
    new_labels.setdefault(labels.DISPLAY_NAME, resource.name)
    return resource.with_(labels=new_labels, status=None)


def to_global_copy(resource: Resource, zone: str) -> Resource:
    """A zone's resource (as the zone sent it) as global stores it. Raises ValueError when
    the suffixed name would be too long."""
    name = global_name(resource.name, zone)
    if len(name) > MAX_NAME:
        raise ValueError(
            f"name: too long to federate (at most {MAX_NAME - 9} characters, "
            "global adds a zone suffix)"
        )
    new_labels = {k: v for k, v in resource.labels.items() if k not in ZONE_LOCAL_LABELS}
    new_labels[labels.ORIGIN] = labels.ORIGIN_ZONE
    new_labels[labels.ZONE] = zone
    new_labels.setdefault(labels.DISPLAY_NAME, resource.name)
    if by_kind(resource.type).mesh_scoped:
        new_labels[labels.MESH] = resource.mesh
    return resource.with_(name=name, labels=new_labels, status=None)


def pass_on(resource: Resource, *, zone_available: bool) -> Resource | None:
    """A zone's copy on global as the other zones receive it; None when it is withheld.

    While its zone is unavailable (offline past the grace period, or disabled), its
    MeshServices go out as `Unavailable` (so no zone routes to them, yet they stay listed in
    MMZS status) and its ZoneIngresses/ZoneEgresses are withheld (removed from the other
    zones), so no proxy is given an endpoint in a dead zone.
    """
    if not zone_available and resource.type in (ZONE_INGRESS.name, ZONE_EGRESS.name):
        return None
    new_labels = dict(resource.labels)
    new_labels[labels.ORIGIN] = labels.ORIGIN_GLOBAL
    out = resource.with_(labels=new_labels, status=None)
    if not zone_available and resource.type == MESH_SERVICE.name:
        spec = resource.spec.model_copy(update={"state": STATE_UNAVAILABLE})
        out = out.with_(spec=spec)
    return out
