"""Resources that exist from the start: the `default` Mesh and the default HostnameGenerators.

They are created on global and on a standalone zone; a federated zone receives them from
global. Creation is idempotent and never overwrites: a user who changed a default keeps it.
"""

from __future__ import annotations

import logging

from zonemesh.config import CpConfig
from zonemesh.resources import labels
from zonemesh.resources.base import Resource
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.registry import HOSTNAME_GENERATOR, MESH
from zonemesh.resources.types.common import LabelSelector
from zonemesh.resources.types.hostnamegenerator import (
    HostnameGeneratorSelector,
    HostnameGeneratorSpec,
)
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.store.base import AlreadyExistsError, Store

log = logging.getLogger("zonemesh.state.defaults")

DEFAULT_MESH = "default"


def default_hostname_generators() -> list[tuple[str, HostnameGeneratorSpec]]:
    """MMZS (whatever their origin: `zone` when standalone, `global` when federated), local
    MeshServices, and MeshServices synced in from other zones."""
    return [
        (
            "synced-mesh-multi-zone-service",
            HostnameGeneratorSpec(
                selector=HostnameGeneratorSelector(mesh_multi_zone_service=LabelSelector()),
                template="{{ .DisplayName }}.mzsvc.mesh.local",
            ),
        ),
        (
            "local-universal-mesh-service",
            HostnameGeneratorSpec(
                selector=HostnameGeneratorSelector(
                    mesh_service=LabelSelector(match_labels={labels.ORIGIN: labels.ORIGIN_ZONE})
                ),
                template="{{ .DisplayName }}.svc.mesh.local",
            ),
        ),
        (
            "synced-universal-mesh-service",
            HostnameGeneratorSpec(
                selector=HostnameGeneratorSelector(
                    mesh_service=LabelSelector(match_labels={labels.ORIGIN: labels.ORIGIN_GLOBAL})
                ),
                template="{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local",
            ),
        ),
    ]


def default_resources() -> list[Resource]:
    resources = [Resource(type=MESH.name, name=DEFAULT_MESH, mesh="", spec=MeshSpec())]
    resources += [
        Resource(type=HOSTNAME_GENERATOR.name, name=name, mesh="", spec=spec)
        for name, spec in default_hostname_generators()
    ]
    return resources


async def ensure_defaults(store: Store, config: CpConfig) -> list[Resource]:
    """Create the defaults that are missing (none on a federated zone); returns those created."""
    if config.federated_zone:
        return []
    created = []
    for resource in default_resources():
        if await store.find(resource.key) is not None:
            continue
        stamped = stamp_origin(resource, is_global=config.is_global, zone=config.zone_name)
        try:
            created.append(await store.create(stamped))
            log.info("created default %s", resource.key)
        except AlreadyExistsError:
            pass  # created concurrently (e.g. applied through the API): theirs stands
    return created
