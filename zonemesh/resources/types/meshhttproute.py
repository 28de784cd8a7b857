"""MeshHTTPRoute: HTTP routing by path, method, headers and query, with filters and traffic split.

The schema and the validation messages follow Kuma v2.14's (`meshhttproute/api/v1alpha1`,
the last release that routes builtin gateways); what the fields do to Envoy lives in
`zonemesh.translate.policies.meshhttproute`. Beyond Kuma, regular expressions are checked with
RE2 at admission (Envoy compiles them with RE2 and would reject the whole route config).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import re2

from zonemesh.resources import identifiers
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import TargetRef, is_dns_name, is_ip_address, validate_port

MESH_GATEWAY = "MeshGateway"
TOP_TARGET_KINDS = (
    "Mesh",
    "MeshSubset",
    "MeshService",
    "MeshServiceSubset",
    MESH_GATEWAY,
    "Dataplane",
)
TO_KINDS_SIDECAR = ("MeshService", "MeshMultiZoneService")
TO_KINDS_GATEWAY = ("Mesh",)
BACKEND_KINDS = ("MeshService", "MeshMultiZoneService")
MIRROR_KINDS = ("MeshService", "MeshMultiZoneService")

PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
HEADER_TYPES = ("Exact", "Present", "RegularExpression", "Absent", "Prefix")
QUERY_TYPES = ("Exact", "RegularExpression")
METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
# A filter type's configuration: its field in the resource and its attribute on `Filter`.
FILTER_CONFIG = {
    "RequestHeaderModifier": ("requestHeaderModifier", "request_header_modifier"),
    "ResponseHeaderModifier": ("responseHeaderModifier", "response_header_modifier"),
    "RequestRedirect": ("requestRedirect", "request_redirect"),
    "URLRewrite": ("urlRewrite", "url_rewrite"),
    "RequestMirror": ("requestMirror", "request_mirror"),
}
FILTER_TYPES = tuple(FILTER_CONFIG)
PATH_REWRITE_TYPES = ("ReplaceFullPath", "ReplacePrefixMatch")
REDIRECT_CODES = (301, 302, 303, 307, 308)
SCHEMES = ("http", "https")
DEFAULT_WEIGHT = 1
DEFAULT_REDIRECT_CODE = 302


class PathMatch(Model):
    type: str
    value: str


class HeaderMatch(Model):
    type: str | None = None  # Exact when absent
    name: str
    value: str = ""


class QueryParamsMatch(Model):
    type: str
    name: str
    value: str


class HttpMatch(Model):
    path: PathMatch | None = None
    method: str | None = None
    headers: list[HeaderMatch] | None = None
    query_params: list[QueryParamsMatch] | None = None


class HeaderValue(Model):
    name: str
    value: str


class HeaderModifier(Model):
    set: list[HeaderValue] | None = None
    add: list[HeaderValue] | None = None
    remove: list[str] | None = None


class PathRewrite(Model):
    type: str
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class RequestRedirect(Model):
    scheme: str | None = None
    hostname: str | None = None
    path: PathRewrite | None = None
    port: int | None = None
    status_code: int | None = None


class URLRewrite(Model):
    hostname: str | None = None
    path: PathRewrite | None = None
    host_to_backend_hostname: bool | None = None


class BackendRef(Model):
    """A destination of a rule: a MeshService (by name or labels) or a MeshMultiZoneService,
    with the port to use and its share of the traffic."""

    kind: str
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    section_name: str | None = None
    mesh: str | None = None
    tags: dict[str, str] | None = None
    port: int | None = None
    weight: int | None = None

    @property
    def effective_weight(self) -> int:
        return DEFAULT_WEIGHT if self.weight is None else self.weight


class RequestMirror(Model):
    backend_ref: BackendRef
    percentage: int | str | None = None  # an integer or a decimal string; 100 when absent


class Filter(Model):
    type: str
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: RequestMirror | None = None


class RuleConf(Model):
    filters: list[Filter] | None = None
    backend_refs: list[BackendRef] | None = None


class Rule(Model):
    matches: list[HttpMatch]
    default: RuleConf = RuleConf()


class ToEntry(Model):
    target_ref: TargetRef
    hostnames: list[str] | None = None
    rules: list[Rule] = []


class MeshHTTPRouteSpec(Model):
    target_ref: TargetRef | None = None
    to: list[ToEntry] = []

    @property
    def on_gateway(self) -> bool:
        return self.target_ref is not None and self.target_ref.kind == MESH_GATEWAY

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.target_ref is not None:
            _validate_target_ref(self.target_ref, TOP_TARGET_KINDS, f"{path}.targetRef", errors)
        to_kinds = TO_KINDS_GATEWAY if self.on_gateway else TO_KINDS_SIDECAR
        for i, entry in enumerate(self.to):
            epath = f"{path}.to[{i}]"
            _validate_target_ref(entry.target_ref, to_kinds, f"{epath}.targetRef", errors)
            _validate_hostnames(entry.hostnames, self.on_gateway, f"{epath}.hostnames", errors)
            for j, rule in enumerate(entry.rules):
                _validate_rule(rule, self.on_gateway, f"{epath}.rules[{j}]", errors)


# --- targetRefs ----------------------------------------------------------------------------


def _kind_allowed(kind: str, kinds: tuple[str, ...], path: str, errors: Violations) -> bool:
    """A reference's kind is set and one of `kinds`; else why not, at `path`.kind."""
    if not kind:
        errors.add(f"{path}.kind", "must be defined")
        return False
    if kind not in kinds:
        errors.add(f"{path}.kind", f"value '{kind}' is not supported")
        return False
    return True


