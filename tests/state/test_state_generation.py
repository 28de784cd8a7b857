"""MeshServices generated from Dataplane inbounds, their state, and what they never touch."""

from __future__ import annotations

import asyncio

from state_helpers import (
    dataplane,
    dp_key,
    eventually,
    make_runtime,
    ms_key,
    put,
    synced_mesh_service,
    wire_status,
)

from zonemesh.resources import labels
from zonemesh.state.meshservices import GENERATED_BY


async def test_meshservice_generated_from_inbounds(start_state):
    rt = make_runtime(zone="z1")
    await start_state(rt)
    await put(rt, dataplane("echo-z1-a"))
    await put(
        rt,
        dataplane(
            "echo-z1-b",
            address="127.0.1.12",
            extra_inbounds=(
                # same service port again (deduped) and a second, tcp port without servicePort
                {
                    "port": 21027,
                    "address": "127.0.1.13",
                    "servicePort": 1027,
                    "tags": {labels.SERVICE_TAG: "echo"},
                },
                {"port": 9000, "tags": {labels.SERVICE_TAG: "echo"}},
            ),
        ),
    )
    await put(rt, dataplane("other-1", "other", port=22000, service_port=None, protocol=None))

    async def generated():
        ms = await rt.store.find(ms_key("echo"))
        assert ms is not None
        assert ms.labels == {
            labels.DISPLAY_NAME: "echo",
            labels.ZONE: "z1",
            labels.MESH: "default",
            labels.ORIGIN: "zone",
            GENERATED_BY: "meshservice-generator",
        }
        spec = ms.spec.to_wire()
        assert spec["ports"] == [
            {"port": 1027, "targetPort": 21027, "appProtocol": "http"},
            {"port": 9000, "targetPort": 9000, "appProtocol": "tcp"},
        ]
        assert spec["selector"] == {"dataplaneTags": {"kuma.io/service": "echo"}}
        assert spec["identities"] == [{"type": "ServiceTag", "value": "echo"}]
        assert spec["state"] == "Available"
        # Applied through the API: healthy, but no xDS stream so not connected.
        assert wire_status(ms)["dataplaneProxies"] == {"connected": 0, "healthy": 2, "total": 2}
        other = await rt.store.find(ms_key("other"))
        assert other is not None
        assert other.spec.to_wire()["ports"] == [
            {"port": 22000, "targetPort": 22000, "appProtocol": "tcp"}
        ]

    await eventually(generated)


