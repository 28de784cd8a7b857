"""Hostnames from HostnameGenerators: defaults, custom templates, invalid results, collisions."""

from __future__ import annotations

from state_helpers import (
    dataplane,
    eventually,
    make_runtime,
    mmzs,
    mmzs_key,
    ms_key,
    put,
    synced_mesh_service,
    wire_status,
)


def generator(name: str, template: str, match: dict[str, str], kind: str = "meshService"):
    return {
        "type": "HostnameGenerator",
        "name": name,
        "spec": {"selector": {kind: {"matchLabels": match}}, "template": template},
    }


def generated(status: dict, generator_name: str) -> dict:
    entries = [
        e
        for e in status["hostnameGenerators"]
        if e["hostnameGeneratorRef"]["coreName"] == generator_name
    ]
    assert len(entries) == 1, status["hostnameGenerators"]
    return entries[0]["conditions"][0]


async def test_default_hostnames(start_state):
    rt = make_runtime(zone="z1")
    await start_state(rt)
    await put(rt, dataplane("echo-a"))
    await put(rt, synced_mesh_service("echo-z2", "z2", "echo"), stamp=False)
    await put(rt, mmzs("echo", {"kuma.io/display-name": "echo"}))

    async def addresses(key):
        status = wire_status(await rt.store.find(key))
        assert status["addresses"], status
        return status

    local = await eventually(lambda: addresses(ms_key("echo")))
    assert local["addresses"] == [
        {
            "hostname": "echo.svc.mesh.local",
            "origin": "HostnameGenerator",
            "hostnameGeneratorRef": {"coreName": "local-universal-mesh-service"},
        }
    ]
    assert generated(local, "local-universal-mesh-service") == {
        "type": "Generated",
        "status": "True",
        "reason": "Generated",
        "message": "",
    }
    synced = await eventually(lambda: addresses(ms_key("echo-z2")))
    assert [a["hostname"] for a in synced["addresses"]] == ["echo.svc.z2.mesh.local"]
    multi = await eventually(lambda: addresses(mmzs_key("echo")))
    assert [a["hostname"] for a in multi["addresses"]] == ["echo.mzsvc.mesh.local"]


async def test_custom_generator_with_label(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(
        rt,
        generator(
            "by-team", '{{ label "team" }}.{{ .DisplayName }}.{{ .Mesh }}.internal', {"team": "a"}
        ),
    )
    ms = await put(
        rt,
        {
            "type": "MeshService",
            "mesh": "default",
            "name": "billing",
            "labels": {"team": "a"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    assert ms.labels["team"] == "a"

    async def has_custom():
        status = wire_status(await rt.store.find(ms_key("billing")))
        assert [a["hostname"] for a in status["addresses"]] == [
            "a.billing.default.internal",
            "billing.svc.mesh.local",
        ]

    await eventually(has_custom)

    # A label change re-renders; a label the template needs going away becomes a condition.
    await put(
        rt,
        generator("by-team", '{{ label "owner" }}.{{ .Name }}.internal', {"team": "a"}),
    )

    async def missing_label():
        status = wire_status(await rt.store.find(ms_key("billing")))
        assert [a["hostname"] for a in status["addresses"]] == ["billing.svc.mesh.local"]
        cond = generated(status, "by-team")
        assert (cond["status"], cond["reason"]) == ("False", "TemplateError")
        assert "owner" in cond["message"]

    await eventually(missing_label)


async def test_invalid_dns_name_becomes_a_condition(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(rt, dataplane("app-1", "under_score"))  # a valid service tag, not a DNS label

    async def invalid():
        status = wire_status(await rt.store.find(ms_key("under_score")))
        assert status["addresses"] == []
        cond = generated(status, "local-universal-mesh-service")
        assert (cond["status"], cond["reason"]) == ("False", "InvalidHostname")
        assert "under_score.svc.mesh.local" in cond["message"]
        assert status["vips"]  # the rest of the status is still computed

    await eventually(invalid)


async def test_collision_older_resource_keeps_the_hostname(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(rt, generator("flat", "{{ .Mesh }}.same.local", {"pool": "x"}))
    await put(
        rt,
        {
            "type": "MeshService",
            "mesh": "default",
            "name": "first",
            "labels": {"pool": "x"},
            "spec": {"ports": [{"port": 80}]},
        },
    )

    async def first_has_it():
        status = wire_status(await rt.store.find(ms_key("first")))
        assert "default.same.local" in [a["hostname"] for a in status["addresses"]]

    await eventually(first_has_it)
    await put(
        rt,
        {
            "type": "MeshService",
            "mesh": "default",
            "name": "second",
            "labels": {"pool": "x"},
            "spec": {"ports": [{"port": 80}]},
        },
    )

    async def second_collides():
        status = wire_status(await rt.store.find(ms_key("second")))
        assert [a["hostname"] for a in status["addresses"]] == ["second.svc.mesh.local"]
        cond = generated(status, "flat")
        assert (cond["status"], cond["reason"]) == ("False", "Collision")
        assert "MeshService first" in cond["message"]
        first = wire_status(await rt.store.find(ms_key("first")))
        assert "default.same.local" in [a["hostname"] for a in first["addresses"]]

    await eventually(second_collides)