def _validate_target_ref(
    ref: TargetRef, kinds: tuple[str, ...], path: str, errors: Violations
) -> None:
    if not _kind_allowed(ref.kind, kinds, path, errors):
        return
    ref.validate_semantics(path, errors)
    kind = ref.kind
    if kind == "Mesh":
        for field, value in (("tags", ref.tags), ("labels", ref.labels), ("name", ref.name)):
            if value:
                errors.add(f"{path}.{field}", f"must not be set with kind {kind}")
        if ref.section_name:
            errors.add(f"{path}.sectionName", f"must not be set with kind {kind}")
    elif kind in ("MeshService", "MeshMultiZoneService", "MeshServiceSubset"):
        if not ref.name and not ref.labels:
            errors.add(f"{path}.name", f"name or labels must be set when kind is {kind}")
        if kind != "MeshServiceSubset" and ref.tags:
            errors.add(f"{path}.tags", f"must not be set with kind {kind}")
    elif kind == MESH_GATEWAY:
        if not ref.name:
            errors.add(f"{path}.name", f"must be set when kind is {kind}")
    elif kind == "Dataplane":
        if ref.tags:
            errors.add(f"{path}.tags", f"must not be set with kind {kind}")
        if ref.section_name:
            errors.add(f"{path}.sectionName", "can only be used with inbound policies")
    elif kind == "MeshSubset" and ref.labels:
        errors.add(f"{path}.labels", f"must not be set with kind {kind}")


def _validate_backend_ref(
    ref: BackendRef, kinds: tuple[str, ...], path: str, errors: Violations
) -> None:
    if not _kind_allowed(ref.kind, kinds, path, errors):
        return
    if ref.name:
        identifiers.check_resource_name(ref.name, f"{path}.name", errors)
    if ref.labels:
        identifiers.check_labels(ref.labels, f"{path}.labels", errors)
    if not ref.name and not ref.labels:
        if ref.kind == "MeshService":
            errors.add(path, "name or labels must be set when kind is MeshService")
        else:
            errors.add(path, "either labels or name and namespace must be specified")
    if ref.tags:
        errors.add(f"{path}.tags", f"must not be set with kind {ref.kind}")
    if ref.port is None:
        if ref.kind == "MeshMultiZoneService":
            errors.add(f"{path}.port", "must be defined with kind MeshMultiZoneService")
    else:
        validate_port(ref.port, f"{path}.port", errors)
    if ref.weight is not None and ref.weight < 0:
        errors.add(f"{path}.weight", "must be greater than or equal to 0")


# --- rules -----------------------------------------------------------------------------------


def _validate_rule(rule: Rule, on_gateway: bool, path: str, errors: Violations) -> None:
    if not rule.matches:
        errors.add(f"{path}.matches", "must have at least one element")
    for i, match in enumerate(rule.matches):
        _validate_match(match, f"{path}.matches[{i}]", errors)
    conf = rule.default
    filters = conf.filters or []
    for i, item in enumerate(filters):
        _validate_filter(item, rule.matches, on_gateway, f"{path}.default.filters[{i}]", errors)
    refs = conf.backend_refs or []
    bpath = f"{path}.default.backendRefs"
    if not refs and on_gateway and not any(f.type == "RequestRedirect" for f in filters):
        errors.add(bpath, "must not be empty")
    for i, ref in enumerate(refs):
        _validate_backend_ref(ref, BACKEND_KINDS, f"{bpath}[{i}]", errors)


