"""Incremental (Delta) ADS conformance: one test per protocol rule, with a scripted client."""

from __future__ import annotations

from test_xds_harness import (
    dataplane_doc,
    delta,
    eventually,
    mesh_service_doc,
    names_of,
    node,
    running_xds,
    unpack,
)
from test_xds_sotw import _TimeoutFromLabel

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.resources.base import ResourceKey

DP1 = ResourceKey("Dataplane", "default", "dp-1")


async def test_wildcard_first_response_even_when_empty() -> None:
    async with running_xds() as h:
        c, cds = await h.connect_delta("dp-1")
        assert sorted(names_of(cds)) == ["localhost:127.0.1.1:8080"]
        c.send(delta(ENDPOINT))  # wildcard, nothing exists: an empty answer, not silence
        eds = await c.recv_type(ENDPOINT)
        assert list(eds.resources) == [] and list(eds.removed_resources) == []


async def test_only_changed_resources_are_sent() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        await h.apply(mesh_service_doc("b"))
        c, _ = await h.connect_delta("dp-1")
        c.send(delta(ENDPOINT))
        eds = await c.recv_type(ENDPOINT)
        assert sorted(names_of(eds)) == ["a_8080", "b_8080"]
        c.send(delta(ENDPOINT, nonce=eds.nonce))
        await h.apply(
            dataplane_doc("dp-b", address="127.0.1.2", inbounds=[(20080, 8080, "b", "http")])
        )
        update = await c.recv_type(ENDPOINT)  # no CDS: clusters did not change
        assert names_of(update) == ["b_8080"]
        assert update.resources[0].version != next(
            r.version for r in eds.resources if r.name == "b_8080"
        )


async def test_removed_resources_are_reported() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, cds = await h.connect_delta("dp-1")
        assert "a_8080" in names_of(cds)
        await h.delete("MeshService", "a")
        update = await c.recv_type(CLUSTER)
        assert list(update.resources) == []
        assert list(update.removed_resources) == ["a_8080"]


async def test_initial_resource_versions_are_honoured_on_reconnect() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        await h.apply(mesh_service_doc("b"))
        c, cds = await h.connect_delta("dp-1")
        versions = {r.name: r.version for r in cds.resources}
        await c.close()
        await eventually(lambda: not h.server.registry.connection(DP1), "first stream gone")
        versions["b_8080"] = "outdated"
        c2 = h.client(delta_mode=True)
        c2.send(delta(CLUSTER, initial=versions, node_=node("default.dp-1")))
        again = await c2.recv_type(CLUSTER)
        assert names_of(again) == ["b_8080"]  # only what it does not already have
        c2.send(delta(CLUSTER, nonce=again.nonce))
        await h.barrier(c2)


async def test_subscribe_and_unsubscribe() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        await h.apply(mesh_service_doc("b"))
        c, _ = await h.connect_delta("dp-1")
        c.send(delta(ENDPOINT, ["a_8080"]))
        first = await c.recv_type(ENDPOINT)
        assert names_of(first) == ["a_8080"]
        c.send(delta(ENDPOINT, ["b_8080"], unsubscribe=["a_8080"], nonce=first.nonce))
        second = await c.recv_type(ENDPOINT)
        assert names_of(second) == ["b_8080"]
        assert list(second.removed_resources) == []
        c.send(delta(ENDPOINT, nonce=second.nonce))
        # A change to a_8080 no longer reaches this client.
        await h.apply(
            dataplane_doc("dp-a", address="127.0.1.2", inbounds=[(20080, 8080, "a", "http")])
        )
        await h.barrier(c)
        # Subscribing again to something it had: sent again.
        c.send(delta(ENDPOINT, ["b_8080"]))
        third = await c.recv_type(ENDPOINT)
        assert names_of(third) == ["b_8080"]


async def test_named_resource_not_existing_is_reported_then_sent_when_it_exists() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_delta("dp-1")
        c.send(delta(ENDPOINT, ["later_8080"]))
        absent = await c.recv_type(ENDPOINT)
        assert list(absent.resources) == [] and list(absent.removed_resources) == ["later_8080"]
        c.send(delta(ENDPOINT, nonce=absent.nonce))
        await h.apply(mesh_service_doc("later"))
        cds = await c.recv_type(CLUSTER)
        assert names_of(cds) == ["later_8080"]
        c.send(delta(CLUSTER, nonce=cds.nonce))
        eds = await c.recv_type(ENDPOINT)
        assert names_of(eds) == ["later_8080"]


async def test_subscription_with_stale_nonce_is_still_honoured() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_delta("dp-1")
        c.send(delta(ENDPOINT, ["a_8080"], nonce="some-old-nonce"))
        eds = await c.recv_type(ENDPOINT)
        assert names_of(eds) == ["a_8080"]


async def test_nack_is_recorded_and_not_resent() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_delta("dp-1")
        c.send(delta(LISTENER))
        lds = await c.recv_type(LISTENER)
        c.send(delta(LISTENER, nonce=lds.nonce, error="invalid listener"))
        await eventually(
            lambda: any(
                i.nacks == 1 and i.last_nack == "invalid listener" for i in h.server.insights()
            ),
            "NACK in the insight",
        )
        await h.barrier(c)
        await h.barrier(c)


async def test_update_order_and_endpoints_follow_cluster_change() -> None:
    async with running_xds(_TimeoutFromLabel()) as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_delta("dp-1")
        c.send(delta(ENDPOINT, ["a_8080"]))
        eds = await c.recv_type(ENDPOINT)
        c.send(delta(ENDPOINT, nonce=eds.nonce))
        c.send(delta(LISTENER))
        lds = await c.recv_type(LISTENER)
        c.send(delta(LISTENER, nonce=lds.nonce))
        await eventually(lambda: h.requests_seen(DP1) >= 6, "ACKs read")
        doc = mesh_service_doc("a")
        doc["labels"]["timeout"] = "9"
        await h.apply(doc)
        cds = await c.recv_type(CLUSTER)
        assert names_of(cds) == ["a_8080"] and unpack(cds)[0].connect_timeout.seconds == 9
        c.send(delta(CLUSTER, nonce=cds.nonce))
        follow = await c.recv_type(ENDPOINT)  # unchanged CLA, sent so the cluster warms
        assert names_of(follow) == ["a_8080"] and unpack(follow) == unpack(eds)
        c.send(delta(ENDPOINT, nonce=follow.nonce))
        # A move of dp-1 touches clusters, endpoints and listeners: sent in that order.
        await h.apply(dataplane_doc("dp-1", address="127.0.1.5"))
        order = [(await c.recv()).type_url for _ in range(3)]
        assert order == [CLUSTER, ENDPOINT, LISTENER]