async def test_health_changes_flip_state(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(rt, dataplane("echo-a"))
    await put(rt, dataplane("echo-b", address="127.0.1.12"))
    a, b = dp_key("echo-a"), dp_key("echo-b")
    rt.health.set_connected(a, True)
    rt.health.set_connected(b, True)

    async def state_is(expected: str, connected: int, healthy: int):
        ms = await rt.store.find(ms_key("echo"))
        assert ms is not None
        assert ms.spec.state == expected
        assert wire_status(ms)["dataplaneProxies"] == {
            "connected": connected,
            "healthy": healthy,
            "total": 2,
        }

    await eventually(lambda: state_is("Available", 2, 2))
    rt.health.set_readiness(a, (21027,))  # the app behind a's inbound is down
    await eventually(lambda: state_is("Available", 2, 1))
    rt.health.set_connected(b, False)  # b's stream ended
    await eventually(lambda: state_is("Unavailable", 1, 0))
    rt.health.set_readiness(a, ())
    await eventually(lambda: state_is("Available", 1, 1))


async def test_last_instance_deleted_deletes_meshservice(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(rt, dataplane("echo-a"))
    await put(rt, dataplane("echo-b", address="127.0.1.12"))

    async def total_is(n: int):
        ms = await rt.store.find(ms_key("echo"))
        assert ms is not None and ms.status is not None
        assert ms.status.dataplane_proxies.total == n

    await eventually(lambda: total_is(2))
    await rt.store.delete(dp_key("echo-a"))
    await eventually(lambda: total_is(1))
    await rt.store.delete(dp_key("echo-b"))

    async def gone():
        assert await rt.store.find(ms_key("echo")) is None

    await eventually(gone)


async def test_service_tag_change_moves_the_meshservice(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(rt, dataplane("app-1", "old"))

    async def exists(name: str, present: bool):
        assert (await rt.store.find(ms_key(name)) is not None) is present

    await eventually(lambda: exists("old", True))
    await put(rt, dataplane("app-1", "new"))
    await eventually(lambda: exists("new", True))
    await eventually(lambda: exists("old", False))


async def test_hand_applied_meshservice_left_alone(start_state):
    rt = make_runtime()
    await start_state(rt)
    hand = await put(
        rt,
        {
            "type": "MeshService",
            "mesh": "default",
            "name": "echo",
            "spec": {
                "selector": {"dataplaneTags": {"kuma.io/service": "echo"}},
                "ports": [{"port": 8080, "targetPort": 18080, "appProtocol": "tcp"}],
                "state": "Available",
            },
        },
    )
    await put(rt, dataplane("echo-a"))

    async def status_counts_instance():
        ms = await rt.store.find(ms_key("echo"))
        assert wire_status(ms)["dataplaneProxies"]["total"] == 1
        return ms

    ms = await eventually(status_counts_instance)
    assert ms.spec == hand.spec  # the user's ports stand
    assert GENERATED_BY not in ms.labels
    assert wire_status(ms)["vips"][0]["ip"].startswith("241.")

    await rt.store.delete(dp_key("echo-a"))

    async def counted_zero():
        ms = await rt.store.find(ms_key("echo"))
        assert wire_status(ms)["dataplaneProxies"]["total"] == 0

    await eventually(counted_zero)  # still there, status updated, spec untouched
    assert (await rt.store.get(ms_key("echo"))).spec == hand.spec


async def test_synced_meshservices_and_foreign_dataplanes_are_not_generated(start_state):
    rt = make_runtime(zone="z1", federated=True)
    await start_state(rt)
    await put(rt, synced_mesh_service("echo-z2", "z2", "echo"), stamp=False)
    foreign = dataplane("remote-1", "remote")
    foreign["labels"] = {labels.ZONE: "z2", labels.ORIGIN: "global"}
    await put(rt, foreign, stamp=False)
    await put(rt, dataplane("local-1", "local"))

    async def settled():
        assert await rt.store.find(ms_key("local")) is not None
        synced = await rt.store.find(ms_key("echo-z2"))
        assert wire_status(synced)["vips"]  # gets a VIP, but stays as synced
        assert "dataplaneProxies" not in wire_status(synced)

    await eventually(settled)
    assert await rt.store.find(ms_key("remote")) is None
    synced = await rt.store.get(ms_key("echo-z2"))
    assert synced.labels[labels.ORIGIN] == "global" and GENERATED_BY not in synced.labels
    assert synced.spec.state == "Available"


async def test_a_synced_copy_carrying_the_generator_marker_is_never_deleted(start_state):
    rt = make_runtime(zone="z1", federated=True)
    await start_state(rt)
    doc = synced_mesh_service("echo-z2", "z2", "echo")
    doc["labels"][GENERATED_BY] = "meshservice-generator"  # as zone2's generator left it
    await put(rt, doc, stamp=False)
    await put(rt, dataplane("local-1", "local"))  # a pass runs

    async def settled():
        assert await rt.store.find(ms_key("local")) is not None

    await eventually(settled)
    synced = await rt.store.get(ms_key("echo-z2"))
    assert synced.spec.state == "Available" and synced.labels[labels.ZONE] == "z2"


async def test_instances_on_different_inbound_ports_leave_target_port_out(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(rt, dataplane("echo-a", port=21027, address="127.0.1.11"))
    await put(rt, dataplane("echo-b", port=22027, address="127.0.1.12"))

    async def generated():
        ms = await rt.store.find(ms_key("echo"))
        assert ms is not None and len(ms.spec.ports) == 1
        assert ms.spec.ports[0].port == 1027 and ms.spec.ports[0].target_port is None

    await eventually(generated)


async def test_scales_to_a_thousand_dataplanes(start_state):
    rt = make_runtime()
    state = await start_state(rt)
    for i in range(1000):
        await put(rt, dataplane(f"dp-{i}", f"svc-{i}", address=f"127.1.{i // 250}.{i % 250 + 1}"))

    async def all_generated():
        services = await rt.store.list("MeshService")
        assert len(services) == 1000
        assert all(s.status is not None and s.status.vips for s in services)
        return services

    services = await eventually(all_generated, timeout=30)
    assert len({s.status.vips[0].ip for s in services}) == 1000
    # Bursts coalesce: far fewer passes than writes.
    assert state.passes < 100


async def test_a_dataplane_moving_to_another_address_costs_no_pass(start_state):
    rt = make_runtime(zone="z1")
    state = await start_state(rt)
    await put(rt, dataplane("echo-z1-a"))
    await eventually(lambda: _exists(rt, ms_key("echo")))
    await asyncio.sleep(10 * state.quiet_s)  # the passes of its creation are over
    await asyncio.sleep(10 * state.quiet_s)
    settled = state.passes
    # Only the address differs from what the pass last saw: nothing it computes can change.
    await put(rt, dataplane("echo-z1-a", address="127.0.1.98"))
    await asyncio.sleep(10 * state.quiet_s)
    assert state.passes == settled
    # Its inbound's service changes: that is an input (a new MeshService follows).
    await put(rt, dataplane("echo-z1-a", "echo-renamed", address="127.0.1.98"))
    await eventually(lambda: _exists(rt, ms_key("echo-renamed")))
    assert state.passes > settled


async def _exists(rt, key) -> None:  # type: ignore[no-untyped-def]
    assert await rt.store.find(key) is not None
