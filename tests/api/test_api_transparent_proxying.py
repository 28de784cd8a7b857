"""`networking.transparentProxying` at the API: Kuma's fields accepted and stored, and a
Dataplane whose redirect ports collide with its own listeners refused with the field named."""

from __future__ import annotations

from typing import Any

import pytest
from api_helpers import Api, assert_error, dataplane, invalid

PATH = "/meshes/default/dataplanes/dp-1"
TP = "networking.transparentProxying"


def with_tp(transparent: dict[str, Any], **networking: Any) -> dict[str, Any]:
    doc = dataplane()
    doc["networking"].update(networking)
    doc["networking"]["transparentProxying"] = transparent
    return doc


async def test_kuma_fields_are_accepted_and_read_back(api: Api) -> None:
    transparent = {
        "redirectPortInbound": 15006,
        "redirectPortOutbound": 15001,
        "ipFamilyMode": "IPv4",
        "reachableBackends": {
            "refs": [
                {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027},
                {"kind": "MeshService", "labels": {"kuma.io/zone": "zone2"}},
            ]
        },
    }
    response = await api.client.put(PATH, json=with_tp(transparent))
    assert response.status_code == 201, response.text
    stored = (await api.client.get(PATH)).json()
    assert stored["networking"]["transparentProxying"] == transparent


@pytest.mark.parametrize(
    ("transparent", "networking", "field", "reason"),
    [
        (
            {"redirectPortInbound": 21027, "redirectPortOutbound": 15001},
            {},
            f"{TP}.redirectPortInbound",
            "port 21027 collides with inbound[0]",
        ),
        (
            {"redirectPortInbound": 15006, "redirectPortOutbound": 1027},
            {},
            f"{TP}.redirectPortOutbound",
            "port 1027 collides with inbound[0]",
        ),
        (
            {"redirectPortInbound": 15006, "redirectPortOutbound": 9901},
            {},
            f"{TP}.redirectPortOutbound",
            "port 9901 collides with the admin port (networking.admin.port)",
        ),
        (
            {"redirectPortInbound": 9000, "redirectPortOutbound": 15001},
            {"admin": {"port": 9000}},
            f"{TP}.redirectPortInbound",
            "port 9000 collides with the admin port (networking.admin.port)",
        ),
        (
            {"redirectPortInbound": 15001, "redirectPortOutbound": 15001},
            {},
            f"{TP}.redirectPortOutbound",
            "cannot be equal to redirectPortInbound",
        ),
        (
            {"redirectPortOutbound": 70000},
            {},
            f"{TP}.redirectPortOutbound",
            "must be in inclusive range [1, 65535]",
        ),
        ({"ipFamilyMode": "IPv6"}, {}, f"{TP}.ipFamilyMode", "must be one of: DualStack, IPv4"),
        (
            {"reachableBackends": {"refs": [{"kind": "Mesh", "name": "x"}]}},
            {},
            f"{TP}.reachableBackends.refs[0].kind",
            "must be one of: MeshService, MeshMultiZoneService, MeshExternalService",
        ),
        (
            {"reachableBackends": {"refs": [{"kind": "MeshService"}]}},
            {},
            f"{TP}.reachableBackends.refs[0].name",
            "name or labels are required",
        ),
        (
            {
                "reachableBackends": {
                    "refs": [{"kind": "MeshService", "name": "a", "labels": {"k": "v"}}]
                }
            },
            {},
            f"{TP}.reachableBackends.refs[0].labels",
            "labels cannot be combined with name or namespace",
        ),
        ({"redirectPortOutbound": "15001"}, {}, f"{TP}.redirectPortOutbound", "must be an integer"),
        ({"surprise": 1}, {}, f"{TP}.surprise", "unknown field"),
    ],
)
async def test_bad_transparent_proxying_is_refused_naming_the_field(
    api: Api, transparent: dict[str, Any], networking: dict[str, Any], field: str, reason: str
) -> None:
    response = await api.client.put(PATH, json=with_tp(transparent, **networking))
    assert invalid(response).get(field) == reason, response.text
    assert_error(await api.client.get(PATH), 404)  # nothing stored
    # The server keeps serving: a valid one goes through right after.
    ok = await api.client.put(PATH, json=with_tp({"redirectPortOutbound": 15001}))
    assert ok.status_code == 201, ok.text
    await api.client.delete(PATH)
