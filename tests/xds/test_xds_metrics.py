"""xDS metrics under Kuma's names."""

from __future__ import annotations

from prometheus_client import generate_latest
from test_xds_harness import eventually, mesh_service_doc, running_xds, sotw

from zonemesh.envoy_types import CLUSTER, LISTENER


async def test_streams_requests_responses_delivery_and_generation_are_measured() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_sotw("dp-1")  # CDS request, response, ACK
        assert h.metric("xds_streams_active") == 1
        c.send(sotw(LISTENER))
        lds = await c.recv_type(LISTENER)
        c.send(sotw(LISTENER, nonce=lds.nonce, error="nope"))
        ack = {"type_url": CLUSTER, "confirmation": "ACK"}
        nack = {"type_url": LISTENER, "confirmation": "NACK"}
        await eventually(lambda: h.metric("xds_requests_received_total", nack) == 1, "NACK")
        assert h.metric("xds_requests_received_total", ack) == 2  # initial + ACK
        assert h.metric("xds_responses_sent_total", {"type_url": CLUSTER}) == 1
        assert h.metric("xds_responses_sent_total", {"type_url": LISTENER}) == 1
        assert h.metric("xds_delivery_count") == 1  # the CDS ACK
        assert h.metric("xds_generation_count") >= 1
        text = generate_latest(h.runtime.metrics).decode()
        for name in ("xds_streams_active", "xds_requests_received", "xds_responses_sent"):
            assert name in text
        await c.close()
        await eventually(lambda: h.metric("xds_streams_active") == 0, "stream closed")
