"""MeshMultiZoneService status in a zone: matched MeshServices, VIP, hostname, condition."""

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

from zonemesh.resources import labels
from zonemesh.store.memory import MemoryStore

ECHO = {"kuma.io/display-name": "echo"}


async def test_seed_example_one_zone(start_state):
    rt = make_runtime(zone="z1")
    await start_state(rt)
    await put(rt, mmzs("echo", ECHO))
    await put(rt, dataplane("echo-z1-a", address="127.0.1.11"))
    await put(rt, dataplane("echo-z1-b", address="127.0.1.12"))

    async def matched():
        status = wire_status(await rt.store.find(mmzs_key("echo")))
        assert status["meshServices"] == [
            {"name": "echo", "zone": "z1", "mesh": "default", "namespace": ""}
        ]
        return status

    status = await eventually(matched)
    assert len(status["vips"]) == 1 and status["vips"][0]["ip"].startswith("243.")
    assert status["addresses"] == [
        {
            "hostname": "echo.mzsvc.mesh.local",
            "origin": "HostnameGenerator",
            "hostnameGeneratorRef": {"coreName": "synced-mesh-multi-zone-service"},
        }
    ]
    assert status["conditions"] == [
        {
            "type": "MeshServicesMatched",
            "status": "True",
            "reason": "MatchesFound",
            "message": "Matched 1 MeshService(s)",
        }
    ]
    ms = await rt.store.get(ms_key("echo"))
    assert ms.spec.to_wire()["ports"] == [
        {"port": 1027, "targetPort": 21027, "appProtocol": "http"}
    ]


async def test_no_match_then_two_zones(start_state):
    rt = make_runtime(zone="z1", federated=True)
    await start_state(rt)
    # On a federated zone the MMZS comes from global, as do the hostname generators.
    synced = mmzs("echo", ECHO)
    synced["labels"] = {labels.ORIGIN: "global"}
    await put(rt, synced, stamp=False)

    async def conditions_are(expected):
        status = wire_status(await rt.store.find(mmzs_key("echo")))
        assert status["conditions"] == [expected]
        return status

    status = await eventually(
        lambda: conditions_are(
            {
                "type": "MeshServicesMatched",
                "status": "False",
                "reason": "NoMatchesFound",
                "message": "Selector does not match any MeshService in this zone",
            }
        )
    )
    assert status["meshServices"] == [] and status["vips"]
    assert status["addresses"] == []  # no generators here until global sends them

    await put(rt, synced_mesh_service("echo-6f1c2e", "z2", "echo"), stamp=False)
    await put(rt, dataplane("echo-z1-a"))
    await put(rt, synced_mesh_service("unrelated-1", "z2", "other"), stamp=False)

    async def two_zones():
        status = wire_status(await rt.store.find(mmzs_key("echo")))
        assert status["meshServices"] == [
            {"name": "echo", "zone": "z1", "mesh": "default", "namespace": ""},
            {"name": "echo", "zone": "z2", "mesh": "default", "namespace": ""},
        ]
        assert status["conditions"][0]["message"] == "Matched 2 MeshService(s)"

    await eventually(two_zones)

    await put(
        rt,
        {
            "type": "HostnameGenerator",
            "name": "synced-mesh-multi-zone-service",
            "labels": {labels.ORIGIN: "global"},
            "spec": {
                "selector": {"meshMultiZoneService": {"matchLabels": {labels.ORIGIN: "global"}}},
                "template": "{{ .DisplayName }}.mzsvc.mesh.local",
            },
        },
        stamp=False,
    )

    async def named():
        status = wire_status(await rt.store.find(mmzs_key("echo")))
        assert [a["hostname"] for a in status["addresses"]] == ["echo.mzsvc.mesh.local"]

    await eventually(named)


async def test_selector_needs_every_label(start_state):
    rt = make_runtime(zone="z1")
    await start_state(rt)
    await put(rt, mmzs("echo-z2-only", {**ECHO, labels.ZONE: "z2"}))
    await put(rt, dataplane("echo-z1-a"))
    await put(rt, synced_mesh_service("echo-x", "z2", "echo"), stamp=False)

    async def only_z2():
        status = wire_status(await rt.store.find(mmzs_key("echo-z2-only")))
        assert [m["zone"] for m in status["meshServices"]] == ["z2"]

    await eventually(only_z2)


class RacingStore(MemoryStore):
    """Before the first status write to an MMZS, a user edits it: the write conflicts."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    async def update(self, resource):
        if resource.type == "MeshMultiZoneService" and resource.status and not self.raced:
            self.raced = True
            current = await self.get(resource.key)
            await super().update(current.with_(labels={**current.labels, "edited": "yes"}))
        return await super().update(resource)


async def test_status_write_retries_after_a_conflict(start_state):
    store = RacingStore()
    rt = make_runtime(store)
    await start_state(rt)
    await put(rt, mmzs("echo", ECHO))

    async def written():
        found = await rt.store.find(mmzs_key("echo"))
        assert store.raced
        assert found.labels.get("edited") == "yes"  # the concurrent edit is not lost
        assert wire_status(found)["vips"]

    await eventually(written)
