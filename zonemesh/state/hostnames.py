"""Hostnames for MeshServices and MeshMultiZoneServices, from the HostnameGenerators.

Each generator selects resources of one kind by labels and renders its template for each.
A result that is not a DNS name, a template that fails, or a hostname already held by another
resource of the same mesh becomes a condition in the resource's status instead of an address.
Among resources competing for one hostname the oldest keeps it, so a newcomer cannot take a
name clients already use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.hostname_template import TemplateContext, TemplateError, parse_template
from zonemesh.resources.ownership import display_name, zone_of
from zonemesh.resources.registry import MESH_MULTI_ZONE_SERVICE, MESH_SERVICE
from zonemesh.resources.types.common import (
    Address,
    Condition,
    HostnameGeneratorRef,
    HostnameGeneratorStatus,
    LabelSelector,
    is_dns_name,
)
from zonemesh.resources.types.hostnamegenerator import HostnameGeneratorSpec

NAMESPACE_LABEL = "k8s.kuma.io/namespace"
ORIGIN_GENERATOR = "HostnameGenerator"

CONDITION_GENERATED = "Generated"
REASON_GENERATED = "Generated"
REASON_INVALID_HOSTNAME = "InvalidHostname"
REASON_TEMPLATE_ERROR = "TemplateError"
REASON_COLLISION = "Collision"


@dataclass
class Hostnames:
    """What one resource gets: addresses, and one status entry per generator selecting it."""

    addresses: list[Address] = field(default_factory=list)
    generators: list[HostnameGeneratorStatus] = field(default_factory=list)


def matches(selector: LabelSelector | None, resource_labels: Mapping[str, str]) -> bool:
    """Every matchLabels pair equals a label; an empty selector selects everything."""
    if selector is None:
        return False
    wanted = selector.match_labels or {}
    return all(resource_labels.get(k) == v for k, v in wanted.items())


def _context(resource: Resource, local_zone: str) -> TemplateContext:
    return TemplateContext(
        name=resource.name,
        display_name=display_name(resource),
        zone=zone_of(resource, local_zone),
        mesh=resource.mesh,
        namespace=resource.labels.get(NAMESPACE_LABEL, ""),
        labels=resource.labels,
    )


def _selector(spec: HostnameGeneratorSpec, kind: str) -> LabelSelector | None:
    if kind == MESH_SERVICE.name:
        return spec.selector.mesh_service
    if kind == MESH_MULTI_ZONE_SERVICE.name:
        return spec.selector.mesh_multi_zone_service
    return None


def _condition(ok: bool, reason: str, message: str) -> Condition:
    return Condition.model_construct(
        type=CONDITION_GENERATED, status="True" if ok else "False", reason=reason, message=message
    )


_GENERATED = _condition(True, REASON_GENERATED, "")


@dataclass
class _Claim:
    rank: int
    resource: Resource
    generator: str
    hostname: str


def compute_hostnames(
    generators: Iterable[Resource], resources: Iterable[Resource], local_zone: str
) -> dict[ResourceKey, Hostnames]:
    """Hostnames for every resource (MeshService or MeshMultiZoneService) given."""
    gens = sorted(
        (g for g in generators if isinstance(g.spec, HostnameGeneratorSpec)), key=lambda g: g.name
    )
    ordered = [(r.key, r) for r in sorted(resources, key=_age)]  # oldest first wins collisions
    out: dict[ResourceKey, Hostnames] = {key: Hostnames() for key, _ in ordered}
    # Per (resource, generator): the outcome, as the condition to report.
    outcome: dict[tuple[ResourceKey, str], Condition] = {}
    claims: list[_Claim] = []
    for gen in gens:
        spec = gen.spec
        assert isinstance(spec, HostnameGeneratorSpec)
        try:
            template, parse_error = parse_template(spec.template), ""
        except TemplateError as e:
            template, parse_error = None, str(e)
        for rank, (key, resource) in enumerate(ordered):
            if not matches(_selector(spec, resource.type), resource.labels):
                continue
            if template is None:
                outcome[(key, gen.name)] = _condition(
                    False, REASON_TEMPLATE_ERROR, f"could not parse template: {parse_error}"
                )
                continue
            try:
                hostname = template.render(_context(resource, local_zone))
            except TemplateError as e:
                outcome[(key, gen.name)] = _condition(False, REASON_TEMPLATE_ERROR, str(e))
                continue
            if not is_dns_name(hostname):
                outcome[(key, gen.name)] = _condition(
                    False,
                    REASON_INVALID_HOSTNAME,
                    f'generated hostname "{hostname}" is not a valid DNS name',
                )
                continue
            claims.append(_Claim(rank, resource, gen.name, hostname))

    refs = {g.name: HostnameGeneratorRef.model_construct(core_name=g.name) for g in gens}
    owners: dict[tuple[str, str], tuple[ResourceKey, Resource]] = {}
    claims.sort(key=lambda c: c.rank)  # stable: generator order kept within a resource
    for claim in claims:
        key, res = ordered[claim.rank]
        owner_key, owner = owners.setdefault((res.mesh, claim.hostname), (key, res))
        if owner_key != key:
            outcome[(key, claim.generator)] = _condition(
                False,
                REASON_COLLISION,
                f'hostname "{claim.hostname}" is already used by {owner.type} {owner.name}',
            )
            continue
        entry = out[key]
        if all(a.hostname != claim.hostname for a in entry.addresses):
            entry.addresses.append(
                Address.model_construct(
                    hostname=claim.hostname,
                    origin=ORIGIN_GENERATOR,
                    hostname_generator_ref=refs[claim.generator],
                )
            )
        outcome[(key, claim.generator)] = _GENERATED

    generated = {
        name: HostnameGeneratorStatus.model_construct(
            hostname_generator_ref=ref, conditions=[_GENERATED]
        )
        for name, ref in refs.items()
    }
    for gen in gens:  # generator order, so statuses read the same way every time
        for key, _ in ordered:
            cond = outcome.get((key, gen.name))
            if cond is None:
                continue
            out[key].generators.append(
                generated[gen.name]
                if cond is _GENERATED
                else HostnameGeneratorStatus.model_construct(
                    hostname_generator_ref=refs[gen.name], conditions=[cond]
                )
            )
    return out


def _age(resource: Resource) -> tuple[int, float, str, ResourceKey]:
    created = resource.creation_time
    stamp = created.timestamp() if created else 0.0
    return (0 if created else 1, stamp, resource.type, resource.key)
