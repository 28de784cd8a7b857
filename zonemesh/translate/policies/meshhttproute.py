"""MeshHTTPRoute: which routes apply to a proxy's traffic, merged, and as Envoy routes.

Two layers, so that sidecars and builtin gateways share the Envoy side (stable signatures):

- `resolve_rules(state, *, proxy_dataplane, to_target) -> list[ResolvedRule]`: the rules
  of every MeshHTTPRoute whose top-level `targetRef` selects the sidecar `proxy_dataplane` and
  whose `to[].targetRef` names `to_target` (a `matching.Destination`), merged as Kuma does;
  `[]` when none applies (the outbound then keeps its single catch-all route).
- `gateway_rules(state, *, gateway_dataplane, listener_hostname: str | None)
  -> list[ResolvedRule]`: the rules of the routes whose `targetRef` is the MeshGateway (by
  name, optionally with listener `tags`) or a Mesh/Dataplane selecting `gateway_dataplane`,
  entries with `to[].targetRef.kind: Mesh` whose `hostnames` fit `listener_hostname` (None or
  `*`: any); each `ResolvedRule.hostnames` says which hosts it is for. No catch-all is added:
  a gateway host without routes answers 404 (the gateway's job).
  `gateway_dataplane` carries `networking.gateway.tags` (`kuma.io/service`); the MeshGateway
  it is bound to is given by `gateway_name` (keyword, optional): with it, routes targeting a
  MeshGateway match by that name; without, by the gateway's `kuma.io/service` tag.
- `envoy_routes(rules, cluster_for, *, retry_policy=None, hash_policy=()) -> list[Route]`:
  one Envoy route per (rule, match), sorted by Gateway API precedence (Exact > PathPrefix >
  RegularExpression, longer paths first, then method, header count, query count; stable
  otherwise); filters as route fields; `backendRefs` as a cluster or `weighted_clusters`;
  mirrors as `request_mirror_policies`. `cluster_for(BackendRef)` names the cluster of a
  ref, or None when it does not resolve.

Kuma's merge (`meshhttproute/api/v1alpha1/helpers.go`, `rules/merge`): policies ordered by
top-level kind then name (`matching.ordered`); their `to` entries that name the destination
contribute rules keyed by their whole `matches` list; for one key a later policy's `default`
wins (JSON merge patch), within one policy the first rule wins. A sidecar starts from a
catch-all `PathPrefix /` rule to the destination itself, which a user rule with that match
overrides; a sidecar rule without `backendRefs` (and no redirect) goes to the destination.

A backendRef that does not resolve (no such service, no such port) is Kuma's
"unresolved backend": its share of the requests is answered 500 by Envoy
(`cluster_not_found_response_code`, the cluster `UNRESOLVED_BACKEND` never exists), the rest of
the route and the proxy keep working, and the outbound generator logs a warning naming the
ref; `apply` already warns about refs naming no service (`zonemesh.api.route_warnings`).
No status condition is written (zonemesh writes no policy status yet).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.types.common import TargetRef
from zonemesh.resources.types.dataplane import DataplaneSpec
from zonemesh.resources.types.meshhttproute import (
    DEFAULT_REDIRECT_CODE,
    MESH_GATEWAY,
    BackendRef,
    Filter,
    HeaderModifier,
    HttpMatch,
    MeshHTTPRouteSpec,
    PathMatch,
    RuleConf,
    mirror_fraction,
)
from zonemesh.translate.policies.matching import (
    Destination,
    merge_patch,
    ordered,
    selects_destination,
    selects_proxy,
)
from zonemesh.translate.state import MeshState

UNRESOLVED_BACKEND = "zonemesh_unresolved_backend"
CATCH_ALL = HttpMatch(path=PathMatch(type="PathPrefix", value="/"))

_PATH_RANK = {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}
_REDIRECT_CODE = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


@dataclass(frozen=True, eq=False)
class ResolvedRule:
    """One merged rule: its matches (ORed), filters and backends, and for gateways the
    hostnames it serves. Equal (and hashed) by content, so it can key shared results."""

    matches: tuple[HttpMatch, ...]
    filters: tuple[Filter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()
    hostnames: tuple[str, ...] = ()
    key: str = field(default="", repr=False)

    @staticmethod
    def of(
        matches: Iterable[HttpMatch],
        conf: RuleConf,
        hostnames: Iterable[str] = (),
    ) -> ResolvedRule:
        ms = tuple(matches)
        filters = tuple(conf.filters or ())
        refs = tuple(conf.backend_refs or ())
        hosts = tuple(hostnames)
        key = json.dumps(
            [
                [m.to_wire() for m in ms],
                [f.to_wire() for f in filters],
                [r.to_wire() for r in refs],
                hosts,
            ],
            sort_keys=True,
            separators=(",", ":"),
        )
        return ResolvedRule(ms, filters, refs, hosts, key)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResolvedRule) and other.key == self.key

    @property
    def redirect(self) -> Filter | None:
        return next((f for f in self.filters if f.type == "RequestRedirect"), None)


# --- which policies ----------------------------------------------------------------------------


def mesh_routes(state: MeshState, mesh: str) -> list[Resource]:
    """The mesh's MeshHTTPRoutes in merge order (least specific first)."""

    def build() -> list[Resource]:
        found = [r for k, r in state.mesh_http_routes.items() if k.mesh == mesh]
        return ordered(sorted(found, key=lambda r: r.key))

    return state.memo(("mhttpr.mesh_routes", mesh), build)


