"""MeshHTTPRoute through the HTTP API: stored and listed under Kuma's path, refused with
Kuma's field messages (nothing stored) when invalid."""

from __future__ import annotations

from typing import Any

from api_helpers import Api, assert_error, invalid

PATH = "/meshes/default/meshhttproutes"


def route(name: str = "canary", **rule_default: Any) -> dict[str, Any]:
    default = rule_default or {
        "backendRefs": [
            {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027, "weight": 90},
            {"kind": "MeshService", "name": "echo-v2", "port": 1027, "weight": 10},
        ]
    }
    return {
        "type": "MeshHTTPRoute",
        "name": name,
        "mesh": "default",
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [
                {
                    "targetRef": {"kind": "MeshMultiZoneService", "name": "echo"},
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                            "default": default,
                        }
                    ],
                }
            ],
        },
    }


async def test_route_is_created_listed_and_deleted(api: Api) -> None:
    created = await api.client.put(f"{PATH}/canary", json=route())
    assert created.status_code == 201, created.text
    listing = (await api.client.get(PATH)).json()
    assert listing["total"] == 1
    (item,) = listing["items"]
    assert item["type"] == "MeshHTTPRoute"
    assert item["spec"]["to"][0]["rules"][0]["default"]["backendRefs"][1]["weight"] == 10
    assert (await api.client.delete(f"{PATH}/canary")).status_code == 200
    assert_error(await api.client.get(f"{PATH}/canary"), 404)


async def test_invalid_route_names_the_fields_and_stores_nothing(api: Api) -> None:
    body = route(backendRefs=[{"kind": "MeshMultiZoneService", "name": "echo"}])
    body["spec"]["to"][0]["rules"][0]["matches"].append(
        {"path": {"type": "RegularExpression", "value": "^/(?=admin)"}}
    )
    response = await api.client.put(f"{PATH}/canary", json=body)
    reasons = invalid(response)
    rule = "spec.to[0].rules[0]"
    assert reasons[f"{rule}.default.backendRefs[0].port"] == (
        "must be defined with kind MeshMultiZoneService"
    )
    assert reasons[f"{rule}.matches[1].path.value"].startswith(
        "must be a valid RE2 regular expression: "
    )
    assert_error(await api.client.get(f"{PATH}/canary"), 404)


async def test_a_backend_that_does_not_exist_is_accepted_with_a_warning(api: Api) -> None:
    mmzs = {
        "type": "MeshMultiZoneService",
        "name": "echo",
        "mesh": "default",
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
            "ports": [{"port": 1027, "appProtocol": "http"}],
        },
    }
    assert (
        await api.client.put("/meshes/default/meshmultizoneservices/echo", json=mmzs)
    ).is_success
    response = await api.client.put(f"{PATH}/canary", json=route())
    assert response.status_code == 201
    assert response.json()["warnings"] == [
        'spec.to[0].rules[0].default.backendRefs[1]: MeshService "echo-v2" does not exist '
        "(yet): until it does, its share of the requests is answered 500"
    ]
