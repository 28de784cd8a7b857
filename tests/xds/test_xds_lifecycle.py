"""Dataplane lifecycle as Kuma's Universal mode: create-or-update from the proxy's metadata
(token checks on the old and the new resource), deregistration on a graceful stop, cleanup
of an ungraceful one after the cleanup age; and the insights a zone CP writes of its proxies."""

from __future__ import annotations

import asyncio

import grpc
from test_xds_harness import (
    Harness,
    dataplane_doc,
    eventually,
    issue_token,
    node,
    running_xds,
    sotw,
    token_metadata,
)

from zonemesh.envoy_types import CLUSTER, LISTENER
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.types.dataplane import DataplaneSpec
from zonemesh.resources.types.insight import ProxyInsightSpec
from zonemesh.store.memory import MemoryStore
from zonemesh.xds.readiness import METHOD
from zonemesh.xds.registry import REGISTERED_LABEL

DP1 = ResourceKey("Dataplane", "default", "dp-1")
INSIGHT1 = ResourceKey("DataplaneInsight", "default", "dp-1")
FAST = {
    "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY": "0.3s",
    "KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE": "1s",
}


def with_outbound(doc: dict) -> dict:  # type: ignore[type-arg]
    out = dict(doc)
    out["networking"] = {
        **doc["networking"],
        "outbound": [
            {"port": 11027, "backendRef": {"kind": "MeshService", "name": "b", "port": 8080}}
        ],
    }
    return out


async def report_stopping(h: Harness, token: str) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{h.server.port}")
    try:
        body = b'{"nodeId": "default.dp-1", "notReadyInboundPorts": [20080], "stopping": true}'
        await channel.unary_unary(METHOD)(body, metadata=token_metadata(token))
    finally:
        await channel.close()


async def gone(h: Harness, key: ResourceKey) -> bool:
    return await h.store.find(key) is None


async def wait_store(h: Harness, predicate, what: str, deadline_s: float = 10) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


# --- create or update ----------------------------------------------------------------------


async def test_a_changed_dataplane_file_updates_what_it_registered() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")
        first = await h.store.get(DP1)
        assert first.labels[REGISTERED_LABEL] == "node-metadata"
        await c.close()
        await eventually(lambda: h.server.registry.connection(DP1) is None, "disconnected")

        c, _ = await h.connect_sotw("dp-1", with_outbound(dataplane_doc("dp-1")))
        stored = await h.store.get(DP1)
        assert isinstance(stored.spec, DataplaneSpec)
        assert [o.port for o in stored.spec.networking.outbound] == [11027]
        assert stored.version > first.version
        assert stored.labels[REGISTERED_LABEL] == "node-metadata"
        # The same file again changes nothing.
        await c.close()
        await eventually(lambda: h.server.registry.connection(DP1) is None, "disconnected")
        await h.connect_sotw("dp-1", with_outbound(dataplane_doc("dp-1")))
        assert (await h.store.get(DP1)).version == stored.version


async def test_an_update_must_be_allowed_for_the_stored_and_the_new_resource() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")  # service a
        await c.close()
        await eventually(lambda: h.server.registry.connection(DP1) is None, "disconnected")
        before = await h.store.get(DP1)
        as_b = dataplane_doc("dp-1", inbounds=[(20080, 8080, "b", "http")])
        for allowed in ("a", "b"):  # one side of the change is always outside the token
            token = await issue_token(h.runtime, tags={"kuma.io/service": [allowed]})
            intruder = h.client(token=token)
            intruder.send(sotw(CLUSTER, node_=node("default.dp-1", resource=as_b)))
            code, details = await intruder.status()
            assert code is grpc.StatusCode.PERMISSION_DENIED, (allowed, details)
        assert (await h.store.get(DP1)).version == before.version


async def test_an_api_applied_dataplane_is_updated_in_spec_only_and_never_deregistered() -> None:
    async with running_xds(env=FAST) as h:
        applied = dataplane_doc("dp-1")
        applied["labels"] = {"team": "payments"}
        await h.apply(applied)
        c, _ = await h.connect_sotw("dp-1", with_outbound(dataplane_doc("dp-1")))
        stored = await h.store.get(DP1)
        assert isinstance(stored.spec, DataplaneSpec) and stored.spec.networking.outbound
        assert stored.labels == {"team": "payments"}  # the API's labels, no registration mark
        await report_stopping(h, h.tokens["dataplane"])
        await c.close()
        await eventually(lambda: h.server.registry.connection(DP1) is None, "disconnected")
        await h.server.lifecycle.sweep()
        await asyncio.sleep(1.5)  # past the deregistration delay and the cleanup age
        await h.server.lifecycle.sweep()
        assert await h.store.find(DP1) is not None


