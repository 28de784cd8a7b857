"""MeshLoadBalancingStrategy: locality awareness, cross-zone failover and the load balancer.

The schema and the messages follow Kuma's (`meshloadbalancingstrategy/api/v1alpha1`); what
the fields do to Envoy's configuration lives in `zonemesh.translate.policies.mlbs`.
"""

from __future__ import annotations

from pydantic import Field

from zonemesh.config import parse_duration
from zonemesh.resources import identifiers
from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import TargetRef

TOP_TARGET_KINDS = ("Mesh", "MeshSubset", "Dataplane", "MeshService", "MeshServiceSubset")
TO_TARGET_KINDS = (
    "Mesh",
    "MeshService",
    "MeshExternalService",
    "MeshMultiZoneService",
    "MeshHTTPRoute",
)
FAILOVER_TYPES = ("Any", "Only", "AnyExcept", "None")
LOAD_BALANCER_TYPES = ("RoundRobin", "LeastRequest", "RingHash", "Random", "Maglev")
HASH_FUNCTIONS = ("XXHash", "MurmurHash2")
HASH_POLICY_TYPES = ("Header", "Cookie", "Connection", "QueryParameter", "FilterState")
MAX_RING_SIZE = 8_000_000
MAX_MAGLEV_TABLE_SIZE = 5_000_011


class AffinityTag(Model):
    key: str
    weight: int | None = None


class LocalZone(Model):
    affinity_tags: list[AffinityTag] | None = None


class FailoverFrom(Model):
    zones: list[str] = []


class FailoverTo(Model):
    type: str
    zones: list[str] | None = None


class Failover(Model):
    from_: FailoverFrom | None = Field(default=None, alias="from")
    to: FailoverTo


class FailoverThreshold(Model):
    percentage: int | float | str


class CrossZone(Model):
    failover: list[Failover] | None = None
    failover_threshold: FailoverThreshold | None = None


class LocalityAwareness(Model):
    disabled: bool | None = None
    local_zone: LocalZone | None = None
    cross_zone: CrossZone | None = None


class Empty(Model):
    """`roundRobin: {}` and `random: {}`: the type alone says it all."""


class LeastRequest(Model):
    choice_count: int | None = None
    active_request_bias: int | float | str | None = None


class HeaderHash(Model):
    name: str


class CookieHash(Model):
    name: str
    ttl: str | None = None
    path: str | None = None


class ConnectionHash(Model):
    source_ip: bool | None = Field(default=None, alias="sourceIP")


class QueryParameterHash(Model):
    name: str


class FilterStateHash(Model):
    key: str


class HashPolicy(Model):
    type: str
    terminal: bool | None = None
    header: HeaderHash | None = None
    cookie: CookieHash | None = None
    connection: ConnectionHash | None = None
    query_parameter: QueryParameterHash | None = None
    filter_state: FilterStateHash | None = None


class RingHash(Model):
    hash_function: str | None = None
    min_ring_size: int | None = None
    max_ring_size: int | None = None
    hash_policies: list[HashPolicy] | None = None


class Maglev(Model):
    table_size: int | None = None
    hash_policies: list[HashPolicy] | None = None


class LoadBalancer(Model):
    type: str
    round_robin: Empty | None = None
    least_request: LeastRequest | None = None
    ring_hash: RingHash | None = None
    random: Empty | None = None
    maglev: Maglev | None = None


class LBDefault(Model):
    locality_awareness: LocalityAwareness | None = None
    load_balancer: LoadBalancer | None = None
    hash_policies: list[HashPolicy] | None = None


class ToRule(Model):
    target_ref: TargetRef
    default: LBDefault = LBDefault()


class MeshLoadBalancingStrategySpec(Model):
    target_ref: TargetRef | None = None
    to: list[ToRule] = []

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if self.target_ref is not None:
            if self.target_ref.kind not in TOP_TARGET_KINDS:
                errors.add(
                    f"{path}.targetRef.kind", "value is not supported: " + self.target_ref.kind
                )
            self.target_ref.validate_semantics(f"{path}.targetRef", errors)
        if not self.to:
            errors.add(f"{path}.to", "needs at least one item")
        for i, rule in enumerate(self.to):
            _validate_to(rule, f"{path}.to[{i}]", errors)


