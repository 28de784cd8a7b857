"""Overviews for `zonemesh inspect` (resource + what is known of its proxy) and `/xds`.

A proxy's status comes from the xDS server of this CP when the proxy has connected to it since
it started; else from the proxy's insight resource (`xds.insights`): the one its zone CP wrote
before a restart, or, on global, the copy its zone synced up. Global has no proxies of its own,
so it shows each one as its zone reports it, with the zone; while that zone's CP is
disconnected from global, the report is the last one it sent, and the notes say so.

Registered before the generic `{name}` routes: `_overview` can never be a resource name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from zonemesh.api.auth import is_admin
from zonemesh.api.errors import ApiError
from zonemesh.api.listing import filter_resources, page
from zonemesh.api.redact import scrub
from zonemesh.api.resources import not_found, runtime_of
from zonemesh.api.wire import render
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey, ResourceType
from zonemesh.resources.registry import (
    DATAPLANE,
    INSIGHT_OF,
    ZONE,
    ZONE_EGRESS,
    ZONE_INGRESS,
)
from zonemesh.resources.types.zone import ZoneSpec, ZoneStatus
from zonemesh.runtime.insights import ProxyInsight, XdsView
from zonemesh.runtime.kernel import Runtime
from zonemesh.xds.insights import stored_insight

router = APIRouter()

ONLINE = "Online"
OFFLINE = "Offline"
DEGRADED = "Partially degraded"
DISABLED = "Disabled"  # a Zone with `enabled: false`, whether its CP is connected or not


def xds_view(runtime: Runtime) -> XdsView | None:
    view: XdsView | None = runtime.views.get("xds")
    return view


def _insights(runtime: Runtime) -> dict[ResourceKey, ProxyInsight]:
    view = xds_view(runtime)
    return {} if view is None else {i.key: i for i in view.insights()}


def _time(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def insight_to_wire(insight: ProxyInsight) -> dict[str, Any]:
    return {
        "proxyType": insight.proxy_type,
        "online": insight.online,
        "lastConnected": _time(insight.last_connected),
        "lastDisconnected": _time(insight.last_disconnected),
        "responsesSent": insight.responses_sent,
        "acks": insight.acks,
        "nacks": insight.nacks,
        "lastNack": insight.last_nack,
        "ready": insight.ready,
        "notReadyInbounds": list(insight.not_ready_inbounds),
        "envoyVersion": insight.envoy_version,
    }


NEVER_CONNECTED = "never connected to this control plane"
NOT_REPORTED = "its zone has not reported it (yet)"


def proxy_status(
    insight: ProxyInsight | None, inbound_ports: Sequence[int], never: str = NEVER_CONNECTED
) -> tuple[str, list[str]]:
    """Online / Offline / Partially degraded, and notes saying why (Kuma's rule)."""
    if insight is None:
        return OFFLINE, [never]
    notes = [f"inbound[port={p}] is not ready" for p in insight.not_ready_inbounds]
    if insight.last_nack:
        notes.append(f"last NACK: {insight.last_nack}")
    if not insight.online:
        return OFFLINE, notes
    not_ready = set(insight.not_ready_inbounds)
    if not insight.ready and (
        not not_ready or not inbound_ports or set(inbound_ports) <= not_ready
    ):
        if not notes:
            notes.append("the data plane reports it is not ready")
        return OFFLINE, notes
    if not_ready:
        return DEGRADED, notes
    return ONLINE, notes


def _reported(
    resource: Resource, insight: ProxyInsight | None, zones: dict[str, Resource], local: bool
) -> tuple[str | None, list[str]]:
    """When the proxy was last seen (now while online and reported live), and notes on where
    the report comes from when it is not this CP's own view."""
    now = _time(datetime.now(UTC))
    if insight is None:
        return None, []
    if local:
        return (now if insight.online else _time(insight.last_disconnected)), []
    zone_name = resource.labels.get(labels.ZONE, "")
    zone = zones.get(zone_name)
    status = zone.status if zone is not None and isinstance(zone.status, ZoneStatus) else None
    if status is not None and not status.connected:
        note = f'zone "{zone_name}" is offline: as it last reported'
        if status.last_disconnected:
            note += f" at {status.last_disconnected}"
        seen = status.last_disconnected if insight.online else _time(insight.last_disconnected)
        return seen, [note]
    return (now if insight.online else _time(insight.last_disconnected)), []


def _proxy_overview(
    resource: Resource,
    rtype: ResourceType,
    insight: ProxyInsight | None,
    admin: bool,
    *,
    zone: str,
    local: bool,
    zones: dict[str, Resource],
) -> dict[str, Any]:
    field = rtype.name[0].lower() + rtype.name[1:]  # dataplane, zoneIngress, zoneEgress
    networking = getattr(resource.spec, "networking", None)
    inbounds = getattr(networking, "inbound", []) if networking is not None else []
    never = NEVER_CONNECTED if local else NOT_REPORTED
    status, notes = proxy_status(insight, [i.port for i in inbounds], never)
    last_seen, where = _reported(resource, insight, zones, local)
    item: dict[str, Any] = {"type": f"{rtype.name}Overview"}
    if rtype.mesh_scoped:
        item["mesh"] = resource.mesh
    item.update(
        {
            "name": resource.name,
            "zone": zone,
            field: render(resource, rtype, admin=admin),
            f"{field}Insight": None if insight is None else insight_to_wire(insight),
            "status": status,
            "lastSeen": last_seen,
            "notes": [*where, *notes],
        }
    )
    return item


async def _proxy_overviews(
    request: Request, rtype: ResourceType, mesh: str | None
) -> dict[str, Any]:
    runtime = runtime_of(request)
    store = runtime.store
    found = filter_resources(request, await store.list(rtype.name, mesh))
    live = _insights(runtime)
    insight_type = INSIGHT_OF[rtype.name].name
    stored = {
        ResourceKey(rtype.name, r.mesh, r.name): r for r in await store.list(insight_type, mesh)
    }
    zones = {z.name: z for z in await store.list(ZONE.name)} if runtime.config.is_global else {}
    admin = is_admin(request)

    def overview(resource: Resource) -> dict[str, Any]:
        zone = resource.labels.get(labels.ZONE) or getattr(resource.spec, "zone", None)
        insight = live.get(resource.key)
        local = insight is not None
        if insight is None and resource.key in stored:
            insight = stored_insight(stored[resource.key])
        return _proxy_overview(
            resource,
            rtype,
            insight,
            admin,
            zone=zone or runtime.zone,
            local=local or not runtime.config.is_global,
            zones=zones,
        )

    return page(request, found, overview)


@router.get("/meshes/{mesh}/dataplanes/_overview", tags=["inspect"])
async def dataplanes_overview(request: Request, mesh: str) -> dict[str, Any]:
    """Dataplanes of a mesh with their xDS status."""
    return await _proxy_overviews(request, DATAPLANE, mesh)


@router.get("/dataplanes/_overview", tags=["inspect"])
async def all_dataplanes_overview(request: Request) -> dict[str, Any]:
    """Dataplanes of every mesh with their xDS status."""
    return await _proxy_overviews(request, DATAPLANE, None)


@router.get("/zoneingresses/_overview", tags=["inspect"])
async def zone_ingresses_overview(request: Request) -> dict[str, Any]:
    return await _proxy_overviews(request, ZONE_INGRESS, None)


@router.get("/zoneegresses/_overview", tags=["inspect"])
async def zone_egresses_overview(request: Request) -> dict[str, Any]:
    return await _proxy_overviews(request, ZONE_EGRESS, None)


@router.get("/zones/_overview", tags=["inspect"])
async def zones_overview(request: Request) -> dict[str, Any]:
    """Zones with the connection status the federation code keeps in their `status`;
    a zone disabled on global is `Disabled`, connected or not (its CP still syncs up, but
    nothing of it reaches the other zones)."""
    runtime = runtime_of(request)
    found = filter_resources(request, await runtime.store.list(ZONE.name, None))
    admin = is_admin(request)

    def overview(zone: Resource) -> dict[str, Any]:
        wire = render(zone, ZONE, admin=admin)
        status = wire.get("status")
        connected = bool(status and status.get("connected"))
        enabled = not isinstance(zone.spec, ZoneSpec) or zone.spec.enabled
        return {
            "type": "ZoneOverview",
            "name": zone.name,
            "zone": wire,
            "zoneInsight": status,
            "status": (ONLINE if connected else OFFLINE) if enabled else DISABLED,
        }

    return page(request, found, overview)


async def _config_dump(request: Request, key: ResourceKey) -> JSONResponse:
    runtime = runtime_of(request)
    view = xds_view(runtime)
    if view is None:
        raise ApiError(
            404,
            "this control plane serves no xDS (a global control plane has no proxies)",
            title="Not Found",
        )
    dump = view.config_dump(key)
    if dump is None:
        error = not_found(key)
        error.detail += ": no proxy of that name has connected to this control plane"
        raise error
    # The xDS cache redacts keys already; scrubbed again so that no change there can leak one.
    return JSONResponse(scrub(dump))


@router.get("/meshes/{mesh}/dataplanes/{name}/xds", tags=["inspect"])
async def dataplane_xds(request: Request, mesh: str, name: str) -> JSONResponse:
    """The Envoy resources this control plane serves the proxy, per type URL."""
    return await _config_dump(request, ResourceKey(DATAPLANE.name, mesh, name))


@router.get("/zoneingresses/{name}/xds", tags=["inspect"])
async def zone_ingress_xds(request: Request, name: str) -> JSONResponse:
    return await _config_dump(request, ResourceKey(ZONE_INGRESS.name, "", name))


@router.get("/zoneegresses/{name}/xds", tags=["inspect"])
async def zone_egress_xds(request: Request, name: str) -> JSONResponse:
    return await _config_dump(request, ResourceKey(ZONE_EGRESS.name, "", name))