@dataclass(frozen=True, eq=False)
class ProxyRoutes:
    """The MeshHTTPRoutes that select one sidecar; `key` (their keys, in merge order)
    determines every `rules_for` answer within a state. `()` when none selects it."""

    key: tuple[ResourceKey, ...] = ()
    policies: tuple[Resource, ...] = ()

    def rules_for(self, state: MeshState, destination: Destination) -> list[ResolvedRule]:
        if not self.policies:
            return []
        return state.memo(
            ("mhttpr.rules", self.key, destination.key),
            lambda: _sidecar_rules(self.policies, destination),
        )


NO_ROUTES = ProxyRoutes()


def routes_for(state: MeshState, dataplane: Resource) -> ProxyRoutes:
    """The sidecar routes selecting `dataplane` (gateway-targeted ones never do)."""
    candidates = mesh_routes(state, dataplane.mesh)
    matched = tuple(
        p
        for p in candidates
        if isinstance(p.spec, MeshHTTPRouteSpec)
        and not p.spec.on_gateway
        and selects_proxy(p.spec.target_ref, dataplane)
    )
    if not matched:
        return NO_ROUTES
    return ProxyRoutes(tuple(p.key for p in matched), matched)


def resolve_rules(
    state: MeshState, *, proxy_dataplane: Resource, to_target: Destination
) -> list[ResolvedRule]:
    """The merged rules for a sidecar's traffic to `to_target` (see the module docstring)."""
    return routes_for(state, proxy_dataplane).rules_for(state, to_target)


def destination_ref(destination: Destination) -> BackendRef:
    """A backendRef naming the destination itself (the sidecar's default backend)."""
    return BackendRef(kind=destination.kind, name=destination.resource.name, port=destination.port)


def _sidecar_rules(policies: Sequence[Resource], destination: Destination) -> list[ResolvedRule]:
    itself = destination_ref(destination)
    merged: dict[str, tuple[tuple[HttpMatch, ...], dict[str, Any]]] = {}
    _merge_into(merged, (CATCH_ALL,), {"backendRefs": [itself.to_wire()]})
    found = False
    for policy in policies:
        spec = policy.spec
        assert isinstance(spec, MeshHTTPRouteSpec)
        for entry in spec.to:
            if not selects_destination(entry.target_ref, destination):
                continue
            found = True
            for rule in reversed(entry.rules):  # the first rule of one policy wins
                matches = tuple(_with_path(m) for m in rule.matches)
                _merge_into(merged, matches, rule.default.to_wire())
    if not found:
        return []
    # The catch-all last: among equally specific routes it must not shadow a user's.
    catch_all = merged.pop(_matches_key((CATCH_ALL,)))
    out = []
    for matches, conf_wire in [*merged.values(), catch_all]:
        conf = RuleConf.model_validate(conf_wire)
        if not conf.backend_refs and not any(
            f.type == "RequestRedirect" for f in conf.filters or ()
        ):
            conf = conf.model_copy(update={"backend_refs": [itself]})
        out.append(ResolvedRule.of(matches, conf))
    return out


