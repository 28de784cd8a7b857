"""Which MeshServices (local and synced from other zones) each MeshMultiZoneService selects.

All MMZS are matched in one pass: MeshServices are indexed by (mesh, label, value) once, and
each selector takes the smallest set of its labels' and keeps those the selection rule
(`resources.types.mmzs.selects_mesh_service`, which translation applies too) accepts, so the
cost grows with the number of candidates rather than with MMZS x MeshServices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.ownership import display_name, zone_of
from zonemesh.resources.types.common import Condition
from zonemesh.resources.types.mmzs import (
    CONDITION_MESH_SERVICES_MATCHED,
    MatchedMeshService,
    selects_mesh_service,
    wanted_labels,
)
from zonemesh.state.hostnames import NAMESPACE_LABEL


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
        wanted = wanted_labels(mmzs)
        if not wanted:
            out[mmzs.key] = []
            continue
        fewest = min((index.get((mmzs.mesh, k, v), set()) for k, v in wanted.items()), key=len)
        found = [i for i in fewest if selects_mesh_service(mmzs, services[i])]
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
