"""Hostile bodies at the real HTTP API: 400 naming the problem, nothing stored, still serving.

Each attack here was accepted (or answered 500) before documents were bounded and types made
strict: a 300-byte YAML alias bomb meant ten million nodes, a hundred thousand `[` raised
RecursionError, ports came in as strings, floats and booleans, and tags that cannot be a
SPIFFE path or an Envoy name were stored and served.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from api_helpers import Api, assert_error, dataplane, invalid

from zonemesh.resources.base import ResourceKey

YAML = {"content-type": "application/yaml"}
SERVICE = 'networking.inbound[0].tags["kuma.io/service"]'


def alias_bomb(levels: int = 7, fan_out: int = 10) -> str:
    """`fan_out ** levels` nodes once expanded, in a few hundred bytes."""
    lines = [
        "type: Mesh",
        "name: bomb",
        "constraints:",
        "  l0: &l0 [" + ", ".join("x" * fan_out) + "]",
    ]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * fan_out)
        lines.append(f"  l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def with_inbound(port: Any = 21027, tags: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = dataplane()
    inbound = doc["networking"]["inbound"][0]
    inbound["port"] = port
    if tags is not None:
        inbound["tags"] = tags
    return doc


async def nothing_stored(api: Api, key: ResourceKey) -> bool:
    return await api.runtime.store.find(key) is None


async def test_yaml_alias_bomb_is_refused_quickly_and_the_api_keeps_answering(api: Api) -> None:
    bomb = alias_bomb()
    assert len(bomb) < 600
    refusals = [
        asyncio.create_task(api.client.put("/meshes/bomb", content=bomb, headers=YAML))
        for _ in range(4)
    ]
    # While the bombs are being refused, the event loop answers other requests.
    healthy = await asyncio.wait_for(api.client.get("/healthy"), timeout=20)
    assert healthy.status_code == 200
    for response in await asyncio.gather(*refusals):
        body = assert_error(response, 400)
        assert "request body: YAML aliases expand to more than 100000 nodes" in body["detail"]
    assert await nothing_stored(api, ResourceKey("Mesh", "", "bomb"))
    assert (await api.client.get("/meshes/bomb")).status_code == 404


async def test_alias_cycles_are_refused(api: Api) -> None:
    text = "type: Mesh\nname: loop\nconstraints: &c {again: *c}\n"
    body = assert_error(await api.client.put("/meshes/loop", content=text, headers=YAML), 400)
    assert "YAML alias *c is used inside the collection it names" in body["detail"]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        ("[" * 100_000, {"content-type": "application/json"}),
        ("[" * 100_000, YAML),
        ('{"type": "Mesh", "name": "deep", "constraints": ' + "[" * 100_000, None),
        (
            "type: Mesh\nname: deep\nconstraints:\n"
            + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(80))
            + "  " * 81
            + "v\n",
            YAML,
        ),
    ],
    ids=["json", "yaml-flow", "json-inside-a-resource", "yaml-block"],
)
async def test_deep_nesting_is_a_400_not_a_500(
    api: Api, content: str, headers: dict[str, str] | None
) -> None:
    response = await api.client.put(
        "/meshes/deep", content=content, headers=headers or {"content-type": "application/json"}
    )
    body = assert_error(response, 400)
    assert "document nested deeper than 64 levels" in body["detail"]
    assert await nothing_stored(api, ResourceKey("Mesh", "", "deep"))
    assert (await api.client.get("/healthy")).status_code == 200


async def test_too_many_nodes_are_refused(api: Api) -> None:
    doc = {"type": "Mesh", "name": "wide", "constraints": {"x": [0] * 150_000}}
    body = assert_error(await api.client.put("/meshes/wide", json=doc), 400)
    assert "request body: document has more than 100000 nodes" in body["detail"]
    assert await nothing_stored(api, ResourceKey("Mesh", "", "wide"))


@pytest.mark.parametrize("port", ["2000", 2000.0, True], ids=["string", "float", "bool"])
async def test_ports_must_be_integers(api: Api, port: Any) -> None:
    response = await api.client.put("/meshes/default/dataplanes/dp-1", json=with_inbound(port))
    assert invalid(response) == {"networking.inbound[0].port": "must be an integer"}
    assert await nothing_stored(api, ResourceKey("Dataplane", "default", "dp-1"))


async def test_yaml_port_written_as_a_boolean_is_refused(api: Api) -> None:
    text = """type: Dataplane
mesh: default
name: dp-1
networking:
  address: 127.0.1.11
  inbound:
    - port: yes
      tags: {kuma.io/service: echo}
