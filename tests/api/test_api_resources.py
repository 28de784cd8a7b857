"""CRUD on Kuma's paths: status codes, bodies, validation messages, listing, concurrency."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from api_helpers import MMZS_PATH, Api, assert_error, dataplane, invalid, mmzs

from zonemesh.resources.base import ResourceKey
from zonemesh.resources.types.common import VIP
from zonemesh.resources.types.mmzs import MeshMultiZoneServiceStatus


async def test_mmzs_create_get_update_delete(api: Api) -> None:
    created = await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())
    assert created.status_code == 201
    assert created.json() == {}

    got = await api.client.get(f"{MMZS_PATH}/echo")
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    item = got.json()
    assert item["type"] == "MeshMultiZoneService"
    assert item["mesh"] == "default"
    assert item["spec"]["ports"] == [{"port": 1027, "appProtocol": "http"}]
    assert item["labels"]["kuma.io/origin"] == "zone"
    assert item["labels"]["kuma.io/mesh"] == "default"
    assert item["kri"] == "kri_mzsvc_default___echo_"
    assert item["snis"] == [{"port": 1027, "sni": "sni.mzsvc.default.echo.1027"}]
    assert item["creationTime"].endswith("Z")

    changed = mmzs(ports=[{"port": 8080, "appProtocol": "tcp"}])
    updated = await api.client.put(f"{MMZS_PATH}/echo", json=changed)
    assert updated.status_code == 200
    assert updated.json() == {}
    again = await api.client.get(f"{MMZS_PATH}/echo")
    assert again.headers["etag"] == '"2"'
    assert again.json()["spec"]["ports"] == [{"port": 8080, "appProtocol": "tcp"}]

    deleted = await api.client.delete(f"{MMZS_PATH}/echo")
    assert deleted.status_code == 200
    assert deleted.json() == {}
    gone = assert_error(await api.client.get(f"{MMZS_PATH}/echo"), 404)
    assert "echo" in gone["detail"]
    assert_error(await api.client.delete(f"{MMZS_PATH}/echo"), 404)


async def test_apply_output_of_get_is_accepted_back(api: Api) -> None:
    """kri, snis, times and status in a body are read-only and ignored, as with kumactl."""
    await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())
    item = (await api.client.get(f"{MMZS_PATH}/echo")).json()
    assert (await api.client.put(f"{MMZS_PATH}/echo", json=item)).status_code == 200


async def test_global_scoped_types_and_mesh_deletion_cascades(api: Api) -> None:
    mesh = {"type": "Mesh", "name": "payments", "routing": {"zoneEgress": True}}
    assert (await api.client.put("/meshes/payments", json=mesh)).status_code == 201
    got = (await api.client.get("/meshes/payments")).json()
    assert got["routing"] == {"zoneEgress": True}  # legacy flat form
    assert "mesh" not in got

    dp = await api.client.put("/meshes/payments/dataplanes/dp-1", json=dataplane(mesh="payments"))
    assert dp.status_code == 201
    flat = (await api.client.get("/meshes/payments/dataplanes/dp-1")).json()
    assert flat["networking"]["address"] == "127.0.1.11"
    assert "spec" not in flat
    assert (
        await api.client.put(
            "/meshes/payments/meshmultizoneservices/echo", json=mmzs(mesh="payments")
        )
    ).status_code == 201

    assert (await api.client.delete("/meshes/payments")).status_code == 200
    assert_error(await api.client.get("/meshes/payments"), 404)
    assert await api.runtime.store.list("Dataplane", "payments") == []
    assert await api.runtime.store.list("MeshMultiZoneService", "payments") == []

    ingress = {
        "type": "ZoneIngress",
        "name": "ingress-1",
        "networking": {"address": "127.0.1.100", "port": 10001},
    }
    assert (await api.client.put("/zoneingresses/ingress-1", json=ingress)).status_code == 201
    listed = (await api.client.get("/zoneingresses")).json()
    assert [i["name"] for i in listed["items"]] == ["ingress-1"]
    assert listed["items"][0]["labels"]["kuma.io/zone"] == "default"


async def test_update_keeps_the_status_the_control_plane_computed(api: Api) -> None:
    await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())
    key = ResourceKey("MeshMultiZoneService", "default", "echo")
    stored = await api.runtime.store.get(key)
    status = MeshMultiZoneServiceStatus(vips=[VIP(ip="243.0.0.1")])
    await api.runtime.store.update(stored.with_(status=status))

    body = mmzs()
    body["status"] = {"vips": [{"ip": "10.9.9.9"}]}  # users do not write status
    assert (await api.client.put(f"{MMZS_PATH}/echo", json=body)).status_code == 200
    got = (await api.client.get(f"{MMZS_PATH}/echo")).json()
    assert got["status"]["vips"] == [{"ip": "243.0.0.1"}]


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"ports": []}, "spec.ports", "cannot be empty"),
        (
            {"selector": {"meshService": {"matchLabels": {}}}},
            "spec.selector.meshService.matchLabels",
            "cannot be empty",
        ),
        (
            {"ports": [{"port": 1027, "appProtocol": "udp"}]},
            "spec.ports[0].appProtocol",
            "appProtocol must be one of: grpc, http, http2, tcp",
        ),
        ({"ports": [{"port": 1027, "name": ""}]}, "spec.ports[0].name", "must not be empty"),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port", "must be in inclusive range [1, 65535]"),
        (
            {"ports": [{"port": 70000}]},
            "spec.ports[0].port",
            "must be in inclusive range [1, 65535]",
        ),
        ({"ports": [{"port": "x"}]}, "spec.ports[0].port", "must be an integer"),
        ({"surprise": True}, "spec.surprise", "unknown field"),
    ],
)
async def test_mmzs_validation_names_the_field(
    api: Api, spec: dict[str, Any], field: str, reason: str
) -> None:
    response = await api.client.put(f"{MMZS_PATH}/echo", json=mmzs(**spec))
    assert invalid(response)[field] == reason
    assert_error(await api.client.get(f"{MMZS_PATH}/echo"), 404)  # nothing stored


async def test_unknown_top_level_field_is_named(api: Api) -> None:
    body = mmzs()
    body["specs"] = {}
    assert invalid(await api.client.put(f"{MMZS_PATH}/echo", json=body)) == {
        "specs": "unknown field"
    }


async def test_several_violations_are_reported_together(api: Api) -> None:
    body = mmzs(selector={"meshService": {"matchLabels": {}}}, ports=[])
    fields = invalid(await api.client.put(f"{MMZS_PATH}/echo", json=body))
    assert set(fields) == {"spec.ports", "spec.selector.meshService.matchLabels"}


async def test_yaml_body_is_accepted(api: Api) -> None:
    text = """