def _validate_to(rule: ToRule, path: str, errors: Violations) -> None:
    ref = rule.target_ref
    ref.validate_semantics(f"{path}.targetRef", errors)
    if ref.kind not in TO_TARGET_KINDS:
        errors.add(f"{path}.targetRef.kind", "value is not supported: " + ref.kind)
        return
    if ref.kind != "Mesh" and not ref.name and not ref.labels:
        errors.add(f"{path}.targetRef.name", "must be set with kind " + ref.kind)
    conf = rule.default
    dpath = f"{path}.default"
    if ref.kind == "MeshHTTPRoute":
        only = "field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is"
        if conf.load_balancer is not None:
            errors.add(f"{dpath}.loadBalancer", only + " supported")
        if conf.locality_awareness is not None:
            errors.add(f"{dpath}.localityAwareness", only + " supported")
    _validate_hash_policies(conf.hash_policies, f"{dpath}.hashPolicies", errors)
    if conf.load_balancer is not None:
        _validate_load_balancer(conf.load_balancer, f"{dpath}.loadBalancer", errors)
    la = conf.locality_awareness
    if la is None:
        return
    la_path = f"{dpath}.localityAwareness"
    if la.local_zone is not None:
        _validate_local_zone(la.local_zone, f"{la_path}.localZone", errors)
    if la.cross_zone is not None:
        cz_path = f"{la_path}.crossZone"
        if ref.kind == "MeshService" and (ref.section_name or ref.labels):
            errors.add(cz_path, "must not be set: MeshService traffic is local")
        _validate_cross_zone(la.cross_zone, cz_path, errors)


def _validate_local_zone(local: LocalZone, path: str, errors: Violations) -> None:
    tags = local.affinity_tags or []
    for j, tag in enumerate(tags):
        tpath = f"{path}.affinityTags[{j}]"
        if not tag.key:
            errors.add(f"{tpath}.key", "must not be empty")  # Kuma's wording for this field
        else:
            identifiers.check_tag_name(tag.key, f"{tpath}.key", errors)
        if tag.weight is not None and tag.weight <= 0:
            errors.add(f"{tpath}.weight", "must be greater than 0")
    with_weight = sum(1 for tag in tags if tag.weight is not None)
    if 0 < with_weight < len(tags):
        errors.add(f"{path}.affinityTags", "all or none affinity tags should have weight")


def _validate_cross_zone(cross: CrossZone, path: str, errors: Violations) -> None:
    for j, failover in enumerate(cross.failover or []):
        fpath = f"{path}.failover[{j}]"
        if failover.from_ is not None:
            if not failover.from_.zones:
                errors.add(f"{fpath}.from.zones", "must not be empty")
            for k, zone in enumerate(failover.from_.zones):
                identifiers.check_resource_name(zone, f"{fpath}.from.zones[{k}]", errors)
        _validate_failover_to(failover.to, f"{fpath}.to", errors)
    if cross.failover_threshold is not None:
        _validate_percentage(
            cross.failover_threshold.percentage, f"{path}.failoverThreshold.percentage", errors
        )


def _validate_failover_to(to: FailoverTo, path: str, errors: Violations) -> None:
    if to.type not in FAILOVER_TYPES:
        errors.add(f"{path}.type", "unrecognized type")
    elif to.type in ("Any", "None") and to.zones:
        errors.add(f"{path}.zones", f"must be empty when type is {to.type}")
    elif to.type in ("Only", "AnyExcept") and not to.zones:
        errors.add(f"{path}.zones", f"must not be empty when type is {to.type}")
    for i, zone in enumerate(to.zones or []):
        identifiers.check_resource_name(zone, f"{path}.zones[{i}]", errors)


