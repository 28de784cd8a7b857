"""Which targetRef policies apply to a proxy and a destination, and in what order they merge.

Kuma's rules, kept in one place so that every policy type combines the same way:

- The top-level `targetRef` selects proxies: `Mesh` (or none) every Dataplane of the mesh,
  `MeshSubset` those whose inbound tags carry the given tags, `MeshService` /
  `MeshServiceSubset` those with an inbound of that `kuma.io/service` (and tags), `Dataplane`
  one by name or several by labels (`sectionName`: only if it has that inbound).
- Matched policies are ordered least specific first: by the kind of the top-level targetRef
  (Mesh < MeshSubset < MeshService < MeshServiceSubset < Dataplane by labels < Dataplane by
  name, each with `sectionName` just above), then by origin (synced from global below created
  in the zone), then by name in inverted lexicographic order (`zzz` weakest, `aaa` strongest).
- Their `to` entries are concatenated in that order, then stable-sorted by the kind of
  `to[].targetRef` (Mesh < MeshService < MeshService with sectionName < MeshExternalService <
  MeshMultiZoneService < MeshMultiZoneService with sectionName). The entries that select a
  destination are merged in that order with JSON merge patch (RFC 7386): later ones win, and
  a list is replaced, never appended to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.ownership import display_name, is_synced
from zonemesh.resources.types.common import TargetRef
from zonemesh.resources.types.dataplane import DataplaneSpec

MESH_MULTI_ZONE_SERVICE = "MeshMultiZoneService"
MESH_SERVICE = "MeshService"

_TOP_RANK = {"Mesh": 0, "MeshSubset": 10, "MeshService": 20, "MeshServiceSubset": 30}
_TO_RANK = {"Mesh": 0, "MeshService": 10, "MeshExternalService": 30, "MeshMultiZoneService": 40}


@dataclass(frozen=True)
class Destination:
    """What an outbound sends to: one port of a MeshMultiZoneService or a MeshService."""

    kind: str  # MESH_MULTI_ZONE_SERVICE or MESH_SERVICE
    resource: Resource
    port: int
    port_name: str | None = None

    @property
    def key(self) -> tuple[str, ResourceKey, int]:
        return (self.kind, self.resource.key, self.port)


# --- the top-level targetRef: which proxies ------------------------------------------------


def tag_values(dataplane: Resource) -> dict[str, set[str]]:
    """Every value each tag takes across the Dataplane's inbounds (Kuma's multi-value tag set)."""
    spec = dataplane.spec
    assert isinstance(spec, DataplaneSpec)
    values: dict[str, set[str]] = {}
    for inbound in spec.networking.inbound:
        for key, value in inbound.tags.items():
            values.setdefault(key, set()).add(value)
    return values


def selects_proxy(ref: TargetRef | None, dataplane: Resource) -> bool:
    """Whether a top-level targetRef selects this Dataplane (a sidecar)."""
    if ref is None or ref.kind == "Mesh":
        return _sidecar_allowed(ref)
    spec = dataplane.spec
    assert isinstance(spec, DataplaneSpec)
    inbounds = spec.networking.inbound
    if ref.kind == "MeshSubset":
        values = tag_values(dataplane)
        wanted = ref.tags or {}
        return _sidecar_allowed(ref) and all(v in values.get(k, ()) for k, v in wanted.items())
    if ref.kind in ("MeshService", "MeshServiceSubset"):
        wanted = dict(ref.tags or {}) if ref.kind == "MeshServiceSubset" else {}
        wanted[labels.SERVICE_TAG] = ref.name or ""
        return any(all(i.tags.get(k) == v for k, v in wanted.items()) for i in inbounds)
    if ref.kind == "Dataplane":
        if ref.name and ref.name != dataplane.name:
            return False
        if ref.labels and not _has_labels(dataplane.labels, ref.labels):
            return False
        if ref.section_name:
            return any(
                i.name == ref.section_name or str(i.port) == ref.section_name for i in inbounds
            )
        return _sidecar_allowed(ref)
    return False


def _sidecar_allowed(ref: TargetRef | None) -> bool:
    """`proxyTypes` limits a Mesh/MeshSubset policy; every proxy here is a sidecar."""
    return ref is None or not ref.proxy_types or "Sidecar" in ref.proxy_types


def _has_labels(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in wanted.items())


def top_level_rank(ref: TargetRef | None) -> int:
    if ref is None:
        return 0
    by_kind = _TOP_RANK.get(ref.kind, 0)
    rank = (60 if ref.name else 40) if ref.kind == "Dataplane" else by_kind
    return rank + (1 if ref.section_name else 0)


def _origin_rank(policy: Resource) -> int:
    """Synced from global merges before (loses to) what was created in this zone."""
    return 0 if is_synced(policy) else 1


def ordered(policies: Iterable[Resource]) -> list[Resource]:
    """Least specific first (see the module docstring), so later ones override."""
    by_name = sorted(policies, key=lambda p: (display_name(p), p.name), reverse=True)
    return sorted(
        by_name,
        key=lambda p: (top_level_rank(getattr(p.spec, "target_ref", None)), _origin_rank(p)),
    )


# --- to[].targetRef: which destinations ----------------------------------------------------


def to_rank(ref: TargetRef) -> int:
    return _TO_RANK.get(ref.kind, 0) + (1 if ref.section_name else 0)


def selects_destination(ref: TargetRef, destination: Destination) -> bool:
    """Whether a `to[].targetRef` names this destination (MeshHTTPRoute and
    MeshExternalService name none: zonemesh routes neither)."""
    if ref.kind == "Mesh":
        return True
    if ref.kind != destination.kind:
        return False
    resource = destination.resource
    if ref.name and ref.name not in (resource.name, display_name(resource)):
        return False
    if ref.labels and not _has_labels(resource.labels, ref.labels):
        return False
    if ref.section_name and ref.section_name not in (
        destination.port_name,
        str(destination.port),
    ):
        return False
    return bool(ref.name or ref.labels)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
