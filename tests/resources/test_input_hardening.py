"""Bounded documents and the identifier rules, as `zonemesh apply`, `dp run` and the API read them.

The HTTP and ADS ends of the same attacks are in tests/api/test_api_hardening.py and
tests/xds/test_xds_input_hardening.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from zonemesh.resources.codec import (
    DocumentLimitError,
    ParseError,
    parse_documents,
    resource_from_wire,
)
from zonemesh.resources.documents import DocumentLimits, load_json, load_yaml_all
from zonemesh.resources.errors import ValidationError


def violations(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        resource_from_wire(doc)
    return [str(v) for v in info.value.violations]


def dataplane(tags: dict[str, Any] | None = None, **inbound: Any) -> dict[str, Any]:
    entry = {"port": 21027, "tags": tags if tags is not None else {"kuma.io/service": "echo"}}
    entry.update(inbound)
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": "dp-1",
        "networking": {"address": "127.0.1.11", "inbound": [entry]},
    }


def bomb(levels: int, fan_out: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(["x"] * fan_out) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


# --- documents -------------------------------------------------------------------------------


def test_billion_laughs_is_refused_before_anything_expands() -> None:
    text = bomb(9)  # 10**9 nodes once expanded
    started = time.monotonic()
    with pytest.raises(DocumentLimitError) as info:
        parse_documents(text, source="mesh.yaml")
    assert time.monotonic() - started < 1.0  # generous: the refusal reads the text once
    assert str(info.value) == "mesh.yaml: YAML aliases expand to more than 100000 nodes"
    assert isinstance(info.value, ParseError)


def test_aliases_within_the_bounds_still_work_and_count_with_multiplicity() -> None:
    (doc,) = load_yaml_all(bomb(3))
    assert doc["a2"][0][0][0] == "x" and len(doc["a2"]) == 10
    # a0: 1 + 10, a1: 1 + 10 * 11, a2: 1 + 10 * 111, plus the mapping and its three keys.
    assert load_yaml_all(bomb(3), limits=DocumentLimits(max_nodes=1237))
    with pytest.raises(DocumentLimitError, match="aliases expand to more than 1236 nodes"):
        load_yaml_all(bomb(3), limits=DocumentLimits(max_nodes=1236))


def test_aliases_count_for_depth_too() -> None:
    deep = "a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 10 + "*a" + "]" * 10 + "\n"
    with pytest.raises(DocumentLimitError, match="nested deeper than 64 levels"):
        load_yaml_all(deep)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "YAML alias *a is used inside the collection it names"),
        ("a: &a {b: {c: *a}}\n", "YAML alias *a is used inside the collection it names"),
        ("[" * 100_000, "document nested deeper than 64 levels"),
        ("{" * 70 + "}" * 70, "document nested deeper than 64 levels"),
        ("x:\n" + "".join("  " * (i + 1) + "- \n" for i in range(70)), "deeper than 64"),
    ],
)
def test_yaml_bounds_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(DocumentLimitError, match=message.replace("*", r"\*")):
        parse_documents(text, source="in")


@pytest.mark.parametrize(
    "text", ["[" * 100_000, '{"a": ' * 100_000, '[{"a": [' * 30 + "1" + "]}]" * 30]
)
def test_json_depth_is_checked_before_the_decoder_recurses(text: str) -> None:
    with pytest.raises(DocumentLimitError, match="document nested deeper than 64 levels"):
        parse_documents(text)


def test_brackets_inside_json_strings_do_not_count() -> None:
    text = '{"type": "Mesh", "name": "m", "x": "' + "[" * 500 + '\\"[[["}'
    assert parse_documents(text)[0]["x"].startswith("[[[")


def test_node_count_is_bounded_for_json_and_yaml() -> None:
    with pytest.raises(DocumentLimitError, match="document has more than 100000 nodes"):
        load_json("[" + ",".join(["1"] * 100_001) + "]")
    with pytest.raises(DocumentLimitError, match="document has more than 100000 nodes"):
        load_yaml_all("[" + ",".join(["1"] * 100_001) + "]")


def test_limits_apply_per_document_of_a_stream() -> None:
    one = "a: [" + ",".join(["1"] * 60_000) + "]\n"
    assert len(load_yaml_all(one + "---\n" + one)) == 2


@pytest.mark.parametrize(
    "text",
    [
        "x: *missing\n",
        "a: &a 1\nb: &a 2\n",
        "? [a]\n: b\n",
        "x: !!python/object:os.system {}\n",
        "x: !!binary aGk=\n",
        "<<: 1\n",
    ],
    ids=["undefined-alias", "duplicate-anchor", "unhashable", "python-tag", "binary", "bad-merge"],
)
def test_yaml_that_is_not_a_plain_document_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse"):
        parse_documents(text)


def test_plain_yaml_means_what_pyyaml_says_except_timestamps_stay_text() -> None:
    text = """