"""
    response = await api.client.put("/meshes/default/dataplanes/dp-1", content=text, headers=YAML)
    assert invalid(response) == {"networking.inbound[0].port": "must be an integer"}


@pytest.mark.parametrize(
    ("labels", "field", "reason"),
    [
        (False, "labels", "must be a map of strings to strings"),
        ({"team": 7}, 'labels["team"]', "must be a string"),
        (
            {"big": "v" * 900 * 1024},
            'labels["big"]',
            "label value must be at most 63 characters (got 921600)",
        ),
        ({"": "x"}, 'labels[""]', "label key cannot be empty"),
        ({"team": "a\x00b"}, 'labels["team"]', "label value must not contain control"),
        ({"te\nam": "a"}, 'labels["te\\nam"]', "label key name must not contain control"),
        ({"team": "a b"}, 'labels["team"]', "label value must be empty or at most 63"),
        ({"a/b/c": "x"}, 'labels["a/b/c"]', "label key may contain at most one '/'"),
    ],
    ids=["false", "not-a-string", "900KiB", "empty-key", "nul", "newline", "space", "slashes"],
)
async def test_labels_are_a_map_of_valid_strings(
    api: Api, labels: Any, field: str, reason: str
) -> None:
    doc = {**dataplane(), "labels": labels}
    response = await api.client.put("/meshes/default/dataplanes/dp-1", json=doc)
    fields = invalid(response)
    assert field in fields, fields
    assert fields[field].startswith(reason), fields[field]
    assert await nothing_stored(api, ResourceKey("Dataplane", "default", "dp-1"))


async def test_labels_holding_names_may_be_as_long_as_a_name(api: Api) -> None:
    long_name = "n" * 200
    doc = {**dataplane(), "labels": {"kuma.io/display-name": long_name, "team": "payments"}}
    response = await api.client.put("/meshes/default/dataplanes/dp-1", json=doc)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "service",
    ["echo\x00", "echo\nevil", "x/../y:z", "p\u0430yments", "..", "a:b", "s" * 254],
    ids=["nul", "newline", "path", "non-ascii", "dot-dot", "colon", "too-long"],
)
async def test_service_tags_that_cannot_be_a_spiffe_path_are_refused(
    api: Api, service: str
) -> None:
    doc = with_inbound(tags={"kuma.io/service": service})
    fields = invalid(await api.client.put("/meshes/default/dataplanes/dp-1", json=doc))
    assert list(fields) == [SERVICE]
    assert fields[SERVICE].startswith("service name must")
    assert await nothing_stored(api, ResourceKey("Dataplane", "default", "dp-1"))


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ({"kuma.io/service": "echo", "version": "v1\nv2"}, 'tags["version"]'),
        ({"kuma.io/service": "echo", "version": "x/../y:z"}, 'tags["version"]'),
        ({"kuma.io/service": "echo", "bad key": "v1"}, 'tags["bad key"]'),
        ({"kuma.io/service": "echo", "version": ""}, 'tags["version"]'),
    ],
    ids=["newline", "slash", "key-with-space", "empty-value"],
)
async def test_other_inbound_tags_follow_kumas_rules(
    api: Api, tags: dict[str, str], field: str
) -> None:
    doc = with_inbound(tags=tags)
    fields = invalid(await api.client.put("/meshes/default/dataplanes/dp-1", json=doc))
    assert list(fields) == [f"networking.inbound[0].{field}"]


async def test_gateway_service_tag_is_checked_too(api: Api) -> None:
    doc = {
        "type": "Dataplane",
        "mesh": "default",
        "name": "gw-1",
        "networking": {
            "address": "127.0.1.20",
            "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge\x00gw"}},
        },
    }
    fields = invalid(await api.client.put("/meshes/default/dataplanes/gw-1", json=doc))
    assert list(fields) == ['networking.gateway.tags["kuma.io/service"]']
    doc["networking"]["gateway"]["tags"] = {"kuma.io/service": "edge-gw"}
    assert (await api.client.put("/meshes/default/dataplanes/gw-1", json=doc)).status_code == 201


async def test_mesh_service_identity_must_be_a_service_name(api: Api) -> None:
    doc = {
        "type": "MeshService",
        "mesh": "default",
        "name": "payments",
        "spec": {
            "ports": [{"port": 80}],
            "selector": {"dataplaneTags": {"kuma.io/service": "payments"}},
            "identities": [{"type": "ServiceTag", "value": "pay/../ments"}],
        },
    }
    fields = invalid(await api.client.put("/meshes/default/meshservices/payments", json=doc))
    assert list(fields) == ["spec.identities[0].value"]


async def test_a_valid_dataplane_still_goes_in(api: Api) -> None:
    tags = {"kuma.io/service": "echo_kuma-demo_svc_8080", "version": "v1.2:canary"}
    doc = {**with_inbound(tags=tags), "labels": {"k8s.kuma.io/namespace": "kuma-demo"}}
    response = await api.client.put("/meshes/default/dataplanes/dp-1", json=doc)
    assert response.status_code == 201, response.text
    stored = await api.runtime.store.find(ResourceKey("Dataplane", "default", "dp-1"))
    assert stored is not None and stored.spec.networking.inbound[0].tags == tags
    assert (
        json.loads((await api.client.get("/meshes/default/dataplanes/dp-1")).text)["labels"][
            "k8s.kuma.io/namespace"
        ]
        == "kuma-demo"
    )
