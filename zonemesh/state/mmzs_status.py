"""Which MeshServices (local and synced from other zones) each MeshMultiZoneService selects.

All MMZS are matched in one pass: MeshServices are indexed by (mesh, label, value) once, and
each selector intersects the sets of its labels, so the cost grows with the number of matches
rather than with MMZS x MeshServices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.types.common import Condition
from zonemesh.resources.types.mmzs import (
    CONDITION_MESH_SERVICES_MATCHED,
    MatchedMeshService,
    MeshMultiZoneServiceSpec,
)
from zonemesh.state.hostnames import NAMESPACE_LABEL, display_name, zone_of


def match_mesh_services(
    mmzs_list: Iterable[Resource], mesh_services: Iterable[Resource], local_zone: str
) -> dict[ResourceKey, list[MatchedMeshService]]:
    services = list(mesh_services)
    index: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for i, ms in enumerate(services):
        for key, value in ms.labels.items():
            index[(ms.mesh, key, value)].add(i)

    out: dict[ResourceKey, list[MatchedMeshService]] = {}
    for mmzs in mmzs_list:
        spec = mmzs.spec
        assert isinstance(spec, MeshMultiZoneServiceSpec)
        wanted = spec.selector.mesh_service.match_labels or {}
        if not wanted:
            out[mmzs.key] = []  # Kuma refuses an empty selector; match nothing, not everything
            continue
        sets = sorted((index.get((mmzs.mesh, k, v), set()) for k, v in wanted.items()), key=len)
        found = set(sets[0]).intersection(*sets[1:])
        matched = {
            MatchedMeshService.model_construct(
                name=display_name(services[i]),
                zone=zone_of(services[i], local_zone),
                mesh=services[i].mesh,
                namespace=services[i].labels.get(NAMESPACE_LABEL, ""),
            )
            for i in found
        }
        out[mmzs.key] = sorted(matched, key=lambda m: (m.name, m.namespace, m.zone, m.mesh))
    return out


def matched_condition(count: int) -> Condition:
    if count:
        return Condition.model_construct(
            type=CONDITION_MESH_SERVICES_MATCHED,
            status="True",
            reason="MatchesFound",
            message=f"Matched {count} MeshService(s)",
        )
    return Condition.model_construct(
        type=CONDITION_MESH_SERVICES_MATCHED,
        status="False",
        reason="NoMatchesFound",
        message="Selector does not match any MeshService in this zone",
    )
