"""Printing for the client commands: kumactl-style tables, YAML and JSON.

Tables are plain text (columns padded with spaces) so that they stay readable in a pipe and
in CI logs; per-type columns pick what a user checks first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from zonemesh.resources.base import ResourceType

FORMATS = ("table", "yaml", "json")
_GAP = "   "

Columns = list[tuple[str, Callable[[dict[str, Any]], str]]]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        _GAP.join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in [list(headers), *rows]
    ]
    return "\n".join(lines)


def dump(value: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(value, indent=2)
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ago(value: Any, now: datetime | None = None, never: str = "-") -> str:
    """`45s`, `3m`, `5h`, `2d`: how long ago a timestamp was, like kubectl's AGE."""
    moment = parse_time(value)
    if moment is None:
        return never
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _get(doc: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _join(values: Sequence[str]) -> str:
    return ",".join(v for v in values if v) or "-"


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _ports(item: dict[str, Any]) -> str:
    ports = _get(item, "spec", "ports") or []
    return _join([f"{p.get('port')}/{p.get('appProtocol', 'tcp')}" for p in ports])


def _vips(item: dict[str, Any]) -> str:
    return _join([v.get("ip", "") for v in _get(item, "status", "vips") or []])


def _hostnames(item: dict[str, Any]) -> str:
    return _join([a.get("hostname", "") for a in _get(item, "status", "addresses") or []])


def _mesh_services(item: dict[str, Any]) -> str:
    matched = _get(item, "status", "meshServices") or []
    return _join(
        [f"{m.get('zone')}/{m.get('name')}" if m.get("zone") else m["name"] for m in matched]
    )


def _dataplane_tags(item: dict[str, Any]) -> str:
    tags: dict[str, str] = {}
    for inbound in _get(item, "networking", "inbound") or []:
        tags.update(inbound.get("tags") or {})
    tags.update(_get(item, "networking", "gateway", "tags") or {})
    return _join([f"{k}={v}" for k, v in sorted(tags.items())])


def _gateway_listeners(item: dict[str, Any]) -> str:
    """`HTTP:8080`, `HTTPS:8443/edge.example.com` per MeshGateway listener."""
    out = []
    for listener in _get(item, "conf", "listeners") or []:
        host = listener.get("hostname")
        where = f"{listener.get('protocol', '-')}:{listener.get('port', '-')}"
        out.append(f"{where}/{host}" if host and host != "*" else where)
    return _join(out)


def _mesh_mtls(item: dict[str, Any]) -> str:
    mtls = item.get("mtls") or {}
    enabled = mtls.get("enabledBackend")
    if not enabled:
        return "off"
    kinds = {b.get("name"): b.get("type", "builtin") for b in mtls.get("backends") or []}
    return f"{kinds.get(enabled, 'builtin')}/{enabled}"


def _zone_status(item: dict[str, Any]) -> str:
    if item.get("enabled") is False:
        return "Disabled"
    return "Online" if _get(item, "status", "connected") else "Offline"


def _proxy_zone(item: dict[str, Any]) -> str:
    return item.get("zone") or _get(item, "labels", "kuma.io/zone") or "-"


def _address(item: dict[str, Any], host: str = "address", port: str = "port") -> str:
    net = item.get("networking") or {}
    if not net.get(host):
        return "-"
    return f"{net[host]}:{net[port]}" if net.get(port) else str(net[host])


def _mesh(item: dict[str, Any]) -> str:
    return str(item.get("mesh", ""))


def _name(item: dict[str, Any]) -> str:
    return str(item.get("name", ""))


def _age(item: dict[str, Any]) -> str:
    return ago(item.get("creationTime"))


def _target_ref(ref: dict[str, Any] | None) -> str:
    """`Mesh`, `MeshService/echo`, `MeshGateway/edge`: what a policy's targetRef names."""
    if not ref:
        return "Mesh"
    who = ref.get("name") or _join(
        [f"{k}={v}" for k, v in sorted((ref.get("labels") or {}).items())]
    )
    return f"{ref.get('kind', '?')}/{who}" if who and who != "-" else str(ref.get("kind", "?"))


def _route_to(item: dict[str, Any]) -> str:
    return _join([_target_ref(entry.get("targetRef")) for entry in _get(item, "spec", "to") or []])


_EXTRA_COLUMNS: dict[str, Columns] = {
    "Mesh": [
        ("mTLS", _mesh_mtls),
        ("LOCALITY", lambda i: _on_off(_get(i, "routing", "localityAwareLoadBalancing"))),
        ("ZONEEGRESS", lambda i: _on_off(_get(i, "routing", "zoneEgress"))),
    ],
    "Dataplane": [
        ("TAGS", _dataplane_tags),
        ("ADDRESS", lambda i: str(_get(i, "networking", "address") or "-")),
    ],
    "MeshService": [
        ("ZONE", lambda i: _get(i, "labels", "kuma.io/zone") or "-"),
        ("PORTS", _ports),
        ("STATE", lambda i: str(_get(i, "spec", "state") or "-")),
        ("VIPS", _vips),
    ],
    "MeshMultiZoneService": [
        ("PORTS", _ports),
        ("VIPS", _vips),
        ("HOSTNAMES", _hostnames),
        ("MESH SERVICES", _mesh_services),
    ],
    "Zone": [("STATUS", _zone_status)],
    "ZoneIngress": [
        ("ZONE", _proxy_zone),
        ("ADDRESS", _address),
        ("ADVERTISED ADDRESS", lambda i: _address(i, "advertisedAddress", "advertisedPort")),
    ],
    "ZoneEgress": [("ZONE", _proxy_zone), ("ADDRESS", _address)],
    "HostnameGenerator": [("TEMPLATE", lambda i: str(_get(i, "spec", "template") or "-"))],
    "MeshGateway": [("LISTENERS", _gateway_listeners)],
    "MeshHTTPRoute": [
        ("TARGETREF", lambda i: _target_ref(_get(i, "spec", "targetRef"))),
        ("TO", _route_to),
    ],
}


def resource_columns(rtype: ResourceType) -> Columns:
    """`MESH NAME … AGE` for mesh-scoped types, `NAME … AGE` for global ones."""
    columns: Columns = [("MESH", _mesh)] if rtype.mesh_scoped else []
    columns.append(("NAME", _name))
    columns.extend(_EXTRA_COLUMNS.get(rtype.name, []))
    columns.append(("AGE", _age))
    return columns


def resource_table(rtype: ResourceType, items: Sequence[dict[str, Any]]) -> str:
    columns = resource_columns(rtype)
    return table([h for h, _ in columns], [[f(i) for _, f in columns] for i in items])


# --- inspect -------------------------------------------------------------------------------


def _insight(item: dict[str, Any]) -> dict[str, Any]:
    for key in ("dataplaneInsight", "zoneIngressInsight", "zoneEgressInsight"):
        if key in item:
            return item[key] or {}
    return {}


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _notes(item: dict[str, Any]) -> str:
    return "; ".join(item.get("notes") or []) or "-"


def _overview_zone(item: dict[str, Any], resource_field: str) -> str:
    """The zone a proxy lives in: the overview's, else its resource's."""
    return str(item.get("zone") or _proxy_zone(item.get(resource_field) or {}))


def _inspect_proxy_columns(resource_field: str, mesh_scoped: bool) -> Columns:
    columns: Columns = [("MESH", lambda i: str(i.get("mesh", "")))] if mesh_scoped else []
    columns.append(("NAME", lambda i: str(i.get("name", ""))))
    columns.append(("ZONE", lambda i: _overview_zone(i, resource_field)))
    if mesh_scoped:
        columns.append(("TAGS", lambda i: _dataplane_tags(i.get(resource_field) or {})))
    columns.extend(
        [
            ("STATUS", lambda i: str(i.get("status", "-"))),
            ("LAST CONNECTED AGO", lambda i: ago(_insight(i).get("lastConnected"), never="never")),
            ("LAST SEEN AGO", lambda i: ago(i.get("lastSeen"), never="never")),
            ("TOTAL UPDATES", lambda i: _count(_insight(i).get("responsesSent"))),
            ("ACKS", lambda i: _count(_insight(i).get("acks"))),
            ("NACKS", lambda i: _count(_insight(i).get("nacks"))),
            ("ENVOY VERSION", lambda i: _insight(i).get("envoyVersion") or "-"),
            ("NOTES", _notes),
        ]
    )
    return columns


INSPECT_COLUMNS: dict[str, Columns] = {
    "dataplanes": _inspect_proxy_columns("dataplane", mesh_scoped=True),
    "zoneingresses": _inspect_proxy_columns("zoneIngress", mesh_scoped=False),
    "zoneegresses": _inspect_proxy_columns("zoneEgress", mesh_scoped=False),
    "zones": [
        ("NAME", lambda i: str(i.get("name", ""))),
        ("STATUS", lambda i: str(i.get("status", "-"))),
        (
            "LAST CONNECTED AGO",
            lambda i: ago((i.get("zoneInsight") or {}).get("lastConnected"), never="never"),
        ),
        ("TOTAL UPDATES", lambda i: _count((i.get("zoneInsight") or {}).get("totalUpdates"))),
        ("TOTAL ERRORS", lambda i: _count((i.get("zoneInsight") or {}).get("totalErrors"))),
        ("ZONE-CP VERSION", lambda i: (i.get("zoneInsight") or {}).get("version") or "-"),
    ],
}


def inspect_table(what: str, items: Sequence[dict[str, Any]]) -> str:
    columns = INSPECT_COLUMNS[what]
    return table([h for h, _ in columns], [[f(i) for _, f in columns] for i in items])
