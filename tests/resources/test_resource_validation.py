"""Validation of resources as a user applies them: every message names the field, as Kuma does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from zonemesh.resources.codec import (
    ParseError,
    parse_documents,
    resource_from_wire,
    resource_to_wire,
)
from zonemesh.resources.errors import ValidationError

SEEDS = Path(__file__).parent.parent / "fixtures" / "seeds"


def mmzs(**spec: Any) -> dict[str, Any]:
    base = {
        "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
        "ports": [{"port": 1027, "appProtocol": "http"}],
    }
    base.update(spec)
    return {"type": "MeshMultiZoneService", "name": "echo", "mesh": "default", "spec": base}


def dataplane(**networking: Any) -> dict[str, Any]:
    net = {
        "address": "127.0.1.11",
        "inbound": [
            {
                "port": 21027,
                "servicePort": 1027,
                "tags": {"kuma.io/service": "echo", "kuma.io/protocol": "http"},
            }
        ],
    }
    net.update(networking)
    return {"type": "Dataplane", "name": "echo-z1-a", "mesh": "default", "networking": net}


def violations(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        resource_from_wire(doc)
    return [str(v) for v in info.value.violations]


@pytest.mark.parametrize("path", sorted(SEEDS.glob("*.yaml")), ids=lambda p: p.stem)
def test_seed_examples_are_valid_as_written(path: Path) -> None:
    for doc in parse_documents(path.read_text(), source=path.name):
        resource = resource_from_wire(doc)
        assert resource.type == "MeshMultiZoneService"
        assert resource.spec.ports[0].port > 0


def test_seed_port_without_app_protocol_defaults_to_tcp() -> None:
    (doc,) = parse_documents((SEEDS / "echo-mmzs.yaml").read_text())
    assert resource_from_wire(doc).spec.ports[0].app_protocol == "tcp"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"ports": []}, "spec.ports: cannot be empty"),
        (
            {"selector": {"meshService": {"matchLabels": {}}}},
            "spec.selector.meshService.matchLabels: cannot be empty",
        ),
        (
            {"ports": [{"port": 1027, "appProtocol": "udp"}]},
            "spec.ports[0].appProtocol: appProtocol must be one of: grpc, http, http2, tcp",
        ),
        ({"ports": [{"port": 1027, "name": ""}]}, "spec.ports[0].name: must not be empty"),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port: must be in inclusive range [1, 65535]"),
        (
            {"ports": [{"port": 80}, {"port": 65536}]},
            "spec.ports[1].port: must be in inclusive range [1, 65535]",
        ),
    ],
)
def test_mmzs_messages_follow_kuma(spec: dict[str, Any], expected: str) -> None:
    assert violations(mmzs(**spec)) == [expected]


def test_all_semantic_violations_are_reported_together() -> None:
    doc = mmzs(selector={"meshService": {"matchLabels": {}}}, ports=[])
    assert violations(doc) == [
        "spec.selector.meshService.matchLabels: cannot be empty",
        "spec.ports: cannot be empty",
    ]


def test_unknown_fields_are_rejected_by_name() -> None:
    assert violations(mmzs(portz=[])) == ["spec.portz: unknown field"]
    doc = mmzs()
    doc["spec"]["ports"][0]["protocol"] = "http"
    assert violations(doc) == ["spec.ports[0].protocol: unknown field"]
    doc = mmzs()
    doc["metadata"] = {}
    assert violations(doc) == ["metadata: unknown field"]


def test_wrong_types_name_the_field() -> None:
    assert violations(mmzs(ports=[{"port": "eighty"}])) == [
        "spec.ports[0].port: must be an integer"
    ]
    assert violations(mmzs(ports="1027")) == ["spec.ports: must be an array"]
    assert violations(mmzs(selector=None)) == ["spec.selector: must be an object"]


def test_envelope_errors() -> None:
    assert violations({"name": "x"}) == ["type: must be defined"]
    (err,) = violations({"type": "Widget", "name": "x"})
    assert err.startswith('type: unknown resource type "Widget"')
    doc = mmzs()
    del doc["mesh"]
    assert violations(doc) == ["mesh: cannot be empty"]
    doc = mmzs()
    doc["name"] = "Echo!"
    assert violations(doc)[0].startswith("name: invalid name")
    assert violations({"type": "Mesh", "name": "m", "mesh": "default"}) == [
        "mesh: must be empty: Mesh is not scoped to a mesh"
    ]
    assert violations({**mmzs(), "labels": {"a": 1}}) == ['labels["a"]: must be a string']
    assert violations({**mmzs(), "labels": False}) == [
        "labels: must be a map of strings to strings"
    ]


def test_read_only_fields_from_a_get_are_accepted_back() -> None:
    doc = {
        **mmzs(),
        "creationTime": "2026-01-01T00:00:00Z",
        "status": {"vips": [{"ip": "243.0.0.1"}]},
    }
    resource = resource_from_wire(doc)
    assert resource.status is None  # users do not write status


def test_dataplane_from_the_contract_round_trips() -> None:
    doc = dataplane(
        outbound=[
            {
                "port": 11027,
                "address": "127.0.1.50",
                "backendRef": {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027},
            }
        ]
    )
    resource = resource_from_wire(doc)
    inbound = resource.spec.networking.inbound[0]
    assert (inbound.service, inbound.protocol, inbound.effective_service_port) == (
        "echo",
        "http",
        1027,
    )
    wire = resource_to_wire(resource)
    assert wire["networking"]["outbound"][0]["backendRef"]["kind"] == "MeshMultiZoneService"
    assert "spec" not in wire  # legacy types are flat
    assert resource_from_wire(wire).spec == resource.spec


def test_outbound_address_defaults_to_loopback() -> None:
    doc = dataplane(
        outbound=[{"port": 11027, "backendRef": {"kind": "MeshService", "name": "a", "port": 80}}]
    )
    assert resource_from_wire(doc).spec.networking.outbound[0].address == "127.0.0.1"


@pytest.mark.parametrize(
    ("networking", "expected"),
    [
        ({"address": ""}, "networking.address: cannot be empty"),
        ({"inbound": []}, "networking: has to contain at least one inbound interface or gateway"),
        (
            {"inbound": [{"port": 70000, "tags": {"kuma.io/service": "echo"}}]},
            "networking.inbound[0].port: must be in inclusive range [1, 65535]",
        ),
        (
            {"inbound": [{"port": 8080, "tags": {}}]},
            'networking.inbound[0].tags["kuma.io/service"]: tag has to exist',
        ),
        (
            {
                "inbound": [
                    {"port": 8080, "tags": {"kuma.io/service": "a", "kuma.io/protocol": "udp"}}
                ]
            },
            'networking.inbound[0].tags["kuma.io/protocol"]: tag has to be one of: grpc, http, http2, kafka, tcp',
        ),
        (
            {"outbound": [{"port": 1, "backendRef": {"kind": "Service", "name": "a", "port": 80}}]},
            "networking.outbound[0].backendRef.kind: must be one of: MeshService, MeshMultiZoneService, MeshExternalService",
        ),
        (
            {"outbound": [{"port": 1, "backendRef": {"kind": "MeshService", "name": "a"}}]},
            "networking.outbound[0].backendRef.port: must be defined",
        ),
        (
            {"outbound": [{"port": 1}]},
            "networking.outbound[0]: either backendRef or tags has to be defined",
        ),
        (
            {
                "outbound": [
                    {"port": 9000, "backendRef": {"kind": "MeshService", "name": "a", "port": 80}},
                    {"port": 9000, "backendRef": {"kind": "MeshService", "name": "b", "port": 80}},
                ]
            },
            "networking.outbound[1].port: port collides with outbound[0]",
        ),
    ],
)
def test_dataplane_messages(networking: dict[str, Any], expected: str) -> None:
    assert expected in violations(dataplane(**networking))


def test_zone_ingress_needs_both_advertised_fields() -> None:
    doc = {
        "type": "ZoneIngress",
        "name": "ingress-z1",
        "networking": {"address": "127.0.1.100", "port": 10001, "advertisedAddress": "127.0.1.100"},
    }
    assert violations(doc) == [
        "networking.advertisedAddress: advertisedAddress and advertisedPort have to be set together"
    ]
    doc["networking"]["advertisedPort"] = 10001
    assert resource_from_wire(doc).spec.networking.has_public_address


def mlbs(
    failover: list[dict[str, Any]], kind: str = "MeshMultiZoneService", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "MeshLoadBalancingStrategy",
        "name": "lb",
        "mesh": "default",
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [
                {
                    "targetRef": {"kind": kind, "name": "echo", **extra},
                    "default": {"localityAwareness": {"crossZone": {"failover": failover}}},
                }
            ],
        },
    }


def test_mlbs_failover_rules() -> None:
    path = "spec.to[0].default.localityAwareness.crossZone.failover[0].to"
    assert violations(mlbs([{"to": {"type": "Only"}}])) == [
        f"{path}.zones: must not be empty when type is Only"
    ]
    assert violations(mlbs([{"to": {"type": "Any", "zones": ["z"]}}])) == [
        f"{path}.zones: must be empty when type is Any"
    ]
    assert violations(mlbs([{"to": {"type": "Some"}}])) == [f"{path}.type: unrecognized type"]
    assert violations(mlbs([{"to": {"type": "Any"}}], kind="MeshService", sectionName="http")) == [
        "spec.to[0].default.localityAwareness.crossZone: must not be set: MeshService traffic is local"
    ]
    ok = resource_from_wire(
        mlbs([{"from": {"zones": ["zone1"]}, "to": {"type": "Only", "zones": ["zone2"]}}])
    )
    failover = ok.spec.to[0].default.locality_awareness.cross_zone.failover[0]
    assert failover.from_.zones == ["zone1"]
    assert resource_to_wire(ok)["spec"]["to"][0]["default"]["localityAwareness"]["crossZone"][
        "failover"
    ][0]["from"] == {"zones": ["zone1"]}


def test_malformed_text_is_a_parse_error_naming_the_source() -> None:
    with pytest.raises(ParseError) as info:
        parse_documents("type: Mesh\nname: [unclosed", source="mesh.yaml")
    assert str(info.value).startswith("mesh.yaml: could not parse")
    with pytest.raises(ParseError, match="document 2 is not an object"):
        parse_documents("type: Mesh\nname: a\n---\n- 1\n")
    with pytest.raises(ParseError, match="could not parse"):
        parse_documents('{"type": "Mesh",')


def test_json_and_multi_document_yaml() -> None:
    assert [
        d["name"]
        for d in parse_documents('[{"type":"Mesh","name":"a"},{"type":"Mesh","name":"b"}]')
    ] == ["a", "b"]
    text = yaml.safe_dump_all([{"type": "Mesh", "name": "a"}, None, {"type": "Mesh", "name": "b"}])
    assert [d["name"] for d in parse_documents(text)] == ["a", "b"]