a: [1, 2.5, yes, No, ~, '3', 0x1f, '', null, -7]
when: 2026-01-01
base: &base {x: 1, y: 2}
merged: {<<: *base, y: 3}
several: {<<: [{x: 1}, {x: 2, z: 3}]}
block: |
  two
  lines
"""
    (doc,) = load_yaml_all(text)
    expected = yaml.safe_load(text)
    expected["when"] = "2026-01-01"
    assert doc == expected
    assert doc["merged"] == {"x": 1, "y": 3}
    assert doc["several"] == {"x": 1, "z": 3}


# --- strict types ----------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["2000", 2000.0, True, None])
def test_ports_are_integers_only(port: Any) -> None:
    reason = "must be defined" if port is None else "must be an integer"
    doc = dataplane(port=port) if port is not None else dataplane()
    if port is None:
        del doc["networking"]["inbound"][0]["port"]
    assert violations(doc) == [f"networking.inbound[0].port: {reason}"]


def test_mmzs_and_zone_ingress_ports_are_strict_too() -> None:
    mmzs = {
        "type": "MeshMultiZoneService",
        "name": "echo",
        "mesh": "default",
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
            "ports": [{"port": True}],
        },
    }
    assert violations(mmzs) == ["spec.ports[0].port: must be an integer"]
    ingress = {
        "type": "ZoneIngress",
        "name": "ingress",
        "networking": {"address": "127.0.1.100", "port": "10001"},
    }
    assert violations(ingress) == ["networking.port: must be an integer"]


def test_booleans_are_booleans() -> None:
    mesh = {"type": "Mesh", "name": "m", "routing": {"zoneEgress": "yes"}}
    assert violations(mesh) == ["routing.zoneEgress: must be a boolean"]


# --- identifiers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "ok"),
    [
        ({"kuma.io/origin": "zone", "team": "", "Team_1.x": "V-1_x.y"}, True),
        ({"k8s.kuma.io/namespace": "kuma-demo"}, True),
        ({"Kuma.io/x": "a"}, False),  # the prefix is a DNS subdomain: lower case
        ({"/x": "a"}, False),
        ({"kuma.io/": "a"}, False),
        ({"-x": "a"}, False),
        ({"x": "-a"}, False),
        ({"x" * 64: "a"}, False),
        ({"x": "a" * 64}, False),
        ({"kuma.io/display-name": "a" * 253}, True),
        ({"kuma.io/zone": "Zone1"}, False),  # holds a resource name
    ],
)
def test_label_rules(labels: dict[str, str], ok: bool) -> None:
    doc = {"type": "Mesh", "name": "m", "labels": labels}
    if ok:
        assert resource_from_wire(doc).labels == labels
    else:
        assert all(v.startswith("labels[") for v in violations(doc))


def test_long_keys_are_cut_short_in_messages() -> None:
    (message,) = violations({"type": "Mesh", "name": "m", "labels": {"k" * 5000: "v"}})
    assert len(message) < 300
    assert message.startswith('labels["' + "k" * 64 + '..."]: label key name must be at most 63')


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ({"kuma.io/service": "echo", "": "x"}, 'tags[""]'),
        ({"kuma.io/service": "echo", "v": "a b"}, 'tags["v"]'),
        ({"kuma.io/service": "echo", "v": "a" * 254}, 'tags["v"]'),
        ({"kuma.io/service": "echo", "v\x00": "a"}, 'tags["v\\u0000"]'),
        ({"kuma.io/service": "."}, 'tags["kuma.io/service"]'),
        ({"kuma.io/service": "a:b"}, 'tags["kuma.io/service"]'),
        ({"kuma.io/service": ""}, 'tags["kuma.io/service"]'),
    ],
)
def test_tag_rules(tags: dict[str, str], field: str) -> None:
    assert [v.split(": ")[0] for v in violations(dataplane(tags))] == [
        f"networking.inbound[0].{field}"
    ]


def test_kuma_style_tags_are_accepted() -> None:
    tags = {
        "kuma.io/service": "backend_kuma-demo_svc_3001",
        "kuma.io/protocol": "http",
        "kuma.io/zone": "zone-1",
        "version": "v1.2.3:rc1",
        "team/a": "Payments",
    }
    assert resource_from_wire(dataplane(tags)).spec.networking.inbound[0].tags == tags


def test_outbound_tags_and_backend_refs_are_checked() -> None:
    doc = dataplane()
    doc["networking"]["outbound"] = [
        {"port": 10001, "tags": {"kuma.io/service": "a\nb"}},
        {"port": 10002, "backendRef": {"kind": "MeshService", "name": "Bad Name", "port": 80}},
    ]
    assert [v.split(": ")[0] for v in violations(doc)] == [
        'networking.outbound[0].tags["kuma.io/service"]',
        "networking.outbound[1].backendRef.name",
    ]


def test_gateway_needs_a_valid_service_tag() -> None:
    doc = dataplane()
    doc["networking"] = {"address": "127.0.1.9", "gateway": {"type": "SIDECAR", "tags": 1}}
    assert violations(doc) == [
        "networking.gateway.type: must be one of: BUILTIN, DELEGATED",
        "networking.gateway.tags: must be a map of strings to strings",
        'networking.gateway.tags["kuma.io/service"]: tag has to exist',
    ]


def test_resource_names_and_meshes() -> None:
    assert violations({"type": "Mesh", "name": "a\x00b"}) == [
        "name: must not contain control characters (such as NUL or a line break)"
    ]
    doc = dataplane()
    doc["mesh"] = "Default"
    assert violations(doc)[0].startswith("mesh: invalid name")


def test_selectors_and_references_in_policies() -> None:
    mmzs = {
        "type": "MeshMultiZoneService",
        "name": "echo",
        "mesh": "default",
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "a\nb"}}},
            "ports": [{"port": 80, "name": "http\x00"}],
        },
    }
    assert [v.split(": ")[0] for v in violations(mmzs)] == [
        'spec.selector.meshService.matchLabels["kuma.io/display-name"]',
        "spec.ports[0].name",
    ]
    mlbs = {
        "type": "MeshLoadBalancingStrategy",
        "name": "lb",
        "mesh": "default",
        "spec": {
            "targetRef": {"kind": "Mesh", "tags": {"kuma.io/service": "*"}},
            "to": [
                {
                    "targetRef": {"kind": "MeshMultiZoneService", "name": "echo/../x"},
                    "default": {
                        "localityAwareness": {
                            "localZone": {"affinityTags": [{"key": "a b"}]},
                            "crossZone": {"failover": [{"to": {"type": "Only", "zones": ["Z"]}}]},
                        }
                    },
                }
            ],
        },
    }
    assert [v.split(": ")[0] for v in violations(mlbs)] == [
        "spec.to[0].targetRef.name",
        "spec.to[0].default.localityAwareness.localZone.affinityTags[0].key",
        "spec.to[0].default.localityAwareness.crossZone.failover[0].to.zones[0]",
    ]


def test_zone_ingress_available_services_follow_the_tag_rules() -> None:
    doc = {
        "type": "ZoneIngress",
        "name": "ingress",
        "zone": "zone-1",
        "networking": {"address": "127.0.1.100", "port": 10001},
        "availableServices": [
            {"mesh": "default", "tags": {"kuma.io/service": "echo"}, "instances": 1},
            {"mesh": "default", "tags": {"kuma.io/service": "e\x00"}, "instances": True},
        ],
    }
    assert [v.split(": ")[0] for v in violations(doc)] == [
        'availableServices[1].tags["kuma.io/service"]',
        "availableServices[1].instances",
    ]