def percentage_value(value: int | float | str) -> float | None:
    """A failover threshold as a number (Kuma takes `70`, `"70"` and `"99.9"`)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _validate_percentage(value: int | float | str, path: str, errors: Violations) -> None:
    pct = percentage_value(value)
    if pct is None:
        errors.add(path, "must be a number")
    elif not 0 < pct <= 100:
        errors.add(path, "must be greater than 0 and at most 100")


def _validate_load_balancer(lb: LoadBalancer, path: str, errors: Violations) -> None:
    if lb.type not in LOAD_BALANCER_TYPES:
        errors.add(f"{path}.type", "must be one of: " + ", ".join(LOAD_BALANCER_TYPES))
        return
    if lb.least_request is not None:
        lr, lr_path = lb.least_request, f"{path}.leastRequest"
        if lr.choice_count is not None and lr.choice_count < 2:
            errors.add(f"{lr_path}.choiceCount", "must be greater or equal 2")
        if lr.active_request_bias is not None:
            bias = percentage_value(lr.active_request_bias)
            if bias is None or bias < 0:
                errors.add(f"{lr_path}.activeRequestBias", "must be a number greater or equal 0")
    if lb.ring_hash is not None:
        rh, rh_path = lb.ring_hash, f"{path}.ringHash"
        if rh.hash_function is not None and rh.hash_function not in HASH_FUNCTIONS:
            errors.add(f"{rh_path}.hashFunction", "must be one of: " + ", ".join(HASH_FUNCTIONS))
        for field, size in (("minRingSize", rh.min_ring_size), ("maxRingSize", rh.max_ring_size)):
            if size is not None and not 1 <= size <= MAX_RING_SIZE:
                errors.add(f"{rh_path}.{field}", f"must be in inclusive range [1, {MAX_RING_SIZE}]")
        if rh.min_ring_size and rh.max_ring_size and rh.min_ring_size > rh.max_ring_size:
            errors.add(f"{rh_path}.minRingSize", "must not be greater than maxRingSize")
        _validate_hash_policies(rh.hash_policies, f"{rh_path}.hashPolicies", errors)
    if lb.maglev is not None:
        mg, mg_path = lb.maglev, f"{path}.maglev"
        size = mg.table_size
        if size is not None and not (1 <= size <= MAX_MAGLEV_TABLE_SIZE and _is_prime(size)):
            errors.add(
                f"{mg_path}.tableSize",
                f"must be a prime number in inclusive range [1, {MAX_MAGLEV_TABLE_SIZE}]",
            )
        _validate_hash_policies(mg.hash_policies, f"{mg_path}.hashPolicies", errors)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


_HASH_FIELD = {
    "Header": "header",
    "Cookie": "cookie",
    "Connection": "connection",
    "QueryParameter": "queryParameter",
    "FilterState": "filterState",
}


def _validate_hash_policies(
    policies: list[HashPolicy] | None, path: str, errors: Violations
) -> None:
    for i, policy in enumerate(policies or []):
        ppath = f"{path}[{i}]"
        if policy.type not in HASH_POLICY_TYPES:
            errors.add(f"{ppath}.type", "unrecognized type")
            continue
        field = _HASH_FIELD[policy.type]
        value = {
            "header": policy.header,
            "cookie": policy.cookie,
            "connection": policy.connection,
            "queryParameter": policy.query_parameter,
            "filterState": policy.filter_state,
        }[field]
        if value is None:
            errors.add(f"{ppath}.{field}", "must be defined")
            continue
        if isinstance(value, HeaderHash | CookieHash | QueryParameterHash) and not value.name:
            errors.add(f"{ppath}.{field}.name", "must not be empty")
        if isinstance(value, FilterStateHash) and not value.key:
            errors.add(f"{ppath}.{field}.key", "must not be empty")
        if isinstance(value, CookieHash):
            if value.path is not None and not value.path.startswith("/"):
                errors.add(f"{ppath}.cookie.path", "must be an absolute path")
            if value.ttl is not None:
                try:
                    parse_duration(value.ttl)
                except ValueError:
                    errors.add(f"{ppath}.cookie.ttl", "must be a duration such as 30s or 1h")
