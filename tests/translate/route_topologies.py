"""Topologies with MeshHTTPRoutes, seen from zone-1 (golden files, unit and Envoy tests).

zone-1 has `echo` (one instance) and `echo-v2` (one instance), zone-2 serves `echo` too, and
the MeshMultiZoneService `echo` spans both zones. The client has an outbound to the MMZS
`echo:1027` (11027) and one to the MeshService `echo:1027` (12027); routes attach to those.
"""

from __future__ import annotations

from typing import Any

from translate_topologies import (
    LOCAL_ZONE,
    MESH,
    Topology,
    build,
    dataplane,
    inbound,
    mesh_service,
)
from transparent_topologies import transparent

from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire

TO_MMZS = {"kind": "MeshMultiZoneService", "name": "echo"}
TO_MS = {"kind": "MeshService", "name": "echo"}
V2 = {"kind": "MeshService", "name": "echo-v2", "port": 1027}
ECHO_MMZS_REF = {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027}


def prefix(value: str) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": value}}


def http_route(
    name: str,
    rules: list[dict[str, Any]],
    to: dict[str, Any] | None = None,
    target_ref: dict[str, Any] | None = None,
    *,
    mesh: str = MESH,
) -> Resource:
    spec: dict[str, Any] = {"to": [{"targetRef": to or TO_MMZS, "rules": rules}]}
    if target_ref is not None:
        spec["targetRef"] = target_ref
    return resource_from_wire({"type": "MeshHTTPRoute", "mesh": mesh, "name": name, "spec": spec})


def rule(
    matches: list[dict[str, Any]],
    backend_refs: list[dict[str, Any]] | None = None,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    default: dict[str, Any] = {}
    if backend_refs is not None:
        default["backendRefs"] = backend_refs
    if filters is not None:
        default["filters"] = filters
    return {"matches": matches, "default": default}


def routed(name: str, *routes: Resource) -> Topology:
    """zone-1 with echo and echo-v2 and the routes; only the client is golden-tested."""
    base = build(name, local_instances=1, remote={"zone-2": 1})
    v2_server = dataplane("echo-v2-1", "127.0.1.31", [inbound("echo-v2", 21027, 1027)])
    v2 = mesh_service("echo-v2", LOCAL_ZONE, [(1027, 21027, "http")])
    resources = [*base.resources, v2_server, v2, *routes]
    return Topology(name, resources, {"client": base.proxies["client"]})


MATCHES = http_route(
    "matches",
    [
        rule([{"path": {"type": "Exact", "value": "/exact"}}], [V2]),
        rule([prefix("/prefix")], [V2]),
        rule([{"path": {"type": "RegularExpression", "value": "^/re/[0-9]+$"}}], [V2]),
        rule([{"method": "POST"}], [V2]),
        rule(
            [
                {
                    "headers": [
                        {"name": "x-exact", "value": "yes"},
                        {"type": "Present", "name": "x-present"},
                        {"type": "Absent", "name": "x-absent"},
                        {"type": "Prefix", "name": "x-prefix", "value": "pre"},
                        {"type": "RegularExpression", "name": "x-re", "value": "^v[0-9]$"},
                    ]
                }
            ],
            [V2],
        ),
        rule(
            [
                {
                    "queryParams": [
                        {"type": "Exact", "name": "version", "value": "2"},
                        {"type": "RegularExpression", "name": "user", "value": "^a.*"},
                    ]
                }
            ],
            [V2],
        ),
    ],
)
HEADERS = {
    "set": [{"name": "x-set", "value": "one"}],
    "add": [{"name": "x-add", "value": "two"}],
    "remove": ["x-remove"],
}
REQUEST_HEADERS = http_route(
    "request-headers",
    [
        rule(
            [prefix("/")],
            filters=[{"type": "RequestHeaderModifier", "requestHeaderModifier": HEADERS}],
        )
    ],
)
RESPONSE_HEADERS = http_route(
    "response-headers",
    [
        rule(
            [prefix("/")],
            filters=[{"type": "ResponseHeaderModifier", "responseHeaderModifier": HEADERS}],
        )
    ],
)
REDIRECT = http_route(
    "redirect",
    [
        rule(
            [prefix("/old")],
            filters=[
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {
                        "scheme": "https",
                        "hostname": "example.com",
                        "port": 8443,
                        "statusCode": 301,
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                    },
                }
            ],
        ),
        rule(
            [{"path": {"type": "Exact", "value": "/moved"}}],
            filters=[
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {
                        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/here"}
                    },
                }
            ],
        ),
    ],
)
URL_REWRITE = http_route(
    "url-rewrite",
    [
        rule(
            [prefix("/api")],
            [V2],
            [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {
                        "hostname": "backend.local",
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"},
                    },
                }
            ],
        ),
        rule(
            [prefix("/strip")],
            [V2],
            [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}
                    },
                }
            ],
        ),
        rule(
            [{"path": {"type": "Exact", "value": "/full"}}],
            [V2],
            [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/x"}},
                }
            ],
        ),
    ],
)
MIRROR = http_route(
    "mirror",
    [
        rule(
            [prefix("/")],
            filters=[
                {"type": "RequestMirror", "requestMirror": {"backendRef": V2}},
                {
                    "type": "RequestMirror",
                    "requestMirror": {"backendRef": V2, "percentage": "12.5"},
                },
            ],
        )
    ],
)
SPLIT = http_route(
    "split",
    [rule([prefix("/")], [{**ECHO_MMZS_REF, "weight": 1}, {**V2, "weight": 3}])],
)
MMZS_BACKEND = http_route("mmzs-backend", [rule([prefix("/global")], [ECHO_MMZS_REF])], to=TO_MS)
UNRESOLVED = http_route(
    "unresolved",
    [
        rule(
            [prefix("/")],
            [V2, {"kind": "MeshService", "name": "nowhere", "port": 1027}],
        ),
        rule([prefix("/gone")], [{"kind": "MeshMultiZoneService", "name": "gone", "port": 1}]),
    ],
)
# Two policies, the same matches: the later one in Kuma's order (`a` after `b`) wins.
MERGE_WEAK = http_route("b", [rule([prefix("/m")], [ECHO_MMZS_REF])])
MERGE_STRONG = http_route("a", [rule([prefix("/m")], [V2])])


def transparent_routed() -> Topology:
    """The transparent-proxy topology with a route on the MMZS echo (its VIP chain too)."""
    base = transparent("mhttpr-transparent")
    route = http_route(
        "vip", [rule([prefix("/v2")], [{"kind": "MeshService", "name": "echo", "port": 1027}])]
    )
    return Topology(base.name, [*base.resources, route], {"client": base.proxies["client"]})


def route_topologies() -> list[Topology]:
    return [
        routed("mhttpr-matches", MATCHES),
        routed("mhttpr-request-header-modifier", REQUEST_HEADERS),
        routed("mhttpr-response-header-modifier", RESPONSE_HEADERS),
        routed("mhttpr-request-redirect", REDIRECT),
        routed("mhttpr-url-rewrite", URL_REWRITE),
        routed("mhttpr-request-mirror", MIRROR),
        routed("mhttpr-split", SPLIT),
        routed("mhttpr-mmzs-backend", MMZS_BACKEND),
        routed("mhttpr-unresolved-backend", UNRESOLVED),
        routed("mhttpr-merge", MERGE_WEAK, MERGE_STRONG),
        transparent_routed(),
    ]