def _validate_match(match: HttpMatch, path: str, errors: Violations) -> None:
    if match.path is not None:
        _validate_path_match(match.path, f"{path}.path", errors)
    if match.method is not None and match.method not in METHODS:
        errors.add(f"{path}.method", "must be one of: " + ", ".join(METHODS))
    for i, header in enumerate(match.headers or []):
        hpath = f"{path}.headers[{i}]"
        kind = header.type or "Exact"
        if kind not in HEADER_TYPES:
            errors.add(f"{hpath}.type", "must be one of: " + ", ".join(HEADER_TYPES))
            continue
        if not header.name:
            errors.add(f"{hpath}.name", "must not be empty")
        if kind in ("Present", "Absent") and header.value:
            errors.add(f"{hpath}.value", "must not be defined")
        if kind == "RegularExpression":
            check_regex(header.value, f"{hpath}.value", errors)
    seen: set[str] = set()
    for i, query in enumerate(match.query_params or []):
        qpath = f"{path}.queryParams[{i}]"
        if query.type not in QUERY_TYPES:
            errors.add(f"{qpath}.type", "must be one of: " + ", ".join(QUERY_TYPES))
        if not query.name:
            errors.add(f"{qpath}.name", "must not be empty")
        elif query.name in seen:
            errors.add(f"{qpath}.name", f"multiple entries for name {query.name}")
        seen.add(query.name)
        if query.type == "RegularExpression":
            check_regex(query.value, f"{qpath}.value", errors)


def _validate_path_match(match: PathMatch, path: str, errors: Violations) -> None:
    vpath = f"{path}.value"
    if match.type not in PATH_TYPES:
        errors.add(f"{path}.type", "must be one of: " + ", ".join(PATH_TYPES))
    elif match.type == "RegularExpression":
        check_regex(match.value, vpath, errors)
    elif match.type == "PathPrefix" and match.value != "/":
        if match.value.endswith("/"):
            errors.add(
                vpath,
                "does not need a trailing slash because only a `/`-separated prefix or an "
                "entire path is matched",
            )
        if not match.value.startswith("/"):
            errors.add(vpath, "must be an absolute path")
    elif match.type == "Exact" and not match.value.startswith("/"):
        errors.add(vpath, "must be an absolute path")


def regex_problem(pattern: str) -> str | None:
    """Why RE2 (Envoy's regex engine) refuses `pattern`, or None: Python's `re` accepts
    backreferences and lookaround that RE2 does not, so only RE2 can tell."""
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        return str(detail) or "invalid"
    return None


def check_regex(pattern: str, path: str, errors: Violations) -> None:
    if not pattern:
        errors.add(path, "must not be empty")
        return
    problem = regex_problem(pattern)
    if problem is not None:
        errors.add(path, f"must be a valid RE2 regular expression: {problem}")


def _all_prefix(matches: list[HttpMatch]) -> bool:
    return all(m.path is not None and m.path.type == "PathPrefix" for m in matches)


def _validate_filter(
    item: Filter, matches: list[HttpMatch], on_gateway: bool, path: str, errors: Violations
) -> None:
    if item.type not in FILTER_TYPES:
        errors.add(f"{path}.type", "must be one of: " + ", ".join(FILTER_TYPES))
        return
    field, attribute = FILTER_CONFIG[item.type]
    fpath = f"{path}.{field}"
    config = getattr(item, attribute)
    if config is None:
        errors.add(fpath, "must be defined")
    elif isinstance(config, HeaderModifier):
        _validate_header_modifier(config, fpath, errors)
    elif isinstance(config, RequestRedirect):
        _validate_redirect(config, matches, fpath, errors)
    elif isinstance(config, URLRewrite):
        _validate_url_rewrite(config, matches, on_gateway, fpath, errors)
    else:
        _validate_mirror(config, fpath, errors)


def _validate_redirect(
    redirect: RequestRedirect, matches: list[HttpMatch], rpath: str, errors: Violations
) -> None:
    if redirect.scheme is not None and redirect.scheme not in SCHEMES:
        errors.add(f"{rpath}.scheme", "must be one of: " + ", ".join(SCHEMES))
    if redirect.hostname is not None:
        _validate_precise_hostname(redirect.hostname, f"{rpath}.hostname", errors)
    if redirect.port is not None:
        validate_port(redirect.port, f"{rpath}.port", errors)
    if redirect.status_code is not None and redirect.status_code not in REDIRECT_CODES:
        errors.add(f"{rpath}.statusCode", "must be one of: " + ", ".join(map(str, REDIRECT_CODES)))
    if redirect.path is not None:
        _validate_path_rewrite(redirect.path, matches, f"{rpath}.path", errors)


