"""One pass of computed state in a zone: read the store, compute, write only what differs.

The pass generates MeshServices from Dataplanes, then computes the status of every
MeshService and MeshMultiZoneService (VIPs, hostnames, proxies, matched services) against
the MeshServices as they will be after this pass, so that one pass reaches a fixed point and
its own writes need no further pass. Each resource is written at most once per pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from zonemesh.resources.base import Model, Resource, ResourceKey
from zonemesh.resources.ownership import is_local
from zonemesh.resources.registry import (
    DATAPLANE,
    HOSTNAME_GENERATOR,
    MESH,
    MESH_MULTI_ZONE_SERVICE,
    MESH_SERVICE,
    ZONE_INGRESS,
)
from zonemesh.resources.types.common import VIP, Condition
from zonemesh.resources.types.meshservice import MeshServiceSpec, MeshServiceStatus
from zonemesh.resources.types.mmzs import MeshMultiZoneServiceStatus
from zonemesh.runtime.kernel import Runtime
from zonemesh.state.hostnames import Hostnames, compute_hostnames
from zonemesh.state.ipam import Allocation, VipAllocator
from zonemesh.state.meshservices import (
    DataplaneIndex,
    InboundsMemo,
    generated_mesh_services,
    is_generated,
)
from zonemesh.state.mmzs_status import match_mesh_services, matched_condition
from zonemesh.state.zone_ingress_services import update_available_services
from zonemesh.store.base import AlreadyExistsError, ConflictError, EventKind, NotFoundError

log = logging.getLogger("zonemesh.state")

CONDITION_VIP_ALLOCATED = "VIPAllocated"
REASON_RANGE_EXHAUSTED = "RangeExhausted"
MAX_ATTEMPTS = 3

# What a pass reads: a change to any of these can change its result.
INPUT_TYPES = frozenset(
    {
        DATAPLANE.name,
        MESH_SERVICE.name,
        MESH_MULTI_ZONE_SERVICE.name,
        HOSTNAME_GENERATOR.name,
        MESH.name,
        ZONE_INGRESS.name,
    }
)

WriteRecord = tuple[EventKind, ResourceKey, int]


@dataclass
class PassResult:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)  # writes left to the next pass

    @property
    def writes(self) -> int:
        return self.created + self.updated + self.deleted


class Reconciler:
    """Holds what must outlive a pass (the VIP allocators, the Dataplanes' inbounds as
    read last time) and runs passes."""

    def __init__(self, runtime: Runtime, on_write: Callable[[WriteRecord], None]) -> None:
        self.runtime = runtime
        self.store = runtime.store
        ipam = runtime.config.ipam
        self.ms_vips = VipAllocator(ipam.mesh_service.cidr, self.store, "ipam.meshservice")
        self.mmzs_vips = VipAllocator(
            ipam.mesh_multi_zone_service.cidr, self.store, "ipam.meshmultizoneservice"
        )
        self._on_write = on_write
        self._inbounds = InboundsMemo(runtime.zone)

    async def load(self) -> None:
        await self.ms_vips.load()
        await self.mmzs_vips.load()

    async def run_once(self) -> PassResult:
        store, zone = self.store, self.runtime.zone
        dataplanes = await store.list(DATAPLANE.name)
        mesh_services = await store.list(MESH_SERVICE.name)
        mmzs_list = await store.list(MESH_MULTI_ZONE_SERVICE.name)
        generators = await store.list(HOSTNAME_GENERATOR.name)
        meshes = await store.list(MESH.name)
        ingresses = await store.list(ZONE_INGRESS.name)

        index = DataplaneIndex(dataplanes, zone, self.runtime.health, self._inbounds)
        wanted = generated_mesh_services(index, meshes)

        # The MeshServices as they will be after this pass (status not yet computed).
        existing = {ms.key: ms for ms in mesh_services}
        planned: dict[ResourceKey, Resource] = {}
        stale: list[Resource] = []
        for key, ms in existing.items():
            if not is_generated(ms, zone):
                planned[key] = ms  # applied by hand or synced in: never the generator's
            elif key in wanted:
                planned[key] = ms.with_(
                    spec=wanted[key].spec, labels={**ms.labels, **wanted[key].labels}
                )
            else:
                stale.append(ms)
        for key, ms in wanted.items():
            if key not in existing:
                planned[key] = ms

        services = list(planned.values())
        ms_alloc = await self.ms_vips.assign(services)
        mmzs_alloc = await self.mmzs_vips.assign(mmzs_list)
        names = compute_hostnames(generators, [*services, *mmzs_list], zone)
        matched = match_mesh_services(mmzs_list, services, zone)
        # Cursors first: if a write below fails, an address is skipped, not handed out too early.
        await self.ms_vips.save()
        await self.mmzs_vips.save()

        result = PassResult()
        for ms in stale:
            await self._delete(ms, result)
        for key, ms in planned.items():
            status = self._mesh_service_status(ms, index, ms_alloc, names[key])
            if key in existing:
                await self._update(existing[key], ms, status, result)
            else:
                await self._create(ms.with_(status=status), result)
        for mmzs in mmzs_list:
            found = matched[mmzs.key]
            entry = names[mmzs.key]
            conditions = [matched_condition(len(found)), *_vip_conditions(mmzs.key, mmzs_alloc)]
            status = MeshMultiZoneServiceStatus.model_construct(
                addresses=entry.addresses,
                vips=_vips(mmzs.key, mmzs_alloc),
                mesh_services=found,
                hostname_generators=entry.generators,
                conditions=conditions,
            )
            await self._update(mmzs, mmzs, status, result)
        written, skipped = await update_available_services(store, ingresses, index, self._on_write)
        result.updated += written
        result.skipped.extend(skipped)
        return result

    def _mesh_service_status(
        self, ms: Resource, index: DataplaneIndex, alloc: Allocation, names: Hostnames
    ) -> MeshServiceStatus:
        spec = ms.spec
        assert isinstance(spec, MeshServiceSpec)
        proxies = index.proxies(ms.mesh, spec.selector) if is_local(ms, index.zone) else None
        return MeshServiceStatus.model_construct(
            addresses=names.addresses,
            vips=_vips(ms.key, alloc),
            dataplane_proxies=proxies,
            hostname_generators=names.generators,
            conditions=_vip_conditions(ms.key, alloc),
        )

    async def _create(self, resource: Resource, result: PassResult) -> None:
        try:
            stored = await self.store.create(resource)
        except AlreadyExistsError:
            result.skipped.append(f"create {resource.key}: appeared meanwhile")
            return
        self._on_write((EventKind.CREATED, stored.key, stored.version))
        result.created += 1
        log.info("generated %s", stored.key)

    async def _delete(self, resource: Resource, result: PassResult) -> None:
        try:
            gone = await self.store.delete(resource.key, version=resource.version)
        except (ConflictError, NotFoundError):
            result.skipped.append(f"delete {resource.key}: changed meanwhile")
            return  # the change has its own event, so the next pass decides again
        self._on_write((EventKind.DELETED, gone.key, gone.version))
        result.deleted += 1
        log.info("deleted %s: no instance left", gone.key)

    async def _update(
        self, current: Resource, planned: Resource, status: Model, result: PassResult
    ) -> None:
        """Write `planned`'s spec/labels (generated MeshServices only) and `status` if they
        differ; on a version conflict re-read and apply the same change to the fresh copy."""
        zone = self.runtime.zone
        owns_spec = current.type == MESH_SERVICE.name and is_generated(current, zone)
        for _ in range(MAX_ATTEMPTS):
            if owns_spec:
                if not is_generated(current, zone):
                    return  # taken over by a user meanwhile
                labels = {**current.labels, **planned.labels}
                unchanged = current.labels == labels and current.spec == planned.spec
                if unchanged and current.status == status:
                    return
                desired = current.with_(spec=planned.spec, labels=labels, status=status)
            elif current.status == status:
                # Model equality compares field values: a status read back from the store
                # equals the same status computed here.
                return
            else:
                desired = current.with_(status=status)
            try:
                stored = await self.store.update(desired)
            except NotFoundError:
                return
            except ConflictError:
                fresh = await self.store.find(current.key)
                if fresh is None:
                    return
                current = fresh
                continue
            self._on_write((EventKind.UPDATED, stored.key, stored.version))
            result.updated += 1
            return
        result.skipped.append(f"update {current.key}: kept changing")


def _vips(key: ResourceKey, alloc: Allocation) -> list[VIP]:
    ip = alloc.vips.get(key)
    return [VIP.model_construct(ip=ip)] if ip else []


def _vip_conditions(key: ResourceKey, alloc: Allocation) -> list[Condition]:
    if alloc.vips.get(key):
        return []
    return [
        Condition.model_construct(
            type=CONDITION_VIP_ALLOCATED,
            status="False",
            reason=REASON_RANGE_EXHAUSTED,
            message=alloc.exhausted_message(),
        )
    ]
