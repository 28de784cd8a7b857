"""Registration over real ADS streams: proxies of one service send one outbound list, which
the registry validates once (`ProxyRegistry.outbound_lists`), and the node metadata is read
by the keys registration needs."""

from __future__ import annotations

import copy
import json
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2
from test_xds_harness import Harness, dataplane_doc, node, running_xds, sotw

from zonemesh.envoy_types import CLUSTER
from zonemesh.resources.base import ResourceKey


def with_outbounds(name: str, outbound: list[dict[str, Any]]) -> dict[str, Any]:
    doc = dataplane_doc(name)
    doc["networking"]["outbound"] = copy.deepcopy(outbound)
    return doc


OUTBOUNDS = [
    {
        "port": 20000 + k,
        "address": "127.0.0.1",
        "backendRef": {"kind": "MeshService", "name": f"svc-{k}", "port": 8080},
    }
    for k in range(5)
]


def dp(name: str) -> ResourceKey:
    return ResourceKey("Dataplane", "default", name)


async def refused(h: Harness, name: str, doc: dict[str, Any]) -> tuple[grpc.StatusCode, str]:
    c = h.client(token=await h.mesh_token("default"))
    c.send(sotw(CLUSTER, node_=node(f"default.{name}", resource=doc)))
    return await c.status()


async def test_second_proxy_with_the_same_outbounds_reuses_the_validated_list() -> None:
    async with running_xds() as h:
        memo = h.server.registry.outbound_lists
        await h.connect_sotw("dp-1", with_outbounds("dp-1", OUTBOUNDS))
        await h.connect_sotw("dp-2", with_outbounds("dp-2", OUTBOUNDS))
        assert (memo.misses, memo.hits) == (1, 1)
        first, second = await h.store.get(dp("dp-1")), await h.store.get(dp("dp-2"))
        got = second.spec.networking.outbound
        assert [o.backend_ref.name for o in got] == [f"svc-{k}" for k in range(5)]
        assert all(
            a is b for a, b in zip(first.spec.networking.outbound, got, strict=True)
        )  # one validated list behind both


async def test_equal_outbounds_of_different_lists_stay_shared_on_a_memo_hit() -> None:
    async with running_xds() as h:
        await h.connect_sotw("a-1", with_outbounds("a-1", OUTBOUNDS[:3]))
        await h.connect_sotw("b-1", with_outbounds("b-1", OUTBOUNDS[2:]))  # another list
        await h.connect_sotw("b-2", with_outbounds("b-2", OUTBOUNDS[2:]))  # a hit
        assert h.server.registry.outbound_lists.hits == 1
        a1, b1, b2 = [
            (await h.store.get(dp(n))).spec.networking.outbound for n in ("a-1", "b-1", "b-2")
        ]
        assert a1[2] is b1[0] is b2[0]  # svc-2, listed by both services: one model


async def test_bad_outbound_list_is_refused_alike_for_every_proxy() -> None:
    bad = copy.deepcopy(OUTBOUNDS)
    bad[3]["backendRef"]["kind"] = "Service"
    expected = (
        "dataplane.resource: networking.outbound[3].backendRef.kind: must be one of: "
        "MeshService, MeshMultiZoneService, MeshExternalService"
    )
    async with running_xds() as h:
        for name in ("dp-1", "dp-2"):
            code, details = await refused(h, name, with_outbounds(name, bad))
            assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
            assert await h.store.find(dp(name)) is None
        assert h.server.registry.outbound_lists.hits == 0


async def test_list_one_field_off_a_registered_one_is_validated_in_full() -> None:
    changed = copy.deepcopy(OUTBOUNDS)
    changed[4]["port"] = 20001  # the same port as outbound[1]
    async with running_xds() as h:
        await h.connect_sotw("dp-1", with_outbounds("dp-1", OUTBOUNDS))
        code, details = await refused(h, "dp-2", with_outbounds("dp-2", changed))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert details == (
            "dataplane.resource: networking.outbound[4].port: port collides with outbound[1]"
        )
        assert await h.store.find(dp("dp-2")) is None
        assert h.server.registry.outbound_lists.hits == 0


def metadata_node(node_id: str, metadata: dict[str, Any]) -> base_pb2.Node:
    struct = struct_pb2.Struct()
    struct.update(metadata)
    return base_pb2.Node(id=node_id, metadata=struct)


async def test_resource_nested_under_dataplane_registers_and_flat_keys_win() -> None:
    async with running_xds() as h:
        c = h.client(token=await h.mesh_token("default"))
        metadata = {
            "dataplane": {
                "proxyType": "ingress",  # the flat key below wins
                "resource": json.dumps(dataplane_doc("dp-1")),
            },
            "dataplane.proxyType": "dataplane",
        }
        c.send(sotw(CLUSTER, node_=metadata_node("default.dp-1", metadata)))
        await c.recv_type(CLUSTER)
        assert (await h.store.get(dp("dp-1"))).spec.networking.address == "127.0.1.1"


async def test_metadata_registration_does_not_read_cannot_stop_it() -> None:
    async with running_xds() as h:
        c = h.client(token=await h.mesh_token("default"))
        metadata = {
            "dataplane.resource": json.dumps(dataplane_doc("dp-1")),
            # Not representable in JSON: converting the whole Struct used to fail the stream.
            "custom.weight": float("nan"),
        }
        c.send(sotw(CLUSTER, node_=metadata_node("default.dp-1", metadata)))
        await c.recv_type(CLUSTER)
        assert await h.store.find(dp("dp-1")) is not None