def _validate_url_rewrite(
    rewrite: URLRewrite, matches: list[HttpMatch], on_gateway: bool, upath: str, errors: Violations
) -> None:
    if rewrite.hostname is not None:
        _validate_precise_hostname(rewrite.hostname, f"{upath}.hostname", errors)
    if rewrite.path is not None:
        _validate_path_rewrite(rewrite.path, matches, f"{upath}.path", errors)
    if rewrite.host_to_backend_hostname:
        if not on_gateway:
            errors.add(f"{upath}.hostToBackendHostname", "can only be set with MeshGateway")
        if rewrite.hostname is not None:
            errors.add(f"{upath}.hostToBackendHostname", "cannot be set together with hostname")


def _validate_mirror(mirror: RequestMirror, mpath: str, errors: Violations) -> None:
    _validate_backend_ref(mirror.backend_ref, MIRROR_KINDS, f"{mpath}.backendRef", errors)
    if mirror.percentage is not None and mirror_fraction(mirror.percentage) is None:
        errors.add(f"{mpath}.percentage", "must be a number between 0 and 100")


def mirror_fraction(percentage: int | str | None) -> Decimal | None:
    """The mirrored share in percent (`50`, `"0.5"`), None if it is not one; 100 when unset."""
    if percentage is None:
        return Decimal(100)
    if isinstance(percentage, bool):
        return None
    try:
        value = Decimal(str(percentage))
    except InvalidOperation:
        return None
    if not value.is_finite() or not 0 <= value <= 100:
        return None
    return value


def _validate_path_rewrite(
    rewrite: PathRewrite, matches: list[HttpMatch], path: str, errors: Violations
) -> None:
    if rewrite.type not in PATH_REWRITE_TYPES:
        errors.add(f"{path}.type", "must be one of: " + ", ".join(PATH_REWRITE_TYPES))
        return
    if rewrite.type == "ReplaceFullPath":
        if rewrite.replace_full_path is None:
            errors.add(f"{path}.replaceFullPath", "must be defined")
        elif not rewrite.replace_full_path.startswith("/"):
            errors.add(f"{path}.replaceFullPath", "must be an absolute path")
        return
    if rewrite.replace_prefix_match is None:
        errors.add(f"{path}.replacePrefixMatch", "must be defined")
        return
    if not _all_prefix(matches):
        errors.add(
            f"{path}.replacePrefixMatch", "can only appear if all matches match a path prefix"
        )
    if not rewrite.replace_prefix_match.startswith("/"):
        errors.add(f"{path}.replacePrefixMatch", "must be an absolute path")


def _validate_header_modifier(modifier: HeaderModifier, path: str, errors: Violations) -> None:
    if modifier.set is None and modifier.add is None and modifier.remove is None:
        errors.add(path, "must have at least one defined: set, add, remove")
        return
    seen: set[str] = set()

    def once(name: str, where: str) -> None:
        lowered = name.lower()
        if not name:
            errors.add(f"{where}.name", "must not be empty")
        elif lowered in seen:
            errors.add(f"{where}.name", "duplicate header name")
        seen.add(lowered)

    for i, header in enumerate(modifier.set or []):
        once(header.name, f"{path}.set[{i}]")
    for i, header in enumerate(modifier.add or []):
        once(header.name, f"{path}.add[{i}]")
    for i, name in enumerate(modifier.remove or []):
        once(name, f"{path}.remove[{i}]")


def _validate_precise_hostname(hostname: str, path: str, errors: Violations) -> None:
    if is_ip_address(hostname):
        errors.add(path, "cannot be an IP address")
    elif not is_dns_name(hostname):
        errors.add(path, "must be a valid DNS-1123 subdomain")


def _validate_hostnames(
    hostnames: list[str] | None, on_gateway: bool, path: str, errors: Violations
) -> None:
    if not hostnames:
        return
    if not on_gateway:
        errors.add(path, "must not be defined")
        return
    for i, hostname in enumerate(hostnames):
        if hostname == "*":
            continue
        bare = hostname[2:] if hostname.startswith("*.") else hostname
        if is_ip_address(bare):
            errors.add(f"{path}[{i}]", "cannot be an IP address")
        elif not is_dns_name(bare):
            errors.add(f"{path}[{i}]", "invalid wildcard domain")
