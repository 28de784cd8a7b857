"""MeshLoadBalancingStrategy: locality awareness and cross-zone failover for destinations."""

from __future__ import annotations

from typing import Any

from pydantic import Field

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
    percentage: int | str


class CrossZone(Model):
    failover: list[Failover] | None = None
    failover_threshold: FailoverThreshold | None = None


class LocalityAwareness(Model):
    disabled: bool | None = None
    local_zone: LocalZone | None = None
    cross_zone: CrossZone | None = None


class LBDefault(Model):
    locality_awareness: LocalityAwareness | None = None
    load_balancer: dict[str, Any] | None = None
    hash_policies: list[dict[str, Any]] | None = None


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
            rpath = f"{path}.to[{i}]"
            ref = rule.target_ref
            ref.validate_semantics(f"{rpath}.targetRef", errors)
            if ref.kind not in TO_TARGET_KINDS:
                errors.add(f"{rpath}.targetRef.kind", "value is not supported: " + ref.kind)
            elif ref.kind != "Mesh" and not ref.name and not ref.labels:
                errors.add(f"{rpath}.targetRef.name", "must be set with kind " + ref.kind)
            la = rule.default.locality_awareness
            if la is None or la.cross_zone is None:
                continue
            cz_path = f"{rpath}.default.localityAwareness.crossZone"
            if ref.kind == "MeshService" and (ref.section_name or ref.labels):
                errors.add(cz_path, "must not be set: MeshService traffic is local")
            for j, failover in enumerate(la.cross_zone.failover or []):
                _validate_failover_to(failover.to, f"{cz_path}.failover[{j}].to", errors)
                for k, zone in enumerate(failover.from_.zones if failover.from_ else []):
                    identifiers.check_resource_name(
                        zone, f"{cz_path}.failover[{j}].from.zones[{k}]", errors
                    )
            threshold = la.cross_zone.failover_threshold
            if threshold is not None:
                _validate_percentage(
                    threshold.percentage, f"{cz_path}.failoverThreshold.percentage", errors
                )
            if la.local_zone is not None:
                for j, tag in enumerate(la.local_zone.affinity_tags or []):
                    tpath = f"{rpath}.default.localityAwareness.localZone.affinityTags[{j}]"
                    identifiers.check_tag_name(tag.key, f"{tpath}.key", errors)
                    if tag.weight is not None and tag.weight <= 0:
                        errors.add(f"{tpath}.weight", "must be greater than 0")


def _validate_failover_to(to: FailoverTo, path: str, errors: Violations) -> None:
    if to.type not in FAILOVER_TYPES:
        errors.add(f"{path}.type", "unrecognized type")
    elif to.type in ("Any", "None") and to.zones:
        errors.add(f"{path}.zones", f"must be empty when type is {to.type}")
    elif to.type in ("Only", "AnyExcept") and not to.zones:
        errors.add(f"{path}.zones", f"must not be empty when type is {to.type}")
    for i, zone in enumerate(to.zones or []):
        identifiers.check_resource_name(zone, f"{path}.zones[{i}]", errors)


def _validate_percentage(value: int | str, path: str, errors: Violations) -> None:
    try:
        pct = float(value)
    except ValueError:
        errors.add(path, "must be a number")
        return
    if not 0 < pct <= 100:
        errors.add(path, "must be greater than 0 and at most 100")