def _with_path(match: HttpMatch) -> HttpMatch:
    """A match without a path matches every path: written `PathPrefix /`, so that it merges
    with (and overrides) the catch-all rather than sitting beside it."""
    if match.path is not None:
        return match
    return match.model_copy(update={"path": CATCH_ALL.path})


def _matches_key(matches: Sequence[HttpMatch]) -> str:
    return json.dumps([m.to_wire() for m in matches], sort_keys=True, separators=(",", ":"))


def _merge_into(
    merged: dict[str, tuple[tuple[HttpMatch, ...], dict[str, Any]]],
    matches: tuple[HttpMatch, ...],
    conf: dict[str, Any],
) -> None:
    key = _matches_key(matches)
    previous = merged.get(key)
    merged[key] = (matches, merge_patch(previous[1] if previous else {}, conf))


# --- gateways ------------------------------------------------------------------------------------


def gateway_rules(
    state: MeshState,
    *,
    gateway_dataplane: Resource,
    listener_hostname: str | None,
    gateway_name: str | None = None,
    listener_tags: dict[str, str] | None = None,
) -> list[ResolvedRule]:
    """The merged rules of a builtin gateway's listener (see the module docstring).

    Rules are merged per (hostnames, matches): the same match for two different host sets
    stays two rules. Each rule's `hostnames` is its entry's list narrowed to the listener's
    hostname (`*` when the entry names none)."""
    service = _gateway_service(gateway_dataplane)
    merged: dict[str, tuple[tuple[HttpMatch, ...], dict[str, Any], tuple[str, ...]]] = {}
    for policy in mesh_routes(state, gateway_dataplane.mesh):
        spec = policy.spec
        if not isinstance(spec, MeshHTTPRouteSpec):
            continue
        if not _selects_gateway(
            spec.target_ref, gateway_dataplane, gateway_name, service, listener_tags or {}
        ):
            continue
        for entry in spec.to:
            if entry.target_ref.kind != "Mesh":
                continue
            hosts = _hosts_for_listener(entry.hostnames or ["*"], listener_hostname)
            if not hosts:
                continue
            for rule in reversed(entry.rules):
                key = json.dumps([hosts, _matches_key(rule.matches)])
                previous = merged.get(key)
                conf = merge_patch(previous[1] if previous else {}, rule.default.to_wire())
                merged[key] = (tuple(rule.matches), conf, hosts)
    return [
        ResolvedRule.of(matches, RuleConf.model_validate(conf), hosts)
        for matches, conf, hosts in merged.values()
    ]


def _gateway_tags(dataplane: Resource) -> dict[str, str]:
    """`networking.gateway.tags` (a plain mapping or a model with `tags`)."""
    spec = dataplane.spec
    gateway = spec.networking.gateway if isinstance(spec, DataplaneSpec) else None
    if gateway is None:
        return {}
    tags = gateway.get("tags") if isinstance(gateway, dict) else getattr(gateway, "tags", None)
    return {str(k): str(v) for k, v in (tags or {}).items()}


def _gateway_service(dataplane: Resource) -> str:
    return _gateway_tags(dataplane).get(labels.SERVICE_TAG, "")


