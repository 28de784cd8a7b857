"""MeshLoadBalancingStrategy validation: Kuma's messages, each naming the offending field."""

from __future__ import annotations

from typing import Any

import pytest

from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.errors import ValidationError

DEFAULT = "spec.to[0].default"


def policy(default: dict[str, Any], kind: str = "MeshMultiZoneService") -> dict[str, Any]:
    return {
        "type": "MeshLoadBalancingStrategy",
        "name": "lb",
        "mesh": "default",
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": kind, "name": "echo"}, "default": default}],
        },
    }


def violations(default: dict[str, Any], kind: str = "MeshMultiZoneService") -> list[str]:
    with pytest.raises(ValidationError) as info:
        resource_from_wire(policy(default, kind))
    return [str(v) for v in info.value.violations]


def lb(kind: str, **options: Any) -> dict[str, Any]:
    return {"loadBalancer": {"type": kind, **options}}


@pytest.mark.parametrize(
    ("default", "expected"),
    [
        (
            {
                "localityAwareness": {
                    "localZone": {"affinityTags": [{"key": "a", "weight": 1}, {"key": "b"}]}
                }
            },
            f"{DEFAULT}.localityAwareness.localZone.affinityTags: all or none affinity tags should have weight",
        ),
        (
            {"localityAwareness": {"localZone": {"affinityTags": [{"key": ""}]}}},
            f"{DEFAULT}.localityAwareness.localZone.affinityTags[0].key: must not be empty",
        ),
        (
            {"localityAwareness": {"localZone": {"affinityTags": [{"key": "a", "weight": 0}]}}},
            f"{DEFAULT}.localityAwareness.localZone.affinityTags[0].weight: must be greater than 0",
        ),
        (
            {
                "localityAwareness": {
                    "crossZone": {"failover": [{"from": {"zones": []}, "to": {"type": "Any"}}]}
                }
            },
            f"{DEFAULT}.localityAwareness.crossZone.failover[0].from.zones: must not be empty",
        ),
        (
            {"localityAwareness": {"crossZone": {"failoverThreshold": {"percentage": 0}}}},
            f"{DEFAULT}.localityAwareness.crossZone.failoverThreshold.percentage: "
            "must be greater than 0 and at most 100",
        ),
        (
            {"localityAwareness": {"crossZone": {"failoverThreshold": {"percentage": "lots"}}}},
            f"{DEFAULT}.localityAwareness.crossZone.failoverThreshold.percentage: must be a number",
        ),
        (
            lb("Fastest"),
            f"{DEFAULT}.loadBalancer.type: must be one of: RoundRobin, LeastRequest, RingHash, "
            "Random, Maglev",
        ),
        (
            lb("LeastRequest", leastRequest={"choiceCount": 1}),
            f"{DEFAULT}.loadBalancer.leastRequest.choiceCount: must be greater or equal 2",
        ),
        (
            lb("LeastRequest", leastRequest={"activeRequestBias": "-1"}),
            f"{DEFAULT}.loadBalancer.leastRequest.activeRequestBias: "
            "must be a number greater or equal 0",
        ),
        (
            lb("RingHash", ringHash={"hashFunction": "SHA1"}),
            f"{DEFAULT}.loadBalancer.ringHash.hashFunction: must be one of: XXHash, MurmurHash2",
        ),
        (
            lb("RingHash", ringHash={"minRingSize": 0}),
            f"{DEFAULT}.loadBalancer.ringHash.minRingSize: must be in inclusive range [1, 8000000]",
        ),
        (
            lb("RingHash", ringHash={"minRingSize": 2048, "maxRingSize": 1024}),
            f"{DEFAULT}.loadBalancer.ringHash.minRingSize: must not be greater than maxRingSize",
        ),
        (
            lb("Maglev", maglev={"tableSize": 1000}),
            f"{DEFAULT}.loadBalancer.maglev.tableSize: "
            "must be a prime number in inclusive range [1, 5000011]",
        ),
        (
            {"hashPolicies": [{"type": "Header"}]},
            f"{DEFAULT}.hashPolicies[0].header: must be defined",
        ),
        (
            {"hashPolicies": [{"type": "Cookie", "cookie": {"name": "c", "path": "rel"}}]},
            f"{DEFAULT}.hashPolicies[0].cookie.path: must be an absolute path",
        ),
        (
            {"hashPolicies": [{"type": "Cookie", "cookie": {"name": "c", "ttl": "soon"}}]},
            f"{DEFAULT}.hashPolicies[0].cookie.ttl: must be a duration such as 30s or 1h",
        ),
        (
            lb("RingHash", ringHash={"hashPolicies": [{"type": "Everything"}]}),
            f"{DEFAULT}.loadBalancer.ringHash.hashPolicies[0].type: unrecognized type",
        ),
    ],
)
def test_invalid_fields_are_named(default: dict[str, Any], expected: str) -> None:
    assert violations(default) == [expected]


def test_mesh_http_route_takes_only_hash_policies() -> None:
    assert violations(
        {**lb("Random"), "localityAwareness": {"disabled": True}}, "MeshHTTPRoute"
    ) == [
        f"{DEFAULT}.loadBalancer: field is not allowed when targetRef.kind is MeshHTTPRoute, "
        "only hashPolicies is supported",
        f"{DEFAULT}.localityAwareness: field is not allowed when targetRef.kind is MeshHTTPRoute, "
        "only hashPolicies is supported",
    ]


def test_unknown_field_is_refused() -> None:
    assert any(
        "loadBalancer.ringHash.ringSize" in v
        for v in violations(lb("RingHash", ringHash={"ringSize": 3}))
    )


def test_every_option_kuma_documents_is_accepted() -> None:
    hashes = [
        {"type": "Header", "header": {"name": "x-user"}, "terminal": True},
        {"type": "Cookie", "cookie": {"name": "session", "ttl": "1h30m", "path": "/"}},
        {"type": "Connection", "connection": {"sourceIP": True}},
        {"type": "QueryParameter", "queryParameter": {"name": "user"}},
        {"type": "FilterState", "filterState": {"key": "k"}},
    ]
    for default in (
        lb("RoundRobin", roundRobin={}),
        lb("Random", random={}),
        lb("LeastRequest", leastRequest={"choiceCount": 3, "activeRequestBias": "1.5"}),
        lb(
            "RingHash",
            ringHash={
                "hashFunction": "XXHash",
                "minRingSize": 1,
                "maxRingSize": 8000000,
                "hashPolicies": hashes,
            },
        ),
        lb("Maglev", maglev={"tableSize": 65537, "hashPolicies": hashes}),
        {
            "localityAwareness": {
                "disabled": False,
                "localZone": {
                    "affinityTags": [
                        {"key": "k8s.io/node", "weight": 9},
                        {"key": "k8s.io/az", "weight": 1},
                    ]
                },
                "crossZone": {
                    "failover": [
                        {
                            "from": {"zones": ["zone-1"]},
                            "to": {"type": "Only", "zones": ["zone-2"]},
                        },
                        {"to": {"type": "AnyExcept", "zones": ["zone-3"]}},
                        {"to": {"type": "Any"}},
                        {"to": {"type": "None"}},
                    ],
                    "failoverThreshold": {"percentage": "99.5"},
                },
            },
            "hashPolicies": hashes,
        },
    ):
        resource_from_wire(policy(default))
