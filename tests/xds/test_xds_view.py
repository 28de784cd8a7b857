"""The XdsView the API reads: insights and per-proxy config dumps; lifecycle of the server."""

from __future__ import annotations

import grpc
from test_xds_harness import dataplane_doc, eventually, mesh_service_doc, running_xds

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.resources.base import ResourceKey

DP1 = ResourceKey("Dataplane", "default", "dp-1")


async def test_view_is_published_with_insights_and_config_dump() -> None:
    async with running_xds() as h:
        assert h.runtime.views["xds"] is h.server
        await h.apply(mesh_service_doc("a"))
        await h.connect_sotw("dp-1")
        (insight,) = await eventually(
            lambda: [i for i in h.server.insights() if i.acks == 1], "the CDS ACK counted"
        )
        assert insight.key == DP1 and insight.online and insight.proxy_type == "dataplane"
        assert insight.responses_sent == 1 and insight.nacks == 0
        dump = h.server.config_dump(DP1)
        assert dump is not None
        assert [x["name"] for x in dump[LISTENER]] == ["inbound:127.0.1.1:20080"]
        assert {c["name"] for c in dump[CLUSTER]} == {"a_8080", "localhost:127.0.1.1:8080"}
        assert dump[ENDPOINT][0]["clusterName"] == "a_8080"
        assert h.server.config_dump(ResourceKey("Dataplane", "default", "nobody")) is None


async def test_config_dump_of_a_proxy_that_is_not_connected() -> None:
    async with running_xds() as h:
        await h.apply(dataplane_doc("dp-1"))
        await h.connect_sotw("dp-0", dataplane_doc("dp-0", address="127.0.1.9"))
        dump = h.server.config_dump(DP1)
        assert dump is not None and [x["name"] for x in dump[LISTENER]] == [
            "inbound:127.0.1.1:20080"
        ]


async def test_stop_closes_streams_and_unpublishes_the_view() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")
        await h.server.stop()
        code, details = await c.status()
        assert code is grpc.StatusCode.UNAVAILABLE and "shutting down" in details
        assert "xds" not in h.runtime.views
        assert not h.runtime.health.get(DP1).connected
