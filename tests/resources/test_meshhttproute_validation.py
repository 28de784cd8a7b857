"""MeshHTTPRoute validation: Kuma's messages, each naming the offending field; regular
expressions are refused where RE2 (Envoy's engine) refuses them."""

from __future__ import annotations

from typing import Any

import pytest

from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.types.meshhttproute import MeshHTTPRouteSpec, regex_problem

RULE = "spec.to[0].rules[0]"
TO_MMZS = {"kind": "MeshMultiZoneService", "name": "echo"}
BACKEND = {"kind": "MeshService", "name": "echo", "port": 1027}


def route(
    rules: list[dict[str, Any]] | None = None,
    *,
    target_ref: dict[str, Any] | None = None,
    to: dict[str, Any] | None = None,
    **entry: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "to": [
            {
                "targetRef": to or TO_MMZS,
                "rules": rules if rules is not None else one_rule(backend_refs=[BACKEND]),
                **entry,
            }
        ]
    }
    if target_ref is not None:
        spec["targetRef"] = target_ref
    return {"type": "MeshHTTPRoute", "name": "r", "mesh": "default", "spec": spec}


def one_rule(
    matches: list[dict[str, Any]] | None = None,
    filters: list[dict[str, Any]] | None = None,
    backend_refs: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    default: dict[str, Any] = {}
    if filters is not None:
        default["filters"] = filters
    if backend_refs is not None:
        default["backendRefs"] = backend_refs
    return [{"matches": matches if matches is not None else [{}], "default": default}]


def violations(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        resource_from_wire(doc)
    return [str(v) for v in info.value.violations]


def test_a_full_route_is_accepted() -> None:
    doc = route(
        [
            {
                "matches": [
                    {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"},
                    {
                        "path": {"type": "PathPrefix", "value": "/"},
                        "headers": [{"name": "x-canary", "value": "yes"}],
                    },
                ],
                "default": {
                    "filters": [
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}
                            },
                        }
                    ],
                    "backendRefs": [
                        {
                            "kind": "MeshMultiZoneService",
                            "name": "echo",
                            "port": 1027,
                            "weight": 90,
                        },
                        {"kind": "MeshService", "name": "echo-v2", "port": 1027, "weight": 10},
                    ],
                },
            }
        ],
        target_ref={"kind": "MeshService", "name": "client"},
    )
    resource = resource_from_wire(doc)
    assert isinstance(resource.spec, MeshHTTPRouteSpec)
    assert resource.spec.to[0].rules[0].default.backend_refs is not None


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            route(target_ref={"kind": "MeshHTTPRoute", "name": "x"}),
            "spec.targetRef.kind: value 'MeshHTTPRoute' is not supported",
        ),
        (route(to={"kind": "Mesh"}), "spec.to[0].targetRef.kind: value 'Mesh' is not supported"),
        (
            route(to={"kind": "MeshService"}),
            "spec.to[0].targetRef.name: name or labels must be set when kind is MeshService",
        ),
        (
            route(target_ref={"kind": "MeshGateway", "name": "edge"}, to=TO_MMZS),
            "spec.to[0].targetRef.kind: value 'MeshMultiZoneService' is not supported",
        ),
        (
            route(target_ref={"kind": "MeshGateway"}, to={"kind": "Mesh"}),
            "spec.targetRef.name: must be set when kind is MeshGateway",
        ),
        (
            route(target_ref={"kind": "Mesh", "labels": {"a": "b"}}),
            "spec.targetRef.labels: must not be set with kind Mesh",
        ),
        (
            route(target_ref={"kind": "Dataplane", "name": "dp", "sectionName": "main"}),
            "spec.targetRef.sectionName: can only be used with inbound policies",
        ),
        (route(hostnames=["example.com"]), "spec.to[0].hostnames: must not be defined"),
    ],
)
def test_target_refs_and_hostnames(doc: dict[str, Any], expected: str) -> None:
    assert violations(doc) == [expected]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (
            {"path": {"type": "PathPrefix", "value": "/api/"}},
            f"{RULE}.matches[0].path.value: does not need a trailing slash because only a "
            "`/`-separated prefix or an entire path is matched",
        ),
        (
            {"path": {"type": "PathPrefix", "value": "api"}},
            f"{RULE}.matches[0].path.value: must be an absolute path",
        ),
        (
            {"path": {"type": "Exact", "value": "api"}},
            f"{RULE}.matches[0].path.value: must be an absolute path",
        ),
        (
            {"path": {"type": "Glob", "value": "/a"}},
            f"{RULE}.matches[0].path.type: must be one of: Exact, PathPrefix, RegularExpression",
        ),
        (
            {"method": "FETCH"},
            f"{RULE}.matches[0].method: must be one of: CONNECT, DELETE, GET, HEAD, OPTIONS, "
            "PATCH, POST, PUT, TRACE",
        ),
        (
            {"headers": [{"type": "Present", "name": "x-a", "value": "v"}]},
            f"{RULE}.matches[0].headers[0].value: must not be defined",
        ),
        (
            {"headers": [{"type": "Absent", "name": "x-a", "value": "v"}]},
            f"{RULE}.matches[0].headers[0].value: must not be defined",
        ),
        (
            {
                "queryParams": [
                    {"type": "Exact", "name": "q", "value": "1"},
                    {"type": "Exact", "name": "q", "value": "2"},
                ]
            },
            f"{RULE}.matches[0].queryParams[1].name: multiple entries for name q",
        ),
    ],
)
def test_matches(match: dict[str, Any], expected: str) -> None:
    assert violations(route(one_rule([match]))) == [expected]


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("path.value", {"path": {"type": "RegularExpression", "value": r"^/(a)\1$"}}),
        ("path.value", {"path": {"type": "RegularExpression", "value": "^/(?=admin)"}}),
        (
            "headers[0].value",
            {"headers": [{"type": "RegularExpression", "name": "x", "value": "(?<!a)b"}]},
        ),
        (
            "queryParams[0].value",
            {"queryParams": [{"type": "RegularExpression", "name": "q", "value": "[a-"}]},
        ),
    ],
)
def test_regexes_re2_refuses_are_refused(where: str, match: dict[str, Any]) -> None:
    (message,) = violations(route(one_rule([match])))
    field, reason = message.split(": ", 1)
    assert field == f"{RULE}.matches[0].{where}"
    assert reason.startswith("must be a valid RE2 regular expression: ")