def _selects_gateway(
    ref: TargetRef | None,
    dataplane: Resource,
    gateway_name: str | None,
    service: str,
    listener_tags: dict[str, str],
) -> bool:
    if ref is None or ref.kind == "Mesh":
        return not ref or not ref.proxy_types or "Gateway" in ref.proxy_types
    if ref.kind == MESH_GATEWAY:
        wanted = gateway_name if gateway_name is not None else service
        if ref.name != wanted:
            return False
        return all(listener_tags.get(k) == v for k, v in (ref.tags or {}).items())
    if ref.kind == "Dataplane":
        if ref.name and ref.name != dataplane.name:
            return False
        return all(dataplane.labels.get(k) == v for k, v in (ref.labels or {}).items())
    if ref.kind in ("MeshService", "MeshSubset", "MeshServiceSubset"):
        wanted_tags = dict(ref.tags or {})
        if ref.kind != "MeshSubset":
            wanted_tags[labels.SERVICE_TAG] = ref.name or ""
        have = {**_gateway_tags(dataplane), labels.SERVICE_TAG: service}
        return all(have.get(k) == v for k, v in wanted_tags.items())
    return False


def _hosts_for_listener(hostnames: Sequence[str], listener: str | None) -> tuple[str, ...]:
    """The route hostnames a listener with `listener` hostname serves (Kuma's intersection:
    a wildcard on either side narrows to the more specific name)."""
    if listener in (None, "", "*"):
        return tuple(sorted(set(hostnames), key=_host_order))
    out = set()
    for host in hostnames:
        if host == "*" or _wildcard_covers(host, listener):
            out.add(listener)
        elif _wildcard_covers(listener, host):
            out.add(host)
    return tuple(sorted(out, key=_host_order))


def _wildcard_covers(pattern: str, host: str) -> bool:
    if pattern == host:
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]


def _host_order(host: str) -> tuple[int, int, str]:
    """More non-wildcard characters first, then longer (MADR 045)."""
    return (-len(host.replace("*", "")), -len(host), host)


# --- Envoy ---------------------------------------------------------------------------------------


def envoy_routes(
    rules: Sequence[ResolvedRule],
    cluster_for: Callable[[BackendRef], str | None],
    *,
    retry_policy: rc.RetryPolicy | None = None,
    hash_policy: Sequence[rc.RouteAction.HashPolicy] = (),
) -> list[rc.Route]:
    """Envoy routes for `rules`, most specific first (see the module docstring)."""
    flat = [(rule, match) for rule in rules for match in rule.matches]
    flat.sort(key=lambda pair: _precedence(pair[1]))  # stable: ties keep rule order
    return [
        _route(rule, match, cluster_for, retry_policy=retry_policy, hash_policy=hash_policy)
        for rule, match in flat
    ]


def _precedence(match: HttpMatch) -> tuple[int, int, int, int, int]:
    path = match.path or CATCH_ALL.path
    assert path is not None
    return (
        -_PATH_RANK.get(path.type, 0),
        -len(path.value),
        0 if match.method else 1,
        -len(match.headers or ()),
        -len(match.query_params or ()),
    )


def route_match(match: HttpMatch) -> rc.RouteMatch:
    out = rc.RouteMatch()
    path = match.path or CATCH_ALL.path
    assert path is not None
    if path.type == "Exact":
        out.path = path.value
    elif path.type == "RegularExpression":
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=path.value))
    elif path.value == "/":
        out.prefix = "/"
    else:
        out.path_separated_prefix = path.value
    if match.method:
        out.headers.append(
            rc.HeaderMatcher(
                name=":method", string_match=string_pb2.StringMatcher(exact=match.method)
            )
        )
    for header in match.headers or ():
        out.headers.append(_header_matcher(header.type or "Exact", header.name, header.value))
    for query in match.query_params or ():
        if query.type == "RegularExpression":
            matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=query.value))
        else:
            matcher = string_pb2.StringMatcher(exact=query.value)
        out.query_parameters.append(rc.QueryParameterMatcher(name=query.name, string_match=matcher))
    return out


def _header_matcher(kind: str, name: str, value: str) -> rc.HeaderMatcher:
    if kind == "Present":
        return rc.HeaderMatcher(name=name, present_match=True)
    if kind == "Absent":
        return rc.HeaderMatcher(name=name, present_match=True, invert_match=True)
    if kind == "Prefix":
        return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(prefix=value))
    if kind == "RegularExpression":
        return rc.HeaderMatcher(
            name=name,
            string_match=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=value)),
        )
    return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=value))


