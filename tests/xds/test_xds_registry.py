"""Proxy registry: identity from the node, registration from metadata, stream lifecycle."""

from __future__ import annotations

import json

import grpc
from test_xds_harness import (
    dataplane_doc,
    eventually,
    mesh_service_doc,
    names_of,
    node,
    running_xds,
    sotw,
    token_metadata,
    unpack,
)

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.types.zone_proxies import ZoneIngressSpec
from zonemesh.xds.readiness import METHOD
from zonemesh.xds.registry import ProxyEvent, ProxyEventKind

DP1 = ResourceKey("Dataplane", "default", "dp-1")


async def test_dataplane_is_registered_from_metadata_in_this_zone() -> None:
    async with running_xds(zone="zone-1") as h:
        events: list[ProxyEvent] = []
        h.server.registry.subscribe(events.append)
        c, _ = await h.connect_sotw("dp-1")
        stored = await h.store.get(DP1)
        assert stored.labels == {
            "kuma.io/origin": "zone",
            "kuma.io/zone": "zone-1",
            "kuma.io/mesh": "default",
            "zonemesh.io/registered-from": "node-metadata",  # the lifecycle may delete it
        }
        assert h.runtime.health.get(DP1).connected
        assert [(e.kind, e.key) for e in events] == [(ProxyEventKind.CONNECTED, DP1)]
        await c.close()
        await eventually(lambda: not h.runtime.health.get(DP1).connected, "marked disconnected")
        assert events[-1].kind is ProxyEventKind.DISCONNECTED
        insight = next(i for i in h.server.insights() if i.key == DP1)
        assert not insight.online and insight.last_disconnected is not None


async def test_zone_ingress_is_global_scoped_and_gets_this_zone() -> None:
    async with running_xds(zone="zone-1") as h:
        c = h.client(token=h.tokens["ingress"])
        ingress = {
            "type": "ZoneIngress",
            "name": "ingress-1",
            "networking": {"address": "127.0.1.100", "port": 10001},
        }
        c.send(
            sotw(CLUSTER, node_=node("default.ingress-1", proxy_type="ingress", resource=ingress))
        )
        cds = await c.recv_type(CLUSTER)
        assert list(cds.resources) == []  # nothing for zone proxies yet, but a valid answer
        stored = await h.store.get(ResourceKey("ZoneIngress", "", "ingress-1"))
        assert isinstance(stored.spec, ZoneIngressSpec) and stored.spec.zone == "zone-1"
        assert stored.labels["kuma.io/zone"] == "zone-1"
        assert h.runtime.health.get(stored.key).connected


async def test_invalid_resource_in_metadata_ends_the_stream_with_the_reason() -> None:
    async with running_xds() as h:
        c = h.client()
        bad = dataplane_doc("dp-1", inbounds=[(70000, 8080, "a", "http")])
        c.send(sotw(CLUSTER, node_=node("default.dp-1", resource=bad)))
        code, details = await c.status()
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "networking.inbound[0].port: must be in inclusive range [1, 65535]" in details
        assert await h.store.find(DP1) is None


async def test_resource_of_another_proxy_is_refused() -> None:
    async with running_xds() as h:
        c = h.client()
        c.send(sotw(CLUSTER, node_=node("default.dp-1", resource=dataplane_doc("dp-2"))))
        code, details = await c.status()
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "does not match node.id" in details


async def test_second_stream_of_the_same_proxy_replaces_the_first() -> None:
    async with running_xds() as h:
        first, _ = await h.connect_sotw("dp-1")
        second, _ = await h.connect_sotw("dp-1")
        code, details = await first.status()
        assert code is grpc.StatusCode.ABORTED and "replaced" in details
        # The old stream's end does not mark the proxy offline: the new one is live.
        assert h.runtime.health.get(DP1).connected
        await h.barrier(second)
        await second.close()
        await eventually(lambda: not h.runtime.health.get(DP1).connected, "offline after the last")


async def test_readiness_report_removes_the_endpoint_and_shows_in_the_insight() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, ["a_8080"]))
        eds = await c.recv_type(ENDPOINT)
        assert len(eds.resources) == 1
        c.send(sotw(ENDPOINT, ["a_8080"], nonce=eds.nonce, version=eds.version_info))
        report = c.channel.unary_unary(METHOD)
        body = b'{"nodeId": "default.dp-1", "notReadyInboundPorts": [20080]}'
        answer = await report(body, metadata=token_metadata(h.tokens["dataplane"]))
        assert json.loads(answer) == {"zone": "zone-1"}
        update = await c.recv_type(ENDPOINT)
        assert names_of(update) == ["a_8080"]
        assert list(unpack(update)[0].endpoints) == []  # the only instance is not ready
        insight = next(i for i in h.server.insights() if i.key == DP1)
        assert not insight.ready and insight.not_ready_inbounds == (20080,)


async def test_readiness_report_needs_an_open_stream_and_valid_json() -> None:
    async with running_xds() as h:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{h.server.port}")
        try:
            report = channel.unary_unary(METHOD)
            token = token_metadata(h.tokens["dataplane"])
            try:
                await report(b'{"nodeId": "default.nobody"}', metadata=token)
                raise AssertionError("accepted a report for an unknown proxy")
            except grpc.aio.AioRpcError as e:
                assert e.code() is grpc.StatusCode.NOT_FOUND
            try:
                await report(b"not json", metadata=token)
                raise AssertionError("accepted a body that is not JSON")
            except grpc.aio.AioRpcError as e:
                assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await channel.close()


async def test_existing_dataplane_connects_without_metadata() -> None:
    async with running_xds() as h:
        await h.apply(dataplane_doc("dp-1"))
        c = h.client()
        c.send(sotw(LISTENER, node_=node("default.dp-1")))
        lds = await c.recv_type(LISTENER)
        assert names_of(lds) == ["inbound:127.0.1.1:20080"]