type: MeshMultiZoneService
name: echo
mesh: default
spec:
  selector: {meshService: {matchLabels: {kuma.io/display-name: echo}}}
  ports: [{port: 1027, appProtocol: http}]
"""
    response = await api.client.put(
        f"{MMZS_PATH}/echo", content=text, headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        ('{"type": "MeshMultiZoneService",', "application/json", "not valid JSON"),
        ("type: [unclosed\nname: x", "application/yaml", "not valid YAML"),
        ("- just\n- a list\n", "application/yaml", "must be an object"),
        ("a: 1\n---\nb: 2\n", "application/yaml", "2 documents"),
        ("", "application/json", "body is empty"),
    ],
)
async def test_unparsable_bodies_get_a_clear_reason(
    api: Api, content: str, content_type: str, expected: str
) -> None:
    response = await api.client.put(
        f"{MMZS_PATH}/echo", content=content, headers={"content-type": content_type}
    )
    assert expected in assert_error(response, 400)["detail"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"{MMZS_PATH}/other", "name"),
        ("/meshes/elsewhere/meshmultizoneservices/echo", "mesh"),
        ("/meshes/default/meshservices/echo", "type"),
    ],
)
async def test_body_must_match_the_url(api: Api, path: str, field: str) -> None:
    if field == "mesh":  # the URL's mesh must exist for the mismatch to be the only problem
        await api.client.put("/meshes/elsewhere", json={"type": "Mesh", "name": "elsewhere"})
    fields = invalid(await api.client.put(path, json=mmzs()))
    assert fields == {field: f"{field} from the URL has to be the same as in body"}


async def test_unknown_mesh_is_rejected(api: Api) -> None:
    response = await api.client.put(
        "/meshes/nope/meshmultizoneservices/echo", json=mmzs(mesh="nope")
    )
    assert invalid(response) == {"mesh": "mesh of name nope is not found"}


async def test_unknown_type_and_unknown_paths_are_404s(api: Api) -> None:
    body = assert_error(await api.client.get("/meshes/default/widgets"), 404)
    assert '"widgets"' in body["detail"]
    assert "meshmultizoneservices" in body["detail"]
    assert_error(await api.client.get("/widgets"), 404)
    assert_error(await api.client.put("/widgets/x", json={}), 404)
    assert_error(await api.client.get("/a/b/c/d/e/f/g"), 404)
    # A type on the wrong kind of path: a mesh-scoped type has no global item path.
    wrong = assert_error(await api.client.get("/meshmultizoneservices/echo"), 404)
    assert "/meshes/{mesh}/meshmultizoneservices" in wrong["detail"]
    assert_error(await api.client.get("/meshes/default/zones"), 404)


async def test_method_not_allowed_is_aip_shaped(api: Api) -> None:
    assert_error(await api.client.post("/meshes", json={}), 405)


async def test_content_length_over_the_limit_is_413(api: Api) -> None:
    big = b"x" * ((1 << 20) + 1)
    response = await api.client.put(f"{MMZS_PATH}/echo", content=big)
    assert "1048576" in assert_error(response, 413)["detail"]


async def test_chunked_body_over_the_limit_is_413(api: Api) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * (64 * 1024)  # 1.25 MiB in all, with no Content-Length

    response = await api.client.put(f"{MMZS_PATH}/echo", content=chunks())
    assert assert_error(response, 413)
    # The server is still fine afterwards.
    assert (await api.client.get("/healthy")).status_code == 200


async def test_chunked_body_under_the_limit_is_read(api: Api) -> None:
    payload = json.dumps(mmzs()).encode()

    async def chunks() -> Any:
        for i in range(0, len(payload), 10):
            yield payload[i : i + 10]

    response = await api.client.put(
        f"{MMZS_PATH}/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 201


async def test_pagination_follows_next_to_the_end(api: Api) -> None:
    names = [f"svc-{i}" for i in range(5)]
    for name in names:
        assert (await api.client.put(f"{MMZS_PATH}/{name}", json=mmzs(name))).status_code == 201

    seen: list[str] = []
    url: str | None = f"{api.base_url}{MMZS_PATH}?size=2"
    pages = 0
    while url:
        page = (await api.client.get(url)).json()
        assert page["total"] == 5
        assert len(page["items"]) <= 2
        seen.extend(i["name"] for i in page["items"])
        url = page["next"]
        if url:
            assert url.startswith(api.base_url)
        pages += 1
    assert seen == names
    assert pages == 3

    everything = (await api.client.get(MMZS_PATH)).json()
    assert everything["total"] == 5 and everything["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [("size=0", "size"), ("size=1001", "size"), ("size=ten", "size"), ("offset=abc", "offset")],
)
async def test_invalid_page_parameters_are_400(api: Api, query: str, field: str) -> None:
    assert field in invalid(await api.client.get(f"{MMZS_PATH}?{query}"))


async def test_name_and_label_filters(api: Api) -> None:
    for name, team, tier in [("web", "a", "front"), ("web-api", "a", "back"), ("db", "b", "back")]:
        body = mmzs(name)
        body["labels"] = {"team": team, "tier": tier}
        await api.client.put(f"{MMZS_PATH}/{name}", json=body)

    async def names(params: list[tuple[str, str]]) -> list[str]:
        page = (await api.client.get(MMZS_PATH, params=params)).json()
        return [i["name"] for i in page["items"]]

    assert await names([("name", "web")]) == ["web", "web-api"]
    assert await names([("filter[labels.team]", "a")]) == ["web", "web-api"]
    assert await names([("filter[labels.team]", "a"), ("filter[labels.tier]", "back")]) == [
        "web-api"
    ]
    assert await names([("filter[labels.team]", "c")]) == []


async def test_listing_a_mesh_scoped_type_across_meshes(api: Api) -> None:
    await api.client.put("/meshes/other", json={"type": "Mesh", "name": "other"})
    await api.client.put(f"{MMZS_PATH}/a", json=mmzs("a"))
    await api.client.put("/meshes/other/meshmultizoneservices/b", json=mmzs("b", mesh="other"))
    page = (await api.client.get("/meshmultizoneservices")).json()
    assert [(i["mesh"], i["name"]) for i in page["items"]] == [("default", "a"), ("other", "b")]
    only_default = (await api.client.get(MMZS_PATH)).json()
    assert only_default["total"] == 1


async def test_two_writers_with_the_same_version_one_wins(api: Api) -> None:
    await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())
    etag = (await api.client.get(f"{MMZS_PATH}/echo")).headers["etag"]

    first = mmzs(ports=[{"port": 1, "appProtocol": "tcp"}])
    second = mmzs(ports=[{"port": 2, "appProtocol": "tcp"}])
    results = await asyncio.gather(
        api.client.put(f"{MMZS_PATH}/echo", json=first, headers={"If-Match": etag}),
        api.client.put(f"{MMZS_PATH}/echo", json=second, headers={"If-Match": etag}),
    )
    assert sorted(r.status_code for r in results) == [200, 409]
    loser = next(r for r in results if r.status_code == 409)
    assert_error(loser, 409)
    winner = results.index(next(r for r in results if r.status_code == 200))
    stored = (await api.client.get(f"{MMZS_PATH}/echo")).json()
    assert stored["spec"]["ports"][0]["port"] == winner + 1


async def test_delete_honours_if_match(api: Api) -> None:
    await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())
    await api.client.put(f"{MMZS_PATH}/echo", json=mmzs())  # now at version 2
    stale = await api.client.delete(f"{MMZS_PATH}/echo", headers={"If-Match": '"1"'})
    assert_error(stale, 409)
    assert (await api.client.get(f"{MMZS_PATH}/echo")).status_code == 200
    fresh = await api.client.delete(f"{MMZS_PATH}/echo", headers={"If-Match": '"2"'})
    assert fresh.status_code == 200


async def test_if_match_on_a_missing_resource_is_a_conflict(api: Api) -> None:
    response = await api.client.put(f"{MMZS_PATH}/echo", json=mmzs(), headers={"If-Match": '"1"'})
    assert_error(response, 409)
    assert_error(await api.client.get(f"{MMZS_PATH}/echo"), 404)


async def test_labels_the_control_plane_owns_are_replaced_with_a_warning(api: Api) -> None:
    body = mmzs()
    body["labels"] = {"kuma.io/origin": "global", "team": "a"}
    response = await api.client.put(f"{MMZS_PATH}/echo", json=body)
    assert response.status_code == 201
    warnings = response.json()["warnings"]
    assert len(warnings) == 1 and "kuma.io/origin" in warnings[0]
    labels = (await api.client.get(f"{MMZS_PATH}/echo")).json()["labels"]
    assert labels["kuma.io/origin"] == "zone" and labels["team"] == "a"