def _route(
    rule: ResolvedRule,
    match: HttpMatch,
    cluster_for: Callable[[BackendRef], str | None],
    *,
    retry_policy: rc.RetryPolicy | None,
    hash_policy: Sequence[rc.RouteAction.HashPolicy],
) -> rc.Route:
    route = rc.Route(match=route_match(match))
    for item in rule.filters:
        if item.type == "RequestHeaderModifier" and item.request_header_modifier is not None:
            adds, removes = _header_changes(item.request_header_modifier)
            route.request_headers_to_add.extend(adds)
            route.request_headers_to_remove.extend(removes)
        elif item.type == "ResponseHeaderModifier" and item.response_header_modifier is not None:
            adds, removes = _header_changes(item.response_header_modifier)
            route.response_headers_to_add.extend(adds)
            route.response_headers_to_remove.extend(removes)
    redirect = rule.redirect
    if redirect is not None and redirect.request_redirect is not None:
        route.redirect.CopyFrom(_redirect(redirect, match))
        return route
    action = route.route
    _set_clusters(action, rule.backend_refs, cluster_for)
    if not action.cluster and not action.weighted_clusters.clusters:
        route.ClearField("route")
        route.direct_response.status = 500
        return route
    action.cluster_not_found_response_code = rc.RouteAction.INTERNAL_SERVER_ERROR
    action.hash_policy.extend(hash_policy)
    if retry_policy is not None:
        action.retry_policy.CopyFrom(retry_policy)
    for item in rule.filters:
        if item.type == "URLRewrite" and item.url_rewrite is not None:
            _rewrite(action, item, match)
        elif item.type == "RequestMirror" and item.request_mirror is not None:
            mirror = item.request_mirror
            cluster = cluster_for(mirror.backend_ref)
            if cluster is None:
                continue  # mirroring to nothing: the request itself is unaffected
            policy = rc.RouteAction.RequestMirrorPolicy(cluster=cluster)
            pct = mirror_fraction(mirror.percentage)
            if pct is not None and pct < 100:
                policy.runtime_fraction.default_value.CopyFrom(
                    percent_pb2.FractionalPercent(
                        numerator=int(pct * Decimal(10_000)),
                        denominator=percent_pb2.FractionalPercent.MILLION,
                    )
                )
            action.request_mirror_policies.append(policy)
    return route


def _set_clusters(
    action: rc.RouteAction,
    refs: Sequence[BackendRef],
    cluster_for: Callable[[BackendRef], str | None],
) -> None:
    weighted = [
        (cluster_for(ref) or UNRESOLVED_BACKEND, ref.effective_weight)
        for ref in refs
        if ref.effective_weight > 0
    ]
    if not weighted:
        return
    if len(weighted) == 1:
        action.cluster = weighted[0][0]
        return
    totals: dict[str, int] = {}
    for name, weight in weighted:  # two refs resolving to one cluster share its entry
        totals[name] = totals.get(name, 0) + weight
    if len(totals) == 1:
        action.cluster = next(iter(totals))
        return
    for name, weight in totals.items():
        entry = action.weighted_clusters.clusters.add(name=name)
        entry.weight.value = weight


def _header_changes(
    modifier: HeaderModifier,
) -> tuple[list[base_pb2.HeaderValueOption], list[str]]:
    adds = []
    for header in modifier.set or ():
        adds.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=header.name, value=header.value),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    for header in modifier.add or ():
        adds.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=header.name, value=header.value),
                append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
            )
        )
    return adds, list(modifier.remove or ())


def _prefix_of(match: HttpMatch) -> str:
    if match.path is not None and match.path.type == "PathPrefix":
        return match.path.value
    return "/"