def test_re2_accepts_what_envoy_accepts() -> None:
    assert regex_problem(r"^/api/v[0-9]+/users/[^/]+$") is None
    assert regex_problem(r"(?i)^/Echo") is None
    assert regex_problem(r"(a)\1") is not None  # Python's re accepts this one


@pytest.mark.parametrize(
    ("filters", "matches", "expected"),
    [
        (
            [{"type": "RequestHeaderModifier"}],
            None,
            f"{RULE}.default.filters[0].requestHeaderModifier: must be defined",
        ),
        (
            [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {}}],
            None,
            f"{RULE}.default.filters[0].responseHeaderModifier: "
            "must have at least one defined: set, add, remove",
        ),
        (
            [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {
                        "set": [{"name": "x-a", "value": "1"}],
                        "remove": ["x-a"],
                    },
                }
            ],
            None,
            f"{RULE}.default.filters[0].requestHeaderModifier.remove[0].name: "
            "duplicate header name",
        ),
        (
            [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}
                    },
                }
            ],
            [{"path": {"type": "Exact", "value": "/a"}}],
            f"{RULE}.default.filters[0].urlRewrite.path.replacePrefixMatch: "
            "can only appear if all matches match a path prefix",
        ),
        (
            [
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}
                    },
                }
            ],
            [{"method": "GET"}],
            f"{RULE}.default.filters[0].requestRedirect.path.replacePrefixMatch: "
            "can only appear if all matches match a path prefix",
        ),
        (
            [{"type": "URLRewrite", "urlRewrite": {"hostToBackendHostname": True}}],
            None,
            f"{RULE}.default.filters[0].urlRewrite.hostToBackendHostname: "
            "can only be set with MeshGateway",
        ),
        (
            [{"type": "URLRewrite", "urlRewrite": {"hostname": "10.0.0.1"}}],
            None,
            f"{RULE}.default.filters[0].urlRewrite.hostname: cannot be an IP address",
        ),
        (
            [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 305}}],
            None,
            f"{RULE}.default.filters[0].requestRedirect.statusCode: "
            "must be one of: 301, 302, 303, 307, 308",
        ),
        (
            [
                {
                    "type": "RequestMirror",
                    "requestMirror": {"backendRef": BACKEND, "percentage": "101"},
                }
            ],
            None,
            f"{RULE}.default.filters[0].requestMirror.percentage: "
            "must be a number between 0 and 100",
        ),
        (
            [{"type": "Rewrite"}],
            None,
            f"{RULE}.default.filters[0].type: must be one of: RequestHeaderModifier, "
            "ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror",
        ),
    ],
)
def test_filters(
    filters: list[dict[str, Any]], matches: list[dict[str, Any]] | None, expected: str
) -> None:
    assert violations(route(one_rule(matches, filters=filters))) == [expected]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            {"kind": "MeshMultiZoneService", "name": "echo"},
            f"{RULE}.default.backendRefs[0].port: must be defined with kind MeshMultiZoneService",
        ),
        (
            {"kind": "MeshService", "port": 80},
            f"{RULE}.default.backendRefs[0]: name or labels must be set when kind is MeshService",
        ),
        (
            {"kind": "MeshMultiZoneService", "port": 80},
            f"{RULE}.default.backendRefs[0]: either labels or name and namespace must be specified",
        ),
        (
            {"kind": "MeshExternalService", "name": "x", "port": 80},
            f"{RULE}.default.backendRefs[0].kind: value 'MeshExternalService' is not supported",
        ),
        (
            {"kind": "MeshService", "name": "echo", "port": 0},
            f"{RULE}.default.backendRefs[0].port: must be in inclusive range [1, 65535]",
        ),
        (
            {"kind": "MeshService", "name": "echo", "port": 80, "weight": -1},
            f"{RULE}.default.backendRefs[0].weight: must be greater than or equal to 0",
        ),
    ],
)
def test_backend_refs(ref: dict[str, Any], expected: str) -> None:
    assert violations(route(one_rule(backend_refs=[ref]))) == [expected]


def test_gateway_rules_need_backends_unless_they_redirect() -> None:
    gateway = {"target_ref": {"kind": "MeshGateway", "name": "edge"}, "to": {"kind": "Mesh"}}
    assert violations(route(one_rule(), **gateway)) == [
        f"{RULE}.default.backendRefs: must not be empty"
    ]
    redirect = [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}]
    resource_from_wire(route(one_rule(filters=redirect), **gateway))
    hosts = route(
        one_rule(backend_refs=[BACKEND]), hostnames=["*.example.com", "1.2.3.4"], **gateway
    )
    assert violations(hosts) == ["spec.to[0].hostnames[1]: cannot be an IP address"]


def test_several_violations_are_reported_together() -> None:
    doc = route(
        one_rule(
            [{"path": {"type": "Exact", "value": "x"}}],
            backend_refs=[{"kind": "MeshMultiZoneService", "name": "echo"}],
        ),
        to={"kind": "Mesh"},
    )
    assert violations(doc) == [
        "spec.to[0].targetRef.kind: value 'Mesh' is not supported",
        f"{RULE}.matches[0].path.value: must be an absolute path",
        f"{RULE}.default.backendRefs[0].port: must be defined with kind MeshMultiZoneService",
    ]