# --- deregistration ----------------------------------------------------------------------


async def test_a_graceful_stop_deregisters_it_and_its_insight() -> None:
    async with running_xds(env=FAST) as h:
        c, _ = await h.connect_sotw("dp-1")
        await wait_store(h, lambda: _exists(h, INSIGHT1), "the insight written")
        await report_stopping(h, h.tokens["dataplane"])
        await c.close()
        await wait_store(h, lambda: gone(h, DP1), "the Dataplane deregistered")
        await wait_store(h, lambda: gone(h, INSIGHT1), "its insight deleted")


async def test_a_graceful_stop_followed_by_a_restart_keeps_it() -> None:
    async with running_xds(env={"KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY": "1s"}) as h:
        c, _ = await h.connect_sotw("dp-1")
        await report_stopping(h, h.tokens["dataplane"])
        await c.close()
        await eventually(lambda: h.server.registry.connection(DP1) is None, "disconnected")
        await h.connect_sotw("dp-1")  # `dp run` restarted within the delay
        await asyncio.sleep(1.5)
        assert await h.store.find(DP1) is not None


async def test_an_ungraceful_end_is_cleaned_up_after_the_cleanup_age_only() -> None:
    env = {**FAST, "KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE": "2s"}
    async with running_xds(env=env) as h:
        c, _ = await h.connect_sotw("dp-1")
        await c.close()  # no stop report: a crash
        await wait_store(h, lambda: _offline(h, INSIGHT1), "the insight says offline")
        await asyncio.sleep(0.6)  # past the deregistration delay: still there
        assert await h.store.find(DP1) is not None
        await wait_store(h, lambda: gone(h, DP1), "collected after the cleanup age")
        assert await h.store.find(INSIGHT1) is None


# --- insights ------------------------------------------------------------------------------


async def _exists(h: Harness, key: ResourceKey) -> bool:
    return await h.store.find(key) is not None


async def _offline(h: Harness, key: ResourceKey) -> bool:
    found = await h.store.find(key)
    return found is not None and isinstance(found.spec, ProxyInsightSpec) and not found.spec.online


async def test_the_zone_cp_writes_each_proxys_insight_for_global() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")

        async def online() -> bool:
            found = await h.store.find(INSIGHT1)
            return (
                found is not None and isinstance(found.spec, ProxyInsightSpec) and found.spec.online
            )

        await wait_store(h, online, "online in the insight")
        insight = await h.store.get(INSIGHT1)
        assert isinstance(insight.spec, ProxyInsightSpec)
        assert insight.spec.control_plane_instance_id == h.runtime.instance_id
        assert insight.spec.last_connected
        assert insight.labels["kuma.io/zone"] == "zone-1"  # synced up as this zone's
        await c.close()
        await wait_store(h, lambda: _offline(h, INSIGHT1), "offline in the insight")
        assert (await h.store.get(INSIGHT1)).spec.last_disconnected  # type: ignore[attr-defined]


async def test_a_nack_reaches_the_insight_without_waiting_for_the_counter_flush() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(LISTENER))
        lds = await c.recv_type(LISTENER)

        async def last_nack(expected: str | None) -> bool:
            found = await h.store.find(INSIGHT1)
            spec = found.spec if found is not None else None
            return (
                isinstance(spec, ProxyInsightSpec) and spec.online and (spec.last_nack == expected)
            )

        await wait_store(h, lambda: last_nack(None), "online in the insight")
        c.send(sotw(LISTENER, nonce=lds.nonce, version="", error="port 20080 in use"))
        # Half the counter flush (10 s): the NACK is proxy state, written after its burst.
        await wait_store(h, lambda: last_nack("port 20080 in use"), "the NACK", deadline_s=5)


async def test_a_restarted_cp_marks_what_a_crashed_predecessor_left_online_offline() -> None:
    store = MemoryStore()
    left_online = Resource(
        type="DataplaneInsight",
        name="dp-1",
        mesh="default",
        spec=ProxyInsightSpec(online=True, control_plane_instance_id="crashed-instance"),
        labels={"kuma.io/origin": "zone", "kuma.io/zone": "zone-1", "kuma.io/mesh": "default"},
    )
    await store.create(left_online)
    async with running_xds(store=store) as h:
        found = await h.store.get(INSIGHT1)
        assert isinstance(found.spec, ProxyInsightSpec)
        assert not found.spec.online and found.spec.last_disconnected