def _prefix_rewrite(prefix: str, replacement: str) -> regex_pb2.RegexMatchAndSubstitute | None:
    """Gateway API's ReplacePrefixMatch as a regex rewrite: `/a/b` with `/a` -> `/x` gives
    `/x/b`, with `/a` -> `/` gives `/b` (never `//b`, as Envoy's `prefix_rewrite` would)."""
    stripped = prefix.rstrip("/")
    target = replacement.rstrip("/")
    if not target:
        if not stripped:
            return None  # `/` -> `/`: nothing changes
        pattern, substitution = f"^{_re2_escape(stripped)}/*", "/"
    else:
        pattern, substitution = f"^{_re2_escape(stripped)}", target
    return regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex=pattern),
        substitution=substitution.replace("\\", "\\\\"),
    )


def _re2_escape(value: str) -> str:
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", value)


def _rewrite(action: rc.RouteAction, item: Filter, match: HttpMatch) -> None:
    rewrite = item.url_rewrite
    assert rewrite is not None
    if rewrite.hostname is not None:
        action.host_rewrite_literal = rewrite.hostname
    elif rewrite.host_to_backend_hostname:
        action.auto_host_rewrite.value = True
    path = rewrite.path
    if path is None:
        return
    if path.type == "ReplaceFullPath" and path.replace_full_path is not None:
        action.regex_rewrite.CopyFrom(
            regex_pb2.RegexMatchAndSubstitute(
                pattern=regex_pb2.RegexMatcher(regex="^.*$"),
                substitution=path.replace_full_path.replace("\\", "\\\\"),
            )
        )
    elif path.type == "ReplacePrefixMatch" and path.replace_prefix_match is not None:
        regex = _prefix_rewrite(_prefix_of(match), path.replace_prefix_match)
        if regex is not None:
            action.regex_rewrite.CopyFrom(regex)


def _redirect(item: Filter, match: HttpMatch) -> rc.RedirectAction:
    redirect = item.request_redirect
    assert redirect is not None
    out = rc.RedirectAction(
        response_code=_REDIRECT_CODE[redirect.status_code or DEFAULT_REDIRECT_CODE]
    )
    if redirect.scheme:
        out.scheme_redirect = redirect.scheme
    if redirect.hostname:
        out.host_redirect = redirect.hostname
    if redirect.port is not None:
        out.port_redirect = redirect.port
    path = redirect.path
    if path is not None:
        if path.type == "ReplaceFullPath" and path.replace_full_path is not None:
            out.path_redirect = path.replace_full_path
        elif path.type == "ReplacePrefixMatch" and path.replace_prefix_match is not None:
            regex = _prefix_rewrite(_prefix_of(match), path.replace_prefix_match)
            if regex is not None:
                out.regex_rewrite.CopyFrom(regex)
    return out


def route_configuration(
    name: str, virtual_host: str, routes: Sequence[rc.Route]
) -> route_pb2.RouteConfiguration:
    """One virtual host for every domain, with `routes`; clusters are not validated, so an
    unresolved backend answers 500 instead of the whole config being rejected."""
    config = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            rc.VirtualHost(name=virtual_host or name, domains=["*"], routes=list(routes))
        ],
    )
    config.validate_clusters.value = False
    return config


def unresolved_refs(
    rules: Sequence[ResolvedRule], cluster_for: Callable[[BackendRef], str | None]
) -> list[BackendRef]:
    """The refs of `rules` (backends and mirrors) that `cluster_for` cannot resolve."""
    out = []
    for rule in rules:
        refs = list(rule.backend_refs)
        refs += [
            f.request_mirror.backend_ref
            for f in rule.filters
            if f.type == "RequestMirror" and f.request_mirror is not None
        ]
        out += [ref for ref in refs if cluster_for(ref) is None]
    return out


def ref_label(ref: BackendRef) -> str:
    """How a warning names a ref: `MeshService/echo:80`, `MeshService{k=v}`."""
    who = (
        ref.name or "{" + ",".join(f"{k}={v}" for k, v in sorted((ref.labels or {}).items())) + "}"
    )
    return f"{ref.kind}/{who}" + (f":{ref.port}" if ref.port is not None else "")
