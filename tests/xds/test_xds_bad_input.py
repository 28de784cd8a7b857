"""Bad input ends one stream with a clear status; the server and other streams carry on."""

from __future__ import annotations

import asyncio
import struct

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
from test_xds_harness import (
    dataplane_doc,
    delta,
    eventually,
    issue_token,
    mesh_service_doc,
    node,
    running_xds,
    sotw,
    token_metadata,
)

from zonemesh.envoy_types import CLUSTER, ENDPOINT
from zonemesh.resources.base import ResourceKey
from zonemesh.xds.server import SERVICE


async def test_node_without_id_is_invalid_argument() -> None:
    async with running_xds() as h:
        c = h.client()
        c.send(sotw(CLUSTER))
        code, details = await c.status()
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "node.id" in details


async def test_unknown_mesh_is_failed_precondition() -> None:
    async with running_xds() as h:
        # A token for that mesh (a token of this CP for mesh default does not allow it).
        c = h.client(delta_mode=True, token=await issue_token(h.runtime, mesh="nope"))
        c.send(delta(CLUSTER, node_=node("nope.dp-1")))
        assert await c.status() == (grpc.StatusCode.FAILED_PRECONDITION, "mesh nope not found")


async def test_unknown_proxy_without_metadata_is_failed_precondition() -> None:
    async with running_xds() as h:
        c = h.client()
        c.send(sotw(CLUSTER, node_=node("default.ghost")))
        code, details = await c.status()
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "dataplane.resource" in details


async def test_malformed_request_bytes_are_invalid_argument() -> None:
    async with running_xds() as h:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{h.server.port}")
        try:
            call = channel.stream_stream(f"/{SERVICE}/StreamAggregatedResources")(
                iter([b"\xff\xff\xff\xff"]), metadata=token_metadata(h.tokens["dataplane"])
            )
            code = await call.code()
            assert code is grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed" in await call.details()
        finally:
            await channel.close()


async def test_unknown_type_is_ignored_and_the_stream_keeps_working() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw("type.googleapis.com/envoy.service.runtime.v3.Runtime", ["rtds"]))
        c.send(sotw("", []))
        c.send(sotw(ENDPOINT, ["a_8080"]))
        eds = await c.recv_type(ENDPOINT)
        assert len(eds.resources) == 1


async def test_too_many_resource_names_are_refused() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, [f"svc-{i}_80" for i in range(100_000)]))
        code, details = await c.status()
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "100000 resource names" in details


async def test_client_that_never_reads_is_closed_alone() -> None:
    async with running_xds(max_unacked=2) as h:
        good, _ = await h.connect_delta("dp-1")
        lazy = h.client(delta_mode=True)  # subscribes, then never acknowledges anything
        lazy.send(
            delta(
                CLUSTER,
                node_=node("default.dp-2", resource=dataplane_doc("dp-2", address="127.0.1.2")),
            )
        )
        lazy_key = ResourceKey("Dataplane", "default", "dp-2")
        await eventually(lambda: h.server.registry.connection(lazy_key), "lazy client connected")
        await h.barrier(good)
        await h.barrier(good)  # the lazy one now has 3 unacknowledged responses due
        code, details = await lazy.status()
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "not reading" in details
        await h.barrier(good)  # the others are still served


async def test_a_client_that_takes_no_bytes_is_dropped_after_the_send_timeout() -> None:
    """A real HTTP/2 client that grants its stream no flow-control window: the first
    response cannot be written, and the write watchdog ends that stream (gRPC sends its
    status once the client reads again) and forgets the proxy, while the others are served."""
    async with running_xds(send_timeout_s=0.4) as h:
        await h.apply(mesh_service_doc("a"))
        good, _ = await h.connect_sotw("dp-1")
        _, writer = await asyncio.open_connection("127.0.0.1", h.server.port)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        request = sotw(CLUSTER, node_=node("default.dp-2", resource=dataplane_doc("dp-2")))
        body = request.SerializeToString()
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/{SERVICE}/StreamAggregatedResources"),
                (":authority", "127.0.0.1"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("authorization", h.tokens["dataplane"]),
            ],
        )
        conn.send_data(1, b"\0" + struct.pack(">I", len(body)) + body)
        writer.write(conn.data_to_send())
        lazy = ResourceKey("Dataplane", "default", "dp-2")
        await eventually(lambda: h.server.registry.connection(lazy), "the lazy client connected")
        await eventually(
            lambda: h.server.registry.connection(lazy) is None, "the lazy client dropped"
        )
        assert h.metric("xds_streams_active") == 1
        writer.close()
        await h.barrier(good)  # the others are still served
