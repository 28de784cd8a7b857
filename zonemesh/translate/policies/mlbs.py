"""MeshLoadBalancingStrategy: the one stage that reads the policy, resolved per proxy and
destination into an `LbConf` the endpoint and outbound generators apply without re-deriving it.

What each field does, as Kuma does it (`meshloadbalancingstrategy/plugin/v1alpha1`):

- No policy, or one without `localityAwareness`: the local zone at priority 0, every other
  zone at priority 1 (each zone one equal share; see `endpoints`).
- `localityAwareness.disabled: true`: other zones at priority 0 too, one flat pool.
- `localZone` or `crossZone` set: the endpoints are laid out by the rules instead.
  - `localZone.affinityTags`: a local endpoint whose tag `key` has the value the *client*
    has for that key goes into sub-zone `key=value` with the tag's weight (default
    `9 * 10^(n-i-1)`, a 90/9/1 split); the first matching tag wins, the others keep weight 1;
    the cluster switches to locality-weighted load balancing.
  - `crossZone.failover[i]` puts the zones it admits at priority `i+1` (the index counts even
    when `from.zones` leaves this zone out); `Any` admits every zone, `Only` those listed,
    `AnyExcept` all others, `None` none. A zone takes the first rule admitting it; a zone no
    rule admits gets no traffic, so `localZone` alone means no cross-zone traffic at all.
  - Overprovisioning factor `int(100 / failoverThreshold.percentage) * 100` (Kuma truncates:
    70 gives 100, 30 gives 300), else 200.
- `loadBalancer`: the cluster's algorithm and its options; `hashPolicies` (top-level, else
  those of RingHash/Maglev) go on the route (HTTP) or the tcp_proxy (Connection, FilterState).

Policies are matched and merged by `matching` (Kuma's order). A proxy no policy selects, and
a destination no entry selects, get `DEFAULT`: the same configuration, shared by every proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.type.v3 import hash_policy_pb2
from google.protobuf import duration_pb2

from zonemesh.config import parse_duration
from zonemesh.resources.base import Resource
from zonemesh.resources.types.mlbs import (
    HashPolicy,
    LBDefault,
    MeshLoadBalancingStrategySpec,
    ToRule,
    percentage_value,
)
from zonemesh.translate.policies.matching import (
    Destination,
    merge_patch,
    ordered,
    selects_destination,
    selects_proxy,
    tag_values,
    to_rank,
)
from zonemesh.translate.resilience import OVERPROVISIONING_FACTOR
from zonemesh.translate.state import MeshState

ACTIVE_REQUEST_BIAS_RUNTIME_KEY = "upstream.zonemesh.least_request.active_request_bias"

# --- the resolved configuration ----------------------------------------------------------


@dataclass(frozen=True)
class ZoneRule:
    """One `crossZone.failover` rule that applies to this zone: the zones it admits."""

    priority: int
    type: str  # Any | Only | AnyExcept | None
    zones: frozenset[str] = frozenset()

    def admits(self, zone: str) -> bool:
        if self.type == "Any":
            return True
        if self.type == "Only":
            return zone in self.zones
        if self.type == "AnyExcept":
            return zone not in self.zones
        return False


@dataclass(frozen=True)
class AffinityGroup:
    """Local endpoints whose tag `key` equals the client's `value` share `weight`."""

    key: str
    value: str
    weight: int

    @property
    def sub_zone(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class LocalityPolicy:
    """Where each endpoint goes: priorities, sub-zones, locality weights."""

    aware: bool = True  # False: `disabled`, other zones share priority 0
    by_rules: bool = False  # localZone or crossZone set: the rules lay endpoints out
    affinity: tuple[AffinityGroup, ...] = ()
    weighted: bool = False  # locality-weighted load balancing (affinity tags configured)
    failover: tuple[ZoneRule, ...] = ()
    overprovisioning_factor: int = OVERPROVISIONING_FACTOR

    def remote_priority(self, zone: str) -> int | None:
        """The priority of another zone's endpoints, None for no traffic at all."""
        if not self.by_rules:
            return 1 if self.aware else 0
        for rule in self.failover:
            if rule.admits(zone):
                return rule.priority
        return None

    def local_locality(self, tags: Mapping[str, str]) -> tuple[str, int]:
        """(sub-zone, locality weight) of a local endpoint with these tags."""
        for group in self.affinity:
            if tags.get(group.key) == group.value:
                return group.sub_zone, group.weight
        return "", 1


@dataclass(frozen=True)
class Balancer:
    """`loadBalancer`, flattened: the algorithm and the options it takes."""

    type: str
    choice_count: int | None = None
    active_request_bias: float | None = None
    hash_function: str | None = None
    min_ring_size: int | None = None
    max_ring_size: int | None = None
    table_size: int | None = None


@dataclass(frozen=True)
class RequestHash:
    """One hash policy: what consistent hashing (RingHash, Maglev) hashes."""

    type: str  # Header | Cookie | Connection | QueryParameter | FilterState
    terminal: bool = False
    name: str = ""  # header, cookie or query parameter name
    key: str = ""  # filter state key
    source_ip: bool = False
    cookie_path: str = ""
    cookie_ttl_ms: int | None = None


@dataclass(frozen=True)
class LbConf:
    """Everything MeshLoadBalancingStrategy decides for one (proxy, destination)."""

    locality: LocalityPolicy = field(default_factory=LocalityPolicy)
    balancer: Balancer | None = None
    hashes: tuple[RequestHash, ...] = ()


DEFAULT = LbConf()


# --- resolution ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ProxyPolicies:
    """The MeshLoadBalancingStrategies that select one proxy, ready to resolve per destination.

    `key` determines every `conf_for` answer within a state (the policies, in merge order, and
    the client's values of the affinity tags they name): proxies with the same key share
    their generated clusters. `()` when no policy selects the proxy."""

    key: tuple[Any, ...] = ()
    entries: tuple[ToRule, ...] = ()
    affinity_values: tuple[tuple[str, str], ...] = ()

    def conf_for(self, state: MeshState, destination: Destination) -> LbConf:
        if not self.entries:
            return DEFAULT
        return state.memo(
            ("mlbs.conf", self.key, destination.key), lambda: self._resolve(state, destination)
        )

    def _resolve(self, state: MeshState, destination: Destination) -> LbConf:
        merged: dict[str, Any] = {}
        applicable = [e for e in self.entries if selects_destination(e.target_ref, destination)]
        if not applicable:
            return DEFAULT
        for entry in applicable:
            merged = merge_patch(merged, entry.default.to_wire())
        return resolve_conf(
            LBDefault.model_validate(merged), dict(self.affinity_values), state.zone
        )


NO_POLICIES = ProxyPolicies()


def mesh_policies(state: MeshState, mesh: str) -> list[Resource]:
    """The mesh's MeshLoadBalancingStrategies in merge order (least specific first)."""

    def build() -> list[Resource]:
        found = [p for k, p in state.mesh_load_balancing_strategies.items() if k.mesh == mesh]
        return ordered(sorted(found, key=lambda p: p.key))

    return state.memo(("mlbs.mesh_policies", mesh), build)


def policies_for(state: MeshState, dataplane: Resource) -> ProxyPolicies:
    """The policies selecting `dataplane`, merged in Kuma's order (see `matching`)."""
    candidates = mesh_policies(state, dataplane.mesh)
    if not candidates:
        return NO_POLICIES
    matched = tuple(
        p
        for p in candidates
        if isinstance(p.spec, MeshLoadBalancingStrategySpec)
        and selects_proxy(p.spec.target_ref, dataplane)
    )
    if not matched:
        return NO_POLICIES
    keys = tuple(p.key for p in matched)
    entries = state.memo(("mlbs.entries", keys), lambda: _entries(matched))
    values = _affinity_values(dataplane, entries)
    return ProxyPolicies(key=(keys, values), entries=entries, affinity_values=values)


def _entries(policies: tuple[Resource, ...]) -> tuple[ToRule, ...]:
    concatenated: list[ToRule] = []
    for policy in policies:
        spec = policy.spec
        assert isinstance(spec, MeshLoadBalancingStrategySpec)
        concatenated.extend(spec.to)
    return tuple(sorted(concatenated, key=lambda e: to_rank(e.target_ref)))  # stable


def _affinity_values(
    dataplane: Resource, entries: tuple[ToRule, ...]
) -> tuple[tuple[str, str], ...]:
    """The client's value of every affinity tag key the entries name: its inbound tags first
    (the smallest value if its inbounds disagree), else its labels."""
    keys = sorted(
        {
            tag.key
            for entry in entries
            for tag in _affinity_tags(entry.default)
            if tag.key  # validated non-empty; guards a merged result
        }
    )
    if not keys:
        return ()
    values = tag_values(dataplane)
    found = []
    for key in keys:
        if values.get(key):
            found.append((key, min(values[key])))
        elif key in dataplane.labels:
            found.append((key, dataplane.labels[key]))
    return tuple(found)


def _affinity_tags(default: LBDefault) -> list[Any]:
    la = default.locality_awareness
    if la is None or la.local_zone is None:
        return []
    return list(la.local_zone.affinity_tags or [])


def resolve_conf(default: LBDefault, client: Mapping[str, str], local_zone: str) -> LbConf:
    """The merged `default` as Envoy-facing decisions, for a client in `local_zone`."""
    return LbConf(
        locality=_locality(default, client, local_zone),
        balancer=_balancer(default),
        hashes=tuple(_request_hash(p) for p in _hash_policies(default)),
    )


def _locality(default: LBDefault, client: Mapping[str, str], local_zone: str) -> LocalityPolicy:
    la = default.locality_awareness
    if la is None:
        return LocalityPolicy()
    aware = not la.disabled
    if la.local_zone is None and la.cross_zone is None:
        return LocalityPolicy(aware=aware)
    tags = _affinity_tags(default)
    affinity = []
    for i, tag in enumerate(tags):
        weight = tag.weight if tag.weight is not None else 9 * 10 ** (len(tags) - i - 1)
        value = client.get(tag.key)
        if value is not None:
            affinity.append(AffinityGroup(tag.key, value, weight))
    rules = []
    factor = OVERPROVISIONING_FACTOR
    if la.cross_zone is not None:
        for i, failover in enumerate(la.cross_zone.failover or []):
            if failover.from_ is not None and local_zone not in failover.from_.zones:
                continue  # the rule is not for this zone; its index still counts
            zones = frozenset(failover.to.zones or ())
            rules.append(ZoneRule(priority=i + 1, type=failover.to.type, zones=zones))
        threshold = la.cross_zone.failover_threshold
        if threshold is not None:
            pct = percentage_value(threshold.percentage)
            if pct:  # validated to (0, 100]
                factor = int(100 / pct) * 100
    return LocalityPolicy(
        aware=aware,
        by_rules=True,
        affinity=tuple(affinity),
        weighted=bool(tags),
        failover=tuple(rules),
        overprovisioning_factor=factor,
    )


def _balancer(default: LBDefault) -> Balancer | None:
    lb = default.load_balancer
    if lb is None:
        return None
    if lb.type == "LeastRequest" and lb.least_request is not None:
        bias = lb.least_request.active_request_bias
        return Balancer(
            lb.type,
            choice_count=lb.least_request.choice_count,
            active_request_bias=None if bias is None else percentage_value(bias),
        )
    if lb.type == "RingHash" and lb.ring_hash is not None:
        rh = lb.ring_hash
        return Balancer(
            lb.type,
            hash_function=rh.hash_function,
            min_ring_size=rh.min_ring_size,
            max_ring_size=rh.max_ring_size,
        )
    if lb.type == "Maglev" and lb.maglev is not None:
        return Balancer(lb.type, table_size=lb.maglev.table_size)
    return Balancer(lb.type)


def _hash_policies(default: LBDefault) -> list[HashPolicy]:
    """Top-level `hashPolicies` win over those inside RingHash/Maglev (Kuma's rule)."""
    if default.hash_policies is not None:
        return default.hash_policies
    lb = default.load_balancer
    if lb is None:
        return []
    if lb.type == "RingHash" and lb.ring_hash is not None:
        return lb.ring_hash.hash_policies or []
    if lb.type == "Maglev" and lb.maglev is not None:
        return lb.maglev.hash_policies or []
    return []


def _request_hash(policy: HashPolicy) -> RequestHash:
    terminal = bool(policy.terminal)
    if policy.type == "Header" and policy.header is not None:
        return RequestHash(policy.type, terminal, name=policy.header.name)
    if policy.type == "QueryParameter" and policy.query_parameter is not None:
        return RequestHash(policy.type, terminal, name=policy.query_parameter.name)
    if policy.type == "FilterState" and policy.filter_state is not None:
        return RequestHash(policy.type, terminal, key=policy.filter_state.key)
    if policy.type == "Connection" and policy.connection is not None:
        return RequestHash(policy.type, terminal, source_ip=bool(policy.connection.source_ip))
    if policy.type == "Cookie" and policy.cookie is not None:
        cookie = policy.cookie
        ttl = None
        if cookie.ttl is not None:
            ttl = int(parse_duration(cookie.ttl).total_seconds() * 1000)
        return RequestHash(
            policy.type,
            terminal,
            name=cookie.name,
            cookie_path=cookie.path or "",
            cookie_ttl_ms=ttl,
        )
    return RequestHash(policy.type, terminal)


# --- Envoy ----------------------------------------------------------------------------------

_LB_POLICY = {
    "RoundRobin": cluster_pb2.Cluster.ROUND_ROBIN,
    "LeastRequest": cluster_pb2.Cluster.LEAST_REQUEST,
    "Random": cluster_pb2.Cluster.RANDOM,
    "RingHash": cluster_pb2.Cluster.RING_HASH,
    "Maglev": cluster_pb2.Cluster.MAGLEV,
}
_HASH_FUNCTION = {
    "XXHash": cluster_pb2.Cluster.RingHashLbConfig.XX_HASH,
    "MurmurHash2": cluster_pb2.Cluster.RingHashLbConfig.MURMUR_HASH_2,
}


def configure_cluster(cluster: cluster_pb2.Cluster, conf: LbConf) -> None:
    """The load balancer, and locality-weighted balancing when affinity tags are set."""
    if conf.locality.weighted:
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    balancer = conf.balancer
    if balancer is None:
        return
    cluster.lb_policy = _LB_POLICY[balancer.type]
    if balancer.type == "LeastRequest":
        config = cluster.least_request_lb_config
        config.SetInParent()
        if balancer.choice_count is not None:
            config.choice_count.value = balancer.choice_count
        if balancer.active_request_bias is not None:
            config.active_request_bias.CopyFrom(
                base_pb2.RuntimeDouble(
                    default_value=balancer.active_request_bias,
                    runtime_key=ACTIVE_REQUEST_BIAS_RUNTIME_KEY,
                )
            )
    elif balancer.type == "RingHash":
        ring = cluster.ring_hash_lb_config
        ring.SetInParent()
        if balancer.hash_function is not None:
            ring.hash_function = _HASH_FUNCTION[balancer.hash_function]
        if balancer.min_ring_size is not None:
            ring.minimum_ring_size.value = balancer.min_ring_size
        if balancer.max_ring_size is not None:
            ring.maximum_ring_size.value = balancer.max_ring_size
    elif balancer.type == "Maglev":
        maglev = cluster.maglev_lb_config
        maglev.SetInParent()
        if balancer.table_size is not None:
            maglev.table_size.value = balancer.table_size


def route_hash_policies(
    hashes: tuple[RequestHash, ...],
) -> list[route_components_pb2.RouteAction.HashPolicy]:
    """The hash policies of an HTTP route."""
    out = []
    for h in hashes:
        policy = route_components_pb2.RouteAction.HashPolicy(terminal=h.terminal)
        if h.type == "Header":
            policy.header.header_name = h.name
        elif h.type == "Cookie":
            policy.cookie.name = h.name
            policy.cookie.path = h.cookie_path
            if h.cookie_ttl_ms is not None:
                policy.cookie.ttl.CopyFrom(_duration_ms(h.cookie_ttl_ms))
        elif h.type == "Connection":
            policy.connection_properties.source_ip = h.source_ip
        elif h.type == "QueryParameter":
            policy.query_parameter.name = h.name
        elif h.type == "FilterState":
            policy.filter_state.key = h.key
        else:
            continue
        out.append(policy)
    return out


def tcp_hash_policies(hashes: tuple[RequestHash, ...]) -> list[hash_policy_pb2.HashPolicy]:
    """What a tcp_proxy can hash on: the source IP and filter state (the rest is HTTP)."""
    out = []
    for h in hashes:
        if h.type == "Connection" and h.source_ip:
            out.append(hash_policy_pb2.HashPolicy(source_ip=hash_policy_pb2.HashPolicy.SourceIp()))
        elif h.type == "FilterState":
            out.append(
                hash_policy_pb2.HashPolicy(
                    filter_state=hash_policy_pb2.HashPolicy.FilterState(key=h.key)
                )
            )
    return out[:1]  # tcp_proxy takes at most one


def _duration_ms(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)
