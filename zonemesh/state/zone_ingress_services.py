"""What this zone's ZoneIngresses advertise: how many healthy instances each service has here.

Kuma's `availableServices` field, `[{mesh, tags: {kuma.io/service, kuma.io/zone}, instances}]`,
filled on the zone's own ZoneIngresses. The ZoneIngress syncs up to global and across to the
other zones, whose sidecars weight their priority-1 endpoint for this zone by `instances`, so
a zone with three healthy instances gets three times the cross-zone share of a zone with one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from zonemesh.resources import labels
from zonemesh.resources.base import Resource
from zonemesh.resources.ownership import is_local
from zonemesh.resources.types.zone_proxies import ZoneIngressSpec
from zonemesh.state.meshservices import DataplaneIndex
from zonemesh.store.base import ConflictError, EventKind, NotFoundError, Store

log = logging.getLogger("zonemesh.state")

OnWrite = Callable[[tuple[EventKind, Any, int]], None]


def available_services(index: DataplaneIndex) -> list[dict[str, Any]]:
    """One entry per (mesh, service) with an instance in this zone, sorted."""
    entries = []
    for (mesh, service), group in sorted(index.services.items()):
        entries.append(
            {
                "mesh": mesh,
                "tags": {labels.SERVICE_TAG: service, labels.ZONE: index.zone},
                "instances": group.counts().healthy,
            }
        )
    return entries


def is_own_ingress(ingress: Resource, zone: str) -> bool:
    """Registered in this zone (not a copy synced in from another one)."""
    spec = ingress.spec
    spec_zone = spec.zone if isinstance(spec, ZoneIngressSpec) else None
    return is_local(ingress, zone) and (spec_zone or zone) == zone


def planned_updates(ingresses: Iterable[Resource], index: DataplaneIndex) -> list[Resource]:
    """This zone's ZoneIngresses whose `availableServices` differ from what they should be."""
    wanted = available_services(index)
    out = []
    for ingress in ingresses:
        spec = ingress.spec
        if not isinstance(spec, ZoneIngressSpec) or not is_own_ingress(ingress, index.zone):
            continue
        if (spec.available_services or []) == wanted:
            continue
        new_spec = spec.model_copy(update={"available_services": wanted})
        out.append(ingress.with_(spec=new_spec))
    return out


async def update_available_services(
    store: Store, ingresses: Iterable[Resource], index: DataplaneIndex, on_write: OnWrite
) -> tuple[int, list[str]]:
    """Write the planned updates; returns (written, notes about writes left to a later pass).

    A version conflict means the ZoneIngress changed meanwhile (re-registered, say): that
    change has its own event, so the next pass computes again.
    """
    written, skipped = 0, []
    for desired in planned_updates(ingresses, index):
        try:
            stored = await store.update(desired)
        except (ConflictError, NotFoundError):
            skipped.append(f"update {desired.key}: changed meanwhile")
            continue
        on_write((EventKind.UPDATED, stored.key, stored.version))
        written += 1
        log.debug("%s: availableServices updated", stored.key)
    return written, skipped
